//! When backups run: a cron schedule (UTC), a run at start when the last scheduled one was
//! missed, retries with backoff after a failure, and every run recorded in the store.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::sync::watch;

use super::{BackupError, Settings};
use crate::store::{BackupRun, Store};

/// Waits after the 1st, 2nd… failure before trying again; then the next scheduled time.
const RETRY_AFTER: &[u64] = &[60, 300, 900, 1800];

/// A five-field cron schedule, read in UTC.
#[derive(Clone)]
pub struct Schedule {
    pub text: String,
    cron: croner::Cron,
}

impl std::fmt::Debug for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

fn utc(unix: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(unix, 0).unwrap_or_default()
}

impl Schedule {
    pub fn parse(text: &str) -> Result<Schedule, BackupError> {
        let bad = |message: String| BackupError::Schedule {
            schedule: text.to_string(),
            message,
        };
        if text.split_whitespace().count() != 5 {
            return Err(bad(
                "a schedule has five cron fields: minute hour day month weekday, e.g. \"0 3 * * *\""
                    .into(),
            ));
        }
        let cron = croner::Cron::from_str(text).map_err(|e| bad(e.to_string()))?;
        Ok(Schedule {
            text: text.to_string(),
            cron,
        })
    }

    /// The first scheduled time after `unix`.
    pub fn next_after(&self, unix: i64) -> Option<i64> {
        self.cron
            .find_next_occurrence(&utc(unix), false)
            .ok()
            .map(|t| t.timestamp())
    }

    /// The last scheduled time at or before `unix`.
    pub fn previous(&self, unix: i64) -> Option<i64> {
        self.cron
            .find_previous_occurrence(&utc(unix), true)
            .ok()
            .map(|t| t.timestamp())
    }

    /// Seconds between two runs around `unix` (for "older than twice the schedule").
    pub fn interval(&self, unix: i64) -> Option<i64> {
        let first = self.next_after(unix)?;
        Some(self.next_after(first)? - first)
    }
}

/// Runs backups inside `serve`. The settings follow the applied spec (None: no backups).
pub struct Runner {
    pub settings: Arc<ArcSwapOption<Settings>>,
    pub store: Arc<dyn Store>,
    pub data_dir: PathBuf,
    /// One node runs each scheduled backup.
    pub cluster: Arc<crate::cache::Cluster>,
}

impl Runner {
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        // The first look waits a little: let the first reconcile and listeners settle.
        let mut wait = Duration::from_secs(2);
        let mut failures = 0usize;
        let mut last_failed_at = i64::MIN;
        // The last success as this process knows it: a store that cannot be read or
        // written must not make every loop look like a missed backup.
        let mut last_ok_at: Option<i64> = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
            wait = Duration::from_secs(30);
            let Some(settings) = self.settings.load_full() else {
                continue;
            };
            let now = crate::store::unix_now();
            let stored = match self.store.last_good_backup() {
                Ok(run) => run.map(|r| r.started_at),
                Err(e) => {
                    tracing::warn!(error = %e, "backup history unreadable; waiting");
                    continue;
                }
            };
            let last_good = stored.max(last_ok_at);
            let due_since = settings.schedule.previous(now).unwrap_or(i64::MIN);
            // A new scheduled time starts the retries afresh.
            if last_failed_at < due_since {
                failures = 0;
            }
            let missed = last_good.is_none_or(|at| at < due_since);
            let retry_at = match failures {
                0 => i64::MIN,
                n => RETRY_AFTER
                    .get(n - 1)
                    .map_or(i64::MAX, |s| last_failed_at.saturating_add(*s as i64)),
            };
            if !missed || now < retry_at {
                let next = settings.schedule.next_after(now).unwrap_or(now + 3600);
                let until = next.min(if failures > 0 { retry_at } else { i64::MAX });
                // Wake at the time, or within a minute to see new settings.
                wait = Duration::from_secs((until - now).clamp(1, 60) as u64);
                continue;
            }
            // Nodes sharing a store share its backups: the one that takes the lock runs
            // this one, and the others see it in the history (checked again under the
            // lock: it may have finished just now).
            let Some(_held) = self.cluster.try_lock(crate::cache::cluster::BACKUP) else {
                continue;
            };
            let done_elsewhere = matches!(
                self.store.last_good_backup(),
                Ok(Some(run)) if run.started_at >= due_since
            );
            if done_elsewhere {
                continue;
            }
            let started_at = now;
            tracing::info!(target = %settings.target, "backup starting");
            // A backup in progress gives way to shutdown: dropping it closes the stream,
            // the snapshot stops at its next chunk and the upload is abandoned.
            let result = tokio::select! {
                result = super::create(&settings, &self.data_dir, self.store.connection(), Arc::new(|_| {})) => result,
                _ = shutdown.changed() => {
                    tracing::info!("backup abandoned: shutting down");
                    return;
                }
            };
            let run = match &result {
                Ok(created) => {
                    failures = 0;
                    last_ok_at = Some(started_at);
                    if let Some(e) = &created.prune_error {
                        tracing::warn!(error = %e, "old backups could not be removed");
                    }
                    tracing::info!(
                        id = %created.record.id,
                        size = created.record.size,
                        files = created.record.files,
                        duration_ms = created.record.duration_ms,
                        removed = created.pruned.len(),
                        "backup stored"
                    );
                    BackupRun {
                        id: created.record.id.clone(),
                        started_at,
                        target: settings.target.to_string(),
                        ok: true,
                        size: created.record.size,
                        sha256: created.record.sha256.clone(),
                        duration_ms: created.record.duration_ms,
                        error: created
                            .prune_error
                            .as_ref()
                            .map(|e| format!("old backups not removed: {e}")),
                    }
                }
                Err(e) => {
                    failures += 1;
                    last_failed_at = crate::store::unix_now();
                    let again = RETRY_AFTER
                        .get(failures - 1)
                        .map(|s| format!("retrying in {s} s"))
                        .unwrap_or_else(|| "next try at the next scheduled time".into());
                    tracing::error!(error = %e, "backup failed; {again}");
                    BackupRun {
                        id: String::new(),
                        started_at,
                        target: settings.target.to_string(),
                        ok: false,
                        size: 0,
                        sha256: String::new(),
                        duration_ms: 0,
                        error: Some(format!("{e}; {again}")),
                    }
                }
            };
            if let Err(e) = self.store.record_backup(&run) {
                tracing::error!(error = %e, "the backup run could not be recorded");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_read_five_fields_in_utc() {
        let daily = Schedule::parse("0 3 * * *").unwrap();
        // 2026-11-26T12:00:00Z
        let noon = 1_795_694_400;
        assert_eq!(
            super::super::rfc3339(daily.next_after(noon).unwrap()),
            "2026-11-27T03:00:00Z"
        );
        assert_eq!(
            super::super::rfc3339(daily.previous(noon).unwrap()),
            "2026-11-26T03:00:00Z"
        );
        assert_eq!(daily.interval(noon), Some(86_400));
        assert_eq!(
            Schedule::parse("*/15 * * * *").unwrap().interval(noon),
            Some(900)
        );
        assert!(Schedule::parse("0 3 * *").is_err());
        assert!(Schedule::parse("0 25 * * *").is_err());
        assert!(Schedule::parse("0 0 3 * * *").is_err());
    }
}

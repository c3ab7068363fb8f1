//! Backups in a plan: the schedule and target as a resource, when the next run is, and a
//! warning when the last successful backup is older than twice the schedule's interval.

use serde::{Deserialize, Serialize};

use crate::backup::{Schedule, TargetConfig};
use crate::spec::Spec;
use crate::store::Store;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupsLine {
    pub schedule: String,
    pub target: String,
    pub keep: u32,
    /// RFC 3339, UTC.
    pub next: Option<String>,
    /// The last successful backup: its id, when, and its size.
    pub last: Option<String>,
    pub last_at: Option<String>,
    pub last_size: Option<u64>,
    /// Set when the last success is too old (or there is none after a failure).
    pub warning: Option<String>,
    /// Set when the mailboxes' master key is in no backup and not in the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_key_note: Option<String>,
}

pub fn plan(
    spec: &Spec,
    base_dir: &std::path::Path,
    store: Option<&dyn Store>,
    now: i64,
) -> Option<BackupsLine> {
    let b = spec.backups.as_ref()?;
    let schedule = Schedule::parse(&b.schedule).ok()?;
    let target = TargetConfig::public(&b.target, base_dir, b.endpoint.clone()).ok()?;
    let runs = store
        .and_then(|s| s.backup_runs(1).ok())
        .unwrap_or_default();
    let good = store.and_then(|s| s.last_good_backup().ok().flatten());
    let interval = schedule.interval(now).unwrap_or(86_400);
    let warning = match (&good, runs.first()) {
        (Some(g), _) if now - g.started_at > 2 * interval => Some(format!(
            "the last successful backup is {} old, more than twice the schedule's interval ({})",
            humantime::format_duration(std::time::Duration::from_secs((now - g.started_at) as u64)),
            humantime::format_duration(std::time::Duration::from_secs(interval as u64)),
        )),
        (None, Some(failed)) if !failed.ok => Some(format!(
            "no backup has succeeded yet; the last attempt failed: {}",
            failed.error.clone().unwrap_or_default()
        )),
        _ => None,
    };
    Some(BackupsLine {
        schedule: schedule.text.clone(),
        target: target.to_string(),
        keep: b.keep,
        next: schedule.next_after(now).map(crate::backup::rfc3339),
        last: good.as_ref().map(|g| g.id.clone()),
        last_at: good.as_ref().map(|g| crate::backup::rfc3339(g.started_at)),
        last_size: good.as_ref().map(|g| g.size),
        warning,
        master_key_note: (!b.include_master_key && spec.server.master_key.is_none()).then(|| {
            "the mailboxes' master key (data_dir/master.key) is in no backup: keep a copy \
             elsewhere, or set include_master_key = true or server.master_key"
                .to_string()
        }),
    })
}

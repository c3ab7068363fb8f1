//! The serve loop's reconciler: applies the spec on SIGHUP or when asked, and with
//! `apply = "auto"` on every save (debounced); refreshes the Snapshot. An invalid spec
//! is reported and the last good state keeps serving.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use super::{PlanError, Targets, apply_all, plan_targets};
use crate::cache::cluster::RECONCILE;
use crate::snapshot::SnapshotHandle;
use crate::spec;
use crate::store::Store;

/// Editors write files in several steps; wait for the burst to settle.
const DEBOUNCE: Duration = Duration::from_millis(300);
/// How often the store revision is checked for applies made elsewhere (CLI, CI, another
/// node); notices through Redis or a MongoDB change stream come sooner.
const STORE_POLL: Duration = Duration::from_secs(2);
/// A reconcile deferred because another node held the apply lock is tried again after this.
const DEFERRED_RETRY: Duration = Duration::from_secs(5);

/// The outcome of the latest reconcile, for `status`.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct ReconcileStatus {
    pub at: String,
    pub ok: bool,
    pub revision: u64,
    pub summary: String,
    pub errors: Vec<String>,
    /// Where the applied spec came from (a path, or "git URL@commit (branch)").
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// Why DNS records could not be published (the store was applied regardless).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_problems: Vec<String>,
    /// The plan this reconcile applied, as `ferrymail plan` prints it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub plan: String,
    /// Not applied because another node was applying: tried again shortly.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deferred: bool,
}

pub struct Reconciler {
    pub spec_path: PathBuf,
    pub store: Arc<dyn Store>,
    pub snapshot: Arc<SnapshotHandle>,
    pub status: Arc<Mutex<ReconcileStatus>>,
    /// Where the latest status is written for `ferrymail status` (data_dir/reconcile.json).
    pub status_file: Option<PathBuf>,
    /// How often DNS zones are re-read and drift repaired (`dns.resync_interval`); None:
    /// only when the spec changes.
    pub dns_resync: Option<Duration>,
    /// Told about every spec that was applied (the certificate manager's names follow).
    pub after_apply: Option<AfterApply>,
    /// How often a spec kept in git is fetched (`[source] interval`); None: not in git.
    pub git_interval: Option<Duration>,
    /// This node and its locks: one node at a time applies.
    pub cluster: Arc<crate::cache::Cluster>,
    /// Reconciles run and failed since the process started (for /metrics).
    pub runs: std::sync::atomic::AtomicU64,
    pub failures: std::sync::atomic::AtomicU64,
    /// `[server] apply = "auto"` in the spec applied last: saves and new commits apply
    /// themselves. Manual: only a reload, `ferrymail apply` or the admin applies.
    pub auto: std::sync::atomic::AtomicBool,
    /// A tag of the spec's files as the last reconcile read them: a save made before the
    /// watcher was in place (serve starting) is seen by comparing it once after.
    pub read_tag: Mutex<Option<String>>,
    /// Held for a whole reconcile: the watcher's and an admin edit's (which writes the
    /// file the watcher then sees) run one after the other. The cluster lock does not
    /// part two threads of one node, and overlapping, the second planned against the
    /// revision the first was replacing and failed ("the store changed since the plan
    /// was made"), so the admin said its edit failed although it was applied.
    pub running: Mutex<()>,
    /// Where the last apply's inputs are noted (data_dir): a start whose spec and
    /// secrets are those of the last apply skips the plan. None: always plan.
    pub data_dir: Option<PathBuf>,
    /// The read a start skipped the plan for: the loop plans it at once, in the
    /// background (DNS drift, a record held back). That very read: in manual mode an
    /// edit saved meanwhile must wait for its apply, as it would have.
    pub plan_soon: Mutex<Option<Arc<spec::LoadedSpec>>>,
}

/// A tag of the spec's files now (None if they cannot be read).
fn spec_tag(path: &std::path::Path) -> Option<String> {
    spec::edit::SpecFiles::read(path).ok().map(|f| f.etag())
}

/// A callback for each applied spec.
pub type AfterApply = Box<dyn Fn(Arc<spec::LoadedSpec>) + Send + Sync>;

impl Reconciler {
    /// Loads, plans and applies the spec once; never panics, records what happened.
    pub fn reconcile_once(&self) -> ReconcileStatus {
        self.reconcile(None, false)
    }

    /// `reconcile_once` with the spec a starting server has just read (from a local
    /// file, not git): reading a large spec twice doubled the start.
    pub fn reconcile_read(&self, loaded: Arc<spec::LoadedSpec>) -> ReconcileStatus {
        self.reconcile(Some(loaded), true)
    }

    /// `may_skip`: a start may skip the plan when nothing changed since the last apply.
    fn reconcile(&self, read: Option<Arc<spec::LoadedSpec>>, may_skip: bool) -> ReconcileStatus {
        let _one_at_a_time = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let at = crate::store::now_rfc3339();
        let skipped_read = read.clone();
        // The tag of what this reconcile reads: a save made after it is seen by the
        // watcher (or, at start, by comparing tags once the watcher is in place).
        let tag = match &read {
            Some(loaded) => Some(spec::edit::tag_of(
                loaded
                    .sources
                    .iter()
                    .map(|s| (s.path.as_path(), s.text.as_str())),
            )),
            None => spec_tag(&self.spec_path),
        };
        *self.read_tag.lock().unwrap_or_else(|p| p.into_inner()) = tag;
        let source =
            std::fs::canonicalize(&self.spec_path).unwrap_or_else(|_| self.spec_path.clone());
        let outcome = read
            .map_or_else(|| crate::source::load(&self.spec_path).map(Arc::new), Ok)
            .map_err(|e| match e {
                crate::source::SourceError::Spec(mut errors) => {
                    let more = super::whole_spec_errors_despite(&self.spec_path, &errors);
                    errors.0.extend(more);
                    PlanError::Spec(errors)
                }
                other => PlanError::Source(other.to_string()),
            })
            .and_then(|loaded| {
                let unreadable = super::api_token_errors(&loaded);
                if !unreadable.is_empty() {
                    return Err(PlanError::Spec(loaded.errors(unreadable)));
                }
                let source = loaded
                    .origin
                    .clone()
                    .unwrap_or_else(|| source.display().to_string());
                let inputs = self
                    .data_dir
                    .as_ref()
                    .map(|_| super::unchanged::inputs(&loaded));
                // A restart with the spec last applied: the store already holds what a
                // plan would ask for, so the server starts without planning (seconds
                // with 100,000 aliases), and plans in the background right after.
                if may_skip
                    && let (Some(dir), Some(inputs)) = (&self.data_dir, &inputs)
                    && let Some(last) = super::unchanged::last(dir)
                    && last.inputs == *inputs
                    && super::unchanged::store_mark(self.store.as_ref())
                        .map_err(PlanError::Store)?
                        == (last.revision, last.applied_at.clone())
                {
                    *self.plan_soon.lock().unwrap_or_else(|p| p.into_inner()) = skipped_read;
                    return Ok((
                        last.revision,
                        "unchanged since the last apply (same spec, secrets and ferrymail); planned again in the background".into(),
                        Vec::new(),
                        source,
                        String::new(),
                        loaded,
                        false,
                    ));
                }
                // One node applies at a time; the others serve what it applied (the
                // store's revision check would refuse a second apply of the same plan).
                let Some(_held) = self.cluster.try_lock(RECONCILE) else {
                    let holder = self
                        .cluster
                        .holder_elsewhere(RECONCILE)
                        .unwrap_or_else(|| "the cache is unreachable".into());
                    let revision = self.store.revision().map_err(PlanError::Store)?;
                    return Ok((
                        revision,
                        format!(
                            "not applied here: another node applies ({holder}); serving the store"
                        ),
                        Vec::new(),
                        source,
                        String::new(),
                        loaded,
                        true,
                    ));
                };
                let p = plan_targets(&loaded, Some(self.store.as_ref()), &source, Targets::ALL)?;
                let s = p.summary();
                let applied = apply_all(&loaded, self.store.as_ref(), &p, false)
                    .map_err(|e| PlanError::Apply(e.to_string()))?;
                let revision = applied.revision;
                if revision != p.base_revision {
                    // Every other node refreshes its snapshot now, not at its next poll.
                    self.cluster
                        .cache
                        .publish(crate::cache::REVISION_CHANNEL, &revision.to_string());
                }
                // DNS trouble does not stop mail: the store is applied and serving; the
                // problem is shown in `status` and the logs, and retried next reconcile.
                let mut dns_problems: Vec<String> = match applied.dns {
                    Ok(outcome) => outcome
                        .conflicts
                        .into_iter()
                        .map(|c| format!("conflict: {c}"))
                        .collect(),
                    Err(e) => e.to_string().lines().map(String::from).collect(),
                };
                dns_problems.extend(applied.held_back.iter().map(|id| {
                    format!("DKIM key {id} not changed until its record can be published")
                }));
                // Nothing left to retry: a start with these inputs need not plan.
                if let (Some(dir), Some(inputs)) = (&self.data_dir, inputs) {
                    match super::unchanged::store_mark(self.store.as_ref()) {
                        Ok((revision, applied_at)) if dns_problems.is_empty() => {
                            let applied = super::unchanged::Applied {
                                revision,
                                applied_at,
                                inputs,
                            };
                            super::unchanged::note(dir, &applied);
                        }
                        _ => super::unchanged::forget(dir),
                    }
                }
                let text = super::render::text(&p, &super::render::Style { color: false });
                Ok((
                    revision,
                    format!(
                        "{} added, {} changed, {} destroyed",
                        s.add, s.change, s.destroy
                    ),
                    dns_problems,
                    source,
                    text,
                    loaded,
                    false,
                ))
            });
        self.runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if outcome.is_err() {
            self.failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let mut applied_spec = None;
        if let Ok((.., loaded, _)) = &outcome {
            self.auto.store(
                loaded.apply_mode() == spec::ApplyMode::Auto,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        let status = match outcome {
            Ok((revision, summary, dns_problems, source, plan, loaded, deferred)) => {
                applied_spec = Some(loaded);
                tracing::info!(revision, %summary, %source, "spec reconciled");
                for problem in &dns_problems {
                    tracing::error!("DNS not applied: {problem}");
                }
                ReconcileStatus {
                    at,
                    ok: true,
                    revision,
                    summary,
                    errors: Vec::new(),
                    dns_problems,
                    source,
                    plan,
                    deferred,
                }
            }
            Err(e) => {
                let errors = match &e {
                    PlanError::Spec(errors) => errors.0.clone(),
                    other => vec![other.to_string()],
                };
                for line in &errors {
                    tracing::error!("spec not applied: {line}");
                }
                let revision = self.store.revision().unwrap_or(0);
                ReconcileStatus {
                    at,
                    ok: false,
                    revision,
                    summary: "not applied; the last good state keeps serving".into(),
                    errors,
                    dns_problems: Vec::new(),
                    source: String::new(),
                    plan: String::new(),
                    deferred: false,
                }
            }
        };
        if let Err(e) = self.snapshot.refresh(self.store.as_ref()) {
            tracing::error!(error = %e, "snapshot refresh failed; the previous one keeps serving");
        }
        // Told after the snapshot is fresh, so listeners of the hook see what was applied.
        if let (Some(after), Some(loaded)) = (&self.after_apply, applied_spec) {
            after(loaded);
        }
        crate::systemd::status(&format!(
            "store revision {}; last reconcile {}: {}{}",
            status.revision,
            status.at,
            if status.ok { "" } else { "FAILED, " },
            status.summary
        ));
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = status.clone();
        if let Some(path) = &self.status_file
            && let Ok(json) = serde_json::to_vec_pretty(&status)
        {
            let _ = std::fs::write(path, json);
        }
        status
    }

    /// Runs until shutdown: reconciles on spec changes and on `reload` (SIGHUP).
    pub async fn run(
        self: Arc<Self>,
        mut reload: mpsc::Receiver<()>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let (tx, mut changes) = mpsc::channel::<()>(16);
        let tx_missed = tx.clone();
        let _watcher = match watch_path(&self.spec_path, tx) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the spec for changes; SIGHUP still reloads");
                None
            }
        };
        // Saved between the first reconcile and the watcher: as if the watcher saw it.
        let missed = {
            let path = self.spec_path.clone();
            let now = tokio::task::spawn_blocking(move || spec_tag(&path))
                .await
                .ok()
                .flatten();
            now.is_some() && now != *self.read_tag.lock().unwrap_or_else(|p| p.into_inner())
        };
        if missed {
            let _ = tx_missed.send(()).await;
        }
        let mut poll = tokio::time::interval(STORE_POLL);
        // Another node's apply, heard through the cache (Redis) or the store (a MongoDB
        // change stream); None where there is nobody to hear from.
        let mut notices = self.cluster.cache.subscribe(crate::cache::REVISION_CHANNEL);
        let mut changes_in_store = self.store.watch_revision();
        // A spec kept in git: fetch on this beat (an unchanged commit plans nothing).
        let mut fetch = tokio::time::interval(
            self.git_interval
                .unwrap_or(Duration::from_secs(86_400 * 365)),
        );
        fetch.tick().await;
        // A zone edited behind ferrymail's back is put right on this beat.
        let mut resync =
            tokio::time::interval(self.dns_resync.unwrap_or(Duration::from_secs(86_400 * 365)));
        resync.tick().await;
        // Set when another node held the apply lock: this node's spec is applied once it
        // is free, not left waiting for the next edit.
        let mut retry = self
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .deferred
            .then(|| tokio::time::Instant::now() + DEFERRED_RETRY);
        let skipped = self
            .plan_soon
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(read) = skipped {
            let this = self.clone();
            let status =
                tokio::task::spawn_blocking(move || this.reconcile(Some(read), false)).await;
            if status.is_ok_and(|s| s.deferred) {
                retry = Some(tokio::time::Instant::now() + DEFERRED_RETRY);
            }
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(retry.unwrap_or_else(tokio::time::Instant::now)), if retry.is_some() => {
                    retry = self.reconcile_in_background().await;
                }
                _ = fetch.tick(), if self.git_interval.is_some() => {
                    if self.is_auto() {
                        retry = self.reconcile_in_background().await;
                    }
                }
                _ = resync.tick(), if self.dns_resync.is_some() => {
                    retry = self.reconcile_in_background().await;
                }
                Some(()) = changes.recv() => {
                    // Debounce: swallow the rest of the burst.
                    tokio::time::sleep(DEBOUNCE).await;
                    while changes.try_recv().is_ok() {}
                    if self.is_auto() {
                        retry = self.reconcile_in_background().await;
                    } else {
                        tracing::info!("the spec changed; not applied (apply = \"manual\"): `ferrymail plan` shows the change, `ferrymail apply` or a reload applies it");
                    }
                }
                Some(()) = reload.recv() => retry = self.reconcile_in_background().await,
                _ = poll.tick() => self.refresh_in_background().await,
                Some(_) = next(&mut notices) => self.refresh_in_background().await,
                Some(_) = next(&mut changes_in_store) => self.refresh_in_background().await,
                _ = shutdown.changed() => break,
            }
        }
    }

    fn is_auto(&self) -> bool {
        self.auto.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn refresh_in_background(self: &Arc<Self>) {
        let this = self.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let swapped = this.snapshot.refresh(this.store.as_ref());
            if swapped.is_ok_and(|s| s) && !this.is_auto() {
                this.adopt_outside_apply();
            }
        })
        .await;
    }

    /// Another process (`ferrymail apply`) applied: when the spec file now says exactly
    /// what the store holds, the settings read from it (admin users, ACME, backups)
    /// follow; an edit saved since is left for its own apply.
    fn adopt_outside_apply(&self) {
        let Some(after) = &self.after_apply else {
            return;
        };
        let Ok(loaded) = crate::source::load(&self.spec_path) else {
            return;
        };
        let targets = Targets {
            store: true,
            dns: false,
        };
        if let Ok(plan) = plan_targets(&loaded, Some(self.store.as_ref()), "spec", targets)
            && plan.is_empty()
        {
            after(Arc::new(loaded));
        }
    }

    /// Reconciles off the async threads; returns when to try again if another node was
    /// applying.
    async fn reconcile_in_background(self: &Arc<Self>) -> Option<tokio::time::Instant> {
        let this = self.clone();
        let status = tokio::task::spawn_blocking(move || this.reconcile_once()).await;
        status
            .is_ok_and(|s| s.deferred)
            .then(|| tokio::time::Instant::now() + DEFERRED_RETRY)
    }
}

/// The next message of an optional channel; pending forever without one (or once it
/// closed), so a `select!` branch on it simply never fires.
async fn next<T>(rx: &mut Option<mpsc::UnboundedReceiver<T>>) -> Option<T> {
    match rx {
        Some(r) => match r.recv().await {
            Some(v) => Some(v),
            None => {
                *rx = None;
                std::future::pending().await
            }
        },
        None => std::future::pending().await,
    }
}

/// Watches the spec's directory (editors replace files by rename, which a watch on the
/// file itself would miss) and signals on any change to a *.toml (or *.sieve) below it.
fn watch_path(spec: &Path, tx: mpsc::Sender<()>) -> notify::Result<notify::RecommendedWatcher> {
    let (dir, mode) = if spec.is_dir() {
        (spec.to_path_buf(), RecursiveMode::Recursive)
    } else {
        (
            spec.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf(),
            RecursiveMode::NonRecursive,
        )
    };
    let file = spec.file_name().map(|f| f.to_os_string());
    let is_dir = spec.is_dir();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        // Sieve scripts the spec names by file are part of it too (those beside the
        // spec file, or anywhere under a spec directory).
        let relevant = event.paths.iter().any(|p| {
            p.extension().is_some_and(|e| e == "sieve")
                || if is_dir {
                    p.extension().is_some_and(|e| e == "toml")
                } else {
                    p.file_name() == file.as_deref()
                }
        });
        if relevant && !event.kind.is_access() {
            let _ = tx.try_send(());
        }
    })?;
    watcher.watch(&dir, mode)?;
    Ok(watcher)
}

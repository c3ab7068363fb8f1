//! `ferrymail status`: the store's revision, what it holds, and the latest applies.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use crate::reconcile::watch::ReconcileStatus;
use crate::store::Kind;
use crate::store::unix_now;

use super::serve::ServeState;

/// What ACME issued for the server and how the last attempt went (only while a server
/// runs: an old failure of a stopped server is not news).
fn certificate_lines(
    loaded: &crate::spec::LoadedSpec,
    store: &dyn crate::store::Store,
    running: bool,
) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    if loaded.spec.tls.mode != crate::spec::TlsMode::Acme {
        return Ok(out);
    }
    let hostname = crate::reconcile::certs::certificate_id(&loaded.spec);
    if let Some(cert) = store.certificate(&hostname)? {
        let left = cert.not_after - unix_now();
        let when = if left >= 0 {
            format!("expires in {} days", left / 86_400)
        } else {
            format!("EXPIRED {} days ago", -left / 86_400)
        };
        let renew = crate::tls::acme::renewal_time(&cert);
        out.push(format!(
            "certificate: {} (acme), {when}, renewed from {} days before",
            cert.names.join(", "),
            (cert.not_after - renew) / 86_400
        ));
    }
    let acme: Option<crate::tls::acme::AcmeStatus> =
        std::fs::read(loaded.data_dir().join("acme.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
    if let (true, Some(a)) = (running, acme.filter(|a| !a.ok)) {
        out.push(format!(
            "ACME: FAILED at {}: {} (retrying in {} s; the current certificate keeps serving)",
            a.at,
            a.error.unwrap_or_default(),
            a.retry_in_secs.unwrap_or(0)
        ));
    }
    Ok(out)
}

/// Whether the spam filter answers now, and the accounts that reached their sending
/// limit in the last day (from the mail log).
fn spam_lines(loaded: &crate::spec::LoadedSpec, store: &dyn crate::store::Store) -> Vec<String> {
    let mut out = Vec::new();
    let filter = crate::spam::Filter::from_spec(&loaded.spec.spam, &loaded.base_dir);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    if let (Ok(Some(filter)), Ok(runtime)) = (&filter, &runtime) {
        let mut answers = Vec::new();
        if let Some(rspamd) = &filter.rspamd {
            let name = format!("rspamd at {}", rspamd.url);
            answers.push((name, runtime.block_on(rspamd.ping())));
        }
        if let Some(clamd) = &filter.clamd {
            answers.push((clamd.name.clone(), runtime.block_on(clamd.ping())));
        }
        for (name, answer) in answers {
            out.push(match answer {
                Ok(()) => format!("spam filter: {name} answers"),
                Err(e) => {
                    let meanwhile = match filter.on_error {
                        crate::spec::model::SpamOnError::Tempfail => {
                            "arriving mail is deferred (451) until it is back"
                        }
                        crate::spec::model::SpamOnError::Accept => {
                            "arriving mail is taken unscanned until it is back"
                        }
                    };
                    format!("! spam filter: NOT answering: {e}; {meanwhile}")
                }
            });
        }
    }
    // Asking must not create a mail log (see the queue's below).
    let has_log = store.connection().is_some() || loaded.data_dir().join("maillog.db").exists();
    if has_log
        && let Ok(log) = super::open_mail_log(loaded, Some(store), "cli")
        && let Ok(refused) = log.search("Sending limit reached", None, 1000)
    {
        let since = unix_now() - 86_400;
        let mut accounts: BTreeMap<&str, u32> = BTreeMap::new();
        // The refusal itself, not any record that quotes its words (an attachment name).
        let ours = |detail: &str| detail.starts_with("450 4.7.1 Sending limit reached");
        for e in refused.iter().filter(|e| e.at >= since && ours(&e.detail)) {
            *accounts.entry(e.mail_from.as_str()).or_default() += 1;
        }
        for (account, n) in accounts {
            out.push(format!(
                "! sending limit: mail from {account} was refused {n} time{} in the last day (a stolen password? see `ferrymail queue log`)",
                if n == 1 { "" } else { "s" }
            ));
        }
    }
    out
}

/// The last backup, the next, and the last failure if it came after the last success.
fn backup_lines(
    loaded: &crate::spec::LoadedSpec,
    store: &dyn crate::store::Store,
) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let Some(line) =
        crate::reconcile::backups::plan(&loaded.spec, &loaded.base_dir, Some(store), unix_now())
    else {
        return Ok(out);
    };
    let last = match (&line.last, &line.last_at, line.last_size) {
        (Some(id), Some(at), Some(size)) => {
            format!("last {id} at {at} ({})", crate::backup::human_bytes(size))
        }
        _ => "none yet".to_string(),
    };
    out.push(format!(
        "backups: {last}; next {} to {}",
        line.next.as_deref().unwrap_or("never"),
        line.target
    ));
    if let Some(run) = store.backup_runs(1)?.into_iter().next() {
        let at = crate::backup::rfc3339(run.started_at);
        match (run.ok, run.error) {
            (false, e) => out.push(format!("  FAILED at {at}: {}", e.unwrap_or_default())),
            (true, Some(e)) => out.push(format!("  warning at {at}: {e}")),
            (true, None) => {}
        }
    }
    if let Some(w) = line.warning {
        out.push(format!("  warning: {w}"));
    }
    Ok(out)
}

/// The server described by data_dir/serve.json, if its process is alive.
fn running_server(data_dir: &Path) -> Option<ServeState> {
    let state: ServeState =
        serde_json::from_slice(&std::fs::read(data_dir.join("serve.json")).ok()?).ok()?;
    // Signal 0 checks that the process exists without touching it.
    let alive = unsafe { libc::kill(state.pid as libc::pid_t, 0) } == 0;
    alive.then_some(state)
}

#[derive(clap::Args)]
pub struct Args {
    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

/// One line per node that shares the store: version, revision served, when it was last
/// seen, the cluster-wide locks it holds.
fn node_lines(nodes: &[crate::store::NodeInfo], now: i64) -> Vec<String> {
    let silent_after = 3 * super::serve::HEARTBEAT.as_secs() as i64;
    let mut out = Vec::new();
    if nodes.is_empty() {
        return out;
    }
    out.push(format!("nodes: {}", nodes.len()));
    for n in nodes {
        let ago = (now - n.last_seen).max(0);
        let seen = if ago > silent_after {
            format!(
                "NOT SEEN for {}",
                humantime::format_duration(std::time::Duration::from_secs(ago as u64))
            )
        } else {
            format!("last seen {ago} s ago")
        };
        let locks = if n.locks.is_empty() {
            String::new()
        } else {
            format!("; holds {}", n.locks.join(", "))
        };
        out.push(format!(
            "  {} (ferrymail {}, pid {}): {seen}, serving revision {}{locks}",
            n.name, n.version, n.pid, n.revision
        ));
    }
    out
}

/// When the running server applies the spec, and whether a saved edit waits for it.
fn apply_line(
    spec: &Path,
    loaded: &crate::spec::LoadedSpec,
    store: &dyn crate::store::Store,
) -> String {
    let mode = if loaded.spec.source.is_some() {
        loaded
            .spec
            .server
            .apply
            .unwrap_or(crate::spec::ApplyMode::Auto)
    } else {
        loaded.apply_mode()
    };
    let how = match mode {
        crate::spec::ApplyMode::Auto => "every save (or new commit) is applied",
        crate::spec::ApplyMode::Manual => "a saved edit waits for `ferrymail apply` or a reload",
    };
    let pending = match crate::spec::load(spec) {
        _ if loaded.spec.source.is_some() => String::new(),
        Ok(checked) => {
            let targets = crate::reconcile::Targets {
                store: true,
                dns: false,
            };
            match crate::reconcile::plan_targets(&checked, Some(store), "spec", targets) {
                Ok(plan) if plan.is_empty() => "; the spec file is applied".to_string(),
                Ok(plan) => {
                    let s = plan.summary();
                    format!(
                        "; not applied yet: {} to add, {} to change, {} to destroy (`ferrymail plan`)",
                        s.add, s.change, s.destroy
                    )
                }
                Err(_) => {
                    "; whether the file is applied is not known here (`ferrymail plan` says why)"
                        .into()
                }
            }
        }
        // Secrets the service's environment holds may be missing from this shell's: the
        // file is not necessarily wrong.
        Err(_) => {
            "; whether the file is applied is not known here (`ferrymail validate` says why)".into()
        }
    };
    format!("apply: {} ({how}){pending}", mode.as_str())
}

pub fn run(spec: &Path, args: Args) -> anyhow::Result<ExitCode> {
    // A broken spec must not hide the server's state.
    let loaded = crate::spec::load_unchecked(spec)?;
    let Some(store) = super::open_store(&loaded, false)? else {
        println!(
            "store: none yet in {} (run `ferrymail apply`)",
            loaded.data_dir().display()
        );
        return Ok(ExitCode::SUCCESS);
    };
    let (revision, objects) = store.objects()?;
    let mut counts: BTreeMap<&str, usize> = Kind::ALL.iter().map(|k| (k.as_str(), 0)).collect();
    for o in &objects {
        *counts.entry(o.object.kind.as_str()).or_default() += 1;
    }
    let applies = store.applies(5)?;
    let nodes = store.nodes()?;
    let data_dir = loaded.data_dir();
    let server = running_server(&data_dir);
    let reconcile: Option<ReconcileStatus> = std::fs::read(data_dir.join("reconcile.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    // Asking must not create a queue: SQLite's is a file that may not exist yet.
    let queue = (store.connection().is_some() || data_dir.join("queue.db").exists())
        .then(|| {
            super::open_queue(&loaded, Some(store.as_ref()), "cli")
                .ok()
                .and_then(|q| Some((q.pending().ok()?, q.held().ok()?)))
        })
        .flatten();
    if args.json {
        let v = serde_json::json!({
            "server": server.as_ref().map(|s| serde_json::json!({ "pid": s.pid, "started_at": s.started_at, "listeners": s.listeners })),
            "store": { "kind": store.kind(), "at": store.location(), "revision": revision },
            "objects": counts,
            "last_reconcile": reconcile,
            "queue": queue.map(|(n, _)| n),
            "queue_held": queue.map(|(_, held)| held),
            "applies": applies,
            "nodes": nodes,
            "certificate": certificate_lines(&loaded, store.as_ref(), server.is_some())?,
            "backups": backup_lines(&loaded, store.as_ref())?,
            "spam": spam_lines(&loaded, store.as_ref()),
            "apply": apply_line(spec, &loaded, store.as_ref()),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    match &server {
        Some(s) => {
            let list: Vec<String> = s
                .listeners
                .iter()
                .map(|(n, a)| format!("{n} {a}"))
                .collect();
            println!(
                "server: running (pid {}, since {}); listeners: {}",
                s.pid,
                s.started_at,
                list.join(", ")
            );
        }
        None => println!("server: not running"),
    }
    if let Some(r) = &reconcile {
        let verdict = if r.ok { "ok" } else { "FAILED" };
        println!(
            "last reconcile: {verdict} at {} (revision {}): {}",
            r.at, r.revision, r.summary
        );
        if !r.source.is_empty() {
            println!("  from {}", r.source);
        }
        for e in &r.errors {
            println!("  {e}");
        }
        if !r.dns_problems.is_empty() {
            println!("DNS not published:");
            for p in &r.dns_problems {
                println!("  {p}");
            }
        }
    }
    println!("{}", apply_line(spec, &loaded, store.as_ref()));
    for line in certificate_lines(&loaded, store.as_ref(), server.is_some())? {
        println!("{line}");
    }
    for line in backup_lines(&loaded, store.as_ref())? {
        println!("{line}");
    }
    for line in spam_lines(&loaded, store.as_ref()) {
        println!("{line}");
    }
    if let Some((n, held)) = queue {
        println!("queue: {n} deliveries waiting");
        if held > 0 {
            println!(
                "! queue: {held} held (processing failed; see `ferrymail queue list`, then `queue retry ID` or `queue remove ID`)"
            );
        }
    }
    println!(
        "store: {} {} (revision {revision})",
        store.kind(),
        store.location()
    );
    let list: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    println!("objects: {}", list.join(", "));
    for line in node_lines(&nodes, crate::store::unix_now()) {
        println!("{line}");
    }
    match applies.first() {
        None => println!("last apply: never (run `ferrymail apply`)"),
        Some(_) => {
            println!("recent applies:");
            for a in &applies {
                println!(
                    "  revision {} at {}: +{} ~{} -{} from {}",
                    a.revision, a.applied_at, a.added, a.changed, a.destroyed, a.source
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

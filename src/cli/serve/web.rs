//! The web side of `serve`: http, https and the CalDAV/CardDAV ports, with what they
//! answer (admin, API, autoconfig, MTA-STS, metrics) built from the shared state.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use tokio::sync::mpsc;

use super::connections::ConnectionLimits;
use super::services::Services;
use super::shared::Shared;
use crate::spec::LoadedSpec;
use crate::store::Store;

/// Starts the declared web listeners. `ready` turns true once the server is serving
/// (`/readyz`); `reload` is how the admin asks for an apply.
pub async fn start(
    services: &mut Services,
    shared: &Shared,
    loaded: &LoadedSpec,
    limits: &ConnectionLimits,
    ready: Arc<AtomicBool>,
    reload: mpsc::Sender<()>,
) -> anyhow::Result<()> {
    let declared = &loaded.spec.listeners;
    let metrics: crate::http::MetricsSource = {
        let (log, logins, reconciler) = (
            shared.log.clone(),
            shared.logins.clone(),
            shared.reconciler.clone(),
        );
        let (queue, certificates, store) = (
            shared.queue.clone(),
            shared.certificates.clone(),
            shared.store.clone(),
        );
        let backups = shared.backups.clone();
        Arc::new(move || {
            use std::sync::atomic::Ordering::Relaxed;
            let (auth_failures, auth_throttled) = logins.failure_counts();
            crate::metrics::Values {
                messages: log
                    .counts()
                    .into_iter()
                    .map(|(event, n)| (event.as_str(), n))
                    .collect(),
                auth_failures,
                auth_throttled,
                reconcile_runs: reconciler.runs.load(Relaxed),
                reconcile_failures: reconciler.failures.load(Relaxed),
                store_revision: reconciler.snapshot.get().revision,
                queue_deliveries: queue.pending().unwrap_or(0),
                queue_oldest_age: queue
                    .oldest_received_at()
                    .ok()
                    .flatten()
                    .map(|at| crate::store::unix_now() - at),
                certificates: certificates
                    .served()
                    .into_iter()
                    .map(|c| {
                        (
                            c.names.first().cloned().unwrap_or_default(),
                            c.source,
                            c.not_after,
                        )
                    })
                    .collect(),
                last_backup: store
                    .last_good_backup()
                    .ok()
                    .flatten()
                    .map(|run| run.started_at),
                backups_declared: backups.load().is_some(),
            }
        })
    };
    let overview: Arc<dyn Fn() -> crate::http::admin::Overview + Send + Sync> = {
        let (reconciler, queue, certificates) = (
            shared.reconciler.clone(),
            shared.queue.clone(),
            shared.certificates.clone(),
        );
        let hostname = shared.hostname.clone();
        // Every declared listener is bound by the time anyone can ask (or serve stopped).
        let listeners: Vec<(String, String)> = [
            ("mx", declared.mx),
            ("submission", declared.submission),
            ("submissions", declared.submissions),
            ("imap", declared.imap),
            ("imaps", declared.imaps),
            ("pop3", declared.pop3),
            ("pop3s", declared.pop3s),
            ("http", declared.http),
            ("https", declared.https),
            ("caldav", declared.caldav),
            ("carddav", declared.carddav),
            ("managesieve", declared.managesieve),
        ]
        .into_iter()
        .filter_map(|(name, addr)| addr.map(|a| (name.to_string(), a.to_string())))
        .collect();
        Arc::new(move || {
            let status = reconciler
                .status
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            crate::http::admin::Overview {
                hostname: hostname.clone(),
                listeners: listeners.clone(),
                revision: reconciler.snapshot.get().revision,
                auto_apply: reconciler.auto.load(std::sync::atomic::Ordering::Relaxed),
                source: status.source.clone(),
                last_reconcile: (!status.at.is_empty()).then(|| {
                    (
                        status.at.clone(),
                        status.ok,
                        status.summary.clone(),
                        status.errors.clone(),
                    )
                }),
                dns_problems: status.dns_problems.clone(),
                plan: status.plan.clone(),
                queue_deliveries: queue.pending().unwrap_or(0),
                certificates: certificates.served(),
            }
        })
    };
    let http_state = crate::http::AppState {
        challenges: shared.challenges.clone(),
        site: shared.site.clone(),
        snapshot: shared.snapshot.clone(),
        ready,
        metrics,
        admin: Arc::new(crate::http::admin::AdminState {
            sessions: Default::default(),
            cache: shared.cache.clone(),
            logins: shared.logins.clone(),
            log: shared.log.clone(),
            mailboxes: shared.mailboxes.clone(),
            overview,
            queue: shared.queue.clone(),
            wake: shared.spool.committed.clone(),
            store: shared.store.clone(),
            plan: dry_run_plan(shared.served.clone(), shared.store.clone()),
            reload,
            resolver: shared.resolver.clone(),
            dns_checks: Default::default(),
            editor: Arc::new(crate::reconcile::edits::Editor {
                spec_path: shared.spec_path.clone(),
                store: shared.store.clone(),
                reconciler: shared.reconciler.clone(),
                lock: Default::default(),
            }),
        }),
        dav: Arc::new(crate::dav::Dav::new(
            crate::collections::Collections::new(shared.mailboxes.clone())
                .context("preparing the calendars and contacts store")?,
            shared.logins.clone(),
            shared.snapshot.clone(),
        )),
    };
    if let Some(addr) = declared.http {
        let listener = services.bind("http", addr).await?;
        services.start(crate::http::serve(
            listener,
            http_state.clone(),
            limits.for_listener("http"),
            services.shutdown(),
        ));
    }
    if let Some(addr) = declared.https {
        let listener = services.bind("https", addr).await?;
        services.start(crate::http::serve_tls(
            listener,
            shared.certificates.server_config(),
            http_state.clone(),
            limits.for_listener("https"),
            services.shutdown(),
        ));
    }
    for (name, addr) in [("caldav", declared.caldav), ("carddav", declared.carddav)] {
        let Some(addr) = addr else { continue };
        let listener = services.bind(name, addr).await?;
        services.start(crate::http::serve_dav_tls(
            listener,
            shared.certificates.server_config(),
            http_state.clone(),
            limits.for_listener(name),
            services.shutdown(),
        ));
    }
    Ok(())
}

/// What the http side tells clients: the hostname, the mail services on offer (by the
/// port each listener binds), and the MTA-STS policy when https serves one.
pub fn http_site(
    loaded: &LoadedSpec,
    store: &dyn Store,
    snapshot: &crate::snapshot::Snapshot,
) -> crate::http::Site {
    use crate::http::{Security, Service, ServiceKind};
    let spec = &loaded.spec;
    let l = &spec.listeners;
    let services = [
        (l.imaps, ServiceKind::Imap, Security::Implicit),
        (l.imap, ServiceKind::Imap, Security::StartTls),
        (l.pop3s, ServiceKind::Pop3, Security::Implicit),
        (l.pop3, ServiceKind::Pop3, Security::StartTls),
        (l.submissions, ServiceKind::Submission, Security::Implicit),
        (l.submission, ServiceKind::Submission, Security::StartTls),
    ]
    .into_iter()
    .filter_map(|(addr, kind, security)| {
        addr.map(|a| Service {
            kind,
            port: a.port(),
            security,
        })
    })
    .collect();
    let hostname = spec
        .server
        .hostname
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let admins: Vec<(String, String)> = spec
        .admin
        .users
        .iter()
        .filter_map(|(name, user)| {
            let path = || crate::spec::SpecPath::keys(&["admin", "users", name, "password"]);
            match crate::reconcile::desired::password_hash(&user.password, loaded, &path) {
                Ok(hash) => Some((name.clone(), hash)),
                Err(e) => {
                    tracing::error!(error = %e.message, user = %name, "admin user left out");
                    None
                }
            }
        })
        .collect();
    // Only where a web admin is served at all.
    let serves_admin = spec.listeners.http.is_some() || spec.listeners.https.is_some();
    let first_boot_password = if spec.admin.users.is_empty() && serves_admin {
        first_boot_password(&loaded.data_dir())
    } else {
        None
    };
    // The records each domain needs, with its DKIM keys as the store has them now.
    let records = spec
        .domains
        .keys()
        .filter_map(|name| crate::address::normalize_domain(name).ok())
        .map(|name| {
            let keys = super::super::dns::dkim_keys(store, snapshot, &name).unwrap_or_default();
            let list = crate::dns::records::for_domain(spec, &name, &keys);
            (name, list)
        })
        .collect();
    crate::http::Site {
        admins,
        first_boot_password,
        records,
        caldav_port: l.caldav.or(l.https).map(|a| a.port()),
        carddav_port: l.carddav.or(l.https).map(|a| a.port()),
        api_tokens: spec
            .admin
            .api_tokens
            .iter()
            .filter_map(|(name, token)| match token.resolve(&loaded.base_dir) {
                Ok(t) if t.expose().trim().len() >= 32 => Some((name.clone(), t.expose().trim().to_string())),
                Ok(_) => {
                    tracing::error!(token = %name, "API token left out: it needs at least 32 characters");
                    None
                }
                Err(e) => {
                    tracing::error!(token = %name, error = %e, "API token left out");
                    None
                }
            })
            .collect(),
        backups: spec.backups.as_ref().map(|b| {
            let target = crate::backup::TargetConfig::public(
                &b.target,
                &loaded.base_dir,
                b.endpoint.clone(),
            )
            .map_or_else(|_| b.target.clone(), |t| t.to_string());
            (b.schedule.clone(), target)
        }),
        mta_sts: l.https.map(|_| {
            crate::dns::mta_sts::policy(
                spec.mta_sts.mode.as_str(),
                &hostname,
                spec.mta_sts.max_age_secs(),
            )
        }),
        hostname,
        services,
    }
}

/// What the admin's dry run needs of the applied spec: its files (for the secret
/// references it uses) and its directory. Not the parsed spec, which would stay in memory
/// for the server's life: with 100,000 aliases, most of an idle server's heap.
pub struct ServedSpec {
    base_dir: std::path::PathBuf,
    sources: Vec<crate::spec::location::Source>,
}

impl ServedSpec {
    pub fn of(loaded: &LoadedSpec) -> ServedSpec {
        ServedSpec {
            base_dir: loaded.base_dir.clone(),
            sources: loaded.sources.clone(),
        }
    }
}

/// A dry run of a spec given as text, against the live store (DNS providers are not
/// asked): for the API's and the admin's plan. Relative paths are read from the served
/// spec's directory, and the posted spec may use only the secret references the served
/// one uses: a plan must not become a way to read the server's files or environment.
fn dry_run_plan(
    served: Arc<arc_swap::ArcSwap<ServedSpec>>,
    store: Arc<dyn Store>,
) -> Arc<dyn Fn(String) -> crate::http::api::PlanOutcome + Send + Sync> {
    Arc::new(move |text: String| {
        let failed = |errors: Vec<String>| crate::http::api::PlanOutcome {
            ok: false,
            text: String::new(),
            errors,
            add: 0,
            change: 0,
            destroy: 0,
        };
        let current = served.load_full();
        // Parsed without being judged first: judging resolves secret files.
        let unchecked = match crate::spec::load_text_unchecked(
            "posted-spec.toml",
            text.clone(),
            &current.base_dir,
        ) {
            Ok(loaded) => loaded,
            Err(errors) => return failed(errors.0),
        };
        let allowed =
            match crate::spec::load_sources_unchecked(current.sources.clone(), &current.base_dir) {
                Ok(served) => secret_references(&served.spec),
                Err(errors) => return failed(errors.0),
            };
        let foreign: Vec<String> = secret_references(&unchecked.spec)
            .difference(&allowed)
            .map(|(kind, value)| {
                format!(
                    "posted-spec.toml: {{ {kind} = {value:?} }} is not a secret reference the served spec uses; a posted spec may use only those (nothing else is read)"
                )
            })
            .collect();
        if !foreign.is_empty() {
            return failed(foreign);
        }
        let loaded = match crate::spec::load_text("posted-spec.toml", text, &current.base_dir) {
            Ok(loaded) => loaded,
            Err(errors) => return failed(errors.0),
        };
        let targets = crate::reconcile::Targets {
            store: true,
            dns: false,
        };
        match crate::reconcile::plan_targets(&loaded, Some(store.as_ref()), "posted spec", targets)
        {
            Ok(plan) => {
                let s = plan.summary();
                crate::http::api::PlanOutcome {
                    ok: true,
                    text: crate::reconcile::render::text(
                        &plan,
                        &crate::reconcile::render::Style { color: false },
                    ),
                    errors: Vec::new(),
                    add: s.add,
                    change: s.change,
                    destroy: s.destroy,
                }
            }
            Err(crate::reconcile::PlanError::Spec(errors)) => failed(errors.0),
            Err(e) => failed(vec![e.to_string()]),
        }
    })
}

/// Every `{ env = … }` and `{ file = … }` a spec holds (secrets, password references).
fn secret_references(spec: &crate::spec::Spec) -> std::collections::BTreeSet<(String, String)> {
    fn walk(value: &serde_json::Value, out: &mut std::collections::BTreeSet<(String, String)>) {
        match value {
            serde_json::Value::Object(map) => {
                for kind in ["env", "file"] {
                    if let Some(serde_json::Value::String(v)) = map.get(kind) {
                        out.insert((kind.to_string(), v.clone()));
                    }
                }
                map.values().for_each(|v| walk(v, out));
            }
            serde_json::Value::Array(list) => list.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = std::collections::BTreeSet::new();
    if let Ok(value) = serde_json::to_value(spec) {
        walk(&value, &mut out);
    }
    out
}

/// The web admin's password for "admin" until the spec declares an administrator: made
/// once into data_dir/admin.password (0600), read back afterwards. Only where it is kept
/// is said: a password printed goes into the journal and log files for anyone who reads
/// them.
fn first_boot_password(data_dir: &Path) -> Option<String> {
    let path = data_dir.join("admin.password");
    // An emptied file is a request for a new password, never an empty one.
    if let Ok(text) = std::fs::read_to_string(&path)
        && text.trim().len() >= 16
    {
        return Some(text.trim().to_string());
    }
    let password = crate::http::admin::new_password();
    if let Err(e) = super::super::write_private(&path, format!("{password}\n").as_bytes()) {
        tracing::error!(error = %e, "no first-boot admin password");
        return None;
    }
    tracing::info!(
        "web admin: log in as \"admin\" with the password in {} (readable by this server's user only); declare [admin.users] in the spec to replace it",
        path.display()
    );
    Some(password)
}

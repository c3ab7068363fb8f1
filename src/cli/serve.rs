//! `ferrymail serve`: the reconciler loop, the declared listeners and the delivery
//! workers in one process; SIGHUP reloads the spec, SIGTERM drains and exits.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::mailbox::Mailboxes;
use crate::queue::Spool;
use crate::queue::outbound::Outbound;
use crate::queue::worker::Worker;
use crate::reconcile::watch::{ReconcileStatus, Reconciler};
use crate::routing::srs::Srs;
use crate::smtp::{MxContext, serve_mx};
use crate::snapshot::SnapshotHandle;
use crate::spec::{LoadedSpec, TlsMode};
use crate::store::Store;

/// What `status` reads about a running server (data_dir/serve.json).
#[derive(Serialize, serde::Deserialize, Default)]
pub struct ServeState {
    pub pid: u32,
    pub started_at: String,
    pub listeners: Vec<(String, String)>,
}

/// What the ACME manager needs from the spec: the CA, the account, and the names.
fn acme_settings(
    loaded: &crate::spec::LoadedSpec,
    acme: &crate::spec::Acme,
) -> anyhow::Result<crate::tls::acme::Settings> {
    use crate::tls::acme::Challenge;
    let names = crate::reconcile::certs::acme_names(&loaded.spec);
    let eab = match (&acme.eab_kid, &acme.eab_hmac_key) {
        (Some(kid), Some(key)) => {
            use base64::Engine as _;
            let key = key
                .resolve(&loaded.base_dir)
                .context("tls.acme.eab_hmac_key")?;
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(key.expose().trim_end_matches('='))
                .context("tls.acme.eab_hmac_key is not base64url")?;
            Some((kid.clone(), bytes))
        }
        _ => None,
    };
    Ok(crate::tls::acme::Settings {
        directory: acme.directory.clone(),
        contact: acme.contact.clone(),
        challenge: match acme.challenge {
            crate::spec::AcmeChallenge::Http01 => Challenge::Http01,
            crate::spec::AcmeChallenge::TlsAlpn01 => Challenge::TlsAlpn01,
            crate::spec::AcmeChallenge::Dns01 => Challenge::Dns01,
        },
        ca_file: acme.ca_file.as_ref().map(|f| loaded.base_dir.join(f)),
        eab,
        names,
        dns01: dns01(loaded).map(Arc::new),
    })
}

/// The DNS providers that can publish DNS-01 answers, by mail domain.
fn dns01(loaded: &crate::spec::LoadedSpec) -> Option<crate::tls::acme::Dns01> {
    let spec = &loaded.spec;
    let mut domains: Vec<(String, Arc<dyn crate::dns::provider::Provider>)> = Vec::new();
    for (name, domain) in &spec.domains {
        let (Ok(name), Some(pname)) = (
            crate::address::normalize_domain(name),
            domain.dns_provider.as_ref(),
        ) else {
            continue;
        };
        let Some(declared) = spec.dns.providers.get(pname) else {
            continue;
        };
        match crate::dns::provider::from_spec(pname, declared, &loaded.base_dir, spec.dns.resolver)
        {
            Ok(p) if p.writes() => domains.push((name, Arc::from(p))),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "this provider cannot publish DNS-01 answers"),
        }
    }
    (!domains.is_empty()).then_some(crate::tls::acme::Dns01 {
        domains,
        resolver: spec.dns.resolver,
    })
}

#[derive(clap::Args)]
pub struct Args {
    /// This node's name among the nodes sharing one store (status, locks); unique per
    /// node. Default: the host name.
    #[arg(long, env = "FERRYMAIL_NODE", value_name = "NAME")]
    node: Option<String>,
}

pub fn run(spec: &Path, args: Args) -> anyhow::Result<ExitCode> {
    crate::tls::install_crypto_provider();
    let node = match args.node {
        Some(name) if !name.trim().is_empty() => name.trim().to_string(),
        _ => host_name(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Four times tokio's 2 MiB: what a message's structure costs to walk is bounded
        // (limits::MIME_DEPTH), and this keeps that bound far from the end of the stack.
        // Only the pages a thread touches are ever used.
        .thread_stack_size(8 << 20)
        .build()
        .context("starting the runtime")?;
    let served = runtime.block_on(serve(spec.to_path_buf(), node));
    // The services have drained; whatever still runs (a client's command stuck in a
    // blocking call, say) must not keep the process from ending.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    served?;
    Ok(ExitCode::SUCCESS)
}

/// An exclusive lock (flock) on data_dir/serve.lock, which also names the holder's pid.
fn lock_data_dir(data_dir: &Path) -> anyhow::Result<std::fs::File> {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;
    let path = data_dir.join("serve.lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        bail!(
            "another `ferrymail serve` (pid {}) is running on the data dir {}; stop it first",
            holder.trim(),
            data_dir.display()
        );
    }
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())?;
    Ok(file)
}

/// The operating system's host name ("localhost" if it has none).
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(name) if rc == 0 && !name.is_empty() => name.to_string(),
        _ => "localhost".into(),
    }
}

async fn serve(spec_path: PathBuf, node: String) -> anyhow::Result<()> {
    // The first load must succeed: the listeners and data dir come from it. (A spec kept
    // in git falls back to its last good commit.)
    let loaded = match crate::source::load_for_serving(&spec_path) {
        Ok(loaded) => loaded,
        Err(crate::source::SourceError::Spec(errors)) => return Err(errors.into()),
        Err(other) => return Err(other.into()),
    };
    let data_dir = loaded.data_dir();
    // The queue, mail log, mailboxes and keys live here whichever store is used (the
    // SQLite store would make it; a MongoDB one does not).
    if !data_dir.exists() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&data_dir)
            .with_context(|| format!("creating the data dir {}", data_dir.display()))?;
    }
    // Held until the process ends: a second server on this data dir would apply its own
    // spec under the first one's feet, and tell `status` it is gone when it exits.
    let _data_dir_lock = lock_data_dir(&data_dir)?;
    let file_descriptors = crate::listen::raise_file_limit();
    let hostname = loaded.spec.server.hostname.clone();
    let store: Arc<dyn Store> =
        super::open_store(&loaded, true)?.context("the store could not be created")?;
    let snapshot =
        Arc::new(SnapshotHandle::new(store.as_ref()).context("building the first snapshot")?);
    let cache = super::open_cache(&loaded)?;
    let instance = node_instance(&data_dir)?;
    refuse_a_twin(store.as_ref(), &node, &instance)?;
    let cluster = crate::cache::Cluster::new(cache.clone(), node);
    let status = Arc::new(Mutex::new(ReconcileStatus::default()));
    // The certificate manager's settings, kept in step with every applied spec.
    let acme = match (loaded.spec.tls.mode, &loaded.spec.tls.acme) {
        (TlsMode::Acme, Some(acme)) => Some(Arc::new(arc_swap::ArcSwap::from_pointee(
            acme_settings(&loaded, acme)?,
        ))),
        _ => None,
    };
    // The backup schedule and target, likewise (None: the spec has no [backups]).
    // A backup setting that cannot be read (a missing secret) must not keep mail from
    // being served: it is logged and shown in status as a failed backup.
    let backups = Arc::new(arc_swap::ArcSwapOption::from(
        match super::backup::settings(&loaded) {
            Ok(settings) => settings.map(Arc::new),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "backups are off");
                let _ = store.record_backup(&crate::store::BackupRun {
                    id: String::new(),
                    started_at: crate::store::unix_now(),
                    target: loaded
                        .spec
                        .backups
                        .as_ref()
                        .map(|b| b.target.clone())
                        .unwrap_or_default(),
                    ok: false,
                    size: 0,
                    sha256: String::new(),
                    duration_ms: 0,
                    error: Some(format!("backups are off: {e:#}")),
                });
                None
            }
        },
    ));
    // What the http side says about the server (autoconfig, MTA-STS), likewise.
    let site = Arc::new(arc_swap::ArcSwap::from_pointee(http_site(
        &loaded,
        store.as_ref(),
        &snapshot.get(),
    )));
    // The spec being served: a posted spec's dry run reads relative paths from its
    // directory and may use only its secret references.
    let served = Arc::new(arc_swap::ArcSwap::from_pointee(loaded.clone()));
    let after_apply: crate::reconcile::watch::AfterApply = {
        let acme = acme.clone();
        let backups = backups.clone();
        let (site, store, served) = (site.clone(), store.clone(), served.clone());
        let snapshot = snapshot.clone();
        Box::new(move |loaded: &crate::spec::LoadedSpec| {
            // Called with the snapshot already refreshed: its DKIM keys are the new ones.
            site.store(Arc::new(http_site(loaded, store.as_ref(), &snapshot.get())));
            served.store(Arc::new(loaded.clone()));
            if let (Some(swap), Some(acme)) = (&acme, &loaded.spec.tls.acme) {
                match acme_settings(loaded, acme) {
                    Ok(settings) => swap.store(Arc::new(settings)),
                    Err(e) => tracing::error!(error = %e, "ACME settings not updated"),
                }
            }
            match super::backup::settings(loaded) {
                Ok(settings) => backups.store(settings.map(Arc::new)),
                Err(e) => tracing::error!(error = %e, "backup settings not updated"),
            }
        })
    };
    let reconciler = Arc::new(Reconciler {
        spec_path: spec_path.clone(),
        store: store.clone(),
        snapshot: snapshot.clone(),
        status,
        status_file: Some(data_dir.join("reconcile.json")),
        dns_resync: loaded
            .spec
            .dns
            .resync_secs()
            .map(std::time::Duration::from_secs),
        after_apply: Some(after_apply),
        git_interval: crate::source::interval(&spec_path),
        cluster: cluster.clone(),
        runs: Default::default(),
        failures: Default::default(),
        auto: (loaded.apply_mode() == crate::spec::ApplyMode::Auto).into(),
        read_tag: Default::default(),
        running: Default::default(),
    });
    let first = {
        let r = reconciler.clone();
        tokio::task::spawn_blocking(move || r.reconcile_once()).await?
    };
    // A spec from git that is broken now still serves its last good commit, applied
    // before; a local spec must apply before the server starts.
    if !first.ok && loaded.origin.is_none() {
        bail!(
            "the spec could not be applied:\n{}",
            first.errors.join("\n")
        );
    }

    // One resolver for every TLS listener; what it serves changes without a restart.
    let mut _tls_files_watch = None;
    let certificates = match loaded.spec.tls.mode {
        TlsMode::Files => {
            let files = loaded
                .spec
                .tls
                .files
                .as_ref()
                .context("tls.mode = \"files\" needs [tls.files]")?;
            let base = &loaded.base_dir;
            let (cert, key) = (base.join(&files.cert), base.join(&files.key));
            let first = crate::tls::from_files(&cert, &key, "files")?;
            let certs = crate::tls::Certificates::new(first);
            match crate::tls::files::watch(certs.clone(), cert, key) {
                Ok(w) => _tls_files_watch = Some(w),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch the certificate files; a restart picks up new ones")
                }
            }
            certs
        }
        TlsMode::SelfSigned => {
            let public = loaded
                .spec
                .listeners
                .all()
                .iter()
                .any(|a| !a.ip().is_loopback());
            if public {
                tracing::warn!(
                    "tls.mode = \"self-signed\" on a listener others can reach: clients will warn and other servers cannot verify it; use \"acme\" or \"files\""
                );
            }
            crate::tls::Certificates::new(crate::tls::self_signed(&hostname, &data_dir)?)
        }
        // Serves at once with a self-signed certificate; the ACME manager (started
        // below) switches to the issued one as soon as it has it.
        TlsMode::Acme => {
            crate::tls::Certificates::new(crate::tls::self_signed(&hostname, &data_dir)?)
        }
    };
    let challenges = Arc::new(match store.connection() {
        Some(mongo) => crate::tls::acme::Challenges::shared(mongo),
        None => crate::tls::acme::Challenges::default(),
    });
    let tls = Some(certificates.server_config());

    let resolver = match crate::dns::resolver(loaded.spec.dns.resolver) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(error = %e, "no DNS: MX lookups and SPF/DKIM/DMARC checks are unavailable");
            None
        }
    };
    let signing = Arc::new(crate::dkim::signing::SigningKeys::new(store.clone()));
    // Nodes sharing a store share the SRS key: a bounce to an address rewritten by one
    // node may come back to any other.
    // A new key has issued no short hashes: none are ever taken back.
    let mut new_srs_key = store.connection().is_none() && !data_dir.join("srs.key").exists();
    let srs_key = match store.connection() {
        Some(mongo) => {
            let mut fresh = vec![0u8; 32];
            aws_lc_rs::rand::fill(&mut fresh)
                .map_err(|_| anyhow::anyhow!("no system randomness"))?;
            let key = mongo
                .shared_secret("srs", &fresh)
                .context("reading the SRS key from MongoDB")?;
            // Our random bytes came back: this node made the cluster's key just now.
            new_srs_key = key == fresh;
            key
        }
        None => private_key_file(&data_dir.join("srs.key"))?,
    };
    let srs =
        Srs::new(srs_key).accepting_legacy_until(srs_legacy_until(&store, &data_dir, new_srs_key)?);
    let queue = super::open_queue(&loaded, Some(store.as_ref()), &cluster.node)?;
    let released = queue.release_leases()?;
    if released > 0 {
        tracing::info!(
            released,
            "deliveries interrupted by the last shutdown are due again"
        );
    }
    let spool = Spool::start(queue.clone());
    let log = Arc::new(super::open_mail_log(
        &loaded,
        Some(store.as_ref()),
        &cluster.node,
    )?);
    // Beside a MongoDB store the mailboxes are there too, so any node serves any account.
    let mailboxes = match store.connection() {
        Some(mongo) => Mailboxes::in_mongo(&data_dir, master_key(&loaded, &data_dir)?, mongo)
            .context("opening the mailboxes in MongoDB")?,
        None => Mailboxes::new(&data_dir, master_key(&loaded, &data_dir)?),
    };
    relay_mailbox_changes(&mailboxes, &cache, &cluster.node);
    crate::selfservice::settings::prepare(&mailboxes)
        .context("preparing the owners' settings in MongoDB")?;
    let logins = Arc::new(crate::login::Logins::new(
        snapshot.clone(),
        cache.clone(),
        Some(mailboxes.clone()),
    ));
    let (shutdown_tx, shutdown) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();

    let worker = Arc::new(Worker {
        db: queue.clone(),
        spool: spool.clone(),
        outbound: Outbound::new(
            hostname.clone(),
            loaded.spec.delivery.relay.clone(),
            resolver.clone(),
        ),
        mailboxes: mailboxes.clone(),
        snapshot: snapshot.clone(),
        srs: srs.clone(),
        hostname: hostname.clone(),
        http: reqwest::Client::builder()
            .build()
            .context("building the webhook client")?,
        webhook_key: webhook_key(&loaded)?,
        log: log.clone(),
        cache: cache.clone(),
        signing: signing.clone(),
        expire_after: loaded.spec.delivery.expire_after_secs() as i64,
        delay_warning: loaded.spec.delivery.delay_warning_secs() as i64,
        destinations: Default::default(),
        sieve: Arc::new(crate::sieve::Interpreter::new(&hostname)),
    });
    tasks.spawn(worker.run(spool.committed.clone(), shutdown.clone()));

    let mut listeners = Vec::new();
    let declared = &loaded.spec.listeners;
    let max_size = snapshot
        .get()
        .domains
        .values()
        .map(|d| d.max_message_size)
        .max()
        .unwrap_or(50_000_000);
    let limits = &loaded.spec.limits;
    let max_connections = limits
        .max_connections
        .map(|n| n as usize)
        .unwrap_or_else(|| crate::listen::default_max_connections(file_descriptors));
    tracing::info!(file_descriptors, max_connections, "connection limits");
    let all_connections = crate::listen::Global::new(max_connections);
    let connection_limits = |name: &'static str| {
        let logs_in = matches!(
            name,
            "submission" | "submissions" | "imap" | "imaps" | "pop3" | "pop3s" | "managesieve"
        );
        crate::listen::Limits::with(
            name,
            crate::listen::Settings {
                per_minute: limits.connections_per_minute,
                per_ip: limits.connections_per_ip,
                unauthenticated_per_ip: if logs_in {
                    limits.unauthenticated_per_ip
                } else {
                    0
                },
                listener_max: (max_connections * 3 / 4).max(1),
            },
            all_connections.clone(),
            cache.clone(),
        )
    };
    let smtp_listeners = [
        ("mx", declared.mx, None, false),
        (
            "submission",
            declared.submission,
            Some(logins.clone()),
            false,
        ),
        (
            "submissions",
            declared.submissions,
            Some(logins.clone()),
            true,
        ),
    ];
    let message_memory = crate::limits::MessageMemory::new(limits.message_memory());
    let spam = crate::spam::Filter::from_spec(&loaded.spec.spam, &loaded.base_dir)
        .context("[spam]")?
        .map(Arc::new);
    for (name, addr, logins, implicit_tls) in smtp_listeners {
        let Some(addr) = addr else { continue };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the {name} listener to {addr}"))?;
        let ctx = Arc::new(MxContext {
            hostname: hostname.clone(),
            snapshot: snapshot.clone(),
            spool: spool.clone(),
            tls: tls.clone(),
            srs: srs.clone(),
            max_message_size: max_size,
            authenticator: resolver.clone().map(mail_auth::MessageAuthenticator),
            signing: signing.clone(),
            log: log.clone(),
            cache: cache.clone(),
            limits: connection_limits(name),
            logins,
            mailboxes: mailboxes.clone(),
            session_limits: limits.smtp(),
            message_memory: message_memory.clone(),
            spam: spam.clone(),
        });
        tasks.spawn(serve_mx(listener, ctx, implicit_tls, shutdown.clone()));
        listeners.push((name.to_string(), addr.to_string()));
        tracing::info!(%addr, "{name} listening");
    }
    let imap_ctx = Arc::new(crate::imap::ImapContext {
        hostname: hostname.clone(),
        snapshot: snapshot.clone(),
        mailboxes: mailboxes.clone(),
        logins: logins.clone(),
        tls: tls.as_deref().map(crate::tls::without_tickets),
        max_append: u32::try_from(max_size).unwrap_or(u32::MAX),
        learner: spam
            .as_ref()
            .and_then(|filter| filter.rspamd.clone())
            .map(|rspamd| crate::spam::Learner::start(rspamd, mailboxes.clone())),
    });
    for (name, addr, implicit_tls) in [
        ("imap", declared.imap, false),
        ("imaps", declared.imaps, true),
    ] {
        let Some(addr) = addr else { continue };
        if implicit_tls && tls.is_none() {
            bail!("listeners.imaps needs a certificate: set [tls] mode");
        }
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the {name} listener to {addr}"))?;
        tasks.spawn(crate::imap::serve_imap(
            listener,
            imap_ctx.clone(),
            connection_limits(name),
            implicit_tls,
            shutdown.clone(),
        ));
        listeners.push((name.to_string(), addr.to_string()));
        tracing::info!(%addr, "{name} listening");
    }
    let pop3_ctx = Arc::new(crate::pop3::Pop3Context {
        hostname: hostname.clone(),
        mailboxes: mailboxes.clone(),
        logins: logins.clone(),
        tls: tls.clone(),
        locked: Default::default(),
    });
    for (name, addr, implicit_tls) in [
        ("pop3", declared.pop3, false),
        ("pop3s", declared.pop3s, true),
    ] {
        let Some(addr) = addr else { continue };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the {name} listener to {addr}"))?;
        tasks.spawn(crate::pop3::serve_pop3(
            listener,
            pop3_ctx.clone(),
            connection_limits(name),
            implicit_tls,
            shutdown.clone(),
        ));
        listeners.push((name.to_string(), addr.to_string()));
        tracing::info!(%addr, "{name} listening");
    }
    if let Some(addr) = declared.managesieve {
        if let Some(mongo) = mailboxes.mongo() {
            crate::sieve::store::prepare_mongo(mongo)
                .context("preparing Sieve scripts in MongoDB")?;
        }
        let ctx = Arc::new(crate::managesieve::ManageSieveContext {
            mailboxes: mailboxes.clone(),
            logins: logins.clone(),
            tls: tls.clone(),
        });
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the managesieve listener to {addr}"))?;
        tasks.spawn(crate::managesieve::serve_managesieve(
            listener,
            ctx,
            connection_limits("managesieve"),
            shutdown.clone(),
        ));
        listeners.push(("managesieve".to_string(), addr.to_string()));
        tracing::info!(%addr, "managesieve listening");
    }
    let (reload_tx, reload) = mpsc::channel(4);
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let metrics: crate::http::MetricsSource = {
        let (log, logins, reconciler) = (log.clone(), logins.clone(), reconciler.clone());
        let (queue, certificates, store) = (queue.clone(), certificates.clone(), store.clone());
        let backups = backups.clone();
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
        let (reconciler, queue, certificates) =
            (reconciler.clone(), queue.clone(), certificates.clone());
        let hostname = hostname.clone();
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
        challenges: challenges.clone(),
        site,
        snapshot: snapshot.clone(),
        ready: ready.clone(),
        metrics,
        admin: Arc::new(crate::http::admin::AdminState {
            sessions: Default::default(),
            cache: cache.clone(),
            logins: logins.clone(),
            log: log.clone(),
            mailboxes: mailboxes.clone(),
            overview,
            queue: queue.clone(),
            wake: spool.committed.clone(),
            store: store.clone(),
            plan: dry_run_plan(served.clone(), store.clone()),
            reload: reload_tx.clone(),
            resolver: resolver.clone(),
            dns_checks: Default::default(),
            editor: Arc::new(crate::reconcile::edits::Editor {
                spec_path: spec_path.clone(),
                store: store.clone(),
                reconciler: reconciler.clone(),
                lock: Default::default(),
            }),
        }),
        dav: Arc::new(crate::dav::Dav::new(
            crate::collections::Collections::new(mailboxes.clone())
                .context("preparing the calendars and contacts store")?,
            logins.clone(),
            snapshot.clone(),
        )),
    };
    if let Some(addr) = declared.http {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the http listener to {addr}"))?;
        tasks.spawn(crate::http::serve(
            listener,
            http_state.clone(),
            connection_limits("http"),
            shutdown.clone(),
        ));
        listeners.push(("http".to_string(), addr.to_string()));
        tracing::info!(%addr, "http listening");
    }
    if let Some(addr) = declared.https {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the https listener to {addr}"))?;
        tasks.spawn(crate::http::serve_tls(
            listener,
            certificates.server_config(),
            http_state.clone(),
            connection_limits("https"),
            shutdown.clone(),
        ));
        listeners.push(("https".to_string(), addr.to_string()));
        tracing::info!(%addr, "https listening");
    }
    for (name, addr) in [("caldav", declared.caldav), ("carddav", declared.carddav)] {
        let Some(addr) = addr else { continue };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the {name} listener to {addr}"))?;
        tasks.spawn(crate::http::serve_dav_tls(
            listener,
            certificates.server_config(),
            http_state.clone(),
            connection_limits(name),
            shutdown.clone(),
        ));
        listeners.push((name.to_string(), addr.to_string()));
        tracing::info!(%addr, "{name} listening");
    }
    if let Some(settings) = acme {
        let manager = Arc::new(crate::tls::acme::Manager {
            settings,
            store: store.clone(),
            certs: certificates.clone(),
            challenges: challenges.clone(),
            status_file: Some(data_dir.join("acme.json")),
            ari: Default::default(),
            installed: Default::default(),
            cluster: cluster.clone(),
        });
        tasks.spawn(manager.run(shutdown.clone()));
    }

    tasks.spawn(
        Arc::new(crate::backup::Runner {
            settings: backups,
            store: store.clone(),
            data_dir: data_dir.clone(),
            cluster: cluster.clone(),
        })
        .run(shutdown.clone()),
    );
    tasks.spawn(heartbeat(
        cluster.clone(),
        instance,
        store.clone(),
        snapshot.clone(),
        shutdown.clone(),
    ));

    let state = ServeState {
        pid: std::process::id(),
        started_at: crate::store::now_rfc3339(),
        listeners,
    };
    let state_path = data_dir.join("serve.json");
    std::fs::write(&state_path, serde_json::to_vec_pretty(&state)?)
        .context("writing serve.json")?;

    tasks.spawn(sample_queue(queue.clone(), log.clone(), shutdown.clone()));
    tasks.spawn(reconciler.clone().run(reload, shutdown.clone()));
    tasks.spawn(crate::systemd::watchdog(shutdown.clone()));
    tasks.spawn(crate::trim::purge_freed(shutdown.clone()));
    // A log record, not a line on stdout: with --log-format json, everything the
    // journal gets from serve is JSON.
    tracing::info!(
        revision = first.revision,
        "ferrymail serving {hostname}; Ctrl-C or SIGTERM stops it"
    );
    // Listeners are bound and the spec applied: systemd may start what depends on mail.
    ready.store(true, std::sync::atomic::Ordering::Relaxed);
    crate::systemd::ready(&format!(
        "serving {hostname}; store revision {}; last reconcile: {}",
        first.revision, first.summary
    ));

    wait_for_signals(reload_tx).await;
    crate::systemd::stopping();
    tracing::info!("shutting down: draining sessions and deliveries");
    let _ = shutdown_tx.send(true);
    while tasks.join_next().await.is_some() {}
    // Finished deliveries are removed with the spool's next commit: make it now, or a
    // restart would deliver them again.
    spool.flush().await;
    log.flush();
    let _ = std::fs::remove_file(&state_path);
    Ok(())
}

/// What the http side tells clients: the hostname, the mail services on offer (by the
/// port each listener binds), and the MTA-STS policy when https serves one.
fn http_site(
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
            let keys = super::dns::dkim_keys(store, snapshot, &name).unwrap_or_default();
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

/// A dry run of a spec given as text, against the live store (DNS providers are not
/// asked): for the API's and the admin's plan. Relative paths are read from the served
/// spec's directory, and the posted spec may use only the secret references the served
/// one uses: a plan must not become a way to read the server's files or environment.
fn dry_run_plan(
    served: Arc<arc_swap::ArcSwap<LoadedSpec>>,
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
        let allowed = secret_references(&current.spec);
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
    if let Err(e) = super::write_private(&path, format!("{password}\n").as_bytes()) {
        tracing::error!(error = %e, "no first-boot admin password");
        return None;
    }
    tracing::info!(
        "web admin: log in as \"admin\" with the password in {} (readable by this server's user only); declare [admin.users] in the spec to replace it",
        path.display()
    );
    Some(password)
}

/// SIGHUP asks for a reload; SIGTERM or SIGINT return (shutdown).
async fn wait_for_signals(reload: mpsc::Sender<()>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut hup), Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return std::future::pending().await;
    };
    loop {
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the spec");
                let _ = reload.try_send(());
            }
            _ = term.recv() => return,
            _ = int.recv() => return,
        }
    }
}

/// A random key kept in data_dir (0600), made on first use.
/// The day this server (or cluster) first wrote long SRS hashes: short ones are taken
/// back for addresses issued until then (at most `srs::MAX_AGE_DAYS` more). Written once.
fn srs_legacy_until(
    store: &Arc<dyn crate::store::Store>,
    data_dir: &Path,
    new_key: bool,
) -> anyhow::Result<u64> {
    let today = if new_key { 0 } else { Srs::today() }.to_string();
    let stored = match store.connection() {
        Some(mongo) => mongo
            .shared_secret("srs-legacy-until", today.as_bytes())
            .context("reading the SRS change day from MongoDB")?,
        None => {
            let path = data_dir.join("srs.legacy-until");
            match std::fs::read(&path) {
                Ok(day) => day,
                Err(_) => {
                    std::fs::write(&path, &today)
                        .with_context(|| format!("writing {}", path.display()))?;
                    today.into_bytes()
                }
            }
        }
    };
    Ok(String::from_utf8_lossy(&stored).trim().parse().unwrap_or(0))
}

fn private_key_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    if let Ok(key) = std::fs::read(path) {
        return Ok(key);
    }
    let mut key = vec![0u8; 32];
    aws_lc_rs::rand::fill(&mut key).map_err(|_| anyhow::anyhow!("no system randomness"))?;
    super::write_private(path, &key)?;
    Ok(key)
}

/// The mailboxes' master key: the spec's secret, or data_dir/master.key (made once).
pub(super) fn master_key(
    loaded: &LoadedSpec,
    data_dir: &Path,
) -> anyhow::Result<crate::mailbox::MasterKey> {
    let material = match &loaded.spec.server.master_key {
        Some(r) => r
            .resolve(&loaded.base_dir)
            .context("server.master_key")?
            .expose()
            .trim()
            .as_bytes()
            .to_vec(),
        None => {
            // As `init` writes it: 32 random bytes, base64, on one line.
            let path = data_dir.join("master.key");
            if !path.exists() {
                let mut key = [0u8; 32];
                aws_lc_rs::rand::fill(&mut key)
                    .map_err(|_| anyhow::anyhow!("no system randomness"))?;
                use base64::Engine;
                let text = base64::engine::general_purpose::STANDARD.encode(key) + "\n";
                super::write_private(&path, text.as_bytes())?;
            }
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            text.trim().as_bytes().to_vec()
        }
    };
    crate::mailbox::MasterKey::new(&material).context("server.master_key")
}

fn webhook_key(loaded: &LoadedSpec) -> anyhow::Result<Option<Vec<u8>>> {
    match &loaded.spec.delivery.webhook_secret {
        Some(r) => Ok(Some(
            r.resolve(&loaded.base_dir)
                .context("delivery.webhook_secret")?
                .expose()
                .as_bytes()
                .to_vec(),
        )),
        None => Ok(None),
    }
}

/// This data dir's node instance id (data_dir/node.id, made once).
fn node_instance(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("node.id");
    if let Ok(text) = std::fs::read_to_string(&path)
        && !text.trim().is_empty()
    {
        return Ok(text.trim().to_string());
    }
    let mut random = [0u8; 8];
    aws_lc_rs::rand::fill(&mut random).map_err(|_| anyhow::anyhow!("no system randomness"))?;
    let id = hex::encode(random);
    super::write_private(&path, format!("{id}\n").as_bytes())?;
    Ok(id)
}

/// Two live processes with one node name would share leases and locks as if they were
/// one: the second is refused. A restart of the same node (same data dir) is not.
fn refuse_a_twin(store: &dyn Store, node: &str, instance: &str) -> anyhow::Result<()> {
    // Only a shared store has other nodes; a SQLite store restored from a backup holds
    // the heartbeat of the process that made it.
    if store.connection().is_none() {
        return Ok(());
    }
    let now = crate::store::unix_now();
    let fresh = 3 * HEARTBEAT.as_secs() as i64;
    if let Some(twin) = store.nodes()?.into_iter().find(|n| {
        n.name == node
            && n.last_seen > now - fresh
            && !n.instance.is_empty()
            && n.instance != instance
    }) {
        bail!(
            "another node named {node:?} is running (pid {}, seen {} s ago, from another data dir); give each node its own name with --node or FERRYMAIL_NODE",
            twin.pid,
            now - twin.last_seen
        );
    }
    Ok(())
}

/// How often a node reports itself in the store; `status` calls a node silent for three
/// beats "not seen".
pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(10);
/// Nodes not seen for this long are forgotten.
const FORGET_NODES_AFTER: i64 = 30 * 86_400;

/// Writes this node's heartbeat (version, revision served, locks held) until shutdown.
async fn heartbeat(
    cluster: Arc<crate::cache::Cluster>,
    instance: String,
    store: Arc<dyn Store>,
    snapshot: Arc<SnapshotHandle>,
    mut shutdown: watch::Receiver<bool>,
) {
    let started_at = crate::store::unix_now();
    let mut beat = tokio::time::interval(HEARTBEAT);
    loop {
        tokio::select! {
            _ = beat.tick() => {}
            _ = shutdown.changed() => return,
        }
        let node = crate::store::NodeInfo {
            name: cluster.node.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            started_at,
            last_seen: crate::store::unix_now(),
            revision: snapshot.get().revision,
            locks: cluster.held(),
            instance: instance.clone(),
        };
        let store = store.clone();
        let written = tokio::task::spawn_blocking(move || {
            store.heartbeat(&node)?;
            store.forget_nodes(node.last_seen - FORGET_NODES_AFTER)
        })
        .await;
        if let Ok(Err(e)) = written {
            tracing::warn!(error = %e, "heartbeat not written");
        }
    }
}

/// How often the queue's depth is noted for the overview's chart.
const QUEUE_SAMPLE: std::time::Duration = std::time::Duration::from_secs(300);

/// Notes how many deliveries wait, now and every `QUEUE_SAMPLE`, until shutdown.
async fn sample_queue(
    queue: Arc<dyn crate::queue::Queue>,
    log: Arc<crate::queue::log::MailLog>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(QUEUE_SAMPLE);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let queue = queue.clone();
        match tokio::task::spawn_blocking(move || queue.pending()).await {
            Ok(Ok(n)) => log.sample_queue(crate::store::unix_now(), n),
            Ok(Err(e)) => tracing::warn!(error = %e, "the queue's depth not read"),
            Err(_) => {}
        }
    }
}

/// The cache channel on which nodes tell each other "this account's mailbox changed".
const MAILBOX_CHANNEL: &str = "mailbox";

/// Beside a shared cache, a change to a mailbox on one node wakes the IDLE sessions of
/// that account on every node (each message: the node, a newline, the account).
fn relay_mailbox_changes(mailboxes: &Mailboxes, cache: &Arc<dyn crate::cache::Cache>, node: &str) {
    let Some(mut heard) = cache.subscribe(MAILBOX_CHANNEL) else {
        return;
    };
    {
        let (cache, node) = (cache.clone(), node.to_string());
        mailboxes
            .events()
            .relay_to(move |account| cache.publish(MAILBOX_CHANNEL, &format!("{node}\n{account}")));
    }
    let (events, node) = (mailboxes.events().clone(), node.to_string());
    tokio::spawn(async move {
        while let Some(message) = heard.recv().await {
            if let Some((from, account)) = message.split_once('\n')
                && from != node
            {
                events.changed_elsewhere(account);
            }
        }
    });
}

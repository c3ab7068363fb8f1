//! The state every service of `serve` shares, built once at start: the store and its
//! snapshot, the first apply, certificates, keys, the queue, the mail log and mailboxes.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};

use super::certificates;
use super::keys;
use super::web::http_site;
use crate::mailbox::Mailboxes;
use crate::queue::Spool;
use crate::reconcile::watch::{ReconcileStatus, Reconciler};
use crate::routing::srs::Srs;
use crate::snapshot::SnapshotHandle;
use crate::spec::{LoadedSpec, TlsMode};
use crate::store::Store;

/// The spec's ACME settings, kept in step with every applied spec.
pub type AcmeSettings = Arc<arc_swap::ArcSwap<crate::tls::acme::Settings>>;
/// The backup schedule and target (None: no `[backups]`), likewise.
pub type BackupSettings = Arc<arc_swap::ArcSwapOption<crate::backup::Settings>>;

pub struct Shared {
    pub spec_path: PathBuf,
    pub data_dir: PathBuf,
    pub hostname: String,
    pub file_descriptors: u64,
    pub store: Arc<dyn Store>,
    pub snapshot: Arc<SnapshotHandle>,
    pub cache: Arc<dyn crate::cache::Cache>,
    pub cluster: Arc<crate::cache::Cluster>,
    /// This data dir's node instance (see `node::instance`).
    pub instance: String,
    pub reconciler: Arc<Reconciler>,
    /// How the first apply went (the server starts only if it did, for a local spec).
    pub first: ReconcileStatus,
    pub acme: Option<AcmeSettings>,
    pub backups: BackupSettings,
    /// What the http side says about the server (autoconfig, MTA-STS).
    pub site: Arc<arc_swap::ArcSwap<crate::http::Site>>,
    /// The files of the spec being served: a posted spec's dry run reads relative paths
    /// from its directory and may use only the secret references it uses.
    pub served: Arc<arc_swap::ArcSwap<super::web::ServedSpec>>,
    pub certificates: Arc<crate::tls::Certificates>,
    pub challenges: Arc<crate::tls::acme::Challenges>,
    /// Reloads tls.files when they change; dropping it stops that.
    pub _tls_files_watch: Option<notify::RecommendedWatcher>,
    /// Every TLS listener's configuration; what it serves changes without a restart.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub resolver: Option<hickory_resolver::TokioResolver>,
    pub signing: Arc<crate::dkim::signing::SigningKeys>,
    pub srs: Srs,
    pub queue: Arc<dyn crate::queue::Queue>,
    pub spool: Spool,
    pub log: Arc<crate::queue::log::MailLog>,
    pub mailboxes: Mailboxes,
    pub logins: Arc<crate::login::Logins>,
}

impl Shared {
    /// Opens everything and applies the spec once. `loaded` is the first spec read.
    pub async fn open(
        loaded: &Arc<LoadedSpec>,
        spec_path: PathBuf,
        node: String,
    ) -> anyhow::Result<Shared> {
        let data_dir = loaded.data_dir();
        let file_descriptors = crate::listen::raise_file_limit();
        let hostname = loaded.spec.server.hostname.clone();
        let store: Arc<dyn Store> =
            super::super::open_store(loaded, true)?.context("the store could not be created")?;
        let snapshot =
            Arc::new(SnapshotHandle::new(store.as_ref()).context("building the first snapshot")?);
        let cache = super::super::open_cache(loaded)?;
        let instance = super::node::instance(&data_dir)?;
        super::node::refuse_a_twin(store.as_ref(), &node, &instance)?;
        let cluster = crate::cache::Cluster::new(cache.clone(), node);
        let acme = match (loaded.spec.tls.mode, &loaded.spec.tls.acme) {
            (TlsMode::Acme, Some(acme)) => Some(Arc::new(arc_swap::ArcSwap::from_pointee(
                certificates::acme_settings(loaded, acme)?,
            ))),
            _ => None,
        };
        let backups = backup_settings(loaded, store.as_ref());
        // Built by the first reconcile's callback below (or after it, if it fails): the
        // DNS records of every domain in it take a while with thousands of domains.
        let site = Arc::new(arc_swap::ArcSwap::from_pointee(crate::http::Site::default()));
        let served = Arc::new(arc_swap::ArcSwap::from_pointee(super::web::ServedSpec::of(
            loaded,
        )));
        let after_apply: crate::reconcile::watch::AfterApply = {
            let acme = acme.clone();
            let backups = backups.clone();
            let (site, store, served) = (site.clone(), store.clone(), served.clone());
            let snapshot = snapshot.clone();
            Box::new(move |loaded: Arc<LoadedSpec>| {
                // Called with the snapshot already refreshed: its DKIM keys are the new ones.
                site.store(Arc::new(http_site(
                    &loaded,
                    store.as_ref(),
                    &snapshot.get(),
                )));
                served.store(Arc::new(super::web::ServedSpec::of(&loaded)));
                if let (Some(swap), Some(acme)) = (&acme, &loaded.spec.tls.acme) {
                    match certificates::acme_settings(&loaded, acme) {
                        Ok(settings) => swap.store(Arc::new(settings)),
                        Err(e) => tracing::error!(error = %e, "ACME settings not updated"),
                    }
                }
                match super::super::backup::settings(&loaded) {
                    Ok(settings) => backups.store(settings.map(Arc::new)),
                    Err(e) => tracing::error!(error = %e, "backup settings not updated"),
                }
            })
        };
        let reconciler = Arc::new(Reconciler {
            spec_path: spec_path.clone(),
            store: store.clone(),
            snapshot: snapshot.clone(),
            status: Arc::new(Mutex::new(ReconcileStatus::default())),
            status_file: Some(data_dir.join("reconcile.json")),
            dns_resync: loaded
                .spec
                .dns
                .resync_secs()
                .map(std::time::Duration::from_secs),
            after_apply: Some(after_apply),
            git_interval: loaded
                .git
                .as_ref()
                .map(|(source, _)| std::time::Duration::from_secs(source.interval_secs())),
            cluster: cluster.clone(),
            runs: Default::default(),
            failures: Default::default(),
            auto: (loaded.apply_mode() == crate::spec::ApplyMode::Auto).into(),
            read_tag: Default::default(),
            running: Default::default(),
            data_dir: Some(data_dir.clone()),
            plan_soon: Default::default(),
        });
        let first = {
            let (r, loaded) = (reconciler.clone(), loaded.clone());
            tokio::task::spawn_blocking(move || {
                // A spec from git is fetched again: the read above may be the last good
                // commit standing in for a broken branch, which is reported, not applied.
                let first = match loaded.origin {
                    Some(_) => r.reconcile_once(),
                    None => r.reconcile_read(loaded),
                };
                // A large spec's plan is made and dropped on this thread: give it back.
                crate::trim::give_back();
                first
            })
            .await?
        };
        // A spec from git that is broken now still serves its last good commit, applied
        // before; a local spec must apply before the server starts.
        if !first.ok && loaded.origin.is_none() {
            bail!(
                "the spec could not be applied:\n{}",
                first.errors.join("\n")
            );
        }
        if !first.ok {
            site.store(Arc::new(http_site(loaded, store.as_ref(), &snapshot.get())));
        }

        let (certificates, _tls_files_watch) = certificates::first(loaded, &hostname, &data_dir)?;
        let challenges = Arc::new(match store.connection() {
            #[cfg(feature = "mongodb")]
            Some(mongo) => crate::tls::acme::Challenges::shared(mongo),
            _ => crate::tls::acme::Challenges::default(),
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
        let srs = keys::srs(&store, &data_dir)?;
        let queue = super::super::open_queue(loaded, Some(store.as_ref()), &cluster.node)?;
        let released = queue.release_leases()?;
        if released > 0 {
            tracing::info!(
                released,
                "deliveries interrupted by the last shutdown are due again"
            );
        }
        let spool = Spool::start(queue.clone());
        let log = Arc::new(super::super::open_mail_log(
            loaded,
            Some(store.as_ref()),
            &cluster.node,
        )?);
        // Beside a MongoDB store the mailboxes are there too, so any node serves any account.
        let master_key = keys::master_key(loaded, &data_dir)?;
        let mailboxes = match store.connection() {
            #[cfg(feature = "mongodb")]
            Some(mongo) => Mailboxes::in_mongo(&data_dir, master_key, mongo)
                .context("opening the mailboxes in MongoDB")?,
            _ => Mailboxes::new(&data_dir, master_key),
        };
        relay_mailbox_changes(&mailboxes, &cache, &cluster.node);
        #[cfg(feature = "mongodb")]
        crate::selfservice::settings::prepare(&mailboxes)
            .context("preparing the owners' settings in MongoDB")?;
        let logins = Arc::new(crate::login::Logins::new(
            snapshot.clone(),
            cache.clone(),
            Some(mailboxes.clone()),
        ));
        Ok(Shared {
            spec_path,
            data_dir,
            hostname,
            file_descriptors,
            store,
            snapshot,
            cache,
            cluster,
            instance,
            reconciler,
            first,
            acme,
            backups,
            site,
            served,
            certificates,
            challenges,
            _tls_files_watch,
            tls,
            resolver,
            signing,
            srs,
            queue,
            spool,
            log,
            mailboxes,
            logins,
        })
    }
}

/// The backup settings. One that cannot be read (a missing secret) must not keep mail
/// from being served: it is logged and shown in status as a failed backup.
fn backup_settings(loaded: &LoadedSpec, store: &dyn Store) -> BackupSettings {
    Arc::new(arc_swap::ArcSwapOption::from(
        match super::super::backup::settings(loaded) {
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
    ))
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

//! The background jobs of `serve`: applying the spec, ACME certificates, backups, the
//! node's heartbeat, queue samples, the systemd watchdog and giving memory back.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use super::services::Services;
use super::shared::Shared;

/// Starts every background job. `reload` carries SIGHUP's (and the admin's) requests
/// for an apply.
pub fn start(
    services: &mut Services,
    shared: &Shared,
    tls_mode: crate::spec::TlsMode,
    reload: mpsc::Receiver<()>,
) {
    services.start(shared.reconciler.clone().run(reload, services.shutdown()));
    if tls_mode == crate::spec::TlsMode::SelfSigned {
        services.start(renew_self_signed(
            shared.certificates.clone(),
            shared.hostname.clone(),
            shared.data_dir.clone(),
            services.shutdown(),
        ));
    }
    if let Some(settings) = &shared.acme {
        let manager = Arc::new(crate::tls::acme::Manager {
            settings: settings.clone(),
            store: shared.store.clone(),
            certs: shared.certificates.clone(),
            challenges: shared.challenges.clone(),
            status_file: Some(shared.data_dir.join("acme.json")),
            ari: Default::default(),
            installed: Default::default(),
            cluster: shared.cluster.clone(),
        });
        services.start(manager.run(services.shutdown()));
    }
    services.start(
        Arc::new(crate::backup::Runner {
            settings: shared.backups.clone(),
            store: shared.store.clone(),
            data_dir: shared.data_dir.clone(),
            cluster: shared.cluster.clone(),
        })
        .run(services.shutdown()),
    );
    services.start(super::node::heartbeat(
        shared.cluster.clone(),
        shared.instance.clone(),
        shared.store.clone(),
        shared.snapshot.clone(),
        services.shutdown(),
    ));
    services.start(sample_queue(
        shared.queue.clone(),
        shared.log.clone(),
        services.shutdown(),
    ));
    services.start(crate::systemd::watchdog(services.shutdown()));
    services.start(crate::trim::purge_freed(services.shutdown()));
}

/// How often the self-signed certificate is looked at (it is renewed in its last 30
/// days): a server that runs for a year must not end up serving an expired one.
const SELF_SIGNED_CHECK: std::time::Duration = std::time::Duration::from_secs(86_400);

async fn renew_self_signed(
    certs: Arc<crate::tls::Certificates>,
    hostname: String,
    data_dir: std::path::PathBuf,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(SELF_SIGNED_CHECK);
    // The first tick is now, and serve has just made or checked the certificate.
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let (certs, hostname, data_dir) = (certs.clone(), hostname.clone(), data_dir.clone());
        let renewed = tokio::task::spawn_blocking(move || {
            crate::tls::renew_self_signed(&certs, &hostname, &data_dir, crate::store::unix_now())
        })
        .await;
        match renewed {
            Ok(Ok(true)) => tracing::info!("the self-signed certificate was renewed"),
            Ok(Ok(false)) | Err(_) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "the self-signed certificate could not be renewed")
            }
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

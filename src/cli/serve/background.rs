//! The background jobs of `serve`: applying the spec, ACME certificates, backups, the
//! node's heartbeat, queue samples, the systemd watchdog and giving memory back.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use super::services::Services;
use super::shared::Shared;

/// Starts every background job. `reload` carries SIGHUP's (and the admin's) requests
/// for an apply.
pub fn start(services: &mut Services, shared: &Shared, reload: mpsc::Receiver<()>) {
    services.start(shared.reconciler.clone().run(reload, services.shutdown()));
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

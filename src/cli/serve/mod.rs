//! `ferrymail serve`: the reconciler loop, the declared listeners and the delivery
//! workers in one process; SIGHUP reloads the spec, SIGTERM drains and exits.

mod background;
mod certificates;
mod connections;
mod keys;
mod mail;
mod node;
mod services;
mod shared;
mod web;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use serde::Serialize;
use tokio::sync::mpsc;

pub(super) use keys::master_key;
pub use node::HEARTBEAT;

/// What `status` reads about a running server (data_dir/serve.json).
#[derive(Serialize, serde::Deserialize, Default)]
pub struct ServeState {
    pub pid: u32,
    pub started_at: String,
    pub listeners: Vec<(String, String)>,
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
        _ => node::host_name(),
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

/// The server, start to end: shared state built once, the services started in order,
/// and drained in order when a signal says stop.
async fn serve(spec_path: PathBuf, node: String) -> anyhow::Result<()> {
    // The first load must succeed: the listeners and data dir come from it. (A spec kept
    // in git falls back to its last good commit.) The first reconcile applies this very
    // read.
    let loaded = match crate::source::load_for_serving(&spec_path) {
        Ok(loaded) => Arc::new(loaded),
        Err(crate::source::SourceError::Spec(errors)) => return Err(errors.into()),
        Err(other) => return Err(other.into()),
    };
    let data_dir = loaded.data_dir();
    let _data_dir_lock = node::claim_data_dir(&data_dir)?;
    // The store, the first apply, certificates, keys, queue, mail log, mailboxes.
    let shared = shared::Shared::open(&loaded, spec_path, node).await?;

    let mut services = services::Services::new();
    let limits = connections::ConnectionLimits::new(
        &loaded.spec.limits,
        shared.file_descriptors,
        shared.cache.clone(),
    );
    let (reload_tx, reload) = mpsc::channel(4);
    let ready = Arc::new(AtomicBool::new(false));
    // Deliveries first: what the listeners accept goes out at once.
    mail::start_delivery(&mut services, &shared, &loaded)?;
    mail::start_listeners(&mut services, &shared, &loaded, &limits).await?;
    web::start(
        &mut services,
        &shared,
        &loaded,
        &limits,
        ready.clone(),
        reload_tx.clone(),
    )
    .await?;
    background::start(&mut services, &shared, loaded.spec.tls.mode, reload);
    // The spec as read is not needed any more (the reconciler keeps the applied one),
    // and neither is what reading it took (most of a start's peak with a large spec).
    drop(loaded);
    crate::trim::give_back();

    let state = ServeState {
        pid: std::process::id(),
        started_at: crate::store::now_rfc3339(),
        listeners: services.listening.clone(),
    };
    let state_path = data_dir.join("serve.json");
    std::fs::write(&state_path, serde_json::to_vec_pretty(&state)?)
        .context("writing serve.json")?;
    // A log record, not a line on stdout: with --log-format json, everything the
    // journal gets from serve is JSON.
    let hostname = &shared.hostname;
    tracing::info!(
        revision = shared.first.revision,
        "ferrymail serving {hostname}; Ctrl-C or SIGTERM stops it"
    );
    // Listeners are bound and the spec applied: systemd may start what depends on mail.
    ready.store(true, Ordering::Relaxed);
    crate::systemd::ready(&format!(
        "serving {hostname}; store revision {}; last reconcile: {}",
        shared.first.revision, shared.first.summary
    ));

    wait_for_signals(reload_tx).await;

    // Shutdown, in order: systemd is told; every service stops (listeners stop accepting,
    // sessions end, deliveries under way finish); then what they left in memory is
    // written: the spool's last commit (finished deliveries, or a restart would deliver
    // them again) and the mail log; last, `status` is told the server is gone.
    crate::systemd::stopping();
    tracing::info!("shutting down: draining sessions and deliveries");
    services.drain().await;
    shared.spool.flush().await;
    shared.log.flush();
    let _ = std::fs::remove_file(&state_path);
    Ok(())
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

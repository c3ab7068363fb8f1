//! `tls.mode = "files"`: PEM files someone else renews (certbot), watched and served
//! again when they change; a broken pair is reported and the previous one kept.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use super::Certificates;

/// Renewal tools write the chain and the key one after the other: wait for both.
const SETTLE: Duration = Duration::from_millis(500);
/// The files are read again this often even without an event.
const REREAD: Duration = Duration::from_secs(3600);

/// Watches `cert` and `key` and installs the pair again after each change. Dropping the
/// watcher stops it.
pub fn watch(
    certs: Arc<Certificates>,
    cert: PathBuf,
    key: PathBuf,
) -> notify::Result<notify::RecommendedWatcher> {
    let (tx, rx) = mpsc::channel::<()>();
    // Any change in the watched directories reloads (reloading is idempotent): certbot
    // swaps symlinks in live/, a Kubernetes secret mount swaps a `..data` link.
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            let _ = tx.send(());
        }
    })?;
    // The directories of the paths as written and of what their links lead to
    // (live/NAME/fullchain.pem → archive/NAME/fullchainN.pem).
    let mut dirs: Vec<PathBuf> = Vec::new();
    for path in [&cert, &key] {
        let resolved = std::fs::canonicalize(path).ok();
        for p in std::iter::once(path.clone()).chain(resolved) {
            let dir = p
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf();
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
    }
    for dir in &dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    std::thread::Builder::new()
        .name("tls-files".into())
        .spawn(move || {
            loop {
                // A missed event (the directory itself replaced) is caught by the hourly
                // look; the files are read again either way.
                match rx.recv_timeout(REREAD) {
                    Ok(()) => {
                        std::thread::sleep(SETTLE);
                        while rx.try_recv().is_ok() {}
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
                reload(&certs, &cert, &key);
            }
        })
        .map_err(|e| notify::Error::generic(&e.to_string()))?;
    Ok(watcher)
}

fn reload(certs: &Certificates, cert: &Path, key: &Path) {
    match super::from_files(cert, key, "files") {
        Ok(loaded) => {
            if certs.served().contains(&loaded.info) {
                return;
            }
            tracing::info!(
                names = ?loaded.info.names,
                not_after = loaded.info.not_after,
                "certificate files changed: serving the new certificate"
            );
            certs.install(loaded, true);
        }
        Err(e) => tracing::error!(
            error = %e,
            "certificate files changed but cannot be used; the previous certificate keeps serving"
        ),
    }
}

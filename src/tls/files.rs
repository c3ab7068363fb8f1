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

/// Watches `cert` and `key` (their directories: certbot swaps symlinks there) and
/// installs the pair again after each change. Dropping the watcher stops it.
pub fn watch(
    certs: Arc<Certificates>,
    cert: PathBuf,
    key: PathBuf,
) -> notify::Result<notify::RecommendedWatcher> {
    let (tx, rx) = mpsc::channel::<()>();
    let names: Vec<_> = [&cert, &key]
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_os_string()))
        .collect();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        let ours = event
            .paths
            .iter()
            .any(|p| p.file_name().is_some_and(|n| names.iter().any(|m| m == n)));
        if ours && !event.kind.is_access() {
            let _ = tx.send(());
        }
    })?;
    let dirs: Vec<&Path> = [&cert, &key]
        .iter()
        .map(|p| {
            p.parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
        })
        .collect();
    for dir in dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    std::thread::Builder::new()
        .name("tls-files".into())
        .spawn(move || {
            while rx.recv().is_ok() {
                std::thread::sleep(SETTLE);
                while rx.try_recv().is_ok() {}
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

//! This node among the nodes sharing a store: its name, its data dir held by one process,
//! its instance id, and the heartbeat that tells `status` (and the others) it is alive.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use tokio::sync::watch;

use crate::snapshot::SnapshotHandle;
use crate::store::Store;

/// The data dir, made private (0700) when missing, and held by this process until it
/// ends: a second server on it would apply its own spec under the first one's feet, and
/// tell `status` it is gone when it exits.
pub fn claim_data_dir(data_dir: &Path) -> anyhow::Result<std::fs::File> {
    // The queue, mail log, mailboxes and keys live here whichever store is used (the
    // SQLite store would make it; a MongoDB one does not).
    if !data_dir.exists() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)
            .with_context(|| format!("creating the data dir {}", data_dir.display()))?;
    }
    lock(data_dir)
}

/// An exclusive lock (flock) on data_dir/serve.lock, which also names the holder's pid.
fn lock(data_dir: &Path) -> anyhow::Result<std::fs::File> {
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
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(name) if rc == 0 && !name.is_empty() => name.to_string(),
        _ => "localhost".into(),
    }
}

/// This data dir's node instance id (data_dir/node.id, made once).
pub fn instance(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("node.id");
    if let Ok(text) = std::fs::read_to_string(&path)
        && !text.trim().is_empty()
    {
        return Ok(text.trim().to_string());
    }
    let mut random = [0u8; 8];
    aws_lc_rs::rand::fill(&mut random).map_err(|_| anyhow::anyhow!("no system randomness"))?;
    let id = hex::encode(random);
    super::super::write_private(&path, format!("{id}\n").as_bytes())?;
    Ok(id)
}

/// Two live processes with one node name would share leases and locks as if they were
/// one: the second is refused. A restart of the same node (same data dir) is not.
pub fn refuse_a_twin(store: &dyn Store, node: &str, instance: &str) -> anyhow::Result<()> {
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
pub async fn heartbeat(
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
            version: crate::VERSION.to_string(),
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

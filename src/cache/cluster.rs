//! This node among the others: its name, and cluster-wide locks taken through the cache
//! so that one node at a time applies a spec, orders a certificate or runs a backup.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Cache, MemoryCache};

/// How long a lock outlives a node that died holding it; a live holder renews it every
/// third of this for as long as its work runs, however long that is.
const LEASE: Duration = Duration::from_secs(60);

/// Work that runs on one node at a time.
pub const RECONCILE: &str = "reconcile";
pub const ACME: &str = "acme";
pub const BACKUP: &str = "backup";

pub struct Cluster {
    pub cache: Arc<dyn Cache>,
    /// This node's name (`serve --node`), the lock holder's identity.
    pub node: String,
    held: Mutex<BTreeSet<&'static str>>,
}

impl Cluster {
    pub fn new(cache: Arc<dyn Cache>, node: String) -> Arc<Cluster> {
        Arc::new(Cluster {
            cache,
            node,
            held: Mutex::default(),
        })
    }

    /// One node on its own (tests, tools): every lock is its own.
    pub fn alone() -> Arc<Cluster> {
        Cluster::new(Arc::new(MemoryCache::default()), "local".into())
    }

    /// Takes `name` until the guard is dropped (renewing it meanwhile), or for a minute
    /// if this process dies first; None while another node holds it.
    pub fn try_lock(self: &Arc<Self>, name: &'static str) -> Option<Held> {
        self.try_lock_for(name, LEASE)
    }

    fn try_lock_for(self: &Arc<Self>, name: &'static str, lease: Duration) -> Option<Held> {
        let fence = crate::blocking::run(|| self.cache.lock(name, &self.node, lease))?;
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name);
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let (cache, node) = (self.cache.clone(), self.node.clone());
        let renewer = std::thread::Builder::new()
            .name("ferrymail-lock".into())
            .spawn(move || {
                use std::sync::mpsc::RecvTimeoutError;
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(lease / 3) {
                    if cache.lock(name, &node, lease).is_none() {
                        tracing::warn!(lock = name, "a cluster lock was lost while its work ran");
                        break;
                    }
                }
            })
            .ok();
        Some(Held {
            cluster: self.clone(),
            name,
            fence,
            renewer: renewer.map(|thread| (stop, thread)),
        })
    }

    /// Who holds `name`, when it is not this node.
    pub fn holder_elsewhere(&self, name: &str) -> Option<String> {
        crate::blocking::run(|| self.cache.lock_holder(name)).filter(|h| *h != self.node)
    }

    /// The locks this node holds now, for its heartbeat.
    pub fn held(&self) -> Vec<String> {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|s| s.to_string())
            .collect()
    }
}

/// A lock held by this node; given back when dropped.
pub struct Held {
    cluster: Arc<Cluster>,
    name: &'static str,
    /// Grows with every new holder: work stamped with it can be told from a stale
    /// holder's.
    pub fence: u64,
    /// Renews the lock until told to stop (by the sender's drop).
    renewer: Option<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)>,
}

impl Drop for Held {
    fn drop(&mut self) {
        // The renewer stops first: a renewal after the unlock would take the lock again.
        if let Some((stop, thread)) = self.renewer.take() {
            drop(stop);
            let _ = thread.join();
        }
        let c = &self.cluster;
        crate::blocking::run(|| c.cache.unlock(self.name, &c.node));
        c.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(self.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_renewed_until_dropped() {
        let cluster = Cluster::alone();
        let lease = Duration::from_millis(150);
        let held = cluster.try_lock_for(BACKUP, lease).expect("free");
        // Long past its lease, the work still holds it.
        std::thread::sleep(lease * 4);
        assert_eq!(cluster.cache.lock(BACKUP, "other", lease), None);
        assert_eq!(cluster.held(), vec![BACKUP.to_string()]);
        drop(held);
        assert!(cluster.held().is_empty());
        assert!(cluster.cache.lock(BACKUP, "other", lease).is_some());
    }
}

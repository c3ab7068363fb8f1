//! This node among the others: its name, and cluster-wide locks taken through the cache
//! so that one node at a time applies a spec, orders a certificate or runs a backup.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Cache, MemoryCache};

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

    /// Takes `name` until the guard is dropped, or for `ttl` if this process dies first;
    /// None while another node holds it.
    pub fn try_lock(self: &Arc<Self>, name: &'static str, ttl: Duration) -> Option<Held> {
        let fence = crate::blocking::run(|| self.cache.lock(name, &self.node, ttl))?;
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name);
        Some(Held {
            cluster: self.clone(),
            name,
            fence,
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
}

impl Drop for Held {
    fn drop(&mut self) {
        let c = &self.cluster;
        crate::blocking::run(|| c.cache.unlock(self.name, &c.node));
        c.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(self.name);
    }
}

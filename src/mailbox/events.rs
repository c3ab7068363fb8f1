//! Change notices between the writers of a mailbox (deliveries, other sessions) and the
//! IMAP sessions that have it open, so an IDLE client hears of new mail at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::watch;

/// A counter per account, bumped after every committed change.
#[derive(Clone, Default)]
pub struct Events {
    accounts: Arc<Mutex<HashMap<String, watch::Sender<u64>>>>,
    /// Also told of every change made here, so that other nodes' sessions hear of it
    /// (set once, by `serve` beside a shared cache).
    relay: Arc<OnceLock<Relay>>,
}

type Relay = Box<dyn Fn(&str) + Send + Sync>;

impl Events {
    fn sender(&self, account: &str) -> watch::Sender<u64> {
        let mut map = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
        // Accounts nobody watches any more are dropped now and then.
        if map.len() > 1024 {
            map.retain(|_, tx| tx.receiver_count() > 0);
        }
        map.entry(account.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .clone()
    }

    /// Woken after each change of `account`'s mailbox.
    pub fn subscribe(&self, account: &str) -> watch::Receiver<u64> {
        self.sender(account).subscribe()
    }

    /// A change made on this node: its sessions, and through the relay the others'.
    pub fn changed(&self, account: &str) {
        self.changed_elsewhere(account);
        if let Some(relay) = self.relay.get() {
            relay(account);
        }
    }

    /// A change another node made: wakes this node's sessions only.
    pub fn changed_elsewhere(&self, account: &str) {
        self.sender(account).send_modify(|n| *n += 1);
    }

    /// Passes every change made here on to `relay` as well.
    pub fn relay_to(&self, relay: impl Fn(&str) + Send + Sync + 'static) {
        let _ = self.relay.set(Box::new(relay));
    }
}

//! Change notices between the writers of a mailbox (deliveries, other sessions) and the
//! IMAP sessions that have it open, so an IDLE client hears of new mail at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// A counter per account, bumped after every committed change.
#[derive(Clone, Default)]
pub struct Events {
    accounts: Arc<Mutex<HashMap<String, watch::Sender<u64>>>>,
}

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

    pub fn changed(&self, account: &str) {
        self.sender(account).send_modify(|n| *n += 1);
    }
}

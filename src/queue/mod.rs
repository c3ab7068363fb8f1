//! The durable queue: a message is on disk (fsynced, with its envelope and routing
//! decision) before the MX says 250; workers deliver it, retry, and expire it.

pub mod bounce;
mod db;
pub mod log;
pub mod outbound;
pub mod rewrite;
pub mod sign;
mod spool;
pub mod webhook;
pub mod worker;

pub use db::{Delivery, DeliveryKind, QueueDb, QueueEntry, QueueError, now as now_unix};
pub use spool::{Spool, SpoolError};

use serde::{Deserialize, Serialize};

/// What the MX learned about a message besides its bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    /// Reverse path; empty for the null sender (bounces).
    pub mail_from: String,
    /// The recipients as given in RCPT TO.
    pub rcpt_to: Vec<String>,
    pub remote_ip: String,
    pub helo: String,
    pub tls: bool,
}

/// One thing to do with a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewDelivery {
    pub kind: DeliveryKind,
    /// An address (forward), an account address (mailbox) or a URL (webhook).
    pub target: String,
    /// The alias address that decided this delivery; its domain signs and SRS-rewrites.
    pub alias: String,
    /// Header lines prepended for this delivery only (the forwarding domain's ARC set).
    #[serde(default)]
    pub prefix: String,
    /// When set, the copy leaves with a friendly From of this alias (DMARC protection).
    #[serde(default)]
    pub from_rewrite: String,
}

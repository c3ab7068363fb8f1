//! The durable queue: a message is on disk (fsynced, with its envelope and routing
//! decision) before the MX says 250; workers deliver it, retry, and expire it.

pub mod bounce;
pub mod counts;
mod db;
pub mod dmarc_report;
mod filter;
pub mod local;
pub mod log;
#[cfg(feature = "mongodb")]
mod mongo;
pub mod outbound;
pub mod report_mail;
pub mod rewrite;
pub mod sign;
mod spool;
pub mod tls_policy;
pub mod webhook;
pub mod worker;

pub use db::{Delivery, DeliveryKind, QueueDb, QueueEntry, QueueError, now as now_unix};
#[cfg(feature = "mongodb")]
pub use mongo::MongoQueue;
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
    /// RET=FULL: a failure notice returns the whole message, not only its header.
    #[serde(default)]
    pub ret_full: bool,
    /// ENVID: the sender's id for this transaction, quoted back in every notice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envid: Option<String>,
    /// The sender failed SPF or DMARC on arrival: probably forged, so it gets no failure
    /// or delay notices (they would be backscatter to whoever it names).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_notices: bool,
    /// REQUIRETLS (RFC 8689): every hop only over TLS with a verified certificate, to an
    /// authenticated MX host that supports REQUIRETLS too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_tls: bool,
}

/// What the sender asked about delivery status notifications (RFC 3461) for the
/// recipient a delivery comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dsn {
    /// The recipient as given in RCPT TO. Notices name it, never the address an alias
    /// forwards to: that is the alias owner's to keep.
    pub rcpt: String,
    /// NOTIFY (smtp_proto's RCPT_NOTIFY_* bits); 0 when the sender gave none.
    #[serde(default)]
    pub notify: u64,
    /// ORCPT, the original recipient an earlier hop was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orcpt: Option<String>,
}

impl Dsn {
    /// A failure is reported unless the sender said NOTIFY without FAILURE (e.g. NEVER).
    pub fn on_failure(&self) -> bool {
        self.notify == 0 || self.notify & smtp_proto::RCPT_NOTIFY_FAILURE != 0
    }

    /// A delay is reported when asked, or when NOTIFY was not given (RFC 3461 §4.1 lets
    /// the MTA choose "FAILURE,DELAY" then, as Postfix does).
    pub fn on_delay(&self) -> bool {
        self.notify == 0 || self.notify & smtp_proto::RCPT_NOTIFY_DELAY != 0
    }

    /// Success is reported only when asked.
    pub fn on_success(&self) -> bool {
        self.notify & smtp_proto::RCPT_NOTIFY_SUCCESS != 0
    }
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
    /// Header lines prepended to the 7-bit copy (`mime::downgrade`) instead, for a next
    /// hop that takes only that: the ARC set sealed over it, and the spam verdict.
    #[serde(default)]
    pub prefix_7bit: String,
    /// When set, the copy leaves with a friendly From of this alias (DMARC protection).
    #[serde(default)]
    pub from_rewrite: String,
    /// The mailbox folder a mailbox delivery is filed in ("Junk" for spam); empty is the
    /// INBOX.
    #[serde(default)]
    pub folder: String,
    /// The recipient it comes from and the notices its sender asked for.
    #[serde(default)]
    pub dsn: Dsn,
}

/// The queue behind one trait: SQLite in the data dir (one node) or MongoDB (several
/// nodes, any of which delivers what another accepted). Both pass tests/queue_conformance.rs.
pub trait Queue: Send + Sync {
    /// "sqlite" or "mongodb".
    fn kind(&self) -> &'static str;
    /// One commit of the spool: stores new messages with their deliveries and removes
    /// finished deliveries. With new messages it is durable before it returns (a 250
    /// waits for it); removals alone need not be. Returns the new messages' ids.
    fn commit(
        &self,
        batch: &[(Envelope, Vec<u8>, Vec<NewDelivery>)],
        finished: &[i64],
    ) -> Result<Vec<i64>, QueueError>;
    /// Takes up to `limit` due deliveries and leases them for `lease_secs`, so no other
    /// worker or node takes them meanwhile; a crashed worker's lease simply expires.
    fn take_due(&self, limit: usize, lease_secs: i64) -> Result<Vec<Delivery>, QueueError>;
    /// Claims the one bounce a message may cause: true the first time only.
    fn claim_bounce(&self, message_id: i64) -> Result<bool, QueueError>;
    /// Claims the one delay notice a message may cause.
    fn claim_delay_notice(&self, message_id: i64) -> Result<bool, QueueError>;
    /// The envelope a message arrived with.
    fn envelope(&self, message_id: i64) -> Result<Option<Envelope>, QueueError>;
    /// Frees this server's leases, at start: they belonged to it before it stopped, and
    /// its deliveries must not wait for them to expire.
    fn release_leases(&self) -> Result<usize, QueueError>;
    fn body(&self, message_id: i64) -> Result<Option<Vec<u8>>, QueueError>;
    /// A delivery failed temporarily: try again at `next_at`.
    fn retry_later(&self, delivery_id: i64, next_at: i64, error: &str) -> Result<(), QueueError>;
    /// Marks an attempt as started, before anything of the message is looked at. An
    /// attempt that never ends (the process died in it) stays counted in the delivery's
    /// `interrupted`, which a normal end resets: the worker runs a delivery counted once
    /// alone, and holds one counted twice, so a message that crashes the server is
    /// parked instead of crashing it at every start.
    fn begin_attempt(&self, delivery_id: i64) -> Result<(), QueueError>;
    /// Parks a delivery: never tried again until `queue retry`; `reason` is shown by
    /// `queue list`, `status` and the admin.
    fn hold(&self, delivery_id: i64, reason: &str) -> Result<(), QueueError>;
    /// Makes a delivery due now (`queue retry`), held or not. Returns whether it exists.
    fn retry_now(&self, delivery_id: i64) -> Result<bool, QueueError>;
    /// Removes a delivery, and its message with its last one (`queue remove`).
    fn remove(&self, delivery_id: i64) -> Result<bool, QueueError>;
    fn list(&self, limit: usize) -> Result<Vec<QueueEntry>, QueueError>;
    /// The deliveries of one message still queued, however long the queue is (`queue
    /// retry` and `queue remove` by message id).
    fn deliveries_of(&self, message_id: i64) -> Result<Vec<i64>, QueueError>;
    /// Deliveries not yet done.
    fn pending(&self) -> Result<u64, QueueError>;
    /// Deliveries held (see `hold`).
    fn held(&self) -> Result<u64, QueueError>;
    /// When the oldest message still waiting was received (Unix seconds).
    fn oldest_received_at(&self) -> Result<Option<i64>, QueueError>;
    /// Seconds until the next delivery is due (None when the queue is empty).
    fn next_due_in(&self) -> Result<Option<i64>, QueueError>;
    /// The MTA-STS policy last fetched for a domain (lower case), if any.
    fn sts_policy(&self, domain: &str) -> Result<Option<tls_policy::StoredPolicy>, QueueError>;
    /// Keeps a fetched MTA-STS policy, replacing the domain's last one.
    fn put_sts_policy(&self, policy: &tls_policy::StoredPolicy) -> Result<(), QueueError>;
    /// Adds counts of outbound TLS sessions to those already kept (several nodes add to
    /// the same rows).
    fn add_tls_sessions(&self, sessions: &[tls_policy::tally::Sessions]) -> Result<(), QueueError>;
    /// The outbound TLS sessions counted on a day ("YYYY-MM-DD"), for its reports.
    fn tls_sessions(&self, day: &str) -> Result<Vec<tls_policy::tally::Sessions>, QueueError>;
    /// Forgets the counts of days before `day`.
    fn forget_tls_sessions(&self, day: &str) -> Result<(), QueueError>;
    /// Claims the one report of a kind ("tlsrpt") for a day and domain: true the first
    /// time only, on any node.
    fn claim_report(&self, kind: &str, day: &str, domain: &str) -> Result<bool, QueueError>;
    /// Adds counts of report rows of a kind ("dmarc") to those already kept (several
    /// nodes add to the same rows).
    fn add_report_rows(&self, kind: &str, rows: &[dmarc_report::Counted])
    -> Result<(), QueueError>;
    /// The rows of a kind counted on a day ("YYYY-MM-DD"), for its reports.
    fn report_rows(&self, kind: &str, day: &str) -> Result<Vec<dmarc_report::Counted>, QueueError>;
    /// Forgets the rows of a kind of days before `day`.
    fn forget_report_rows(&self, kind: &str, day: &str) -> Result<(), QueueError>;
    /// Keeps a report received for one of this server's domains; false when it was kept
    /// already (reporters send again).
    fn add_received_report(
        &self,
        report: &dmarc_report::received::Received,
    ) -> Result<bool, QueueError>;
    /// Reports received since a time (Unix seconds), newest first, at most
    /// `RECEIVED_REPORTS_LISTED`: their summaries, without the reports themselves.
    fn received_reports(
        &self,
        since: i64,
    ) -> Result<Vec<dmarc_report::received::Received>, QueueError>;
    /// One received report by its id.
    fn received_report(
        &self,
        id: &str,
    ) -> Result<Option<dmarc_report::received::Received>, QueueError>;
    /// Forgets the reports received before a time.
    fn forget_received_reports(&self, before: i64) -> Result<(), QueueError>;
    /// How many reports about a domain were kept since a time, and their bytes: anyone
    /// can send reports about our domains, so a day's are bounded.
    fn received_report_totals(&self, domain: &str, since: i64) -> Result<(u64, u64), QueueError>;
}

/// Received reports a listing returns at the most: 30 days of a domain at its daily bound
/// (`received::MAX_PER_DAY`), summaries of a few kilobytes at the most each.
pub const RECEIVED_REPORTS_LISTED: usize = 30_000;

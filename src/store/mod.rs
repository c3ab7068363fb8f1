//! The live state behind one trait: the directory (domains, aliases, accounts, patterns),
//! DKIM key material, and the history of applies. SQLite is the embedded backend.

mod dump;
#[cfg(feature = "mongodb")]
mod mongo;
pub mod records;
mod sqlite;

pub use dump::{DumpedKey, DumpedObject, StoreDump};
#[cfg(feature = "mongodb")]
pub use mongo::MongoStore;
pub use records::{Fields, Kind, Object};
pub use sqlite::{SqliteStore, now_rfc3339, unix_now};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the store changed since the plan was made (planned against revision {planned}, store is at {current}); run plan again"
    )]
    Stale { planned: u64, current: u64 },
    #[error("store database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("store data: {0}")]
    Data(String),
    #[cfg(feature = "mongodb")]
    #[error("MongoDB: {0}")]
    Mongo(#[from] Box<mongodb::error::Error>),
    /// The backend cannot serve as a store (e.g. MongoDB without a replica set).
    #[error("{0}")]
    Unsuitable(String),
    /// `load` into a store that already holds something.
    #[error(
        "the target store is not empty (revision {0}); ferrymail copies into an empty store only"
    )]
    NotEmpty(u64),
    #[error("store file {0}")]
    Open(#[from] crate::sqlite::OpenError),
    #[error("store files in {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Private key material generated at apply time; never part of a plan.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyMaterial {
    /// PKCS#8 DER private key.
    pub private_der: Vec<u8>,
    /// Public key as published in DNS: SubjectPublicKeyInfo DER for RSA, raw 32 bytes for Ed25519.
    pub public: Vec<u8>,
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyMaterial(***)")
    }
}

/// One write of an apply.
#[derive(Debug, Clone)]
pub enum Write {
    /// Create or replace an object; `key` is set when a DKIM key is (re)generated.
    Put {
        object: Object,
        key: Option<KeyMaterial>,
    },
    Delete {
        kind: Kind,
        id: String,
    },
}

/// A record of one apply, for `status` and audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyRecord {
    pub revision: u64,
    pub applied_at: String,
    pub added: usize,
    pub changed: usize,
    pub destroyed: usize,
    /// Where the spec came from (path, later a git commit).
    pub source: String,
}

/// A certificate issued by ACME, with its private key (PEM).
#[derive(Clone, PartialEq, Eq)]
pub struct StoredCertificate {
    /// The first name (the server's hostname).
    pub id: String,
    pub names: Vec<String>,
    pub chain_pem: String,
    pub key_pem: String,
    /// Unix seconds.
    pub not_after: i64,
    pub issued_at: i64,
    /// Someone asked for a renewal (`ferrymail certificates renew`).
    pub renew_requested: bool,
}

impl std::fmt::Debug for StoredCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCertificate")
            .field("id", &self.id)
            .field("names", &self.names)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// A DKIM key no longer in the spec: it signs nothing, its record is kept a while.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetiredKey {
    /// "selector._domainkey.domain".
    pub id: String,
    pub algorithm: String,
    pub public: Vec<u8>,
    /// Unix seconds.
    pub retired_at: i64,
}

/// A record set ferrymail published at a DNS provider (`value` empty), or one TXT value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsOwned {
    pub provider: String,
    pub zone: String,
    pub name: String,
    pub rtype: String,
    pub value: String,
}

/// One backup run (successful or not), for `status`, `plan` and the scheduler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRun {
    /// The backup's id at the target; empty when the run failed before it had one.
    pub id: String,
    /// Unix seconds.
    pub started_at: i64,
    pub target: String,
    pub ok: bool,
    /// Bytes stored at the target.
    pub size: u64,
    pub sha256: String,
    pub duration_ms: u64,
    pub error: Option<String>,
}

/// An object as stored, with who owns it.
#[derive(Debug, Clone)]
pub struct StoredObject {
    pub object: Object,
    /// Only objects created from a spec are ever changed or deleted by a plan.
    pub managed: bool,
}

/// A `serve` process, as it last reported itself: `status` lists every node of a shared
/// store, and which of them holds which cluster-wide lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// `serve --node` (default: the host name); unique among the nodes of one store.
    pub name: String,
    pub version: String,
    pub pid: u32,
    /// Unix seconds.
    pub started_at: i64,
    /// Unix seconds of the latest heartbeat.
    pub last_seen: i64,
    /// The store revision its snapshot serves.
    pub revision: u64,
    /// Cluster-wide locks it held at its latest heartbeat (e.g. "reconcile", "backup").
    pub locks: Vec<String>,
    /// Random, kept in the node's data dir: two processes that claim one name are told
    /// apart (a restart keeps it, another machine has its own).
    #[serde(default)]
    pub instance: String,
}

/// The live-state store. Every backend (SQLite, MongoDB) implements this and passes the
/// same conformance suite (tests/store_conformance.rs).
pub trait Store: Send + Sync {
    /// "sqlite" or "mongodb".
    fn kind(&self) -> &'static str;
    /// Where the store is, for `status` (never a credential).
    fn location(&self) -> String;
    /// The revision, bumped by every apply that changes something.
    fn revision(&self) -> Result<u64, StoreError>;
    /// Every object with the revision they were read at, consistently.
    fn objects(&self) -> Result<(u64, Vec<StoredObject>), StoreError>;
    /// Applies all writes atomically if the store is still at `base_revision`; returns
    /// the new revision.
    fn apply(&self, base_revision: u64, writes: &[Write], source: &str) -> Result<u64, StoreError>;
    /// Public key of a DKIM key object, for DNS publication.
    fn dkim_public_key(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Private key (PKCS#8 DER) of a DKIM key object, for signing.
    fn dkim_private_key(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// ACME account credentials (JSON, holds the account key) for a directory URL.
    fn acme_account(&self, directory: &str) -> Result<Option<String>, StoreError>;
    fn set_acme_account(&self, directory: &str, credentials: &str) -> Result<(), StoreError>;
    /// An issued certificate by id (its first name).
    fn certificate(&self, id: &str) -> Result<Option<StoredCertificate>, StoreError>;
    fn put_certificate(&self, cert: &StoredCertificate) -> Result<(), StoreError>;
    /// Asks the serving node(s) to renew a certificate now; false when there is none.
    fn request_renewal(&self, id: &str) -> Result<bool, StoreError>;
    /// DKIM keys deleted from the spec, still to be published for a while.
    fn dkim_retired(&self) -> Result<Vec<RetiredKey>, StoreError>;
    /// Every record set (or TXT value) ferrymail published at a DNS provider.
    fn dns_owned(&self) -> Result<Vec<DnsOwned>, StoreError>;
    /// Replaces what ferrymail owns in one zone at one provider (after publishing there).
    fn set_dns_owned(
        &self,
        provider: &str,
        zone: &str,
        owned: &[DnsOwned],
    ) -> Result<(), StoreError>;
    /// The most recent applies, newest first.
    fn applies(&self, limit: usize) -> Result<Vec<ApplyRecord>, StoreError>;
    /// Records a backup run.
    fn record_backup(&self, run: &BackupRun) -> Result<(), StoreError>;
    /// The most recent backup runs, newest first.
    fn backup_runs(&self, limit: usize) -> Result<Vec<BackupRun>, StoreError>;
    /// The most recent successful backup run.
    fn last_good_backup(&self) -> Result<Option<BackupRun>, StoreError>;
    /// Records a node's heartbeat (replacing its previous one).
    fn heartbeat(&self, node: &NodeInfo) -> Result<(), StoreError>;
    /// Every node that ever reported, most recently seen first.
    fn nodes(&self) -> Result<Vec<NodeInfo>, StoreError>;
    /// Forgets nodes not seen since `before` (Unix seconds); returns how many.
    fn forget_nodes(&self, before: i64) -> Result<usize, StoreError>;
    /// Everything the store holds, read consistently (`ferrymail migrate`).
    fn dump(&self) -> Result<StoreDump, StoreError>;
    /// Fills an empty store with a dump, atomically; refuses a store that holds anything.
    fn load(&self, dump: &StoreDump) -> Result<(), StoreError>;
    /// A message whenever another writer may have moved the revision, where the backend
    /// can push it (a MongoDB change stream); None: poll `revision`.
    fn watch_revision(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<()>> {
        None
    }
    /// The MongoDB connection, for the queue and the mail log kept beside the store.
    fn connection(&self) -> Option<std::sync::Arc<crate::mongo::Mongo>> {
        None
    }
}

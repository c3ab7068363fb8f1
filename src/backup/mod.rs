//! Backups: a consistent snapshot of the data dir (SQLite online backups, keys, certificates),
//! compressed (zstd) and encrypted (age) on its way to a local directory or an S3 bucket.
//!
//! An object at the target is `PREFIX/ferrymail-ID.tar.zst.age`; beside it
//! `ferrymail-ID.json` is its record (size, checksum, what it holds), written last: a
//! backup without a record never finished. Anyone holding the key can read a backup
//! without ferrymail: `age -d -i KEY FILE | zstd -d | tar x`.

mod archive;
#[cfg(feature = "mongodb")]
pub mod database;
mod key;
mod restore;
mod run;
mod schedule;
mod target;

use serde::{Deserialize, Serialize};

pub use archive::estimate;
pub use key::Key;
pub use restore::{Restore, RestoreReport, restore};
pub use run::{Created, create, prune};
pub use schedule::{Runner, Schedule};
pub use target::{Target, TargetConfig};

/// Where a MongoDB store's collections are in an archive (and in a data dir right after
/// a restore); known without the `mongodb` feature, to say a backup holds them.
pub const DATABASE_DIR: &str = "mongodb";

/// The record format written beside each object.
pub const RECORD_FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("backup target {target}: {message}")]
    Target { target: String, message: String },
    #[error("there is no backup {0} at the target (see `ferrymail backup list`)")]
    NoRecord(String),
    #[error("the object of backup {0} is missing at the target")]
    MissingObject(String),
    #[error(
        "backup {id} does not match its recorded checksum (sha256 {expected}, read {actual}): the object is damaged or truncated; nothing was restored"
    )]
    Checksum {
        id: String,
        expected: String,
        actual: String,
    },
    #[error(
        "backup {0} cannot be decrypted with this encryption key (backups.encryption_key); nothing was restored"
    )]
    WrongKey(String),
    #[error("backup {id} is damaged ({message}); nothing was restored")]
    Damaged { id: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("snapshot of {path}: {source}")]
    Sqlite {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("backups.encryption_key: {0}")]
    Key(String),
    #[error("backups.schedule {schedule:?}: {message}")]
    Schedule { schedule: String, message: String },
    #[error("{0}")]
    Refused(String),
}

pub(crate) fn io_error(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// What is known about one finished backup; the JSON written beside its object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub format: u32,
    /// UTC time it started, `20261126T030000Z` (sorts by time).
    pub id: String,
    pub created_at: String,
    pub hostname: String,
    pub ferrymail_version: String,
    /// File name of the encrypted object, beside this record.
    pub object: String,
    /// Bytes of the encrypted object at the target.
    pub size: u64,
    /// SHA-256 of the encrypted object, hex.
    pub sha256: String,
    /// Files in the snapshot and their bytes before compression.
    pub files: u64,
    pub data_bytes: u64,
    pub duration_ms: u64,
    /// Whether the snapshot holds the mailboxes' master key.
    pub includes_master_key: bool,
    /// "age-x25519" or "age-scrypt".
    pub encryption: String,
}

/// Everything one backup run needs, resolved from the spec (secrets included).
#[derive(Clone)]
pub struct Settings {
    pub target: TargetConfig,
    pub schedule: Schedule,
    pub key: Key,
    pub keep: u32,
    pub include_master_key: bool,
    pub hostname: String,
}

/// The object and record names of backup `id`.
pub fn object_name(id: &str) -> String {
    format!("ferrymail-{id}.tar.zst.age")
}

pub fn record_name(id: &str) -> String {
    format!("ferrymail-{id}.json")
}

/// `id` of a record file name, if it is one.
pub fn id_of_record(name: &str) -> Option<&str> {
    name.strip_prefix("ferrymail-")?
        .strip_suffix(".json")
        .filter(|id| is_id(id))
}

/// Whether `id` is one `id_at` makes (`20261126T030000Z`, maybe `-2`): ids from a
/// target become file names, so nothing else is taken.
pub fn is_id(id: &str) -> bool {
    let (stamp, suffix) = id.split_once('-').unwrap_or((id, "1"));
    let b = stamp.as_bytes();
    b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
        && !suffix.is_empty()
        && suffix.bytes().all(|c| c.is_ascii_digit())
}

/// A backup id for a Unix time: `20261126T030000Z`.
pub fn id_at(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .unwrap_or_default()
        .format("%Y%m%dT%H%M%SZ")
        .to_string()
}

/// An RFC 3339 time for a Unix time.
pub fn rfc3339(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Bytes for people: "12.3 MiB".
pub fn human_bytes(n: u64) -> String {
    bytesize::ByteSize::b(n).display().iec().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time_and_name_their_files() {
        assert_eq!(id_at(1_795_665_600), "20261126T040000Z");
        assert!(id_at(1_795_665_600) < id_at(1_795_665_601));
        assert_eq!(
            id_of_record(&record_name("20261127T000000Z")),
            Some("20261127T000000Z")
        );
        assert_eq!(id_of_record("ferrymail-x.tar.zst.age"), None);
        assert_eq!(id_of_record("ferrymail-../../etc.json"), None);
        assert!(is_id("20261127T000000Z-2") && !is_id("20261127T000000Z-") && !is_id("/x"));
    }
}

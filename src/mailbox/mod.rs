//! Per-account mailboxes: one SQLite file per account with folders, UIDs, flags, MODSEQ and
//! quota; message bytes and parsed metadata are encrypted at rest (see crypto.rs).

mod backend;
pub mod crypto;
mod events;
pub mod meta;
mod meta_codec;
#[cfg(feature = "mongodb")]
mod mongo;
mod store;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use backend::{Body, Mailbox};
pub use crypto::{CryptoError, MasterKey};
pub use events::Events;
/// The bytes an account's file holds against its quota (SQL), and the same for an
/// account document in MongoDB: what src/collections checks its writes against.
#[cfg(feature = "mongodb")]
pub(crate) use mongo::used_bytes;
pub(crate) use store::USED as USED_SQL;
pub use store::{
    Delta, FlagChange, Folder, MessageInfo, SPECIAL_FOLDERS, Stored, flags_after,
    renew_uidvalidity, same_flags,
};

#[derive(Debug, thiserror::Error)]
pub enum MailboxError {
    #[error("mailbox {account} is over its quota ({used} of {quota} bytes used)")]
    OverQuota {
        account: String,
        used: u64,
        quota: u64,
    },
    #[error("no folder named {0:?}")]
    NoFolder(String),
    #[error("a folder named {0:?} already exists")]
    FolderExists(String),
    #[error("{0}")]
    Refused(&'static str),
    #[error("mailbox database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("mailbox files: {0}")]
    Io(#[from] std::io::Error),
    #[error("mailbox file {0}")]
    Open(#[from] crate::sqlite::OpenError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("mailbox metadata: {0}")]
    Meta(#[from] serde_json::Error),
    #[cfg(feature = "mongodb")]
    #[error("mailbox in MongoDB: {0}")]
    Mongo(Box<mongodb::error::Error>),
}

/// Where every account's mailbox file lives (`data_dir/mailboxes/<domain>/<local>.db`),
/// the key they are sealed with, and who to tell when one changes.
#[derive(Clone)]
pub struct Mailboxes {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    master: MasterKey,
    events: Events,
    /// Set beside a MongoDB store: mailboxes live there, for every node.
    mongo: Option<Arc<crate::mongo::Mongo>>,
}

impl Mailboxes {
    pub fn new(data_dir: &Path, master: MasterKey) -> Mailboxes {
        Mailboxes {
            inner: Arc::new(Inner {
                root: data_dir.join("mailboxes"),
                master,
                events: Events::default(),
                mongo: None,
            }),
        }
    }

    /// Mailboxes kept in MongoDB beside a shared store, so that any node serves any
    /// account; `data_dir` still holds nothing of them.
    #[cfg(feature = "mongodb")]
    pub fn in_mongo(
        data_dir: &Path,
        master: MasterKey,
        mongo: Arc<crate::mongo::Mongo>,
    ) -> Result<Mailboxes, MailboxError> {
        mongo::prepare(&mongo)?;
        Ok(Mailboxes {
            inner: Arc::new(Inner {
                root: data_dir.join("mailboxes"),
                master,
                events: Events::default(),
                mongo: Some(mongo),
            }),
        })
    }

    /// "sqlite" or "mongodb".
    pub fn kind(&self) -> &'static str {
        if self.inner.mongo.is_some() {
            "mongodb"
        } else {
            "sqlite"
        }
    }

    /// Change notices: sessions of an account subscribe, writers publish.
    pub fn events(&self) -> &Events {
        &self.inner.events
    }

    /// The account's file, which also holds its calendars and contacts (src/collections).
    pub(crate) fn path(&self, account: &str) -> PathBuf {
        let (local, domain) = account.rsplit_once('@').unwrap_or((account, "_"));
        // Local parts may hold '/', '%' and the like: escape everything but a safe set.
        let escape = |text: &str| -> String {
            text.bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-_.+".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect()
        };
        let domain = match escape(&domain.to_lowercase()) {
            d if d.starts_with('.') => format!("%2E{}", &d[1..]),
            d => d,
        };
        self.inner
            .root
            .join(domain)
            .join(format!("{}.db", escape(&local.to_lowercase())))
    }

    /// The MongoDB connection mailboxes live in, if they are there.
    pub(crate) fn mongo(&self) -> Option<&Arc<crate::mongo::Mongo>> {
        self.inner.mongo.as_ref()
    }

    /// The key the account's data is sealed with.
    pub(crate) fn account_key(&self, account: &str) -> crypto::AccountKey {
        self.inner.master.account_key(&account.to_lowercase())
    }

    /// Whether the account has a mailbox file yet (nothing is created by asking).
    pub fn exists(&self, account: &str) -> bool {
        #[cfg(feature = "mongodb")]
        if let Some(m) = &self.inner.mongo {
            return mongo::exists(m, &account.to_lowercase());
        }
        self.path(account).exists()
    }

    /// Opens (creating on first use) the mailbox of `account` (blocking).
    pub fn open(&self, account: &str) -> Result<Mailbox, MailboxError> {
        let account = account.to_lowercase();
        let key = self.inner.master.account_key(&account);
        let events = self.inner.events.clone();
        #[cfg(feature = "mongodb")]
        if let Some(m) = &self.inner.mongo {
            let inner = mongo::MongoMailbox::open(m.clone(), account, key)?;
            return Ok(Mailbox::mongo(inner, events));
        }
        let inner = store::SqliteMailbox::open(&self.path(&account), account, key)?;
        Ok(Mailbox::sqlite(inner, events))
    }

    /// Delivers a message to a folder of `account` (created on first use), enforcing the
    /// quota. Returns the new message's UID (blocking).
    pub fn append(
        &self,
        account: &str,
        folder: &str,
        body: &[u8],
        quota: Option<u64>,
    ) -> Result<u32, MailboxError> {
        let mut mailbox = self.open(account)?;
        let folder = mailbox.delivery_folder(folder)?;
        let (_, uid) = mailbox.append(&folder, body, &[], crate::clock::unix_now(), quota)?;
        Ok(uid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn mailboxes(dir: &Path) -> Mailboxes {
        Mailboxes::new(dir, MasterKey::new(&[9u8; 32]).unwrap())
    }

    /// UIDs and quota are in the conformance suite (tests/mailbox_conformance.rs); what
    /// is the file's own: nothing of a message readable in it, nor with another key.
    #[test]
    fn mailbox_files_are_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let boxes = mailboxes(dir.path());
        boxes
            .append("me@d.test", "INBOX", b"one secret", None)
            .unwrap();
        let mailbox = boxes.open("me@d.test").unwrap();
        let inbox = mailbox.folder("INBOX").unwrap().unwrap();
        assert_eq!(mailbox.body(&inbox, 1).unwrap().unwrap(), b"one secret");
        let file = std::fs::read(dir.path().join("mailboxes/d.test/me.db")).unwrap();
        assert!(!file.windows(6).any(|w| w == b"secret"));
        let other = Mailboxes::new(dir.path(), MasterKey::new(&[1u8; 32]).unwrap());
        let theirs = other.open("me@d.test").unwrap();
        assert!(theirs.body(&inbox, 1).is_err());
    }

    #[test]
    fn odd_local_parts_stay_inside_the_mailbox_directory() {
        let dir = tempfile::tempdir().unwrap();
        let boxes = mailboxes(dir.path());
        boxes
            .append("../../etc@d.test", "INBOX", b"x", None)
            .unwrap();
        boxes.append("x@..", "INBOX", b"x", None).unwrap();
        assert!(
            dir.path()
                .join("mailboxes/d.test/..%2F..%2Fetc.db")
                .exists()
        );
        assert!(dir.path().join("mailboxes/%2E./x.db").exists());
    }
}

//! Per-account message stores: one SQLite file per mailbox with folders (UIDVALIDITY,
//! UIDNEXT) and messages (UID, flags, internal date, size), the base IMAP will build on.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

#[derive(Debug, thiserror::Error)]
pub enum MailboxError {
    #[error("mailbox {account} is over its quota ({used} of {quota} bytes used)")]
    OverQuota {
        account: String,
        used: u64,
        quota: u64,
    },
    #[error("mailbox database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("mailbox files: {0}")]
    Io(#[from] std::io::Error),
    #[error("mailbox file {0}")]
    Open(#[from] crate::sqlite::OpenError),
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS folders (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    special_use TEXT,
    uidvalidity INTEGER NOT NULL,
    uidnext INTEGER NOT NULL DEFAULT 1,
    highestmodseq INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS messages (
    folder_id INTEGER NOT NULL REFERENCES folders(id),
    uid INTEGER NOT NULL,
    internal_date INTEGER NOT NULL,
    size INTEGER NOT NULL,
    flags TEXT NOT NULL DEFAULT '',
    modseq INTEGER NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (folder_id, uid)
) WITHOUT ROWID;
";

/// Where every account's mailbox file lives: `data_dir/mailboxes/<domain>/<local>.db`.
#[derive(Debug, Clone)]
pub struct Mailboxes {
    root: PathBuf,
}

/// A message as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub uid: u32,
    pub size: u64,
    pub body: Vec<u8>,
}

impl Mailboxes {
    pub fn new(data_dir: &Path) -> Mailboxes {
        Mailboxes {
            root: data_dir.join("mailboxes"),
        }
    }

    fn path(&self, account: &str) -> PathBuf {
        let (local, domain) = account.rsplit_once('@').unwrap_or((account, "_"));
        // Local parts may hold '/', '%' and the like: escape everything but a safe set.
        let safe: String = local
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.+".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        self.root.join(domain).join(format!("{safe}.db"))
    }

    fn open(&self, account: &str) -> Result<Connection, MailboxError> {
        use std::os::unix::fs::DirBuilderExt;
        let path = self.path(account);
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let conn = crate::sqlite::open(&path, crate::sqlite::Durability::Full)?;
        conn.execute_batch(SCHEMA)?;
        Ok(conn)
    }

    /// Appends a message to a folder (created on first use), enforcing the quota.
    /// Returns the new message's UID.
    pub fn append(
        &self,
        account: &str,
        folder: &str,
        body: &[u8],
        quota: Option<u64>,
    ) -> Result<u32, MailboxError> {
        let mut conn = self.open(account)?;
        let tx = conn.transaction()?;
        if let Some(quota) = quota {
            let used: i64 =
                tx.query_row("SELECT COALESCE(SUM(size), 0) FROM messages", [], |r| {
                    r.get(0)
                })?;
            if used as u64 + body.len() as u64 > quota {
                return Err(MailboxError::OverQuota {
                    account: account.to_string(),
                    used: used as u64,
                    quota,
                });
            }
        }
        let now = crate::queue::now_unix();
        let folder_id: Option<i64> = tx
            .query_row("SELECT id FROM folders WHERE name = ?1", [folder], |r| {
                r.get(0)
            })
            .optional()?;
        let folder_id = match folder_id {
            Some(id) => id,
            None => {
                let special = (folder == "INBOX").then_some("\\Inbox");
                tx.execute(
                    "INSERT INTO folders (name, special_use, uidvalidity) VALUES (?1, ?2, ?3)",
                    params![folder, special, now],
                )?;
                tx.last_insert_rowid()
            }
        };
        let (uid, modseq): (i64, i64) = tx.query_row(
            "UPDATE folders SET uidnext = uidnext + 1, highestmodseq = highestmodseq + 1 WHERE id = ?1
             RETURNING uidnext - 1, highestmodseq",
            [folder_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        tx.execute(
            "INSERT INTO messages (folder_id, uid, internal_date, size, modseq, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![folder_id, uid, now, body.len() as i64, modseq, body],
        )?;
        tx.commit()?;
        Ok(uid as u32)
    }

    /// The messages of a folder in UID order (empty when the mailbox does not exist yet).
    pub fn messages(
        &self,
        account: &str,
        folder: &str,
    ) -> Result<Vec<StoredMessage>, MailboxError> {
        if !self.path(account).exists() {
            return Ok(Vec::new());
        }
        let conn = self.open(account)?;
        let mut stmt = conn.prepare(
            "SELECT m.uid, m.size, m.body FROM messages m JOIN folders f ON f.id = m.folder_id
             WHERE f.name = ?1 ORDER BY m.uid",
        )?;
        let rows = stmt.query_map([folder], |r| {
            Ok(StoredMessage {
                uid: r.get::<_, i64>(0)? as u32,
                size: r.get::<_, i64>(1)? as u64,
                body: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_assigns_uids_and_enforces_quota() {
        let dir = tempfile::tempdir().unwrap();
        let boxes = Mailboxes::new(dir.path());
        assert_eq!(
            boxes
                .append("me@d.test", "INBOX", b"one", Some(10))
                .unwrap(),
            1
        );
        assert_eq!(
            boxes
                .append("me@d.test", "INBOX", b"two", Some(10))
                .unwrap(),
            2
        );
        assert!(matches!(
            boxes.append("me@d.test", "INBOX", b"too big", Some(10)),
            Err(MailboxError::OverQuota { .. })
        ));
        let msgs = boxes.messages("me@d.test", "INBOX").unwrap();
        assert_eq!(msgs.iter().map(|m| m.uid).collect::<Vec<_>>(), [1, 2]);
        assert!(boxes.messages("nobody@d.test", "INBOX").unwrap().is_empty());
        // Odd local parts stay inside the mailbox directory.
        boxes
            .append("../../etc@d.test", "INBOX", b"x", None)
            .unwrap();
        assert!(
            dir.path()
                .join("mailboxes/d.test/%2E%2E%2F%2E%2E%2Fetc.db")
                .exists()
                || dir
                    .path()
                    .join("mailboxes/d.test/..%2F..%2Fetc.db")
                    .exists()
        );
    }
}

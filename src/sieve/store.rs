//! Each user's own Sieve scripts (uploaded over ManageSieve), kept with the account's
//! data: a table in its mailbox file, or documents beside it in MongoDB; bodies sealed.

#[cfg(feature = "mongodb")]
use mongodb::bson::doc;
use rusqlite::{Connection, OptionalExtension, params};

use super::MAX_SCRIPTS;
use crate::mailbox::crypto::AccountKey;
use crate::mailbox::{CryptoError, Mailboxes};
#[cfg(feature = "mongodb")]
use crate::mongo::{Mongo, binary, bytes, int, is_duplicate, text, unique};

/// Longest script name (RFC 5804 sets none; Dovecot's is 256 octets).
pub const MAX_NAME_LEN: usize = 255;

#[derive(Debug, thiserror::Error)]
pub enum ScriptStoreError {
    #[error("no script named {0:?}")]
    NoScript(String),
    #[error("a script named {0:?} exists already")]
    Exists(String),
    #[error("the script {0:?} is active: deactivate it first")]
    Active(String),
    #[error("an account keeps at most {MAX_SCRIPTS} scripts")]
    TooMany,
    #[error("a script is at most {} bytes", super::MAX_SCRIPT_SIZE)]
    TooLarge,
    #[error("a script name is 1 to {MAX_NAME_LEN} bytes of text without control characters")]
    BadName,
    #[error("scripts database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("scripts file {0}")]
    Open(#[from] crate::sqlite::OpenError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Mailbox(#[from] crate::mailbox::MailboxError),
    #[cfg(feature = "mongodb")]
    #[error("scripts in MongoDB: {0}")]
    Mongo(Box<mongodb::error::Error>),
}

#[cfg(feature = "mongodb")]
impl crate::mongo::DriverError for ScriptStoreError {
    fn driver(&self) -> Option<&mongodb::error::Error> {
        match self {
            ScriptStoreError::Mongo(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(feature = "mongodb")]
impl From<mongodb::error::Error> for ScriptStoreError {
    fn from(e: mongodb::error::Error) -> ScriptStoreError {
        ScriptStoreError::Mongo(Box::new(e))
    }
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS sieve_scripts (
    name TEXT PRIMARY KEY,
    -- What the body is sealed against (a row's body does not open under another name).
    seal_id INTEGER NOT NULL,
    body BLOB NOT NULL,
    size INTEGER NOT NULL,
    active INTEGER NOT NULL DEFAULT 0
)";

/// One account's scripts.
pub struct UserScripts {
    key: AccountKey,
    /// Whose scripts these are, in the documents beside MongoDB (a file is one account's).
    #[cfg(feature = "mongodb")]
    account: String,
    backend: Backend,
}

enum Backend {
    Sqlite(Connection),
    #[cfg(feature = "mongodb")]
    Mongo(std::sync::Arc<Mongo>),
}

/// A script's name and whether it is the active one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    pub active: bool,
}

/// Whether `name` may name a script (RFC 5804 §1.6: no controls, no line separators).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name
            .chars()
            .any(|c| c.is_control() || c == '\u{2028}' || c == '\u{2029}')
}

impl UserScripts {
    /// The account's scripts (the mailbox file is made on first use, as for mail).
    pub fn open(mailboxes: &Mailboxes, account: &str) -> Result<UserScripts, ScriptStoreError> {
        let account = account.to_lowercase();
        let key = mailboxes.account_key(&account);
        #[cfg(feature = "mongodb")]
        if let Some(mongo) = mailboxes.mongo() {
            let backend = Backend::Mongo(mongo.clone());
            return Ok(UserScripts {
                key,
                account,
                backend,
            });
        }
        let path = mailboxes.path(&account);
        if !path.exists() {
            drop(mailboxes.open(&account)?);
        }
        let conn = crate::sqlite::open(&path, crate::sqlite::Durability::Full)?;
        conn.execute_batch(SCHEMA)?;
        let backend = Backend::Sqlite(conn);
        Ok(UserScripts {
            key,
            #[cfg(feature = "mongodb")]
            account,
            backend,
        })
    }

    /// The active script of `account`, if it has one, without making anything.
    pub fn active_of(
        mailboxes: &Mailboxes,
        account: &str,
    ) -> Result<Option<(String, Vec<u8>)>, ScriptStoreError> {
        let account = account.to_lowercase();
        let found = active_row(mailboxes, &account)?;
        opened(mailboxes, &account, found)
    }

    /// The active script of the open `mailbox`, read through its own connection: what
    /// delivery asks for every message, at the cost of one query.
    pub fn active_in(
        mailboxes: &Mailboxes,
        mailbox: &crate::mailbox::Mailbox,
    ) -> Result<Option<(String, Vec<u8>)>, ScriptStoreError> {
        let account = mailbox.account().to_lowercase();
        let found = match (mailbox.sqlite_connection(), mailboxes.mongo()) {
            (Some(conn), _) => sqlite_active(conn)?,
            #[cfg(feature = "mongodb")]
            (None, Some(mongo)) => mongo_active(mongo, &account)?,
            (None, _) => None,
        };
        opened(mailboxes, &account, found)
    }

    /// The user's script `name` in the open `mailbox` (for `include :personal`), read
    /// through its connection.
    pub fn get_in(
        mailboxes: &Mailboxes,
        mailbox: &crate::mailbox::Mailbox,
        name: &str,
    ) -> Result<Option<Vec<u8>>, ScriptStoreError> {
        let account = mailbox.account().to_lowercase();
        let found = match (mailbox.sqlite_connection(), mailboxes.mongo()) {
            (Some(conn), _) => sqlite_script(conn, Some(name))?,
            #[cfg(feature = "mongodb")]
            (None, Some(mongo)) => mongo.block(async {
                let found = mongo
                    .coll(COLLECTION)
                    .find_one(doc! { "account": &account, "name": name })
                    .await?;
                Ok::<_, ScriptStoreError>(
                    found.map(|d| (text(&d, "name"), int(&d, "seal_id"), bytes(&d, "body"))),
                )
            })?,
            (None, _) => None,
        };
        Ok(opened(mailboxes, &account, found)?.map(|(_, body)| body))
    }

    /// The name of `account`'s active script, if any, without opening (decrypting) it:
    /// what the admin shows.
    pub fn active_name_of(
        mailboxes: &Mailboxes,
        account: &str,
    ) -> Result<Option<String>, ScriptStoreError> {
        let found = active_row(mailboxes, &account.to_lowercase())?;
        Ok(found.map(|(name, _, _)| name))
    }

    pub fn list(&self) -> Result<Vec<Listed>, ScriptStoreError> {
        #[cfg(feature = "mongodb")]
        let account = self.account.as_str();
        match &self.backend {
            Backend::Sqlite(conn) => {
                let mut stmt =
                    conn.prepare_cached("SELECT name, active FROM sieve_scripts ORDER BY name")?;
                let rows = stmt.query_map([], |r| {
                    Ok(Listed {
                        name: r.get(0)?,
                        active: r.get::<_, i64>(1)? != 0,
                    })
                })?;
                Ok(rows.collect::<Result<_, _>>()?)
            }
            #[cfg(feature = "mongodb")]
            Backend::Mongo(mongo) => mongo.block(async {
                use futures_util::TryStreamExt;
                let docs: Vec<mongodb::bson::Document> = mongo
                    .coll(COLLECTION)
                    .find(doc! { "account": account })
                    .sort(doc! { "name": 1 })
                    .projection(doc! { "name": 1, "active": 1 })
                    .await?
                    .try_collect()
                    .await?;
                Ok(docs
                    .iter()
                    .map(|d| Listed {
                        name: text(d, "name"),
                        active: d.get_bool("active").unwrap_or(false),
                    })
                    .collect())
            }),
        }
    }

    pub fn get(&self, name: &str) -> Result<Option<Vec<u8>>, ScriptStoreError> {
        #[cfg(feature = "mongodb")]
        let account = self.account.as_str();
        let row: Option<(i64, Vec<u8>)> = match &self.backend {
            Backend::Sqlite(conn) => conn
                .prepare_cached("SELECT seal_id, body FROM sieve_scripts WHERE name = ?1")?
                .query_row([name], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?,
            #[cfg(feature = "mongodb")]
            Backend::Mongo(mongo) => mongo.block(async {
                let found = mongo
                    .coll(COLLECTION)
                    .find_one(doc! { "account": account, "name": name })
                    .await?;
                Ok::<_, ScriptStoreError>(found.map(|d| (int(&d, "seal_id"), bytes(&d, "body"))))
            })?,
        };
        match row {
            Some((id, sealed)) => Ok(Some(self.key.open_script(id, &sealed)?)),
            None => Ok(None),
        }
    }

    /// Stores a script under `name`, replacing one of that name (it stays active if it
    /// was). The caller has compiled it.
    pub fn put(&mut self, name: &str, script: &[u8]) -> Result<(), ScriptStoreError> {
        #[cfg(feature = "mongodb")]
        let account = self.account.as_str();
        if !valid_name(name) {
            return Err(ScriptStoreError::BadName);
        }
        if script.len() > super::MAX_SCRIPT_SIZE {
            return Err(ScriptStoreError::TooLarge);
        }
        let id = crate::mailbox::crypto::new_seal_id()?;
        let sealed = self.key.seal_script(id, script)?;
        match &mut self.backend {
            Backend::Sqlite(conn) => {
                let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let (count, exists): (i64, bool) = tx.query_row(
                    "SELECT COUNT(*), EXISTS (SELECT 1 FROM sieve_scripts WHERE name = ?1)
                     FROM sieve_scripts",
                    [name],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                if !exists && count as usize >= MAX_SCRIPTS {
                    return Err(ScriptStoreError::TooMany);
                }
                tx.execute(
                    "INSERT INTO sieve_scripts (name, seal_id, body, size) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (name) DO UPDATE SET seal_id = excluded.seal_id,
                         body = excluded.body, size = excluded.size",
                    params![name, id, sealed, script.len() as i64],
                )?;
                tx.commit()?;
                Ok(())
            }
            #[cfg(feature = "mongodb")]
            Backend::Mongo(mongo) => mongo.block(async {
                let coll = mongo.coll(COLLECTION);
                let filter = doc! { "account": account, "name": name };
                let exists = coll.find_one(filter.clone()).await?.is_some();
                if !exists
                    && coll.count_documents(doc! { "account": account }).await? as usize
                        >= MAX_SCRIPTS
                {
                    return Err(ScriptStoreError::TooMany);
                }
                coll.update_one(
                    filter,
                    doc! {
                        "$set": { "seal_id": id, "body": binary(&sealed), "size": script.len() as i64 },
                        "$setOnInsert": { "active": false },
                    },
                )
                .upsert(true)
                .await?;
                Ok(())
            }),
        }
    }

    /// Removes a script; the active one is refused (RFC 5804 §2.10).
    pub fn delete(&mut self, name: &str) -> Result<(), ScriptStoreError> {
        #[cfg(feature = "mongodb")]
        let account = self.account.as_str();
        let listed = self.list()?;
        match listed.iter().find(|l| l.name == name) {
            None => return Err(ScriptStoreError::NoScript(name.into())),
            Some(l) if l.active => return Err(ScriptStoreError::Active(name.into())),
            Some(_) => {}
        }
        match &self.backend {
            Backend::Sqlite(conn) => {
                conn.execute(
                    "DELETE FROM sieve_scripts WHERE name = ?1 AND active = 0",
                    [name],
                )?;
            }
            #[cfg(feature = "mongodb")]
            Backend::Mongo(mongo) => mongo
                .block(async {
                    mongo
                        .coll(COLLECTION)
                        .delete_one(doc! { "account": account, "name": name, "active": false })
                        .await
                })
                .map(drop)?,
        }
        Ok(())
    }

    /// Renames a script, keeping whether it is active (RFC 5804 §2.11.1).
    pub fn rename(&mut self, from: &str, to: &str) -> Result<(), ScriptStoreError> {
        #[cfg(feature = "mongodb")]
        let account = self.account.as_str();
        if !valid_name(to) {
            return Err(ScriptStoreError::BadName);
        }
        let Some(body) = self.get(from)? else {
            return Err(ScriptStoreError::NoScript(from.into()));
        };
        if self.get(to)?.is_some() {
            return Err(ScriptStoreError::Exists(to.into()));
        }
        // The body is sealed again: the sealed value is bound to its id, not its name,
        // but a rename is rare and this keeps one way of writing.
        let id = crate::mailbox::crypto::new_seal_id()?;
        let sealed = self.key.seal_script(id, &body)?;
        match &mut self.backend {
            Backend::Sqlite(conn) => {
                let tx = conn.transaction()?;
                tx.execute(
                    "UPDATE sieve_scripts SET name = ?2, seal_id = ?3, body = ?4 WHERE name = ?1",
                    params![from, to, id, sealed],
                )?;
                tx.commit()?;
            }
            #[cfg(feature = "mongodb")]
            Backend::Mongo(mongo) => mongo
                .block(async {
                    mongo
                        .coll(COLLECTION)
                        .update_one(
                            doc! { "account": account, "name": from },
                            doc! { "$set": { "name": to, "seal_id": id, "body": binary(&sealed) } },
                        )
                        .await
                        .map_err(|e| {
                            if is_duplicate(&e) {
                                ScriptStoreError::Exists(to.into())
                            } else {
                                e.into()
                            }
                        })
                })
                .map(drop)?,
        }
        Ok(())
    }

    /// Makes `name` the active script, or none when None (RFC 5804 §2.8: "").
    pub fn set_active(&mut self, name: Option<&str>) -> Result<(), ScriptStoreError> {
        #[cfg(feature = "mongodb")]
        let account = self.account.as_str();
        if let Some(name) = name
            && !self.list()?.iter().any(|l| l.name == name)
        {
            return Err(ScriptStoreError::NoScript(name.into()));
        }
        match &mut self.backend {
            Backend::Sqlite(conn) => {
                let tx = conn.transaction()?;
                tx.execute(
                    "UPDATE sieve_scripts SET active = (name IS ?1)",
                    params![name],
                )?;
                tx.commit()?;
            }
            // One transaction: a delivery meanwhile sees the old script or the new one,
            // never none, and two at once cannot leave two active.
            #[cfg(feature = "mongodb")]
            Backend::Mongo(mongo) => {
                let mongo = mongo.clone();
                mongo.block(crate::mongo::in_transaction!(mongo, |s| async {
                    let coll = mongo.coll(COLLECTION);
                    coll.update_many(
                        doc! { "account": account, "active": true },
                        doc! { "$set": { "active": false } },
                    )
                    .session(&mut *s)
                    .await?;
                    if let Some(name) = name {
                        coll.update_one(
                            doc! { "account": account, "name": name },
                            doc! { "$set": { "active": true } },
                        )
                        .session(&mut *s)
                        .await?;
                    }
                    Ok::<_, ScriptStoreError>(())
                }))?
            }
        }
        Ok(())
    }
}

#[cfg(feature = "mongodb")]
const COLLECTION: &str = "sieve_scripts";

/// Creates the index (every node at start; idempotent).
#[cfg(feature = "mongodb")]
pub fn prepare_mongo(mongo: &Mongo) -> Result<(), ScriptStoreError> {
    mongo.block(async {
        mongo
            .coll(COLLECTION)
            .create_index(unique(doc! { "account": 1, "name": 1 }))
            .await?;
        Ok(())
    })
}

/// The active script's row of `account` (lower-case), sealed, wherever it is kept; no
/// file is made to ask.
fn active_row(
    mailboxes: &Mailboxes,
    account: &str,
) -> Result<Option<(String, i64, Vec<u8>)>, ScriptStoreError> {
    #[cfg(feature = "mongodb")]
    if let Some(mongo) = mailboxes.mongo() {
        return mongo_active(mongo, account);
    }
    let path = mailboxes.path(account);
    if !path.exists() {
        return Ok(None);
    }
    let conn = crate::sqlite::open(&path, crate::sqlite::Durability::Full)?;
    sqlite_active(&conn)
}

/// The active script's row in an account file.
fn sqlite_active(conn: &Connection) -> Result<Option<(String, i64, Vec<u8>)>, ScriptStoreError> {
    sqlite_script(conn, None)
}

/// A script's row in an account file: the one named, or the active one (None); sealed.
fn sqlite_script(
    conn: &Connection,
    name: Option<&str>,
) -> Result<Option<(String, i64, Vec<u8>)>, ScriptStoreError> {
    let row = conn
        .prepare_cached(
            "SELECT name, seal_id, body FROM sieve_scripts
             WHERE (?1 IS NULL AND active = 1) OR name = ?1",
        )
        .and_then(|mut s| {
            s.query_row([name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
        });
    match row {
        Ok(row) => Ok(row),
        // A file that never had a script has no table.
        Err(rusqlite::Error::SqliteFailure(_, Some(m))) if m.contains("no such table") => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The sealed script opened with the account's key.
fn opened(
    mailboxes: &Mailboxes,
    account: &str,
    found: Option<(String, i64, Vec<u8>)>,
) -> Result<Option<(String, Vec<u8>)>, ScriptStoreError> {
    match found {
        Some((name, id, sealed)) => {
            let key = mailboxes.account_key(account);
            Ok(Some((name, key.open_script(id, &sealed)?)))
        }
        None => Ok(None),
    }
}

#[cfg(feature = "mongodb")]
fn mongo_active(
    mongo: &Mongo,
    account: &str,
) -> Result<Option<(String, i64, Vec<u8>)>, ScriptStoreError> {
    mongo.block(async {
        let found = mongo
            .coll(COLLECTION)
            .find_one(doc! { "account": account, "active": true })
            .await?;
        Ok(found.map(|d| (text(&d, "name"), int(&d, "seal_id"), bytes(&d, "body"))))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::MasterKey;

    #[test]
    fn scripts_are_kept_sealed_listed_activated_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let boxes = Mailboxes::new(dir.path(), MasterKey::new(&[7u8; 32]).unwrap());
        assert_eq!(UserScripts::active_of(&boxes, "me@d.test").unwrap(), None);
        let mut scripts = UserScripts::open(&boxes, "me@d.test").unwrap();
        scripts.put("vacation", b"keep; # secret-marker").unwrap();
        scripts.put("lists", b"discard;").unwrap();
        assert_eq!(UserScripts::active_of(&boxes, "me@d.test").unwrap(), None);
        scripts.set_active(Some("vacation")).unwrap();
        let (name, body) = UserScripts::active_of(&boxes, "ME@d.test")
            .unwrap()
            .unwrap();
        assert_eq!(
            (name.as_str(), body.as_slice()),
            ("vacation", &b"keep; # secret-marker"[..])
        );
        assert!(matches!(
            scripts.delete("vacation"),
            Err(ScriptStoreError::Active(_))
        ));
        scripts.rename("vacation", "away").unwrap();
        assert_eq!(
            scripts.list().unwrap(),
            vec![
                Listed {
                    name: "away".into(),
                    active: true
                },
                Listed {
                    name: "lists".into(),
                    active: false
                },
            ]
        );
        assert!(matches!(
            scripts.rename("lists", "away"),
            Err(ScriptStoreError::Exists(_))
        ));
        scripts.set_active(None).unwrap();
        scripts.delete("away").unwrap();
        assert!(matches!(
            scripts.set_active(Some("nope")),
            Err(ScriptStoreError::NoScript(_))
        ));
        for n in 1..MAX_SCRIPTS {
            scripts.put(&format!("s{n}"), b"keep;").unwrap();
        }
        assert!(matches!(
            scripts.put("one-more", b"keep;"),
            Err(ScriptStoreError::TooMany)
        ));
        scripts.put("s1", b"stop;").unwrap();
        assert!(matches!(
            scripts.put("bad\nname", b"keep;"),
            Err(ScriptStoreError::BadName)
        ));
        let file = std::fs::read(boxes.path("me@d.test")).unwrap();
        assert!(
            !file.windows(13).any(|w| w == b"secret-marker"),
            "sealed in the file"
        );
    }
}

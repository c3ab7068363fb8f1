//! What a mailbox's owner set on their own page, kept with the account's data (a row in
//! its mailbox file, or a document beside it in MongoDB), sealed with the account's key.

#[cfg(feature = "mongodb")]
use mongodb::bson::doc;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::mailbox::{CryptoError, Mailbox, Mailboxes};
#[cfg(feature = "mongodb")]
use crate::mongo::{Mongo, binary, bytes, int, is_duplicate, unique};
use crate::spec::model::Vacation;

/// Everything the owner set; absent parts fall back to the spec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Own {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<OwnPassword>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub app_passwords: Vec<AppPassword>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarding: Option<Forwarding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vacation: Option<Vacation>,
}

/// The owner's own password, and which of the spec's hashes it replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnPassword {
    /// argon2id.
    pub hash: String,
    /// `super::fingerprint` of the spec's hash when it was set: a different hash in the
    /// spec since then is an operator's reset, and wins.
    pub over: String,
    /// Unix seconds.
    pub changed: i64,
}

/// A password for one mail client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppPassword {
    /// A random id that names it in forms (never the digest).
    pub id: String,
    /// What the owner called it ("phone", "laptop").
    pub name: String,
    /// `app_password::digest` of it.
    pub digest: String,
    /// `super::fingerprint` of the main password's hash in effect when it was made.
    #[serde(default)]
    pub over: String,
    pub created: i64,
    /// When it last logged in, to the hour (a login does not write more often).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<i64>,
}

/// Where the owner's mail goes besides (or instead of) their mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forwarding {
    pub to: Vec<String>,
    /// A copy stays in the mailbox.
    pub keep: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("settings database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("settings file {0}")]
    Open(#[from] crate::sqlite::OpenError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Mailbox(#[from] crate::mailbox::MailboxError),
    #[cfg(feature = "mongodb")]
    #[error("settings in MongoDB: {0}")]
    Mongo(Box<mongodb::error::Error>),
    #[error("settings record: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the settings kept changing while being written; try again")]
    Busy,
}

#[cfg(feature = "mongodb")]
impl From<mongodb::error::Error> for SettingsError {
    fn from(e: mongodb::error::Error) -> SettingsError {
        SettingsError::Mongo(Box::new(e))
    }
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS own_settings (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    -- What the body is sealed against (a copied row does not open elsewhere).
    seal_id INTEGER NOT NULL,
    body BLOB NOT NULL
)";

#[cfg(feature = "mongodb")]
const COLLECTION: &str = "own_settings";

/// Creates the index where the mailboxes are in MongoDB (every node at start;
/// idempotent); the SQLite files need nothing.
#[cfg(feature = "mongodb")]
pub fn prepare(mailboxes: &Mailboxes) -> Result<(), SettingsError> {
    let Some(mongo) = mailboxes.mongo() else {
        return Ok(());
    };
    mongo.block(async {
        mongo
            .coll(COLLECTION)
            .create_index(unique(doc! { "account": 1 }))
            .await?;
        Ok(())
    })
}

/// `account`'s settings (blocking); none set is the default. Nothing is made to ask.
pub fn read(mailboxes: &Mailboxes, account: &str) -> Result<Own, SettingsError> {
    let account = account.to_lowercase();
    #[cfg(feature = "mongodb")]
    if let Some(mongo) = mailboxes.mongo() {
        let row = mongo_row(mongo, &account)?.map(|(id, body, _)| (id, body));
        return opened(mailboxes, &account, row);
    }
    let path = mailboxes.path(&account);
    if !path.exists() {
        return Ok(Own::default());
    }
    let conn = crate::sqlite::open(&path, crate::sqlite::Durability::Full)?;
    let row = sqlite_row(&conn)?;
    opened(mailboxes, &account, row)
}

/// The settings of the open `mailbox`, through its own connection (delivery).
pub fn read_in(mailboxes: &Mailboxes, mailbox: &Mailbox) -> Result<Own, SettingsError> {
    let account = mailbox.account().to_lowercase();
    let row = match (mailbox.sqlite_connection(), mailboxes.mongo()) {
        (Some(conn), _) => sqlite_row(conn)?,
        #[cfg(feature = "mongodb")]
        (None, Some(mongo)) => mongo_row(mongo, &account)?.map(|(id, body, _)| (id, body)),
        (None, _) => None,
    };
    opened(mailboxes, &account, row)
}

/// Reads, changes with `change` and writes `account`'s settings as one step: two pages
/// saving at once do not lose either's change (blocking). The mailbox file is made if
/// it is not there yet, as for mail.
pub fn update<T>(
    mailboxes: &Mailboxes,
    account: &str,
    mut change: impl FnMut(&mut Own) -> T,
) -> Result<T, SettingsError> {
    let account = account.to_lowercase();
    #[cfg(feature = "mongodb")]
    if let Some(mongo) = mailboxes.mongo() {
        return update_in_mongo(mongo, mailboxes, &account, change);
    }
    let key = mailboxes.account_key(&account);
    let path = mailboxes.path(&account);
    if !path.exists() {
        drop(mailboxes.open(&account)?);
    }
    let mut conn = crate::sqlite::open(&path, crate::sqlite::Durability::Full)?;
    conn.execute_batch(SCHEMA)?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut own = opened(mailboxes, &account, sqlite_row(&tx)?)?;
    let answer = change(&mut own);
    let id = crate::mailbox::crypto::new_seal_id()?;
    let sealed = key.seal_settings(id, &serde_json::to_vec(&own)?)?;
    tx.execute(
        "INSERT INTO own_settings (id, seal_id, body) VALUES (1, ?1, ?2)
         ON CONFLICT (id) DO UPDATE SET seal_id = excluded.seal_id, body = excluded.body",
        params![id, sealed],
    )?;
    tx.commit()?;
    Ok(answer)
}

/// `update` where the mailboxes are in MongoDB: optimistic, written only over the
/// version read; another node's write in between makes this one read again, after a
/// pause that grows, with jitter so two writers do not meet again.
#[cfg(feature = "mongodb")]
fn update_in_mongo<T>(
    mongo: &Mongo,
    mailboxes: &Mailboxes,
    account: &str,
    mut change: impl FnMut(&mut Own) -> T,
) -> Result<T, SettingsError> {
    let key = mailboxes.account_key(account);
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            std::thread::sleep(backoff(attempt));
        }
        let found = mongo_row(mongo, account)?;
        let version = found.as_ref().map(|(_, _, v)| *v);
        let mut own = opened(mailboxes, account, found.map(|(id, b, _)| (id, b)))?;
        let answer = change(&mut own);
        let id = crate::mailbox::crypto::new_seal_id()?;
        let sealed = key.seal_settings(id, &serde_json::to_vec(&own)?)?;
        let written = mongo.block(async {
            let coll = mongo.coll(COLLECTION);
            match version {
                Some(v) => {
                    let r = coll
                        .update_one(
                            doc! { "account": account, "version": v },
                            doc! { "$set": {
                                "seal_id": id, "body": binary(&sealed), "version": v + 1,
                            } },
                        )
                        .await?;
                    Ok::<_, mongodb::error::Error>(r.matched_count == 1)
                }
                None => {
                    let d = doc! {
                        "account": account, "seal_id": id,
                        "body": binary(&sealed), "version": 1_i64,
                    };
                    match coll.insert_one(d).await {
                        Ok(_) => Ok(true),
                        Err(e) if is_duplicate(&e) => Ok(false),
                        Err(e) => Err(e),
                    }
                }
            }
        })?;
        if written {
            return Ok(answer);
        }
    }
    Err(SettingsError::Busy)
}

/// Tries of a MongoDB write that meets another writer's.
#[cfg(feature = "mongodb")]
const ATTEMPTS: u32 = 12;

#[cfg(feature = "mongodb")]
fn backoff(attempt: u32) -> std::time::Duration {
    let mut jitter = [0u8; 1];
    let _ = aws_lc_rs::rand::fill(&mut jitter);
    std::time::Duration::from_millis(u64::from(attempt) * 5 + u64::from(jitter[0] % 16))
}

fn sqlite_row(conn: &Connection) -> Result<Option<(i64, Vec<u8>)>, SettingsError> {
    let row = conn
        .prepare_cached("SELECT seal_id, body FROM own_settings WHERE id = 1")
        .and_then(|mut s| s.query_row([], |r| Ok((r.get(0)?, r.get(1)?))).optional());
    match row {
        Ok(row) => Ok(row),
        // A file whose owner never saved anything has no table.
        Err(rusqlite::Error::SqliteFailure(_, Some(m))) if m.contains("no such table") => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[cfg(feature = "mongodb")]
fn mongo_row(mongo: &Mongo, account: &str) -> Result<Option<(i64, Vec<u8>, i64)>, SettingsError> {
    mongo.block(async {
        let found = mongo
            .coll(COLLECTION)
            .find_one(doc! { "account": account })
            .await?;
        Ok(found.map(|d| (int(&d, "seal_id"), bytes(&d, "body"), int(&d, "version"))))
    })
}

fn opened(
    mailboxes: &Mailboxes,
    account: &str,
    row: Option<(i64, Vec<u8>)>,
) -> Result<Own, SettingsError> {
    match row {
        Some((id, sealed)) => {
            let plain = mailboxes.account_key(account).open_settings(id, &sealed)?;
            Ok(serde_json::from_slice(&plain)?)
        }
        None => Ok(Own::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::MasterKey;

    #[test]
    fn settings_are_sealed_kept_and_changed_in_one_step() {
        let dir = tempfile::tempdir().unwrap();
        let boxes = Mailboxes::new(dir.path(), MasterKey::new(&[7u8; 32]).unwrap());
        assert_eq!(read(&boxes, "me@d.test").unwrap(), Own::default());
        assert!(!boxes.exists("me@d.test"), "asking made nothing");
        update(&boxes, "me@d.test", |own| {
            own.forwarding = Some(Forwarding {
                to: vec!["secret-marker@elsewhere.test".into()],
                keep: true,
            })
        })
        .unwrap();
        let n = update(&boxes, "ME@d.test", |own| {
            own.app_passwords.push(AppPassword {
                id: "a1".into(),
                name: "phone".into(),
                digest: "d".into(),
                over: String::new(),
                created: 1,
                last_used: None,
            });
            own.app_passwords.len()
        })
        .unwrap();
        assert_eq!(n, 1);
        let own = read(&boxes, "me@d.test").unwrap();
        assert_eq!(own.app_passwords[0].name, "phone");
        assert!(own.forwarding.unwrap().keep);
        let file = std::fs::read(boxes.path("me@d.test")).unwrap();
        assert!(!file.windows(13).any(|w| w == b"secret-marker"));
        // Under another key nothing opens.
        let other = Mailboxes::new(dir.path(), MasterKey::new(&[8u8; 32]).unwrap());
        assert!(read(&other, "me@d.test").is_err());
    }
}

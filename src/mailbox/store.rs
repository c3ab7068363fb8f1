//! One account's mailbox file: folders (SPECIAL-USE role, UIDVALIDITY, UIDNEXT,
//! HIGHESTMODSEQ), messages (UID, flags, MODSEQ, internal date, size) and sealed blobs.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::MailboxError;
use super::crypto::{AccountKey, Part};
use super::meta::Meta;

/// The folders every mailbox has from the start, with their RFC 6154 roles.
pub const SPECIAL_FOLDERS: [(&str, Option<&str>); 6] = [
    ("INBOX", None),
    ("Sent", Some("\\Sent")),
    ("Drafts", Some("\\Drafts")),
    ("Trash", Some("\\Trash")),
    ("Junk", Some("\\Junk")),
    ("Archive", Some("\\Archive")),
];

const VERSION: i64 = 8;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS folders (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    special_use TEXT,
    subscribed INTEGER NOT NULL DEFAULT 1,
    uidvalidity INTEGER NOT NULL,
    uidnext INTEGER NOT NULL DEFAULT 1,
    highestmodseq INTEGER NOT NULL DEFAULT 1,
    first_recent INTEGER NOT NULL DEFAULT 1
);
-- One row per message content; copies in several folders share it. `meta` is empty
-- since version 6 (rows from before keep a copy nothing reads): see `metas`.
CREATE TABLE IF NOT EXISTS blobs (
    id INTEGER PRIMARY KEY,
    size INTEGER NOT NULL,
    meta BLOB NOT NULL,
    body BLOB NOT NULL,
    -- Where the top header block ends (Meta::header_len), or NULL: a FETCH of
    -- BODY[HEADER] reads it with the body instead of reading the metadata.
    header_len INTEGER
);
-- Each blob's sealed metadata (ENVELOPE, MIME structure), apart from the body: a row of
-- `blobs` fills a page with the body's first bytes, so a FETCH of every envelope read a
-- page per message; here a page holds several.
CREATE TABLE IF NOT EXISTS metas (
    id INTEGER PRIMARY KEY,
    meta BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    folder_id INTEGER NOT NULL REFERENCES folders(id) ON DELETE CASCADE,
    uid INTEGER NOT NULL,
    blob_id INTEGER NOT NULL REFERENCES blobs(id),
    size INTEGER NOT NULL,
    internal_date INTEGER NOT NULL,
    flags TEXT NOT NULL DEFAULT '',
    modseq INTEGER NOT NULL,
    PRIMARY KEY (folder_id, uid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS messages_blob ON messages (blob_id);
-- A session catches up with what changed after the MODSEQ it last saw (not by reading
-- the whole folder again): changed messages by this index, expunged ones from below.
CREATE INDEX IF NOT EXISTS messages_modseq ON messages (folder_id, modseq);
-- Every expunged UID with the MODSEQ of its expunge (what QRESYNC calls VANISHED).
CREATE TABLE IF NOT EXISTS expunged (
    folder_id INTEGER NOT NULL REFERENCES folders(id) ON DELETE CASCADE,
    uid INTEGER NOT NULL,
    modseq INTEGER NOT NULL,
    PRIMARY KEY (folder_id, uid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS expunged_modseq ON expunged (folder_id, modseq);
-- Names still subscribed whose folder was deleted (version 8): a subscription outlives
-- its folder (RFC 3501 §6.3.6), shows in LIST (SUBSCRIBED) as NonExistent, and holds
-- again for a folder made under the name.
CREATE TABLE IF NOT EXISTS lost_subscriptions (name TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
";

/// The running total of message sizes (copies count), and its starting value.
const USED_BYTES: &str = "
CREATE TRIGGER IF NOT EXISTS used_bytes_add AFTER INSERT ON messages BEGIN
    UPDATE counters SET value = value + NEW.size WHERE name = 'used_bytes';
END;
CREATE TRIGGER IF NOT EXISTS used_bytes_remove AFTER DELETE ON messages BEGIN
    UPDATE counters SET value = value - OLD.size WHERE name = 'used_bytes';
END;
INSERT INTO counters (name, value)
    VALUES ('used_bytes', (SELECT COALESCE(SUM(size), 0) FROM messages))
    ON CONFLICT (name) DO UPDATE SET value = excluded.value;
";

/// Messages and calendar/contact resources (`dav_bytes`, kept by src/collections) share
/// the account's quota.
pub(crate) const USED: &str = "SELECT COALESCE((SELECT SUM(value) FROM counters
                     WHERE name IN ('used_bytes', 'dav_bytes')), 0)";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folder {
    pub id: i64,
    pub name: String,
    pub special_use: Option<String>,
    pub subscribed: bool,
    pub uidvalidity: u32,
    pub uidnext: u32,
    pub highestmodseq: u64,
    /// The first UID no session has yet been told of as \Recent (RFC 3501 §2.3.2):
    /// the session that selects the folder next claims those from here to UIDNEXT.
    pub first_recent: u32,
}

impl Folder {
    /// Its role: the special use it is marked with, or `\\Junk` for a folder named
    /// "Junk" marked with none (where delivery files spam when no folder is marked,
    /// `Mailbox::special_folder`).
    pub fn role(&self) -> Option<&str> {
        match self.special_use.as_deref() {
            Some(role) => Some(role),
            None if self.name.eq_ignore_ascii_case("Junk") => Some("\\Junk"),
            None => None,
        }
    }
}

/// One message's UID and opened part, with (for a body) where its top header block
/// ends when that was recorded at delivery (`Meta::header_len`).
pub type Opened = (u32, Vec<u8>, Option<u32>);

/// What a session keeps of each message of its selected folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageInfo {
    pub uid: u32,
    /// System flags and keywords, e.g. ["\\Seen", "$Label1"].
    pub flags: Vec<String>,
    pub modseq: u64,
    pub size: u64,
    pub internal_date: i64,
}

impl MessageInfo {
    pub fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f.eq_ignore_ascii_case(flag))
    }
}

/// What a flag change did: every message named that exists, as it is afterwards (all
/// of them, so a STORE reply shows flags another session set meanwhile), which of them
/// changed, and which CONDSTORE's UNCHANGEDSINCE left alone (not in `now`).
#[derive(Debug, Default)]
pub struct Stored {
    pub now: Vec<MessageInfo>,
    pub changed: Vec<u32>,
    pub refused: Vec<u32>,
}

/// What changed in a folder after a MODSEQ: messages new or changed (in UID order) and
/// UIDs expunged, up to `highest`, the folder's HIGHESTMODSEQ when the look began
/// (changes past it may be in the lists too: applying one twice is harmless).
#[derive(Debug, Default)]
pub struct Delta {
    pub highest: u64,
    pub changed: Vec<MessageInfo>,
    pub expunged: Vec<u32>,
}

/// STORE's three forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagChange {
    Add,
    Remove,
    Replace,
}

pub(super) struct SqliteMailbox {
    conn: Connection,
    account: String,
    key: AccountKey,
}

impl SqliteMailbox {
    /// The file's connection, for what else the account's file holds (its Sieve scripts).
    pub(super) fn connection(&self) -> &Connection {
        &self.conn
    }
}

fn now() -> i64 {
    crate::clock::unix_now()
}

fn folder_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Folder> {
    Ok(Folder {
        id: r.get(0)?,
        name: r.get(1)?,
        special_use: r.get(2)?,
        subscribed: r.get(3)?,
        uidvalidity: r.get::<_, i64>(4)? as u32,
        uidnext: r.get::<_, i64>(5)? as u32,
        highestmodseq: r.get::<_, i64>(6)? as u64,
        first_recent: r.get::<_, i64>(7)? as u32,
    })
}

/// A message row of `uid, flags, modseq, size, internal_date`.
fn info_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MessageInfo> {
    Ok(MessageInfo {
        uid: r.get::<_, i64>(0)? as u32,
        flags: parse_flags(&r.get::<_, String>(1)?),
        modseq: r.get::<_, i64>(2)? as u64,
        size: r.get::<_, i64>(3)? as u64,
        internal_date: r.get(4)?,
    })
}

const FOLDER_COLUMNS: &str =
    "id, name, special_use, subscribed, uidvalidity, uidnext, highestmodseq, first_recent";

pub(super) fn parse_flags(text: &str) -> Vec<String> {
    text.split(' ')
        .filter(|f| !f.is_empty())
        .map(str::to_string)
        .collect()
}

/// The flags stored after STORE's `change` of `flags` on `old` (as stored); None when
/// they stay as they are.
pub(super) fn changed_flags(old: &str, change: FlagChange, flags: &[String]) -> Option<String> {
    let joined = join_flags(&flags_after(&parse_flags(old), change, flags));
    (joined != join_flags(&parse_flags(old))).then_some(joined)
}

/// The flags after STORE's `change` of `flags` on `old`.
pub fn flags_after(old: &[String], change: FlagChange, flags: &[String]) -> Vec<String> {
    let mut now = old.to_vec();
    match change {
        FlagChange::Replace => now = flags.to_vec(),
        FlagChange::Add => now.extend(flags.iter().cloned()),
        FlagChange::Remove => now.retain(|f| !flags.iter().any(|x| x.eq_ignore_ascii_case(f))),
    }
    now
}

/// Whether two lists hold the same flags (case-insensitively, as IMAP compares them).
pub fn same_flags(a: &[String], b: &[String]) -> bool {
    join_flags(a).eq_ignore_ascii_case(&join_flags(b))
}

/// Flags as stored: de-duplicated (case-insensitively), in a stable order.
pub(super) fn join_flags(flags: &[String]) -> String {
    let mut out: Vec<&str> = Vec::new();
    for f in flags {
        if !f.is_empty() && !f.contains(' ') && !out.iter().any(|o| o.eq_ignore_ascii_case(f)) {
            out.push(f);
        }
    }
    out.sort_by_key(|f| f.to_ascii_lowercase());
    out.join(" ")
}

/// A UIDVALIDITY that differs from any earlier one of the file: the clock, bumped past
/// the last one ever given (a folder deleted and made again within a second, or after the
/// clock went back, must not repeat one, or clients would trust stale caches).
fn new_uidvalidity(tx: &Connection) -> rusqlite::Result<i64> {
    let last: i64 = tx.query_row(
        "SELECT MAX(COALESCE((SELECT value FROM counters WHERE name = 'uidvalidity'), 0),
                    COALESCE((SELECT MAX(uidvalidity) FROM folders), 0))",
        [],
        |r| r.get(0),
    )?;
    let next = now().max(last + 1) & 0xFFFF_FFFF;
    tx.execute(
        "INSERT INTO counters (name, value) VALUES ('uidvalidity', ?1)
         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        [next],
    )?;
    Ok(next)
}

/// Gives every folder of the mailbox file at `path` a new UIDVALIDITY (after a restore:
/// UIDs given out since the backup may be given again, and clients must resync rather
/// than trust their caches). Returns how many folders changed.
pub fn renew_uidvalidity(path: &Path) -> rusqlite::Result<usize> {
    let mut conn = rusqlite::Connection::open(path)?;
    let tx = conn.transaction()?;
    // Files from before the counter existed get it here (the rest of their upgrade
    // happens when they are next opened).
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    )?;
    let ids: Vec<i64> = tx
        .prepare("SELECT id FROM folders ORDER BY id")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    // UIDs may be given again under the new UIDVALIDITY: what was expunged before is
    // no news to anyone.
    let has_expunged: bool = tx.query_row(
        "SELECT COUNT(*) > 0 FROM sqlite_master WHERE name = 'expunged'",
        [],
        |r| r.get(0),
    )?;
    if has_expunged {
        tx.execute("DELETE FROM expunged", [])?;
    }
    for id in &ids {
        let validity = new_uidvalidity(&tx)?;
        tx.execute(
            "UPDATE folders SET uidvalidity = ?1 WHERE id = ?2",
            [validity, *id],
        )?;
    }
    tx.commit()?;
    Ok(ids.len())
}

impl SqliteMailbox {
    pub(super) fn open(
        path: &Path,
        account: String,
        key: AccountKey,
    ) -> Result<SqliteMailbox, MailboxError> {
        use std::os::unix::fs::DirBuilderExt;
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let conn = crate::sqlite::open(path, crate::sqlite::Durability::Full)?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let mut mailbox = SqliteMailbox { conn, account, key };
        mailbox.migrate()?;
        Ok(mailbox)
    }

    fn migrate(&mut self) -> Result<(), MailboxError> {
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version >= VERSION {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Version 1 (before encryption) kept bodies in plain text in `messages`.
        let old: bool = tx.query_row(
            "SELECT COUNT(*) > 0 FROM pragma_table_info('messages') WHERE name = 'body'",
            [],
            |r| r.get(0),
        )?;
        if old {
            tx.execute_batch(
                "ALTER TABLE messages RENAME TO messages_v1;
                 ALTER TABLE folders ADD COLUMN subscribed INTEGER NOT NULL DEFAULT 1;
                 UPDATE folders SET special_use = NULL WHERE special_use = '\\Inbox';",
            )?;
        }
        tx.execute_batch(SCHEMA)?;
        if old {
            let rows: Vec<(i64, i64, i64, String, i64, Vec<u8>)> = {
                let mut stmt = tx.prepare(
                    "SELECT folder_id, uid, internal_date, flags, modseq, body FROM messages_v1",
                )?;
                stmt.query_map([], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                })?
                .collect::<Result<_, _>>()?
            };
            for (folder, uid, date, flags, modseq, body) in rows {
                let blob = insert_blob(&tx, &self.key, &body, &Meta::stored(&body))?;
                tx.execute(
                    "INSERT INTO messages (folder_id, uid, blob_id, size, internal_date, flags, modseq)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![folder, uid, blob, body.len() as i64, date, flags, modseq],
                )?;
            }
            tx.execute_batch("DROP TABLE messages_v1")?;
        }
        // Version 3: the bytes in use are kept up to date by triggers, so a quota check
        // (at every RCPT for the account) reads one row instead of summing every message.
        tx.execute_batch(USED_BYTES)?;
        // Version 4: \Recent. What is already there was seen before it was kept.
        let has_recent: bool = tx.query_row(
            "SELECT COUNT(*) > 0 FROM pragma_table_info('folders') WHERE name = 'first_recent'",
            [],
            |r| r.get(0),
        )?;
        if !has_recent {
            tx.execute_batch(
                "ALTER TABLE folders ADD COLUMN first_recent INTEGER NOT NULL DEFAULT 1;
                 UPDATE folders SET first_recent = uidnext;",
            )?;
        }
        for (name, role) in SPECIAL_FOLDERS {
            let exists: bool = tx.query_row(
                "SELECT COUNT(*) > 0 FROM folders WHERE name = ?1",
                [name],
                |r| r.get(0),
            )?;
            if !exists {
                let validity = new_uidvalidity(&tx)?;
                tx.execute(
                    "INSERT INTO folders (name, special_use, uidvalidity) VALUES (?1, ?2, ?3)",
                    params![name, role, validity],
                )?;
            }
        }
        // Version 7: the top header block's length beside each body. Older bodies
        // have none and are cut with their metadata, as before.
        let has_header_len: bool = tx.query_row(
            "SELECT COUNT(*) > 0 FROM pragma_table_info('blobs') WHERE name = 'header_len'",
            [],
            |r| r.get(0),
        )?;
        if !has_header_len {
            tx.execute_batch("ALTER TABLE blobs ADD COLUMN header_len INTEGER")?;
        }
        // Version 6: metadata apart from the bodies (see `metas`). The copies left in
        // `blobs.meta` are not read again; rewriting every body to drop them would make
        // the first login after the upgrade read and write the whole mailbox.
        tx.execute_batch(
            "INSERT OR IGNORE INTO metas (id, meta)
                 SELECT id, meta FROM blobs WHERE length(meta) > 0",
        )?;
        tx.pragma_update(None, "user_version", VERSION)?;
        tx.commit()?;
        if old {
            // The plain text of version 1 is still in the file's free pages: rewrite the
            // file without them, and empty the WAL.
            self.conn
                .execute_batch("VACUUM; PRAGMA wal_checkpoint(TRUNCATE);")?;
        }
        Ok(())
    }

    pub fn account(&self) -> &str {
        &self.account
    }

    /// Runs `body` with commits the disk is not made to flush (SQLite's synchronous
    /// NORMAL: consistent after a crash, but the last changes may be lost to a power
    /// cut), for what is no mail: a flag change, an expunge, a \Recent mark. Dovecot's
    /// default (`mail_fsync = optimized`) makes the same trade. The connection goes back
    /// to flushing every commit (FULL) before anything else runs on it.
    fn lightly<T>(
        &mut self,
        body: impl FnOnce(&mut Self) -> Result<T, MailboxError>,
    ) -> Result<T, MailboxError> {
        // Cached: compiling the PRAGMA twice was a tenth of a flag change's CPU.
        self.conn
            .prepare_cached("PRAGMA synchronous = NORMAL")?
            .execute([])?;
        let done = body(self);
        self.conn
            .prepare_cached("PRAGMA synchronous = FULL")?
            .execute([])?;
        done
    }
}

/// Runs the reads of `body` on one snapshot of the file. BEGIN and COMMIT are cached
/// statements: rusqlite's transactions compile both again each time, and every IMAP
/// command after another session's change catches up in one of these.
fn in_snapshot<T>(
    conn: &Connection,
    body: impl FnOnce(&Connection) -> Result<T, MailboxError>,
) -> Result<T, MailboxError> {
    conn.prepare_cached("BEGIN")?.execute([])?;
    let out = body(conn);
    if let Err(e) = conn
        .prepare_cached("COMMIT")
        .and_then(|mut s| s.execute([]))
    {
        // Never leave the connection inside a transaction.
        let _ = conn.execute_batch("ROLLBACK");
        out?;
        return Err(e.into());
    }
    out
}

/// The UIDs of `folder` no session has claimed as \Recent yet (`from..to`), if any.
fn unclaimed(conn: &Connection, folder: &Folder) -> Result<Option<(u32, u32)>, MailboxError> {
    let (first, next): (i64, i64) = conn
        .prepare_cached("SELECT first_recent, uidnext FROM folders WHERE id = ?1")?
        .query_row([folder.id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .ok_or_else(|| MailboxError::NoFolder(folder.name.clone()))?;
    Ok((first < next).then_some((first as u32, next as u32)))
}

/// Seals and stores a message's bytes and metadata; returns the blob id.
/// `stored` is `Meta::stored(body)`, parsed by the caller before its write transaction:
/// parsing a large message inside it kept every other writer of the mailbox waiting.
fn insert_blob(
    tx: &Connection,
    key: &AccountKey,
    body: &[u8],
    stored: &(Vec<u8>, Option<u32>),
) -> Result<i64, MailboxError> {
    let id: i64 = tx
        .prepare_cached("SELECT COALESCE(MAX(id), 0) + 1 FROM blobs")?
        .query_row([], |r| r.get(0))?;
    let (meta, header_len) = stored;
    tx.prepare_cached(
        "INSERT INTO blobs (id, size, meta, body, header_len) VALUES (?1, ?2, x'', ?3, ?4)",
    )?
    .execute(params![
        id,
        body.len() as i64,
        key.seal(id, Part::Body, body)?,
        header_len
    ])?;
    tx.prepare_cached("INSERT INTO metas (id, meta) VALUES (?1, ?2)")?
        .execute(params![id, key.seal(id, Part::Meta, meta)?])?;
    Ok(id)
}

impl SqliteMailbox {
    pub fn folders(&self) -> Result<Vec<Folder>, MailboxError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {FOLDER_COLUMNS} FROM folders ORDER BY name"
        ))?;
        let rows = stmt.query_map([], folder_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A folder by name; "INBOX" in any case is the inbox.
    pub fn folder(&self, name: &str) -> Result<Option<Folder>, MailboxError> {
        let name = canonical(name);
        Ok(self
            .conn
            .prepare_cached(&format!(
                "SELECT {FOLDER_COLUMNS} FROM folders WHERE name = ?1"
            ))?
            .query_row([name], folder_row)
            .optional()?)
    }

    pub fn create_folder(
        &mut self,
        name: &str,
        subscribed: bool,
        special_use: Option<&str>,
    ) -> Result<Folder, MailboxError> {
        let name = folder_name(name)?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let exists: bool = tx.query_row(
            "SELECT COUNT(*) > 0 FROM folders WHERE name = ?1",
            [name],
            |r| r.get(0),
        )?;
        if exists {
            return Err(MailboxError::FolderExists(name.to_string()));
        }
        let lost = take_lost(&tx, name)?;
        let validity = new_uidvalidity(&tx)?;
        tx.execute(
            "INSERT INTO folders (name, uidvalidity, subscribed, special_use)
             VALUES (?1, ?2, ?3, ?4)",
            params![name, validity, subscribed || lost, special_use],
        )?;
        tx.commit()?;
        self.folder(name)?
            .ok_or_else(|| MailboxError::NoFolder(name.to_string()))
    }

    /// Deletes a folder (not INBOX: the caller checks) with its messages.
    pub(super) fn delete_folder(&mut self, folder: &Folder) -> Result<(), MailboxError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let blobs: Vec<i64> = tx
            .prepare("DELETE FROM messages WHERE folder_id = ?1 RETURNING blob_id")?
            .query_map([folder.id], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        tx.execute("DELETE FROM folders WHERE id = ?1", [folder.id])?;
        // Kept up to as many names as an account may have folders: a client making and
        // deleting subscribed folders in a loop cannot grow the list without end.
        if folder.subscribed {
            tx.execute(
                "INSERT OR IGNORE INTO lost_subscriptions (name) SELECT ?1
                 WHERE (SELECT COUNT(*) FROM lost_subscriptions) < ?2",
                params![folder.name, crate::limits::FOLDERS_PER_ACCOUNT as i64],
            )?;
        }
        collect_garbage(&tx, blobs)?;
        tx.commit()?;
        Ok(())
    }

    /// Renames a folder and those below it (not INBOX, whose rename is a move: the
    /// caller does that, and checks that `to` is free).
    pub(super) fn rename_folder(&mut self, folder: &Folder, to: &str) -> Result<(), MailboxError> {
        let to = canonical(to).to_string();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE folders SET name = ?2 WHERE id = ?1",
            params![folder.id, to],
        )?;
        if take_lost(&tx, &to)? {
            tx.execute(
                "UPDATE folders SET subscribed = 1 WHERE id = ?1",
                [folder.id],
            )?;
        }
        let prefix = format!("{}/", folder.name);
        let children: Vec<(i64, String)> = {
            let mut stmt =
                tx.prepare("SELECT id, name FROM folders WHERE substr(name, 1, ?2) = ?1")?;
            stmt.query_map(params![prefix, prefix.len() as i64], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect::<Result<_, _>>()?
        };
        for (id, name) in children {
            let renamed = format!("{to}/{}", &name[prefix.len()..]);
            tx.execute(
                "UPDATE folders SET name = ?2 WHERE id = ?1",
                params![id, renamed],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn subscribe(&mut self, name: &str, on: bool) -> Result<(), MailboxError> {
        let n = self.conn.execute(
            "UPDATE folders SET subscribed = ?2 WHERE name = ?1",
            params![canonical(name), on],
        )?;
        if n == 0 && (on || !take_lost(&self.conn, canonical(name))?) {
            return Err(MailboxError::NoFolder(name.to_string()));
        }
        Ok(())
    }

    pub fn lost_subscriptions(&self) -> Result<Vec<String>, MailboxError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name FROM lost_subscriptions ORDER BY name")?;
        let names = stmt.query_map([], |r| r.get(0))?;
        Ok(names.collect::<Result<_, _>>()?)
    }

    /// Bytes used by every message of the account (copies count, as IMAP QUOTA does).
    pub fn quota_used(&self) -> Result<u64, MailboxError> {
        Ok(self
            .conn
            .prepare_cached(USED)?
            .query_row([], |r| r.get::<_, i64>(0))? as u64)
    }

    /// Stores a message in `folder`; returns (UIDVALIDITY, UID). `quota` (bytes) is
    /// checked in the same transaction, so two deliveries cannot both slip under it.
    pub fn append(
        &mut self,
        folder: &Folder,
        body: &[u8],
        flags: &[String],
        internal_date: i64,
        quota: Option<u64>,
    ) -> Result<(u32, u32), MailboxError> {
        // Parsed before the write lock is taken: ten 20 MB APPENDs at once each parsed
        // inside it, and the last waited past the busy timeout ("database is locked").
        let stored = Meta::stored(body);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some(quota) = quota {
            let used: i64 = tx.prepare_cached(USED)?.query_row([], |r| r.get(0))?;
            if used as u64 + body.len() as u64 > quota {
                return Err(MailboxError::OverQuota {
                    account: self.account.clone(),
                    used: used as u64,
                    quota,
                });
            }
        }
        let blob = insert_blob(&tx, &self.key, body, &stored)?;
        let (validity, uid, modseq): (i64, i64, i64) = tx
            .prepare_cached(
                "UPDATE folders SET uidnext = uidnext + 1, highestmodseq = highestmodseq + 1
                 WHERE id = ?1 RETURNING uidvalidity, uidnext - 1, highestmodseq",
            )?
            .query_row([folder.id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?
            .ok_or_else(|| MailboxError::NoFolder(folder.name.clone()))?;
        tx.prepare_cached(
            "INSERT INTO messages (folder_id, uid, blob_id, size, internal_date, flags, modseq)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            folder.id,
            uid,
            blob,
            body.len() as i64,
            internal_date,
            join_flags(flags),
            modseq
        ])?;
        tx.commit()?;
        Ok((validity as u32, uid as u32))
    }

    /// The folder as it is now (UIDNEXT and HIGHESTMODSEQ move with every change).
    pub fn refresh(&self, folder: &Folder) -> Result<Folder, MailboxError> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {FOLDER_COLUMNS} FROM folders WHERE id = ?1"
            ))?
            .query_row([folder.id], folder_row)
            .optional()?
            .ok_or_else(|| MailboxError::NoFolder(folder.name.clone()))
    }

    /// Claims the messages no session has yet seen as \Recent: returns the UIDs
    /// `from..to` that are recent for the caller alone (None when there are none).
    pub fn claim_recent(&mut self, folder: &Folder) -> Result<Option<(u32, u32)>, MailboxError> {
        // Most looks find nothing new: a read, with no write transaction and no hand-over
        // of the thread.
        if unclaimed(&self.conn, folder)?.is_none() {
            return Ok(None);
        }
        // The claim writes, and may wait for another session's write to end.
        crate::blocking::off_worker(|| self.lightly(|me| me.claim(folder)))
    }

    fn claim(&mut self, folder: &Folder) -> Result<Option<(u32, u32)>, MailboxError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Again inside the write lock: another session may have claimed them meanwhile.
        let claimed = unclaimed(&tx, folder)?;
        if let Some((_, next)) = claimed {
            tx.prepare_cached("UPDATE folders SET first_recent = ?2 WHERE id = ?1")?
                .execute(params![folder.id, next])?;
        }
        tx.commit()?;
        Ok(claimed)
    }

    /// Every message of a folder, in UID order.
    pub fn messages(&self, folder: &Folder) -> Result<Vec<MessageInfo>, MailboxError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT uid, flags, modseq, size, internal_date FROM messages
             WHERE folder_id = ?1 ORDER BY uid",
        )?;
        let rows = stmt.query_map([folder.id], info_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The UIDs of `folder` flagged \Deleted (only those in `only`, when given), in
    /// UID order: what EXPUNGE removes.
    pub fn deleted(&self, folder: &Folder, only: Option<&[u32]>) -> Result<Vec<u32>, MailboxError> {
        let deleted = |flags: &str| {
            parse_flags(flags)
                .iter()
                .any(|f| f.eq_ignore_ascii_case("\\Deleted"))
        };
        let mut out = Vec::new();
        match only {
            Some(uids) => {
                let mut read = self.conn.prepare_cached(
                    "SELECT flags FROM messages WHERE folder_id = ?1 AND uid = ?2",
                )?;
                for &uid in uids {
                    let flags: Option<String> = read
                        .query_row(params![folder.id, uid], |r| r.get(0))
                        .optional()?;
                    if flags.is_some_and(|f| deleted(&f)) {
                        out.push(uid);
                    }
                }
                out.sort_unstable();
            }
            None => {
                // LIKE narrows it down (no keyword can hold a backslash), the parse decides.
                let mut read = self.conn.prepare_cached(
                    "SELECT uid, flags FROM messages WHERE folder_id = ?1
                     AND flags LIKE '%\\Deleted%' ORDER BY uid",
                )?;
                let rows = read.query_map([folder.id], |r| {
                    Ok((r.get::<_, i64>(0)? as u32, r.get::<_, String>(1)?))
                })?;
                for row in rows {
                    let (uid, flags) = row?;
                    if deleted(&flags) {
                        out.push(uid);
                    }
                }
            }
        }
        Ok(out)
    }

    /// What changed in `folder` after MODSEQ `since`, read in one snapshot.
    pub fn changes_since(&self, folder: &Folder, since: u64) -> Result<Delta, MailboxError> {
        in_snapshot(&self.conn, |tx| {
            let highest: i64 = tx
                .prepare_cached("SELECT highestmodseq FROM folders WHERE id = ?1")?
                .query_row([folder.id], |r| r.get(0))
                .optional()?
                .ok_or_else(|| MailboxError::NoFolder(folder.name.clone()))?;
            let mut delta = Delta {
                highest: highest as u64,
                ..Delta::default()
            };
            if highest as u64 > since {
                let mut stmt = tx.prepare_cached(
                    "SELECT uid, flags, modseq, size, internal_date FROM messages
                     WHERE folder_id = ?1 AND modseq > ?2 ORDER BY uid",
                )?;
                let rows = stmt.query_map(params![folder.id, since as i64], info_row)?;
                delta.changed = rows.collect::<Result<_, _>>()?;
                let mut stmt = tx.prepare_cached(
                    "SELECT uid FROM expunged WHERE folder_id = ?1 AND modseq > ?2 ORDER BY uid",
                )?;
                let rows = stmt.query_map(params![folder.id, since as i64], |r| {
                    Ok(r.get::<_, i64>(0)? as u32)
                })?;
                delta.expunged = rows.collect::<Result<_, _>>()?;
            }
            Ok(delta)
        })
    }

    pub(super) fn sealed(
        &self,
        folder: &Folder,
        uid: u32,
        part: Part,
    ) -> Result<Option<Vec<u8>>, MailboxError> {
        let (table, column) = Self::table_of(part);
        let row: Option<(i64, Vec<u8>)> = self
            .conn
            .prepare_cached(&format!(
                "SELECT b.id, b.{column} FROM messages m JOIN {table} b ON b.id = m.blob_id
                 WHERE m.folder_id = ?1 AND m.uid = ?2"
            ))?
            .query_row(params![folder.id, uid], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        match row {
            Some((id, sealed)) => Ok(Some(self.key.open(id, part, &sealed)?)),
            None => Ok(None),
        }
    }

    /// The table and column that hold `part` of each blob.
    fn table_of(part: Part) -> (&'static str, &'static str) {
        match part {
            Part::Body => ("blobs", "body"),
            Part::Meta => ("metas", "meta"),
        }
    }

    /// The sealed part of every message whose UID is in `first..=last`, opened, in UID
    /// order: one query for a run of messages (a FETCH of a whole folder), not one each.
    /// With the bodies comes where each one's top header block ends (`Meta::header_len`),
    /// when it was recorded (version 7 on); metadata comes with None.
    pub(super) fn sealed_range(
        &self,
        folder: &Folder,
        first: u32,
        last: u32,
        part: Part,
    ) -> Result<Vec<Opened>, MailboxError> {
        let (table, column) = Self::table_of(part);
        let header_len = match part {
            Part::Body => "b.header_len",
            Part::Meta => "NULL",
        };
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT m.uid, b.id, b.{column}, {header_len} FROM messages m
             JOIN {table} b ON b.id = m.blob_id
             WHERE m.folder_id = ?1 AND m.uid BETWEEN ?2 AND ?3 ORDER BY m.uid"
        ))?;
        let rows = stmt.query_map(params![folder.id, first, last], |r| {
            Ok((
                r.get::<_, i64>(0)? as u32,
                r.get::<_, i64>(1)?,
                r.get::<_, Vec<u8>>(2)?,
                r.get::<_, Option<i64>>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (uid, id, sealed, header_len) = row?;
            let header_len = header_len.and_then(|n| u32::try_from(n).ok());
            out.push((uid, self.key.open(id, part, &sealed)?, header_len));
        }
        Ok(out)
    }

    /// Changes the flags of `uids` (see `Stored`).
    pub fn set_flags(
        &mut self,
        folder: &Folder,
        uids: &[u32],
        change: FlagChange,
        flags: &[String],
        unchanged_since: Option<u64>,
    ) -> Result<Stored, MailboxError> {
        self.lightly(|me| me.store_flags(folder, uids, change, flags, unchanged_since))
    }

    fn store_flags(
        &mut self,
        folder: &Folder,
        uids: &[u32],
        change: FlagChange,
        flags: &[String],
        unchanged_since: Option<u64>,
    ) -> Result<Stored, MailboxError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut stored = Stored::default();
        let mut modseq: Option<i64> = None;
        {
            let mut read = tx.prepare_cached(
                "SELECT flags, modseq, size, internal_date FROM messages WHERE folder_id = ?1 AND uid = ?2",
            )?;
            let mut write = tx.prepare_cached(
                "UPDATE messages SET flags = ?3, modseq = ?4 WHERE folder_id = ?1 AND uid = ?2",
            )?;
            for &uid in uids {
                let Some((old, old_modseq, size, date)) = read
                    .query_row(params![folder.id, uid], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, i64>(3)?,
                        ))
                    })
                    .optional()?
                else {
                    continue;
                };
                if unchanged_since.is_some_and(|since| old_modseq as u64 > since) {
                    stored.refused.push(uid);
                    continue;
                }
                let mut info = MessageInfo {
                    uid,
                    flags: parse_flags(&old),
                    modseq: old_modseq as u64,
                    size: size as u64,
                    internal_date: date,
                };
                if let Some(joined) = changed_flags(&old, change, flags) {
                    let next = match modseq {
                        Some(m) => m,
                        None => {
                            let m: i64 = tx
                                .prepare_cached(
                                    "UPDATE folders SET highestmodseq = highestmodseq + 1
                                     WHERE id = ?1 RETURNING highestmodseq",
                                )?
                                .query_row([folder.id], |r| r.get(0))?;
                            modseq = Some(m);
                            m
                        }
                    };
                    write.execute(params![folder.id, uid, joined, next])?;
                    info.flags = parse_flags(&joined);
                    info.modseq = next as u64;
                    stored.changed.push(uid);
                }
                stored.now.push(info);
            }
        }
        tx.commit()?;
        Ok(stored)
    }

    /// Copies messages (sharing their sealed content); returns (source UID, new UID)
    /// pairs in order.
    /// A copy counts against `quota` as a new message does (RFC 9208 §4.1).
    pub fn copy(
        &mut self,
        from: &Folder,
        uids: &[u32],
        to: &Folder,
        quota: Option<u64>,
    ) -> Result<Vec<(u32, u32)>, MailboxError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let pairs = copy_rows(&tx, from, uids, to)?;
        if let Some(quota) = quota {
            // The copies are in: the running total says whether they fit.
            let used: i64 = tx.prepare_cached(USED)?.query_row([], |r| r.get(0))?;
            if used as u64 > quota {
                return Err(MailboxError::OverQuota {
                    account: self.account.clone(),
                    used: used as u64,
                    quota,
                });
            }
        }
        tx.commit()?;
        Ok(pairs)
    }

    /// MOVE (RFC 6851): copy and expunge in one transaction.
    pub fn move_messages(
        &mut self,
        from: &Folder,
        uids: &[u32],
        to: &Folder,
    ) -> Result<Vec<(u32, u32)>, MailboxError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let pairs = copy_rows(&tx, from, uids, to)?;
        let moved: Vec<u32> = pairs.iter().map(|p| p.0).collect();
        remove_rows(&tx, from, &moved)?;
        tx.commit()?;
        Ok(pairs)
    }

    /// Removes `doomed` (the caller chose them: \Deleted, and in the UID set if any).
    pub(super) fn expunge(
        &mut self,
        folder: &Folder,
        doomed: Vec<u32>,
    ) -> Result<Vec<u32>, MailboxError> {
        self.lightly(|me| me.remove(folder, doomed))
    }

    fn remove(&mut self, folder: &Folder, doomed: Vec<u32>) -> Result<Vec<u32>, MailboxError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let blobs = remove_rows(&tx, folder, &doomed)?;
        collect_garbage(&tx, blobs)?;
        tx.commit()?;
        Ok(doomed)
    }
}

/// "inbox" in any case is INBOX (RFC 3501 §5.1); every other name is case-sensitive.
/// A name a folder can have, as stored: no empty level, none at either end.
pub(super) fn folder_name(name: &str) -> Result<&str, MailboxError> {
    let name = canonical(name);
    if name.is_empty() || name.starts_with('/') || name.ends_with('/') || name.contains("//") {
        return Err(MailboxError::Refused("not a valid folder name"));
    }
    Ok(name)
}

/// Takes `name` off the lost subscriptions; whether it was there.
fn take_lost(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached("DELETE FROM lost_subscriptions WHERE name = ?1")?
        .execute([name])?
        > 0)
}

pub(super) fn canonical(name: &str) -> &str {
    if name.eq_ignore_ascii_case("INBOX") {
        "INBOX"
    } else {
        name
    }
}

fn copy_rows(
    tx: &Connection,
    from: &Folder,
    uids: &[u32],
    to: &Folder,
) -> Result<Vec<(u32, u32)>, MailboxError> {
    let mut pairs = Vec::new();
    let mut read = tx.prepare_cached(
        "SELECT blob_id, size, internal_date, flags FROM messages WHERE folder_id = ?1 AND uid = ?2",
    )?;
    let rows: Vec<(u32, i64, i64, i64, String)> = uids
        .iter()
        .filter_map(|&uid| {
            read.query_row(params![from.id, uid], |r| {
                Ok((uid, r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()
            .transpose()
        })
        .collect::<Result<_, _>>()?;
    if rows.is_empty() {
        return Ok(pairs);
    }
    let (first, modseq): (i64, i64) = tx
        .prepare_cached(
            "UPDATE folders SET uidnext = uidnext + ?2, highestmodseq = highestmodseq + 1
             WHERE id = ?1 RETURNING uidnext - ?2, highestmodseq",
        )?
        .query_row(params![to.id, rows.len() as i64], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO messages (folder_id, uid, blob_id, size, internal_date, flags, modseq)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for (i, (uid, blob, size, date, flags)) in rows.into_iter().enumerate() {
        let new_uid = first + i as i64;
        insert.execute(params![to.id, new_uid, blob, size, date, flags, modseq])?;
        pairs.push((uid, new_uid as u32));
    }
    Ok(pairs)
}

/// Removes `uids` from `folder` under one new MODSEQ, and notes them as expunged.
/// Returns the blobs they used (which other copies may still use).
fn remove_rows(tx: &Connection, folder: &Folder, uids: &[u32]) -> Result<Vec<i64>, MailboxError> {
    let mut blobs = Vec::new();
    if uids.is_empty() {
        return Ok(blobs);
    }
    let modseq: i64 = tx
        .prepare_cached(
            "UPDATE folders SET highestmodseq = highestmodseq + 1 WHERE id = ?1
             RETURNING highestmodseq",
        )?
        .query_row([folder.id], |r| r.get(0))?;
    let mut delete = tx.prepare_cached(
        "DELETE FROM messages WHERE folder_id = ?1 AND uid = ?2 RETURNING blob_id",
    )?;
    let mut note = tx.prepare_cached(
        "INSERT OR REPLACE INTO expunged (folder_id, uid, modseq) VALUES (?1, ?2, ?3)",
    )?;
    for uid in uids {
        let blob: Option<i64> = delete
            .query_row(params![folder.id, uid], |r| r.get(0))
            .optional()?;
        if let Some(blob) = blob {
            note.execute(params![folder.id, uid, modseq])?;
            blobs.push(blob);
        }
    }
    Ok(blobs)
}

/// Deletes those of `blobs` no message refers to any more (each looked up by the
/// messages_blob index: an expunge costs what it removes, not what the mailbox holds).
fn collect_garbage(tx: &Connection, mut blobs: Vec<i64>) -> rusqlite::Result<()> {
    blobs.sort_unstable();
    blobs.dedup();
    let mut delete = tx.prepare_cached(
        "DELETE FROM blobs WHERE id = ?1
         AND NOT EXISTS (SELECT 1 FROM messages WHERE blob_id = ?1)",
    )?;
    let mut delete_meta = tx.prepare_cached("DELETE FROM metas WHERE id = ?1")?;
    for blob in blobs {
        if delete.execute([blob])? > 0 {
            delete_meta.execute([blob])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::mailboxes;
    use super::*;

    #[test]
    fn a_folder_named_junk_is_junk_when_none_is_marked() {
        let folder = |name: &str, special_use: Option<&str>| Folder {
            id: 1,
            name: name.into(),
            special_use: special_use.map(String::from),
            subscribed: true,
            uidvalidity: 1,
            uidnext: 1,
            highestmodseq: 0,
            first_recent: 1,
        };
        assert_eq!(folder("junk", None).role(), Some("\\Junk"));
        assert_eq!(folder("Junk", Some("\\Archive")).role(), Some("\\Archive"));
        assert_eq!(folder("Work", None).role(), None);
    }

    #[test]
    fn version_1_files_are_encrypted_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mailboxes/d.test/me.db");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE folders (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, special_use TEXT,
               uidvalidity INTEGER NOT NULL, uidnext INTEGER NOT NULL DEFAULT 1, highestmodseq INTEGER NOT NULL DEFAULT 0);
             CREATE TABLE messages (folder_id INTEGER NOT NULL, uid INTEGER NOT NULL, internal_date INTEGER NOT NULL,
               size INTEGER NOT NULL, flags TEXT NOT NULL DEFAULT '', modseq INTEGER NOT NULL, body BLOB NOT NULL,
               PRIMARY KEY (folder_id, uid)) WITHOUT ROWID;
             INSERT INTO folders VALUES (1, 'INBOX', '\\Inbox', 1000, 2, 1);
             INSERT INTO messages VALUES (1, 1, 5, 19, '', 1, CAST('Subject: old secret' AS BLOB));",
        )
        .unwrap();
        drop(conn);
        let boxes = mailboxes(dir.path());
        let mb = boxes.open("me@d.test").unwrap();
        let inbox = mb.folder("INBOX").unwrap().unwrap();
        assert_eq!(
            (inbox.uidvalidity, inbox.uidnext),
            (1000, 2),
            "clients keep their cache"
        );
        assert_eq!(inbox.first_recent, 2, "what was there before is not new");
        assert_eq!(mb.body(&inbox, 1).unwrap().unwrap(), b"Subject: old secret");
        drop(mb);
        let file = std::fs::read(&path).unwrap();
        assert!(!file.windows(10).any(|w| w == b"old secret"));
    }

    #[test]
    fn a_catch_up_that_fails_leaves_no_transaction_open() {
        let dir = tempfile::tempdir().unwrap();
        let boxes = mailboxes(dir.path());
        boxes
            .append("me@d.test", "INBOX", b"Subject: a\r\n\r\nx", None)
            .unwrap();
        let mut mailbox = boxes.open("me@d.test").unwrap();
        let mut gone = mailbox.folder("INBOX").unwrap().unwrap();
        gone.id = 999;
        assert!(matches!(
            mailbox.changes_since(&gone, 0),
            Err(MailboxError::NoFolder(_))
        ));
        // A write on the same connection still commits (no BEGIN left dangling), and
        // the next catch-up sees it.
        let inbox = mailbox.folder("INBOX").unwrap().unwrap();
        mailbox
            .set_flags(&inbox, &[1], FlagChange::Add, &["\\Seen".into()], None)
            .unwrap();
        let delta = mailbox.changes_since(&inbox, 0).unwrap();
        assert!(delta.changed[0].has("\\Seen"));
    }

    /// Turns me@d.test's file under `dir` into an older version's, by `sql`.
    fn older(dir: &std::path::Path, sql: &str) {
        let conn = Connection::open(dir.join("mailboxes/d.test/me.db")).unwrap();
        conn.execute_batch(sql).unwrap();
    }

    #[test]
    fn bodies_come_with_their_header_length_from_version_7_on() {
        let dir = tempfile::tempdir().unwrap();
        let boxes = mailboxes(dir.path());
        let old = b"Subject: before\r\n\r\nhello\r\n";
        boxes.append("me@d.test", "INBOX", old, None).unwrap();
        // Make it a version 6 file: no `header_len`.
        older(
            dir.path(),
            "ALTER TABLE blobs DROP COLUMN header_len; PRAGMA user_version = 6;",
        );
        let new = b"Subject: after\r\nX-Long: header\r\n\r\nhello\r\n";
        boxes.append("me@d.test", "INBOX", new, None).unwrap();
        let mailbox = boxes.open("me@d.test").unwrap();
        let inbox = mailbox.folder("INBOX").unwrap().unwrap();
        let bodies = mailbox.bodies_between(&inbox, 1, 2).unwrap();
        assert_eq!(bodies[0].1.bytes, old);
        assert_eq!(bodies[0].1.header_len, None, "older bodies have none");
        let expected = Meta::of(new).structure.body_start;
        assert_eq!(expected as usize, new.len() - b"hello\r\n".len());
        assert_eq!(bodies[1].1.header_len, Some(expected));
    }

    #[test]
    fn version_5_metadata_moves_beside_the_bodies_and_goes_with_them() {
        let dir = tempfile::tempdir().unwrap();
        let boxes = mailboxes(dir.path());
        let message = b"Subject: kept\r\nFrom: a@b.test\r\n\r\nhello\r\n";
        boxes.append("me@d.test", "INBOX", message, None).unwrap();
        // Make it a version 5 file: the metadata in `blobs.meta`, no `metas`.
        older(
            dir.path(),
            "UPDATE blobs SET meta = (SELECT meta FROM metas WHERE metas.id = blobs.id);
             DROP TABLE metas;
             PRAGMA user_version = 5;",
        );
        let path = dir.path().join("mailboxes/d.test/me.db");
        let mailbox = boxes.open("me@d.test").unwrap();
        let inbox = mailbox.folder("INBOX").unwrap().unwrap();
        let meta = mailbox.meta(&inbox, 1).unwrap().unwrap();
        assert_eq!(meta.envelope.subject.as_deref(), Some("kept"));
        let count = |table: &str| -> i64 {
            Connection::open(&path)
                .unwrap()
                .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(count("metas"), 1);
        // A new message's metadata is only in `metas`; an expunge takes both rows.
        drop(mailbox);
        boxes.append("me@d.test", "INBOX", message, None).unwrap();
        let mut mailbox = boxes.open("me@d.test").unwrap();
        let empty: i64 = Connection::open(&path)
            .unwrap()
            .query_row(
                "SELECT COUNT(*) FROM blobs WHERE length(meta) = 0",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!((count("metas"), empty), (2, 1));
        mailbox
            .set_flags(
                &inbox,
                &[1, 2],
                FlagChange::Add,
                &["\\Deleted".to_string()],
                None,
            )
            .unwrap();
        mailbox.expunge(&inbox, None).unwrap();
        assert_eq!((count("metas"), count("blobs")), (0, 0));
    }
}

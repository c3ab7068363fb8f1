//! Collections in the account's mailbox file: tables beside the mail, resource bodies
//! sealed with the account key; names, UIDs, ETags and change numbers stay plain to be indexed.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{
    Changes, Collection, CollectionError, Kind, NewResource, Precondition, PropName, Resource,
    etag_of,
};
use crate::mailbox::Mailboxes;
use crate::mailbox::crypto::AccountKey;

/// Raised when the tables change shape; kept in `counters` (the file's `user_version`
/// belongs to the mailbox).
const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS dav_collections (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    instance TEXT NOT NULL,
    modseq INTEGER NOT NULL DEFAULT 1,
    components TEXT NOT NULL DEFAULT '',
    -- Dead properties as JSON [[ns, name, value]...]: display names and colours, in
    -- the clear like folder names.
    props TEXT NOT NULL DEFAULT '[]',
    UNIQUE (kind, name)
);
CREATE TABLE IF NOT EXISTS dav_resources (
    id INTEGER PRIMARY KEY,
    collection_id INTEGER NOT NULL REFERENCES dav_collections(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    uid TEXT NOT NULL,
    component TEXT NOT NULL,
    content_type TEXT NOT NULL,
    etag TEXT NOT NULL,
    size INTEGER NOT NULL,
    modseq INTEGER NOT NULL,
    modified INTEGER NOT NULL,
    body BLOB NOT NULL,
    -- When a calendar object happens (Span): in the clear, so queries skip what they need not open.
    span_start INTEGER NOT NULL DEFAULT -9223372036854775808,
    span_end INTEGER NOT NULL DEFAULT 9223372036854775807,
    span_exact INTEGER NOT NULL DEFAULT 0,
    UNIQUE (collection_id, name)
);
CREATE UNIQUE INDEX IF NOT EXISTS dav_resources_uid ON dav_resources (collection_id, uid);
CREATE INDEX IF NOT EXISTS dav_resources_modseq ON dav_resources (collection_id, modseq);
-- Names removed and the change that removed them: what sync-collection reports as 404.
CREATE TABLE IF NOT EXISTS dav_removed (
    collection_id INTEGER NOT NULL REFERENCES dav_collections(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    modseq INTEGER NOT NULL,
    PRIMARY KEY (collection_id, name)
) WITHOUT ROWID;
-- Resources count against the mailbox's quota: the mailbox adds this counter to its own.
INSERT OR IGNORE INTO counters (name, value) VALUES ('dav_bytes', 0);
CREATE TRIGGER IF NOT EXISTS dav_bytes_add AFTER INSERT ON dav_resources BEGIN
    UPDATE counters SET value = value + NEW.size WHERE name = 'dav_bytes';
END;
CREATE TRIGGER IF NOT EXISTS dav_bytes_remove AFTER DELETE ON dav_resources BEGIN
    UPDATE counters SET value = value - OLD.size WHERE name = 'dav_bytes';
END;
CREATE TRIGGER IF NOT EXISTS dav_bytes_change AFTER UPDATE OF size ON dav_resources BEGIN
    UPDATE counters SET value = value + NEW.size - OLD.size WHERE name = 'dav_bytes';
END;
";

/// From version 1: objects stored before spans were kept have `Span::ANY`, which every
/// query opens.
const SPANS: &str = "
ALTER TABLE dav_resources ADD COLUMN span_start INTEGER NOT NULL DEFAULT -9223372036854775808;
ALTER TABLE dav_resources ADD COLUMN span_end INTEGER NOT NULL DEFAULT 9223372036854775807;
ALTER TABLE dav_resources ADD COLUMN span_exact INTEGER NOT NULL DEFAULT 0;
";

const COLLECTION_COLUMNS: &str = "id, kind, name, instance, modseq, components, props";
const RESOURCE_COLUMNS: &str = "name, uid, component, etag, size, modseq, modified, content_type, \
                                span_start, span_end, span_exact";

/// Collections an account may have (every PROPFIND of the home lists them all).
pub(super) const COLLECTIONS_PER_ACCOUNT: usize = 200;
/// Resources in one collection.
pub(super) const RESOURCES_PER_COLLECTION: i64 = 100_000;

pub struct SqliteCollections {
    conn: Connection,
    key: AccountKey,
}

impl SqliteCollections {
    /// Opens the account's file, made (with its mailbox) on first use; a file without
    /// the tables gets them. Says too whether the default collections are still to make.
    pub(super) fn open(
        mailboxes: &Mailboxes,
        account: &str,
    ) -> Result<(SqliteCollections, bool), CollectionError> {
        let path = mailboxes.path(account);
        if !path.exists() {
            // The mailbox makes the directory, the file, its tables and counters.
            drop(mailboxes.open(account)?);
        }
        let conn = crate::sqlite::open(&path, crate::sqlite::Durability::Full)?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let mut this = SqliteCollections {
            conn,
            key: mailboxes.account_key(account),
        };
        let (mut version, mut defaults_made) = this.state();
        if version < SCHEMA_VERSION {
            // A file from before the mailbox had `counters` is brought up first.
            drop(mailboxes.open(account)?);
            this.prepare()?;
            (version, defaults_made) = this.state();
            debug_assert!(version >= SCHEMA_VERSION);
        }
        Ok((this, !defaults_made))
    }

    /// The tables' version, and whether the defaults were made (one query: it runs for
    /// every request).
    fn state(&self) -> (i64, bool) {
        let state = self
            .conn
            .prepare_cached(
                "SELECT COALESCE((SELECT value FROM counters WHERE name = 'dav_schema'), 0),
                        EXISTS (SELECT 1 FROM counters WHERE name = 'dav_defaults')",
            )
            .and_then(|mut s| s.query_row([], |r| Ok((r.get(0)?, r.get(1)?))));
        // No `counters` table yet: a mailbox file from before it (made up to date next).
        state.unwrap_or((0, false))
    }

    fn prepare(&mut self) -> Result<(), CollectionError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: i64 = tx
            .query_row(
                "SELECT value FROM counters WHERE name = 'dav_schema'",
                [],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0);
        if version == 1 {
            tx.execute_batch(SPANS)?;
        }
        if version < SCHEMA_VERSION {
            tx.execute_batch(SCHEMA)?;
            tx.execute(
                "INSERT INTO counters (name, value) VALUES ('dav_schema', ?1)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                [SCHEMA_VERSION],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Notes that the defaults were made: one its owner deletes is not made again.
    pub(super) fn defaults_made(&mut self) -> Result<(), CollectionError> {
        self.conn.execute(
            "INSERT OR IGNORE INTO counters (name, value) VALUES ('dav_defaults', 1)",
            [],
        )?;
        Ok(())
    }

    pub fn collections(&self, kind: Kind) -> Result<Vec<Collection>, CollectionError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {COLLECTION_COLUMNS} FROM dav_collections WHERE kind = ?1 ORDER BY name"
        ))?;
        let rows = stmt.query_map([kind.as_str()], collection_row)?;
        rows.map(|r| r?).collect()
    }

    pub fn collection(
        &self,
        kind: Kind,
        name: &str,
    ) -> Result<Option<Collection>, CollectionError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {COLLECTION_COLUMNS} FROM dav_collections WHERE kind = ?1 AND name = ?2"
        ))?;
        stmt.query_row(params![kind.as_str(), name], collection_row)
            .optional()?
            .transpose()
    }

    /// Makes a collection; refused when the name is taken or the account has too many.
    pub fn create(
        &mut self,
        kind: Kind,
        name: &str,
        components: &[String],
        props: &[(PropName, String)],
    ) -> Result<Collection, CollectionError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (count, taken): (i64, bool) = tx.query_row(
            "SELECT COUNT(*), COALESCE(SUM(kind = ?1 AND name = ?2), 0) > 0 FROM dav_collections",
            params![kind.as_str(), name],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if taken {
            return Err(CollectionError::Exists(name.to_string()));
        }
        if count as usize >= COLLECTIONS_PER_ACCOUNT {
            return Err(CollectionError::Refused("too many collections"));
        }
        let props: Vec<(&str, &str, &str)> = props
            .iter()
            .map(|((ns, n), v)| (ns.as_str(), n.as_str(), v.as_str()))
            .collect();
        tx.execute(
            "INSERT INTO dav_collections (kind, name, instance, components, props)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                kind.as_str(),
                name,
                instance()?,
                components.join(","),
                serde_json::to_string(&props)?
            ],
        )?;
        tx.commit()?;
        self.collection(kind, name)?
            .ok_or_else(|| CollectionError::NoCollection(name.to_string()))
    }

    /// Removes a collection with everything in it.
    pub fn remove(&mut self, collection: &Collection) -> Result<(), CollectionError> {
        self.conn
            .prepare_cached("DELETE FROM dav_collections WHERE id = ?1")?
            .execute([collection.id])?;
        Ok(())
    }

    /// Sets and removes dead properties (PROPPATCH), all or none.
    pub fn update_props(
        &mut self,
        collection: &Collection,
        set: &[(PropName, String)],
        remove: &[PropName],
    ) -> Result<Collection, CollectionError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let json: String = tx.query_row(
            "SELECT props FROM dav_collections WHERE id = ?1",
            [collection.id],
            |r| r.get(0),
        )?;
        let mut props = parse_props(&json)?;
        for name in remove {
            props.remove(name);
        }
        for (name, value) in set {
            props.insert(name.clone(), value.clone());
        }
        let list: Vec<(&str, &str, &str)> = props
            .iter()
            .map(|((ns, n), v)| (ns.as_str(), n.as_str(), v.as_str()))
            .collect();
        tx.execute(
            "UPDATE dav_collections SET props = ?1 WHERE id = ?2",
            params![serde_json::to_string(&list)?, collection.id],
        )?;
        tx.commit()?;
        Ok(Collection {
            props,
            ..collection.clone()
        })
    }

    pub fn resources(&self, collection: &Collection) -> Result<Vec<Resource>, CollectionError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {RESOURCE_COLUMNS} FROM dav_resources WHERE collection_id = ?1 ORDER BY name"
        ))?;
        let rows = stmt.query_map([collection.id], resource_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn count(&self, collection: &Collection) -> Result<u64, CollectionError> {
        let n: i64 = self
            .conn
            .prepare_cached("SELECT COUNT(*) FROM dav_resources WHERE collection_id = ?1")?
            .query_row([collection.id], |r| r.get(0))?;
        Ok(n as u64)
    }

    pub fn resource(
        &self,
        collection: &Collection,
        name: &str,
    ) -> Result<Option<Resource>, CollectionError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {RESOURCE_COLUMNS} FROM dav_resources WHERE collection_id = ?1 AND name = ?2"
        ))?;
        Ok(stmt
            .query_row(params![collection.id, name], resource_row)
            .optional()?)
    }

    /// A resource with its body, opened.
    pub fn read(
        &self,
        collection: &Collection,
        name: &str,
    ) -> Result<Option<(Resource, Vec<u8>)>, CollectionError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {RESOURCE_COLUMNS}, id, body FROM dav_resources
             WHERE collection_id = ?1 AND name = ?2"
        ))?;
        let row = stmt
            .query_row(params![collection.id, name], |r| {
                Ok((
                    resource_row(r)?,
                    r.get::<_, i64>(11)?,
                    r.get::<_, Vec<u8>>(12)?,
                ))
            })
            .optional()?;
        match row {
            Some((resource, id, sealed)) => {
                let body = self.key.open_resource(id, &sealed)?;
                Ok(Some((resource, body)))
            }
            None => Ok(None),
        }
    }

    /// Every resource of the collection with its body (queries that look inside), or
    /// those whose span may overlap `within`, one at a time to `f` while it says go on.
    pub fn each_within(
        &self,
        collection: &Collection,
        within: Option<(i64, i64)>,
        f: &mut dyn FnMut(Resource, Vec<u8>) -> bool,
    ) -> Result<(), CollectionError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {RESOURCE_COLUMNS}, id, body FROM dav_resources
             WHERE collection_id = ?1 AND span_start < ?2 AND span_end >= ?3 ORDER BY name"
        ))?;
        let (from, to) = within.unwrap_or((i64::MIN, i64::MAX));
        // `span_start < i64::MAX` would leave out a span starting there; none can.
        let mut rows = stmt.query(params![collection.id, to, from])?;
        while let Some(r) = rows.next()? {
            let resource = resource_row(r)?;
            let sealed: Vec<u8> = r.get(12)?;
            let body = self.key.open_resource(r.get(11)?, &sealed)?;
            if !f(resource, body) {
                break;
            }
        }
        Ok(())
    }

    /// Stores a resource under its name if `precondition` holds: returns it as stored and
    /// whether it is new. Refused when another resource has its UID, or past `quota`.
    pub fn put(
        &mut self,
        collection: &Collection,
        new: &NewResource,
        precondition: &Precondition,
        quota: Option<u64>,
    ) -> Result<(Resource, bool), CollectionError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let old: Option<(i64, String, i64)> = tx
            .prepare_cached(
                "SELECT id, etag, size FROM dav_resources WHERE collection_id = ?1 AND name = ?2",
            )?
            .query_row(params![collection.id, new.name], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        if !precondition.holds(old.as_ref().map(|o| o.1.as_str())) {
            return Err(CollectionError::Changed);
        }
        let holder: Option<String> = tx
            .prepare_cached("SELECT name FROM dav_resources WHERE collection_id = ?1 AND uid = ?2")?
            .query_row(params![collection.id, new.uid], |r| r.get(0))
            .optional()?;
        let moved = match new.moved_from {
            Some((from, name)) => {
                let size: Option<i64> = tx
                    .prepare_cached(
                        "SELECT size FROM dav_resources WHERE collection_id = ?1 AND name = ?2",
                    )?
                    .query_row(params![from.id, name], |r| r.get(0))
                    .optional()?;
                // Gone since the request looked: the move is not made.
                Some((from, name, size.ok_or(CollectionError::Changed)?))
            }
            None => None,
        };
        let vacated = |holder: &str| {
            moved.is_some_and(|(from, name, _)| from.id == collection.id && name == holder)
        };
        if let Some(holder) = holder.filter(|h| h != new.name && !vacated(h)) {
            return Err(CollectionError::UidConflict(holder));
        }
        let size = new.body.len() as i64;
        let old_size = old.as_ref().map_or(0, |o| o.2) + moved.map_or(0, |m| m.2);
        if let Some(quota) = quota.filter(|_| size > old_size) {
            let used: i64 = tx
                .prepare_cached(crate::mailbox::USED_SQL)?
                .query_row([], |r| r.get(0))?;
            if (used - old_size + size) as u64 > quota {
                return Err(CollectionError::OverQuota {
                    used: used.max(0) as u64,
                    quota,
                });
            }
        }
        if old.is_none() {
            let count: i64 = tx
                .prepare_cached("SELECT COUNT(*) FROM dav_resources WHERE collection_id = ?1")?
                .query_row([collection.id], |r| r.get(0))?;
            if count >= RESOURCES_PER_COLLECTION {
                return Err(CollectionError::Refused(
                    "too many resources in the collection",
                ));
            }
        }
        if let Some((from, name, _)) = moved {
            remove_row(&tx, from.id, name)?;
        }
        let modseq = bump(&tx, collection.id)?;
        let etag = etag_of(new.body);
        let now = crate::store::unix_now();
        let id = match &old {
            Some((id, _, _)) => *id,
            None => tx
                .prepare_cached("SELECT COALESCE(MAX(id), 0) + 1 FROM dav_resources")?
                .query_row([], |r| r.get(0))?,
        };
        let sealed = self.key.seal_resource(id, new.body)?;
        tx.prepare_cached(
            "INSERT INTO dav_resources (id, collection_id, name, uid, component, content_type,
                                        etag, size, modseq, modified, body,
                                        span_start, span_end, span_exact)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
             ON CONFLICT (id) DO UPDATE SET uid = excluded.uid, component = excluded.component,
                 content_type = excluded.content_type, etag = excluded.etag,
                 size = excluded.size, modseq = excluded.modseq,
                 modified = excluded.modified, body = excluded.body,
                 span_start = excluded.span_start, span_end = excluded.span_end,
                 span_exact = excluded.span_exact",
        )?
        .execute(params![
            id,
            collection.id,
            new.name,
            new.uid,
            new.component,
            new.content_type,
            etag,
            size,
            modseq as i64,
            now,
            sealed,
            new.span.start,
            new.span.end,
            new.span.exact
        ])?;
        tx.prepare_cached("DELETE FROM dav_removed WHERE collection_id = ?1 AND name = ?2")?
            .execute(params![collection.id, new.name])?;
        tx.commit()?;
        let resource = Resource {
            name: new.name.to_string(),
            uid: new.uid.to_string(),
            component: new.component.to_string(),
            etag,
            size: size as u64,
            modseq,
            modified: now,
            content_type: new.content_type.to_string(),
            span: new.span,
        };
        Ok((resource, old.is_none()))
    }

    /// Removes a resource if `precondition` holds; false when there was none.
    pub fn delete(
        &mut self,
        collection: &Collection,
        name: &str,
        precondition: &Precondition,
    ) -> Result<bool, CollectionError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current: Option<String> = tx
            .prepare_cached(
                "SELECT etag FROM dav_resources WHERE collection_id = ?1 AND name = ?2",
            )?
            .query_row(params![collection.id, name], |r| r.get(0))
            .optional()?;
        if !precondition.holds(current.as_deref()) {
            return Err(CollectionError::Changed);
        }
        if current.is_none() {
            return Ok(false);
        }
        remove_row(&tx, collection.id, name)?;
        tx.commit()?;
        Ok(true)
    }

    /// What changed after change number `since` (sync-collection).
    pub fn changes_since(
        &self,
        collection: &Collection,
        since: u64,
    ) -> Result<Changes, CollectionError> {
        let changed = {
            let mut stmt = self.conn.prepare_cached(&format!(
                "SELECT {RESOURCE_COLUMNS} FROM dav_resources
                 WHERE collection_id = ?1 AND modseq > ?2 ORDER BY modseq"
            ))?;
            stmt.query_map(params![collection.id, since as i64], resource_row)?
                .collect::<Result<_, _>>()?
        };
        let removed = {
            let mut stmt = self.conn.prepare_cached(
                "SELECT name FROM dav_removed WHERE collection_id = ?1 AND modseq > ?2
                 ORDER BY modseq",
            )?;
            stmt.query_map(params![collection.id, since as i64], |r| r.get(0))?
                .collect::<Result<_, _>>()?
        };
        Ok(Changes { changed, removed })
    }
}

/// Removes a resource, noting the removal for sync-collection under a new change number.
fn remove_row(tx: &Connection, collection: i64, name: &str) -> Result<(), CollectionError> {
    let modseq = bump(tx, collection)?;
    tx.prepare_cached("DELETE FROM dav_resources WHERE collection_id = ?1 AND name = ?2")?
        .execute(params![collection, name])?;
    tx.prepare_cached(
        "INSERT INTO dav_removed (collection_id, name, modseq) VALUES (?1, ?2, ?3)
         ON CONFLICT (collection_id, name) DO UPDATE SET modseq = excluded.modseq",
    )?
    .execute(params![collection, name, modseq as i64])?;
    Ok(())
}

/// The collection's next change number, taken.
fn bump(tx: &Connection, collection: i64) -> Result<u64, CollectionError> {
    let modseq: i64 = tx
        .prepare_cached(
            "UPDATE dav_collections SET modseq = modseq + 1 WHERE id = ?1 RETURNING modseq",
        )?
        .query_row([collection], |r| r.get(0))?;
    Ok(modseq as u64)
}

/// Gives every collection in a restored mailbox file a new instance, as its folders get a
/// new UIDVALIDITY: a client's sync token from after the backup would otherwise name a
/// state the restored collection reaches again with other contents. Clients sync anew
/// (their ETags still match, so nothing is fetched twice). Returns how many.
pub fn renew_instances(path: &std::path::Path) -> Result<usize, CollectionError> {
    let mut conn = Connection::open(path)?;
    let tx = conn.transaction()?;
    let present: bool = tx.query_row(
        "SELECT COUNT(*) > 0 FROM sqlite_master WHERE name = 'dav_collections'",
        [],
        |r| r.get(0),
    )?;
    if !present {
        return Ok(0);
    }
    let ids: Vec<i64> = tx
        .prepare("SELECT id FROM dav_collections")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for id in &ids {
        tx.execute(
            "UPDATE dav_collections SET instance = ?1 WHERE id = ?2",
            params![instance()?, id],
        )?;
    }
    tx.commit()?;
    Ok(ids.len())
}

/// A random name for a collection's instance (see `Collection::instance`).
pub(super) fn instance() -> Result<String, CollectionError> {
    let mut bytes = [0u8; 8];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| CollectionError::Crypto(crate::mailbox::CryptoError::Random))?;
    Ok(hex::encode(bytes))
}

fn parse_props(
    json: &str,
) -> Result<std::collections::BTreeMap<PropName, String>, CollectionError> {
    let list: Vec<(String, String, String)> = serde_json::from_str(json)?;
    Ok(list
        .into_iter()
        .map(|(ns, name, value)| ((ns, name), value))
        .collect())
}

fn collection_row(r: &rusqlite::Row) -> rusqlite::Result<Result<Collection, CollectionError>> {
    let kind: String = r.get(1)?;
    let components: String = r.get(5)?;
    let props: String = r.get(6)?;
    let id: i64 = r.get(0)?;
    let name: String = r.get(2)?;
    let instance: String = r.get(3)?;
    let modseq: i64 = r.get(4)?;
    Ok((|| {
        Ok(Collection {
            id,
            kind: Kind::parse(&kind).ok_or(CollectionError::Refused("unknown collection kind"))?,
            name,
            instance,
            modseq: modseq as u64,
            components: components
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect(),
            props: parse_props(&props)?,
        })
    })())
}

fn resource_row(r: &rusqlite::Row) -> rusqlite::Result<Resource> {
    Ok(Resource {
        name: r.get(0)?,
        uid: r.get(1)?,
        component: r.get(2)?,
        etag: r.get(3)?,
        size: r.get::<_, i64>(4)? as u64,
        modseq: r.get::<_, i64>(5)? as u64,
        modified: r.get(6)?,
        content_type: r.get(7)?,
        span: super::Span {
            start: r.get(8)?,
            end: r.get(9)?,
            exact: r.get(10)?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::super::*;

    /// An account's store in a fresh data dir, with its default calendar.
    fn account() -> (
        tempfile::TempDir,
        Collections,
        AccountCollections,
        Collection,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let master = crate::mailbox::MasterKey::new(&[9u8; 32]).unwrap();
        let all = Collections::new(Mailboxes::new(dir.path(), master)).unwrap();
        let mine = all.open("me@d.test").unwrap();
        let cal = mine
            .collection(Kind::Calendar, "calendar")
            .unwrap()
            .unwrap();
        (dir, all, mine, cal)
    }

    /// The rest is in the conformance suite (tests/collections_conformance.rs); what is
    /// the file's own: nothing of a resource readable in it.
    #[test]
    fn resource_bodies_are_sealed_in_the_file() {
        let (dir, _all, mut mine, cal) = account();
        let body = b"BEGIN:VCALENDAR\r\nSUMMARY:secret meeting\r\nEND:VCALENDAR\r\n";
        let new = NewResource {
            name: "a.ics",
            uid: "u1",
            component: "VEVENT",
            content_type: "text/calendar",
            body,
            span: Span::ANY,
            moved_from: None,
        };
        mine.put(&cal, &new, &Precondition::Any, None).unwrap();
        drop(mine);
        let file = std::fs::read(dir.path().join("mailboxes/d.test/me.db")).unwrap();
        assert!(!file.windows(6).any(|w| w == b"secret"));
    }

    fn count(store: &AccountCollections, collection: &Collection, range: (i64, i64)) -> usize {
        let mut n = 0;
        store
            .each_within(collection, Some(range), &mut |_, _| {
                n += 1;
                true
            })
            .unwrap();
        n
    }

    /// A file from before spans were kept gets the columns; what it holds is read by
    /// every query (Span::ANY) until it is written again.
    #[test]
    fn a_file_of_version_one_is_brought_up() {
        let (dir, all, mut mine, cal) = account();
        let exact = Span {
            start: 1,
            end: 2,
            exact: true,
        };
        let new = NewResource {
            name: "a.ics",
            uid: "u1",
            component: "VEVENT",
            content_type: "text/calendar",
            body: b"BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n",
            span: exact,
            moved_from: None,
        };
        mine.put(&cal, &new, &Precondition::Any, None).unwrap();
        drop(mine);
        let file = dir.path().join("mailboxes/d.test/me.db");
        let conn = rusqlite::Connection::open(&file).unwrap();
        conn.execute_batch(
            "ALTER TABLE dav_resources DROP COLUMN span_start;
             ALTER TABLE dav_resources DROP COLUMN span_end;
             ALTER TABLE dav_resources DROP COLUMN span_exact;
             UPDATE counters SET value = 1 WHERE name = 'dav_schema';",
        )
        .unwrap();
        drop(conn);
        let mut mine = all.open("me@d.test").unwrap();
        let old = mine.resource(&cal, "a.ics").unwrap().unwrap();
        assert_eq!(old.span, Span::ANY);
        assert_eq!(count(&mine, &cal, (5, 6)), 1);
        mine.put(&cal, &new, &Precondition::Any, None).unwrap();
        assert_eq!(mine.resource(&cal, "a.ics").unwrap().unwrap().span, exact);
        assert_eq!(count(&mine, &cal, (5, 6)), 0);
    }
}

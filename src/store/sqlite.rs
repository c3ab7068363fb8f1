//! The embedded store: one SQLite file in WAL mode under `data_dir`, private to the
//! server (0600), schema versioned with `PRAGMA user_version` migrations.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::sqlite::Durability;

use super::{
    ApplyRecord, BackupRun, DnsOwned, DumpedKey, DumpedObject, Kind, NodeInfo, Object, RetiredKey,
    Store, StoreDump, StoreError, StoredCertificate, StoredObject, Write,
};

/// Schema steps; index + 1 is the `user_version` after the step. Append, never edit.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
     INSERT INTO meta (key, value) VALUES ('revision', '0');
     CREATE TABLE objects (
        kind TEXT NOT NULL,
        id TEXT NOT NULL,
        fields TEXT NOT NULL,
        managed_by TEXT NOT NULL DEFAULT 'spec',
        created_revision INTEGER NOT NULL,
        updated_revision INTEGER NOT NULL,
        PRIMARY KEY (kind, id)
     ) WITHOUT ROWID;
     CREATE TABLE dkim_keys (
        id TEXT PRIMARY KEY,
        private_key BLOB NOT NULL,
        public_key BLOB NOT NULL,
        created_revision INTEGER NOT NULL
     ) WITHOUT ROWID;
     CREATE TABLE applies (
        revision INTEGER PRIMARY KEY,
        applied_at TEXT NOT NULL,
        added INTEGER NOT NULL,
        changed INTEGER NOT NULL,
        destroyed INTEGER NOT NULL,
        source TEXT NOT NULL
     );",
    // What each apply published at each DNS provider: ferrymail changes or deletes
    // only these (value is '' for a whole RRset, the TXT value otherwise).
    "CREATE TABLE dns_owned (
        provider TEXT NOT NULL,
        zone TEXT NOT NULL,
        name TEXT NOT NULL,
        type TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (provider, zone, name, type, value)
     ) WITHOUT ROWID;",
    // DKIM keys taken out of the spec: no longer signing, but their records stay
    // published a while for mail signed just before (dns.keep_retired_dkim).
    "CREATE TABLE dkim_retired (
        id TEXT PRIMARY KEY,
        algorithm TEXT NOT NULL,
        public_key BLOB NOT NULL,
        retired_at INTEGER NOT NULL
     ) WITHOUT ROWID;",
    // ACME account credentials (one per directory URL) and issued certificates: in the
    // store, so every node serves the same certificate and shares the account.
    "CREATE TABLE acme_accounts (
        directory TEXT PRIMARY KEY,
        credentials TEXT NOT NULL
     ) WITHOUT ROWID;
     CREATE TABLE certificates (
        id TEXT PRIMARY KEY,
        names TEXT NOT NULL,
        chain_pem TEXT NOT NULL,
        key_pem TEXT NOT NULL,
        not_after INTEGER NOT NULL,
        issued_at INTEGER NOT NULL,
        renew_requested INTEGER NOT NULL DEFAULT 0
     ) WITHOUT ROWID;",
    // Backup runs, successful or not: status, the plan's staleness warning, the scheduler.
    "CREATE TABLE backup_runs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        target TEXT NOT NULL,
        ok INTEGER NOT NULL,
        size INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        duration_ms INTEGER NOT NULL,
        error TEXT
     );
     CREATE INDEX backup_runs_ok ON backup_runs (ok, started_at);",
    // Serving nodes' heartbeats (one here; many on a shared store), for `status`.
    "CREATE TABLE nodes (
        name TEXT PRIMARY KEY,
        info TEXT NOT NULL,
        last_seen INTEGER NOT NULL
     ) WITHOUT ROWID;",
];

// The clock lives in a leaf module; `store::unix_now` stays for its many callers.
pub use crate::clock::unix_now;

pub struct SqliteStore {
    conn: Mutex<Connection>,
    path: PathBuf,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `data_dir`, which is made 0700.
    pub fn open(data_dir: &Path) -> Result<SqliteStore, StoreError> {
        if !data_dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(data_dir)
                .map_err(io_err(data_dir))?;
        }
        let path = data_dir.join("ferrymail.db");
        // Full durability: an apply reported as done survives power loss.
        let conn = crate::sqlite::open(&path, Durability::Full)?;
        migrate(&conn)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            path,
        })
    }

    /// Opens the store if it exists; None when there is none yet (nothing is created).
    pub fn open_existing(data_dir: &Path) -> Result<Option<SqliteStore>, StoreError> {
        if data_dir.join("ferrymail.db").exists() {
            Self::open(data_dir).map(Some)
        } else {
            Ok(None)
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite itself consistent; keep going.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let version = version as usize;
    if version > MIGRATIONS.len() {
        return Err(StoreError::Data(format!(
            "the store is at schema version {version}, newer than this ferrymail knows ({}); upgrade ferrymail",
            MIGRATIONS.len()
        )));
    }
    for (i, step) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(step)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

fn read_revision(conn: &Connection) -> Result<u64, StoreError> {
    let v: String = conn.query_row("SELECT value FROM meta WHERE key = 'revision'", [], |r| {
        r.get(0)
    })?;
    v.parse()
        .map_err(|_| StoreError::Data(format!("revision {v:?} is not a number")))
}

fn backup_runs(
    conn: &Connection,
    filter: &str,
    limit: usize,
) -> Result<Vec<BackupRun>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT id, started_at, target, ok, size, sha256, duration_ms, error FROM backup_runs
         {filter} ORDER BY seq DESC LIMIT ?1"
    ))?;
    let rows = stmt.query_map([limit as i64], |r| {
        Ok(BackupRun {
            id: r.get(0)?,
            started_at: r.get(1)?,
            target: r.get(2)?,
            ok: r.get(3)?,
            size: r.get::<_, i64>(4)? as u64,
            sha256: r.get(5)?,
            duration_ms: r.get::<_, i64>(6)? as u64,
            error: r.get(7)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

impl Store for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn revision(&self) -> Result<u64, StoreError> {
        read_revision(&self.conn())
    }

    fn objects(&self) -> Result<(u64, Vec<StoredObject>), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let revision = read_revision(&tx)?;
        let mut stmt = tx.prepare("SELECT kind, id, fields, managed_by FROM objects")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (kind, id, fields, managed_by) = row?;
            let kind = Kind::parse(&kind)
                .ok_or_else(|| StoreError::Data(format!("unknown object kind {kind:?}")))?;

            out.push(StoredObject {
                object: Object {
                    kind,
                    id,
                    json: fields,
                },
                managed: managed_by == "spec",
            });
        }
        Ok((revision, out))
    }

    fn apply(&self, base_revision: u64, writes: &[Write], source: &str) -> Result<u64, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current = read_revision(&tx)?;
        if current != base_revision {
            return Err(StoreError::Stale {
                planned: base_revision,
                current,
            });
        }
        let revision = current + 1;
        let (mut added, mut changed, mut destroyed) = (0, 0, 0);
        {
            let mut exists =
                tx.prepare_cached("SELECT 1 FROM objects WHERE kind = ?1 AND id = ?2")?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO objects (kind, id, fields, created_revision, updated_revision) VALUES (?1, ?2, ?3, ?4, ?4)
                 ON CONFLICT (kind, id) DO UPDATE SET fields = excluded.fields, updated_revision = excluded.updated_revision",
            )?;
            let mut delete = tx.prepare_cached(
                "DELETE FROM objects WHERE kind = ?1 AND id = ?2 AND managed_by = 'spec'",
            )?;
            let mut put_key = tx.prepare_cached(
                "INSERT OR REPLACE INTO dkim_keys (id, private_key, public_key, created_revision) VALUES (?1, ?2, ?3, ?4)",
            )?;
            let mut delete_key = tx.prepare_cached("DELETE FROM dkim_keys WHERE id = ?1")?;
            let mut retire_key = tx.prepare_cached(
                "INSERT OR REPLACE INTO dkim_retired (id, algorithm, public_key, retired_at)
                 SELECT k.id, COALESCE(json_extract(o.fields, '$.algorithm'), 'rsa-2048'), k.public_key, ?2
                 FROM dkim_keys k JOIN objects o ON o.kind = 'dkim_key' AND o.id = k.id
                 WHERE k.id = ?1",
            )?;
            let mut unretire_key = tx.prepare_cached("DELETE FROM dkim_retired WHERE id = ?1")?;
            for write in writes {
                match write {
                    Write::Put { object, key } => {
                        let kind = object.kind.as_str();
                        let existed = exists.exists(params![kind, object.id])?;
                        let fields = &object.json;
                        insert.execute(params![kind, object.id, fields, revision as i64])?;
                        if let Some(key) = key {
                            unretire_key.execute(params![object.id])?;
                            put_key.execute(params![
                                object.id,
                                key.private_der,
                                key.public,
                                revision as i64
                            ])?;
                        }
                        if existed { changed += 1 } else { added += 1 }
                    }
                    Write::Delete { kind, id } => {
                        if *kind == Kind::DkimKey {
                            retire_key.execute(params![id, unix_now()])?;
                        }
                        destroyed += delete.execute(params![kind.as_str(), id])?;
                        if *kind == Kind::DkimKey {
                            delete_key.execute(params![id])?;
                        }
                    }
                }
            }
        }
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'revision'",
            params![revision.to_string()],
        )?;
        tx.execute(
            "INSERT INTO applies (revision, applied_at, added, changed, destroyed, source) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![revision as i64, now_rfc3339(), added as i64, changed as i64, destroyed as i64, source],
        )?;
        tx.commit()?;
        Ok(revision)
    }

    fn dkim_public_key(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT public_key FROM dkim_keys WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn dkim_private_key(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT private_key FROM dkim_keys WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn acme_account(&self, directory: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT credentials FROM acme_accounts WHERE directory = ?1",
                [directory],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn set_acme_account(&self, directory: &str, credentials: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT OR REPLACE INTO acme_accounts (directory, credentials) VALUES (?1, ?2)",
            params![directory, credentials],
        )?;
        Ok(())
    }

    fn certificate(&self, id: &str) -> Result<Option<StoredCertificate>, StoreError> {
        certificate(&self.conn(), id)
    }

    fn put_certificate(&self, cert: &StoredCertificate) -> Result<(), StoreError> {
        put_certificate(&self.conn(), cert)
    }

    fn request_renewal(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.conn().execute(
            "UPDATE certificates SET renew_requested = 1 WHERE id = ?1",
            [id],
        )? > 0)
    }

    fn dkim_retired(&self) -> Result<Vec<RetiredKey>, StoreError> {
        dkim_retired(&self.conn())
    }

    fn dns_owned(&self) -> Result<Vec<DnsOwned>, StoreError> {
        dns_owned(&self.conn())
    }

    fn set_dns_owned(
        &self,
        provider: &str,
        zone: &str,
        owned: &[DnsOwned],
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "DELETE FROM dns_owned WHERE provider = ?1 AND zone = ?2",
            params![provider, zone],
        )?;
        {
            let mut insert = tx.prepare(
                "INSERT OR IGNORE INTO dns_owned (provider, zone, name, type, value) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for o in owned {
                insert.execute(params![provider, zone, o.name, o.rtype, o.value])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn record_backup(&self, run: &BackupRun) -> Result<(), StoreError> {
        let conn = self.conn();
        insert_backup_run(&conn, run)?;
        // A history, not an archive: the last thousand runs are plenty.
        conn.execute(
            "DELETE FROM backup_runs WHERE seq <= (SELECT MAX(seq) FROM backup_runs) - 1000",
            [],
        )?;
        Ok(())
    }

    fn backup_runs(&self, limit: usize) -> Result<Vec<BackupRun>, StoreError> {
        backup_runs(&self.conn(), "", limit)
    }

    fn last_good_backup(&self) -> Result<Option<BackupRun>, StoreError> {
        Ok(backup_runs(&self.conn(), "WHERE ok = 1", 1)?.pop())
    }

    fn heartbeat(&self, node: &NodeInfo) -> Result<(), StoreError> {
        let info = serde_json::to_string(node).map_err(|e| StoreError::Data(e.to_string()))?;
        self.conn().execute(
            "INSERT OR REPLACE INTO nodes (name, info, last_seen) VALUES (?1, ?2, ?3)",
            params![node.name, info, node.last_seen],
        )?;
        Ok(())
    }

    fn nodes(&self) -> Result<Vec<NodeInfo>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT info FROM nodes ORDER BY last_seen DESC, name")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.map(|info| {
            serde_json::from_str(&info?).map_err(|e| StoreError::Data(format!("node: {e}")))
        })
        .collect()
    }

    fn forget_nodes(&self, before: i64) -> Result<usize, StoreError> {
        Ok(self
            .conn()
            .execute("DELETE FROM nodes WHERE last_seen < ?1", [before])?)
    }

    fn dump(&self) -> Result<StoreDump, StoreError> {
        let mut conn = self.conn();
        // One read transaction: a dump of a live store is one consistent moment.
        let tx = conn.transaction()?;
        let mut dump = StoreDump {
            revision: read_revision(&tx)?,
            ..StoreDump::default()
        };
        {
            let mut stmt = tx.prepare(
                "SELECT kind, id, fields, managed_by, created_revision, updated_revision FROM objects",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let kind: String = r.get(0)?;
                dump.objects.push(DumpedObject {
                    kind: Kind::parse(&kind)
                        .ok_or_else(|| StoreError::Data(format!("unknown object kind {kind:?}")))?,
                    id: r.get(1)?,
                    json: r.get(2)?,
                    managed: r.get::<_, String>(3)? == "spec",
                    created_revision: r.get::<_, i64>(4)? as u64,
                    updated_revision: r.get::<_, i64>(5)? as u64,
                });
            }
            let mut stmt =
                tx.prepare("SELECT id, private_key, public_key, created_revision FROM dkim_keys")?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                dump.dkim_keys.push(DumpedKey {
                    id: r.get(0)?,
                    private_der: r.get(1)?,
                    public: r.get(2)?,
                    created_revision: r.get::<_, i64>(3)? as u64,
                });
            }
            let mut stmt = tx.prepare("SELECT directory, credentials FROM acme_accounts")?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                dump.acme_accounts.push((r.get(0)?, r.get(1)?));
            }
            let mut stmt = tx.prepare("SELECT id FROM certificates")?;
            let ids = stmt
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            for id in ids {
                if let Some(cert) = certificate(&tx, &id)? {
                    dump.certificates.push(cert);
                }
            }
            dump.applies = applies(&tx, usize::MAX)?;
            dump.applies.reverse();
            dump.backup_runs = backup_runs(&tx, "", usize::MAX)?;
            dump.backup_runs.reverse();
        }
        dump.dkim_retired = dkim_retired(&tx)?;
        dump.dns_owned = dns_owned(&tx)?;
        tx.commit()?;
        dump.sort();
        Ok(dump)
    }

    fn load(&self, dump: &StoreDump) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current = read_revision(&tx)?;
        let held: i64 = tx.query_row(
            "SELECT (SELECT COUNT(*) FROM objects) + (SELECT COUNT(*) FROM applies)
                  + (SELECT COUNT(*) FROM certificates)",
            [],
            |r| r.get(0),
        )?;
        if current != 0 || held != 0 {
            return Err(StoreError::NotEmpty(current));
        }
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'revision'",
            [dump.revision.to_string()],
        )?;
        for o in &dump.objects {
            tx.execute(
                "INSERT INTO objects (kind, id, fields, managed_by, created_revision, updated_revision)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    o.kind.as_str(),
                    o.id,
                    o.json,
                    if o.managed { "spec" } else { "user" },
                    o.created_revision as i64,
                    o.updated_revision as i64
                ],
            )?;
        }
        for k in &dump.dkim_keys {
            tx.execute(
                "INSERT INTO dkim_keys (id, private_key, public_key, created_revision) VALUES (?1, ?2, ?3, ?4)",
                params![k.id, k.private_der, k.public, k.created_revision as i64],
            )?;
        }
        for k in &dump.dkim_retired {
            tx.execute(
                "INSERT INTO dkim_retired (id, algorithm, public_key, retired_at) VALUES (?1, ?2, ?3, ?4)",
                params![k.id, k.algorithm, k.public, k.retired_at],
            )?;
        }
        for o in &dump.dns_owned {
            tx.execute(
                "INSERT INTO dns_owned (provider, zone, name, type, value) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![o.provider, o.zone, o.name, o.rtype, o.value],
            )?;
        }
        for (directory, credentials) in &dump.acme_accounts {
            tx.execute(
                "INSERT INTO acme_accounts (directory, credentials) VALUES (?1, ?2)",
                params![directory, credentials],
            )?;
        }
        for cert in &dump.certificates {
            put_certificate(&tx, cert)?;
        }
        for a in &dump.applies {
            tx.execute(
                "INSERT INTO applies (revision, applied_at, added, changed, destroyed, source) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![a.revision as i64, a.applied_at, a.added as i64, a.changed as i64, a.destroyed as i64, a.source],
            )?;
        }
        for run in &dump.backup_runs {
            insert_backup_run(&tx, run)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn applies(&self, limit: usize) -> Result<Vec<ApplyRecord>, StoreError> {
        applies(&self.conn(), limit)
    }
}

fn applies(conn: &Connection, limit: usize) -> Result<Vec<ApplyRecord>, StoreError> {
    {
        let mut stmt = conn.prepare(
            "SELECT revision, applied_at, added, changed, destroyed, source FROM applies ORDER BY revision DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit.min(i64::MAX as usize) as i64], |r| {
            Ok(ApplyRecord {
                revision: r.get::<_, i64>(0)? as u64,
                applied_at: r.get(1)?,
                added: r.get::<_, i64>(2)? as usize,
                changed: r.get::<_, i64>(3)? as usize,
                destroyed: r.get::<_, i64>(4)? as usize,
                source: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn insert_backup_run(conn: &Connection, run: &BackupRun) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO backup_runs (id, started_at, target, ok, size, sha256, duration_ms, error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            run.id,
            run.started_at,
            run.target,
            run.ok,
            run.size as i64,
            run.sha256,
            run.duration_ms as i64,
            run.error
        ],
    )?;
    Ok(())
}

fn certificate(conn: &Connection, id: &str) -> Result<Option<StoredCertificate>, StoreError> {
    let row = conn
        .query_row(            "SELECT id, names, chain_pem, key_pem, not_after, issued_at, renew_requested FROM certificates WHERE id = ?1",
            [id],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, i64>(6)?,
                ))
            },
        )
        .optional()?;
    Ok(row.map(
        |(id, names, chain_pem, key_pem, not_after, issued_at, renew)| StoredCertificate {
            id,
            names: serde_json::from_str(&names).unwrap_or_default(),
            chain_pem,
            key_pem,
            not_after,
            issued_at,
            renew_requested: renew != 0,
        },
    ))
}

fn put_certificate(conn: &Connection, cert: &StoredCertificate) -> Result<(), StoreError> {
    let names = serde_json::to_string(&cert.names).unwrap_or_else(|_| "[]".into());
    conn.execute(
        "INSERT OR REPLACE INTO certificates (id, names, chain_pem, key_pem, not_after, issued_at, renew_requested)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            cert.id,
            names,
            cert.chain_pem,
            cert.key_pem,
            cert.not_after,
            cert.issued_at,
            cert.renew_requested as i64
        ],
    )?;
    Ok(())
}

fn dkim_retired(conn: &Connection) -> Result<Vec<RetiredKey>, StoreError> {
    let mut stmt =
        conn.prepare("SELECT id, algorithm, public_key, retired_at FROM dkim_retired ORDER BY id")?;
    let rows = stmt.query_map([], |r| {
        Ok(RetiredKey {
            id: r.get(0)?,
            algorithm: r.get(1)?,
            public: r.get(2)?,
            retired_at: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn dns_owned(conn: &Connection) -> Result<Vec<DnsOwned>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT provider, zone, name, type, value FROM dns_owned ORDER BY provider, zone, name, type, value",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(DnsOwned {
            provider: r.get(0)?,
            zone: r.get(1)?,
            name: r.get(2)?,
            rtype: r.get(3)?,
            value: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::store::KeyMaterial;

    fn obj(id: &str) -> Object {
        Object {
            kind: Kind::Alias,
            id: id.into(),
            json: r#"{"forward":["a@b.test"]}"#.into(),
        }
    }

    #[test]
    fn apply_bumps_revision_and_refuses_stale_plans() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(store.revision().unwrap(), 0);
        let put = Write::Put {
            object: obj("x@d.test"),
            key: None,
        };
        assert_eq!(
            store.apply(0, std::slice::from_ref(&put), "test").unwrap(),
            1
        );
        assert!(matches!(
            store.apply(0, &[put], "test"),
            Err(StoreError::Stale {
                planned: 0,
                current: 1
            })
        ));
        let (rev, objects) = store.objects().unwrap();
        assert_eq!((rev, objects.len()), (1, 1));
        assert!(objects[0].managed);
        assert_eq!(store.applies(10).unwrap()[0].added, 1);
    }

    #[test]
    fn database_file_is_private_and_keys_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let store = SqliteStore::open(&data).unwrap();
        let mode = std::fs::metadata(store.path())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            std::fs::metadata(&data).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let key = KeyMaterial {
            private_der: vec![1, 2],
            public: vec![3],
        };
        let object = Object {
            kind: Kind::DkimKey,
            id: "s._domainkey.d.test".into(),
            json: "{}".into(),
        };
        store
            .apply(
                0,
                &[Write::Put {
                    object,
                    key: Some(key),
                }],
                "t",
            )
            .unwrap();
        assert_eq!(
            store.dkim_public_key("s._domainkey.d.test").unwrap(),
            Some(vec![3])
        );
        drop(store);
        let reopened = SqliteStore::open(&data).unwrap();
        assert_eq!(
            reopened.dkim_private_key("s._domainkey.d.test").unwrap(),
            Some(vec![1, 2])
        );
    }
}

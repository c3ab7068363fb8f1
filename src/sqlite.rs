//! How every SQLite file ferrymail keeps is opened: created 0600 before SQLite touches it
//! (never world-readable, even for an instant), WAL, the durability asked for, a busy timeout.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use rusqlite::Connection;

/// How far a commit must reach before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// On disk (fsync): the store, the queue, mailboxes. A reply that follows a commit is
    /// true after a power loss.
    Full,
    /// In the OS: logs, which may lose their last records on power loss but never corrupt.
    Normal,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Sqlite {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
}

pub fn open(path: &Path, durability: Durability) -> Result<Connection, OpenError> {
    let io = |source| OpenError::Io {
        path: path.display().to_string(),
        source,
    };
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    let sqlite = |source| OpenError::Sqlite {
        path: path.display().to_string(),
        source,
    };
    let conn = Connection::open(path).map_err(sqlite)?;
    // Waiting comes first: turning a new file to WAL takes a write lock, and a second
    // opener of the same new file (two first deliveries to an account, a delivery and
    // the owner's page) was told "database is locked" at once instead of waiting.
    // 30 s: a write waiting behind others' large messages is taking its turn, not failing
    // (ten 20 MB APPENDs into one mailbox kept the last one waiting over 10 s on a busy
    // machine, and it was told "database is locked").
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(sqlite)?;
    // Changing the journal mode may answer "busy" without waiting, while another
    // connection is turning the same new file to WAL: asked again, briefly.
    let mut tries = 0;
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy && tries < 100 =>
            {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => break other.map_err(sqlite)?,
        }
    }
    let level = match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", level)
        .map_err(sqlite)?;
    // Without the query planner stability guarantee, this SQLite (built with STAT4)
    // compiles a cached statement again each time a new value is bound to a column it
    // ranges over: a third of a one-message IMAP FETCH went to parsing the same SELECT.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )
    .map_err(sqlite)?;
    // rusqlite keeps 16 compiled statements; a mailbox's writes use more than that, and
    // the ones pushed out were compiled again on their next use.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// Compiled statements kept per connection (each a few KB).
const STATEMENT_CACHE: usize = 64;

#[cfg(test)]
mod tests {
    use super::{Durability, open};
    use rusqlite::StatementStatus;

    /// How often a cached range query was compiled again over `runs` different ranges.
    fn reprepares(conn: &rusqlite::Connection, runs: u32) -> i32 {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS t (f INTEGER, u INTEGER, PRIMARY KEY (f, u));
             INSERT OR IGNORE INTO t VALUES (1, 1), (1, 2), (1, 3);",
        )
        .unwrap();
        let sql = "SELECT u FROM t WHERE f = ?1 AND u BETWEEN ?2 AND ?3 ORDER BY u";
        for n in 1..=runs {
            let mut stmt = conn.prepare_cached(sql).unwrap();
            let rows = stmt
                .query_map(rusqlite::params![1, n, n + 1], |r| r.get::<_, i64>(0))
                .unwrap();
            assert!(rows.count() <= 2);
        }
        conn.prepare_cached(sql)
            .unwrap()
            .get_status(StatementStatus::RePrepare)
    }

    #[test]
    fn a_cached_statement_is_not_compiled_again_for_new_values() {
        let dir = tempfile::tempdir().unwrap();
        let conn = super::open(&dir.path().join("a.db"), super::Durability::Full).unwrap();
        assert_eq!(reprepares(&conn, 5), 0);
        // What the setting prevents, on the same SQLite.
        let plain = rusqlite::Connection::open(dir.path().join("b.db")).unwrap();
        assert!(reprepares(&plain, 5) > 0);
    }

    #[test]
    fn many_first_openers_of_one_new_file_all_get_it() {
        for round in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(format!("{round}.db"));
            std::thread::scope(|scope| {
                for n in 0..8 {
                    let path = &path;
                    scope.spawn(move || {
                        let conn = open(path, Durability::Full).expect("opened");
                        conn.execute_batch("CREATE TABLE IF NOT EXISTS t (n INTEGER)")
                            .expect("schema");
                        conn.execute("INSERT INTO t VALUES (?1)", [n])
                            .expect("write");
                    });
                }
            });
            let conn = open(&path, Durability::Full).unwrap();
            let rows: i64 = conn
                .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
                .unwrap();
            assert_eq!(rows, 8);
        }
    }
}

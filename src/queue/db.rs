//! The queue database (`queue.db`, SQLite, WAL): messages with their envelope and one
//! row per delivery, each with its own retry state and lease.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::{Envelope, NewDelivery, Queue};

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("queue data: {0}")]
    Data(String),
    #[error("queue files: {0}")]
    Io(#[from] std::io::Error),
    #[error("queue file {0}")]
    Open(#[from] crate::sqlite::OpenError),
    #[cfg(feature = "mongodb")]
    #[error("queue in MongoDB: {0}")]
    Mongo(#[from] Box<mongodb::error::Error>),
}

#[cfg(feature = "mongodb")]
impl From<mongodb::error::Error> for QueueError {
    fn from(e: mongodb::error::Error) -> QueueError {
        QueueError::Mongo(Box::new(e))
    }
}

#[cfg(feature = "mongodb")]
impl crate::mongo::DriverError for QueueError {
    fn driver(&self) -> Option<&mongodb::error::Error> {
        match self {
            QueueError::Mongo(e) => Some(e),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryKind {
    Forward,
    Mailbox,
    Webhook,
    /// Read as a DMARC or TLS report about one of this server's domains, and kept.
    Reports,
}

impl DeliveryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryKind::Forward => "forward",
            DeliveryKind::Mailbox => "mailbox",
            DeliveryKind::Webhook => "webhook",
            DeliveryKind::Reports => "reports",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryKind> {
        [
            DeliveryKind::Forward,
            DeliveryKind::Mailbox,
            DeliveryKind::Webhook,
            DeliveryKind::Reports,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

impl rusqlite::types::FromSql for DeliveryKind {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        let text = value.as_str()?;
        DeliveryKind::parse(text).ok_or_else(|| {
            rusqlite::types::FromSqlError::Other(format!("delivery kind {text:?}").into())
        })
    }
}

/// A delivery ready to be attempted, with what the attempt needs.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: i64,
    pub message_id: i64,
    pub kind: DeliveryKind,
    pub target: String,
    pub alias: String,
    pub prefix: String,
    /// The ARC set of the 7-bit copy (NewDelivery::prefix_7bit).
    pub prefix_7bit: String,
    pub from_rewrite: String,
    /// Where a mailbox delivery is filed (empty: INBOX).
    pub folder: String,
    pub attempts: u32,
    pub mail_from: String,
    pub received_at: i64,
    /// Attempts that started and never ended: the process died during them.
    pub interrupted: u32,
    /// The message, read with the delivery when it is small (see `INLINE_BODY`).
    pub body: Option<Vec<u8>>,
    pub dsn: super::Dsn,
}

/// Bodies up to this size come with the deliveries `take_due` returns: one read instead
/// of one more per delivery; larger ones are read when their attempt starts, so a batch
/// of leased deliveries (at most 512) holds 32 MiB at most.
pub(super) const INLINE_BODY: i64 = 64 * 1024;

/// A delivery as `queue list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct QueueEntry {
    pub id: i64,
    pub message_id: i64,
    pub kind: DeliveryKind,
    pub target: String,
    pub mail_from: String,
    pub attempts: u32,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub size: i64,
    /// Why the delivery is held (never tried until `queue retry`), when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
}

/// `next_attempt_at` of a held delivery: never due.
pub(super) const HELD_UNTIL: i64 = i64::MAX;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at INTEGER NOT NULL,
    envelope TEXT NOT NULL,
    mail_from TEXT NOT NULL,
    size INTEGER NOT NULL,
    body BLOB NOT NULL,
    bounced INTEGER NOT NULL DEFAULT 0,
    delay_notified INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    alias TEXT NOT NULL,
    prefix TEXT NOT NULL DEFAULT '',
    from_rewrite TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    leased_until INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    dsn TEXT NOT NULL DEFAULT '',
    interrupted INTEGER NOT NULL DEFAULT 0,
    held TEXT,
    folder TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (next_attempt_at);
CREATE INDEX IF NOT EXISTS deliveries_message ON deliveries (message_id);
CREATE TABLE IF NOT EXISTS tls_sessions (
    day TEXT NOT NULL,
    domain TEXT NOT NULL,
    policy_type TEXT NOT NULL,
    policy TEXT NOT NULL,
    mx_host TEXT NOT NULL,
    receiving_ip TEXT NOT NULL,
    sending_ip TEXT NOT NULL,
    outcome TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (day, domain, policy_type, policy, mx_host, receiving_ip, sending_ip, outcome)
);
CREATE TABLE IF NOT EXISTS report_rows (
    kind TEXT NOT NULL,
    day TEXT NOT NULL,
    domain TEXT NOT NULL,
    detail TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (kind, day, domain, detail)
);
CREATE TABLE IF NOT EXISTS received_reports (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    domain TEXT NOT NULL,
    org TEXT NOT NULL,
    report_id TEXT NOT NULL,
    begin_at INTEGER NOT NULL,
    end_at INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    -- Before the body: a listing reads a row's columns up to the last it needs, and a
    -- big body's overflow pages would be read on the way to one after it.
    size INTEGER NOT NULL DEFAULT 0,
    summary TEXT NOT NULL DEFAULT '',
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS received_reports_at ON received_reports (received_at);
CREATE INDEX IF NOT EXISTS received_reports_domain ON received_reports (domain, received_at);
CREATE TABLE IF NOT EXISTS sent_reports (
    kind TEXT NOT NULL,
    day TEXT NOT NULL,
    domain TEXT NOT NULL,
    PRIMARY KEY (kind, day, domain)
);
CREATE TABLE IF NOT EXISTS sts_policies (
    domain TEXT PRIMARY KEY,
    id TEXT NOT NULL,
    text TEXT NOT NULL,
    fetched_at INTEGER NOT NULL
);
";

/// Columns added after the first release of the schema, for queue files that predate them.
const ADDED_COLUMNS: [(&str, &str, &str); 8] = [
    ("messages", "delay_notified", "INTEGER NOT NULL DEFAULT 0"),
    ("deliveries", "dsn", "TEXT NOT NULL DEFAULT ''"),
    ("deliveries", "interrupted", "INTEGER NOT NULL DEFAULT 0"),
    ("deliveries", "held", "TEXT"),
    ("deliveries", "folder", "TEXT NOT NULL DEFAULT ''"),
    ("deliveries", "prefix_7bit", "TEXT NOT NULL DEFAULT ''"),
    ("received_reports", "summary", "TEXT NOT NULL DEFAULT ''"),
    ("received_reports", "size", "INTEGER NOT NULL DEFAULT 0"),
];

/// One connection, shared. What precedes a reply to a user (a 250, `queue remove`)
/// commits with fsync; the delivery workers' bookkeeping (leases, retries, removing what
/// was delivered) commits without: losing its last commits in a power cut re-sends a
/// message at worst, and the next fsynced commit of the WAL makes them durable anyway.
/// So the 250 no longer waits behind a worker's fsync (BENCHMARKS.md, finding 2). (Two
/// connections cost more: each one drops its page cache whenever the other has written.)
pub struct QueueDb {
    conn: Mutex<Connection>,
}

pub use crate::clock::unix_now as now;

impl QueueDb {
    pub fn open(data_dir: &Path) -> Result<QueueDb, QueueError> {
        let conn = crate::sqlite::open(
            &data_dir.join("queue.db"),
            crate::sqlite::Durability::Normal,
        )?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.execute_batch(SCHEMA)?;
        for (table, column, definition) in ADDED_COLUMNS {
            let present: bool = conn.query_row(
                "SELECT COUNT(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2",
                [table, column],
                |r| r.get(0),
            )?;
            if !present {
                conn.execute_batch(&format!(
                    "ALTER TABLE {table} ADD COLUMN {column} {definition}"
                ))?;
            }
        }
        Ok(QueueDb {
            conn: Mutex::new(conn),
        })
    }

    /// The connection, for bookkeeping: its commits reach the OS, not the disk.
    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `write` with commits that are on disk (fsync) before it returns.
    fn durably<T>(
        &self,
        write: impl FnOnce(&mut Connection) -> Result<T, QueueError>,
    ) -> Result<T, QueueError> {
        let mut conn = self.conn();
        conn.pragma_update(None, "synchronous", "FULL")?;
        let result = write(&mut conn);
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        result
    }
}

impl Queue for QueueDb {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    /// One commit of the spool: stores new messages with their deliveries and removes
    /// finished deliveries. With new messages it is on disk (fsync) before it returns,
    /// since a 250 waits for it; removals alone need not be.
    fn commit(
        &self,
        batch: &[(Envelope, Vec<u8>, Vec<NewDelivery>)],
        finished: &[i64],
    ) -> Result<Vec<i64>, QueueError> {
        let write = |conn: &mut Connection| {
            let tx = conn.transaction()?;
            let ids = insert_messages(&tx, batch)?;
            for &id in finished {
                remove_delivery(&tx, id)?;
            }
            tx.commit()?;
            Ok(ids)
        };
        if batch.is_empty() {
            write(&mut self.conn())
        } else {
            self.durably(write)
        }
    }

    /// Takes up to `limit` due deliveries and leases them for `lease_secs`, so no other
    /// worker (or node) takes them meanwhile; a crashed worker's lease simply expires.
    fn take_due(&self, limit: usize, lease_secs: i64) -> Result<Vec<Delivery>, QueueError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let now = now();
        let due: Vec<Delivery> = {
            let mut stmt = tx.prepare_cached(
                "SELECT d.id, d.message_id, d.kind, d.target, d.alias, d.attempts, m.mail_from, m.received_at, d.prefix, d.from_rewrite,
                        CASE WHEN m.size <= ?3 THEN m.body END, d.dsn, d.interrupted, d.folder, d.prefix_7bit
                 FROM deliveries d JOIN messages m ON m.id = d.message_id
                 WHERE d.next_attempt_at <= ?1 AND d.leased_until <= ?1
                 ORDER BY d.next_attempt_at LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![now, limit as i64, INLINE_BODY], |r| {
                Ok(Delivery {
                    id: r.get(0)?,
                    message_id: r.get(1)?,
                    kind: r.get(2)?,
                    target: r.get(3)?,
                    alias: r.get(4)?,
                    attempts: r.get::<_, i64>(5)? as u32,
                    mail_from: r.get(6)?,
                    received_at: r.get(7)?,
                    prefix: r.get(8)?,
                    from_rewrite: r.get(9)?,
                    body: r.get(10)?,
                    dsn: serde_json::from_str(&r.get::<_, String>(11)?).unwrap_or_default(),
                    interrupted: r.get::<_, i64>(12)?.max(0) as u32,
                    folder: r.get(13)?,
                    prefix_7bit: r.get(14)?,
                })
            })?;
            rows.collect::<Result<Vec<_>, _>>()?
        };
        {
            let mut lease =
                tx.prepare_cached("UPDATE deliveries SET leased_until = ?2 WHERE id = ?1")?;
            for d in &due {
                lease.execute(params![d.id, now + lease_secs])?;
            }
        }
        tx.commit()?;
        Ok(due)
    }

    /// Claims the one bounce a message may cause: true the first time only, so a message
    /// whose several deliveries fail sends its sender one DSN, not one per failure.
    fn claim_bounce(&self, message_id: i64) -> Result<bool, QueueError> {
        let n = self.conn().execute(
            "UPDATE messages SET bounced = 1 WHERE id = ?1 AND bounced = 0",
            [message_id],
        )?;
        Ok(n == 1)
    }

    /// Claims the one delay notice a message may cause (like `claim_bounce`).
    fn claim_delay_notice(&self, message_id: i64) -> Result<bool, QueueError> {
        let n = self.conn().execute(
            "UPDATE messages SET delay_notified = 1 WHERE id = ?1 AND delay_notified = 0",
            [message_id],
        )?;
        Ok(n == 1)
    }

    /// The envelope a message arrived with.
    fn envelope(&self, message_id: i64) -> Result<Option<Envelope>, QueueError> {
        let text: Option<String> = self
            .conn()
            .query_row(
                "SELECT envelope FROM messages WHERE id = ?1",
                [message_id],
                |r| r.get(0),
            )
            .optional()?;
        text.map(|t| serde_json::from_str(&t).map_err(|e| QueueError::Data(e.to_string())))
            .transpose()
    }

    /// Frees every lease. Called at start: on one node, a lease still held then belonged to
    /// this server before it died, and its deliveries must not wait for the lease to expire.
    fn release_leases(&self) -> Result<usize, QueueError> {
        Ok(self.conn().execute(
            "UPDATE deliveries SET leased_until = 0 WHERE leased_until > 0",
            [],
        )?)
    }

    fn body(&self, message_id: i64) -> Result<Option<Vec<u8>>, QueueError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT body FROM messages WHERE id = ?1",
                [message_id],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// A delivery failed temporarily: try again at `next_at`.
    fn retry_later(&self, delivery_id: i64, next_at: i64, error: &str) -> Result<(), QueueError> {
        self.conn().execute(
            "UPDATE deliveries SET attempts = attempts + 1, next_attempt_at = ?2, leased_until = 0, last_error = ?3, interrupted = 0 WHERE id = ?1",
            params![delivery_id, next_at, error],
        )?;
        Ok(())
    }

    /// Makes a delivery due now (`queue retry`). Returns whether it exists.
    fn retry_now(&self, delivery_id: i64) -> Result<bool, QueueError> {
        self.durably(|conn| {
            let n = conn.execute(
                "UPDATE deliveries SET next_attempt_at = ?2, leased_until = 0, held = NULL, interrupted = 0 WHERE id = ?1",
                params![delivery_id, now()],
            )?;
            Ok(n > 0)
        })
    }

    /// Counted before anything of the message is looked at; a process crash leaves it
    /// counted (the WAL reaches the OS at commit, fsync or not).
    fn begin_attempt(&self, delivery_id: i64) -> Result<(), QueueError> {
        self.conn().execute(
            "UPDATE deliveries SET interrupted = interrupted + 1 WHERE id = ?1",
            [delivery_id],
        )?;
        Ok(())
    }

    fn hold(&self, delivery_id: i64, reason: &str) -> Result<(), QueueError> {
        self.durably(|conn| {
            conn.execute(
                "UPDATE deliveries SET held = ?2, next_attempt_at = ?3, leased_until = 0, last_error = ?2 WHERE id = ?1",
                params![delivery_id, reason, HELD_UNTIL],
            )?;
            Ok(())
        })
    }

    /// Removes a delivery (`queue remove`). Returns whether it existed.
    fn remove(&self, delivery_id: i64) -> Result<bool, QueueError> {
        self.durably(|conn| {
            let tx = conn.transaction()?;
            let existed = remove_delivery(&tx, delivery_id)?;
            tx.commit()?;
            Ok(existed)
        })
    }

    fn list(&self, limit: usize) -> Result<Vec<QueueEntry>, QueueError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT d.id, d.message_id, d.kind, d.target, m.mail_from, d.attempts, d.next_attempt_at, d.last_error, m.size, d.held
             FROM deliveries d JOIN messages m ON m.id = d.message_id ORDER BY d.id LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit as i64], |r| {
            Ok(QueueEntry {
                id: r.get(0)?,
                message_id: r.get(1)?,
                kind: r.get(2)?,
                target: r.get(3)?,
                mail_from: r.get(4)?,
                attempts: r.get::<_, i64>(5)? as u32,
                next_attempt_at: r.get(6)?,
                last_error: r.get(7)?,
                size: r.get(8)?,
                held: r.get(9)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn deliveries_of(&self, message_id: i64) -> Result<Vec<i64>, QueueError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT id FROM deliveries WHERE message_id = ?1 ORDER BY id")?;
        let rows = stmt.query_map([message_id], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deliveries not yet done.
    fn pending(&self) -> Result<u64, QueueError> {
        Ok(self
            .conn()
            .query_row("SELECT COUNT(*) FROM deliveries", [], |r| {
                r.get::<_, i64>(0)
            })? as u64)
    }

    fn held(&self) -> Result<u64, QueueError> {
        Ok(self.conn().query_row(
            "SELECT COUNT(*) FROM deliveries WHERE held IS NOT NULL",
            [],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }

    /// When the oldest message still waiting was received (Unix seconds).
    fn oldest_received_at(&self) -> Result<Option<i64>, QueueError> {
        Ok(self.conn().query_row(
            "SELECT MIN(m.received_at) FROM messages m
             WHERE EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.id)",
            [],
            |r| r.get(0),
        )?)
    }

    fn sts_policy(
        &self,
        domain: &str,
    ) -> Result<Option<super::tls_policy::StoredPolicy>, QueueError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT domain, id, text, fetched_at FROM sts_policies WHERE domain = ?1",
                [domain],
                |r| {
                    Ok(super::tls_policy::StoredPolicy {
                        domain: r.get(0)?,
                        id: r.get(1)?,
                        text: r.get(2)?,
                        fetched_at: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }

    fn put_sts_policy(&self, p: &super::tls_policy::StoredPolicy) -> Result<(), QueueError> {
        self.conn().execute(
            "INSERT INTO sts_policies (domain, id, text, fetched_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (domain) DO UPDATE SET id = ?2, text = ?3, fetched_at = ?4",
            rusqlite::params![p.domain, p.id, p.text, p.fetched_at],
        )?;
        Ok(())
    }

    fn add_tls_sessions(
        &self,
        sessions: &[super::tls_policy::tally::Sessions],
    ) -> Result<(), QueueError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut add = tx.prepare_cached(
                "INSERT INTO tls_sessions
                 (day, domain, policy_type, policy, mx_host, receiving_ip, sending_ip, outcome, count)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (day, domain, policy_type, policy, mx_host, receiving_ip, sending_ip, outcome)
                 DO UPDATE SET count = count + excluded.count",
            )?;
            for s in sessions {
                let k = &s.key;
                add.execute(params![
                    k.day,
                    k.domain,
                    k.policy_type,
                    k.policy,
                    k.mx_host,
                    k.receiving_ip,
                    k.sending_ip,
                    k.outcome.result_type().unwrap_or("success"),
                    s.count as i64
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn tls_sessions(
        &self,
        day: &str,
    ) -> Result<Vec<super::tls_policy::tally::Sessions>, QueueError> {
        use super::tls_policy::tally::{Outcome, SessionKey, Sessions};
        let conn = self.conn();
        let mut rows = conn.prepare(
            "SELECT day, domain, policy_type, policy, mx_host, receiving_ip, sending_ip, outcome, count
             FROM tls_sessions WHERE day = ?1 ORDER BY domain",
        )?;
        let found = rows
            .query_map([day], |r| {
                let outcome: String = r.get(7)?;
                Ok((
                    SessionKey {
                        day: r.get(0)?,
                        domain: r.get(1)?,
                        policy_type: r.get(2)?,
                        policy: r.get(3)?,
                        mx_host: r.get(4)?,
                        receiving_ip: r.get(5)?,
                        sending_ip: r.get(6)?,
                        outcome: Outcome::Success,
                    },
                    outcome,
                    r.get::<_, i64>(8)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(found
            .into_iter()
            .filter_map(|(mut key, outcome, count)| {
                key.outcome = Outcome::parse(&outcome)?;
                Some(Sessions {
                    key,
                    count: count.max(0) as u64,
                })
            })
            .collect())
    }

    fn claim_report(&self, kind: &str, day: &str, domain: &str) -> Result<bool, QueueError> {
        let added = self.conn().execute(
            "INSERT OR IGNORE INTO sent_reports (kind, day, domain) VALUES (?1, ?2, ?3)",
            [kind, day, domain],
        )?;
        Ok(added == 1)
    }

    fn forget_tls_sessions(&self, day: &str) -> Result<(), QueueError> {
        let conn = self.conn();
        conn.execute("DELETE FROM tls_sessions WHERE day < ?1", [day])?;
        conn.execute("DELETE FROM sent_reports WHERE day < ?1", [day])?;
        Ok(())
    }

    fn add_report_rows(
        &self,
        kind: &str,
        rows: &[super::dmarc_report::Counted],
    ) -> Result<(), QueueError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut add = tx.prepare_cached(
                "INSERT INTO report_rows (kind, day, domain, detail, count)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (kind, day, domain, detail) DO UPDATE SET count = count + excluded.count",
            )?;
            for c in rows {
                add.execute(params![
                    kind,
                    c.row.day,
                    c.row.domain,
                    c.row.detail,
                    c.count as i64
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn report_rows(
        &self,
        kind: &str,
        day: &str,
    ) -> Result<Vec<super::dmarc_report::Counted>, QueueError> {
        use super::dmarc_report::{Counted, Row};
        let conn = self.conn();
        let mut rows = conn.prepare(
            "SELECT day, domain, detail, count FROM report_rows
             WHERE kind = ?1 AND day = ?2 ORDER BY domain",
        )?;
        let found = rows
            .query_map([kind, day], |r| {
                Ok(Counted {
                    row: Row {
                        day: r.get(0)?,
                        domain: r.get(1)?,
                        detail: r.get(2)?,
                    },
                    count: r.get::<_, i64>(3)?.max(0) as u64,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(found)
    }

    fn add_received_report(
        &self,
        r: &super::dmarc_report::received::Received,
    ) -> Result<bool, QueueError> {
        let added = self.conn().execute(
            "INSERT OR IGNORE INTO received_reports
             (id, kind, domain, org, report_id, begin_at, end_at, received_at, body, summary,
              size)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                r.id,
                r.kind,
                r.domain,
                r.org,
                r.report_id,
                r.begin,
                r.end,
                r.received_at,
                r.body,
                r.summary.to_text(),
                r.body.len() as i64
            ],
        )?;
        Ok(added == 1)
    }

    fn received_reports(
        &self,
        since: i64,
    ) -> Result<Vec<super::dmarc_report::received::Received>, QueueError> {
        let conn = self.conn();
        let mut rows = conn.prepare(
            "SELECT id, kind, domain, org, report_id, begin_at, end_at, received_at, '', summary
             FROM received_reports WHERE received_at >= ?1
             ORDER BY received_at DESC, id LIMIT ?2",
        )?;
        let found = rows
            .query_map(
                params![since, super::RECEIVED_REPORTS_LISTED as i64],
                received_row,
            )?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(found)
    }

    fn received_report(
        &self,
        id: &str,
    ) -> Result<Option<super::dmarc_report::received::Received>, QueueError> {
        use rusqlite::OptionalExtension;
        Ok(self
            .conn()
            .query_row(
                "SELECT id, kind, domain, org, report_id, begin_at, end_at, received_at, body,
                 summary FROM received_reports WHERE id = ?1",
                [id],
                received_row,
            )
            .optional()?)
    }

    fn received_report_totals(&self, domain: &str, since: i64) -> Result<(u64, u64), QueueError> {
        let (count, bytes): (i64, i64) = self.conn().query_row(
            "SELECT COUNT(*), COALESCE(SUM(size), 0)
             FROM received_reports WHERE domain = ?1 AND received_at >= ?2",
            params![domain, since],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        Ok((count.max(0) as u64, bytes.max(0) as u64))
    }

    fn forget_received_reports(&self, before: i64) -> Result<(), QueueError> {
        self.conn().execute(
            "DELETE FROM received_reports WHERE received_at < ?1",
            [before],
        )?;
        Ok(())
    }

    fn forget_report_rows(&self, kind: &str, day: &str) -> Result<(), QueueError> {
        self.conn().execute(
            "DELETE FROM report_rows WHERE kind = ?1 AND day < ?2",
            [kind, day],
        )?;
        Ok(())
    }

    /// Seconds until the next delivery is due (None when the queue is empty).
    fn next_due_in(&self) -> Result<Option<i64>, QueueError> {
        let next: Option<i64> = self.conn().query_row(
            "SELECT MIN(MAX(next_attempt_at, leased_until)) FROM deliveries",
            [],
            |r| r.get(0),
        )?;
        Ok(next.map(|t| (t - now()).max(0)))
    }
}

/// Inserts messages and their deliveries; returns their ids.
fn insert_messages(
    tx: &rusqlite::Transaction<'_>,
    batch: &[(Envelope, Vec<u8>, Vec<NewDelivery>)],
) -> Result<Vec<i64>, QueueError> {
    let mut ids = Vec::with_capacity(batch.len());
    {
        let mut msg = tx.prepare_cached(
            "INSERT INTO messages (received_at, envelope, mail_from, size, body) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut del = tx.prepare_cached(
            "INSERT INTO deliveries (message_id, kind, target, alias, prefix, from_rewrite, next_attempt_at, dsn, folder, prefix_7bit) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?;
        let now = now();
        for (envelope, body, deliveries) in batch {
            let env =
                serde_json::to_string(envelope).map_err(|e| QueueError::Data(e.to_string()))?;
            msg.execute(params![
                now,
                env,
                envelope.mail_from,
                body.len() as i64,
                body
            ])?;
            let id = tx.last_insert_rowid();
            for d in deliveries {
                del.execute(params![
                    id,
                    d.kind.as_str(),
                    d.target,
                    d.alias,
                    d.prefix,
                    d.from_rewrite,
                    now,
                    serde_json::to_string(&d.dsn).map_err(|e| QueueError::Data(e.to_string()))?,
                    d.folder,
                    d.prefix_7bit
                ])?;
            }
            ids.push(id);
        }
    }
    Ok(ids)
}

/// Deletes a delivery, and its message when it was the last; returns whether it existed.
fn remove_delivery(tx: &rusqlite::Transaction<'_>, delivery_id: i64) -> Result<bool, QueueError> {
    let message_id: Option<i64> = tx
        .query_row(
            "SELECT message_id FROM deliveries WHERE id = ?1",
            [delivery_id],
            |r| r.get(0),
        )
        .optional()?;
    tx.execute("DELETE FROM deliveries WHERE id = ?1", [delivery_id])?;
    if let Some(m) = message_id {
        tx.execute(
            "DELETE FROM messages WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM deliveries WHERE message_id = ?1)",
            [m],
        )?;
    }
    Ok(message_id.is_some())
}

/// A `received_reports` row, in its columns' order.
fn received_row(
    r: &rusqlite::Row<'_>,
) -> rusqlite::Result<super::dmarc_report::received::Received> {
    Ok(super::dmarc_report::received::Received {
        id: r.get(0)?,
        kind: r.get(1)?,
        domain: r.get(2)?,
        org: r.get(3)?,
        report_id: r.get(4)?,
        begin: r.get(5)?,
        end: r.get(6)?,
        received_at: r.get(7)?,
        body: r.get(8)?,
        summary: super::dmarc_report::received::Summary::from_text(&r.get::<_, String>(9)?),
    })
}

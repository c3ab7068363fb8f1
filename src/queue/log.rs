//! The mail log: one structured record per accepted, rejected, delivered, deferred or
//! bounced message, for `queue log`, the admin pages and the API. Records go through a
//! channel to a writer thread, batched: into data_dir/maillog.db (WAL, no fsync: a log
//! needs none), or into MongoDB beside a shared store, where every node's records meet.

use std::future::IntoFuture;
use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};

use futures_util::TryStreamExt;
use mongodb::bson::{Bson, DateTime, Document, doc};
use rusqlite::{Connection, params};
use serde::Serialize;

use super::QueueError;
use crate::mongo::Mongo;

/// How often old records are pruned (SQLite; MongoDB's TTL index does it there).
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Event {
    Accepted,
    Rejected,
    Delivered,
    Deferred,
    Bounced,
    /// Parked: its processing failed (a panic, or the process died in it twice).
    Held,
}

impl Event {
    pub const ALL: [Event; 6] = [
        Event::Accepted,
        Event::Rejected,
        Event::Delivered,
        Event::Deferred,
        Event::Bounced,
        Event::Held,
    ];

    /// The event an `as_str` text names (an unknown one reads as a bounce).
    pub fn parse(text: &str) -> Event {
        Event::ALL
            .into_iter()
            .find(|e| e.as_str() == text)
            .unwrap_or(Event::Bounced)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Event::Accepted => "accepted",
            Event::Rejected => "rejected",
            Event::Delivered => "delivered",
            Event::Deferred => "deferred",
            Event::Bounced => "bounced",
            Event::Held => "held",
        }
    }
}

/// How an accepted message the spam filter filed as junk begins its detail: the
/// overview counts those as spam (`Outcome::Spam`), the log shows why.
pub const JUNK_MARK: &str = "junk: ";

/// What became of mail, as the overview's chart tells it: the log's events, with
/// accepted junk apart from the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Spam,
    Rejected,
    Delivered,
    Deferred,
    Bounced,
    Held,
}

impl Outcome {
    pub const ALL: [Outcome; 7] = [
        Outcome::Accepted,
        Outcome::Spam,
        Outcome::Rejected,
        Outcome::Delivered,
        Outcome::Deferred,
        Outcome::Bounced,
        Outcome::Held,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Spam => "spam",
            Outcome::Accepted => Event::Accepted.as_str(),
            Outcome::Rejected => Event::Rejected.as_str(),
            Outcome::Delivered => Event::Delivered.as_str(),
            Outcome::Deferred => Event::Deferred.as_str(),
            Outcome::Bounced => Event::Bounced.as_str(),
            Outcome::Held => Event::Held.as_str(),
        }
    }

    fn index(self) -> usize {
        Outcome::ALL.iter().position(|o| *o == self).unwrap_or(0)
    }

    fn of(event: &str, junk: bool) -> Option<Outcome> {
        if junk && event == Event::Accepted.as_str() {
            return Some(Outcome::Spam);
        }
        Outcome::ALL.into_iter().find(|o| o.as_str() == event)
    }
}

/// One log record.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub at: i64,
    pub event: Event,
    pub message_id: Option<i64>,
    pub mail_from: String,
    /// Recipient(s) or delivery target.
    pub rcpt: String,
    pub remote_ip: String,
    /// Why (the reply text, the delivery error), if anything.
    pub detail: String,
}

/// How long the writer gathers records before it writes them.
const GATHER: std::time::Duration = std::time::Duration::from_millis(50);

/// Records written in one transaction, at most.
const MAX_BATCH: usize = 1024;

enum Job {
    Record(Entry),
    /// How many deliveries waited in the queue at that second.
    Depth(i64, u64),
    Flush(mpsc::Sender<()>),
}

pub struct MailLog {
    tx: mpsc::Sender<Job>,
    reader: Reader,
    /// Records of each event since the process started (for /metrics), in `Event::ALL`
    /// order.
    counts: [std::sync::atomic::AtomicU64; Event::ALL.len()],
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS mail_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    event TEXT NOT NULL,
    message_id INTEGER,
    mail_from TEXT NOT NULL,
    rcpt TEXT NOT NULL,
    remote_ip TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS mail_log_at ON mail_log (at);
CREATE TABLE IF NOT EXISTS queue_depth (
    at INTEGER PRIMARY KEY,
    deliveries INTEGER NOT NULL
);
";

fn open(path: &Path) -> Result<Connection, QueueError> {
    let conn = crate::sqlite::open(path, crate::sqlite::Durability::Normal)?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

/// Where searches read.
enum Reader {
    Sqlite(Mutex<Connection>),
    Mongo(Arc<Mongo>),
}

/// Where the writer thread writes.
enum Writer {
    Sqlite(Connection),
    Mongo(Arc<Mongo>, String),
}

impl Writer {
    fn write(&mut self, batch: &[Entry]) -> Result<(), QueueError> {
        match self {
            Writer::Sqlite(conn) => write(conn, batch),
            Writer::Mongo(mongo, node) => {
                let docs: Vec<Document> = batch
                    .iter()
                    .map(|e| {
                        doc! {
                            "at": e.at,
                            // A date for the TTL index, which reads only dates.
                            "at_date": DateTime::from_millis(e.at.saturating_mul(1000)),
                            "event": e.event.as_str(),
                            "message_id": e.message_id,
                            "mail_from": &e.mail_from,
                            "rcpt": &e.rcpt,
                            "remote_ip": &e.remote_ip,
                            "detail": &e.detail,
                            "node": node.as_str(),
                        }
                    })
                    .collect();
                mongo.block(mongo.coll("mail_log").insert_many(&docs).into_future())?;
                Ok(())
            }
        }
    }

    fn depth(&mut self, at: i64, deliveries: u64) -> Result<(), QueueError> {
        let n = i64::try_from(deliveries).unwrap_or(i64::MAX);
        match self {
            Writer::Sqlite(conn) => {
                conn.execute(
                    "INSERT OR REPLACE INTO queue_depth (at, deliveries) VALUES (?1, ?2)",
                    params![at, n],
                )?;
            }
            Writer::Mongo(mongo, node) => {
                let d = doc! {
                    "at": at,
                    "at_date": DateTime::from_millis(at.saturating_mul(1000)),
                    "deliveries": n,
                    "node": node.as_str(),
                };
                mongo.block(mongo.coll(DEPTH).insert_one(d).into_future())?;
            }
        }
        Ok(())
    }

    fn prune(&mut self, before: i64) -> Result<(), QueueError> {
        if let Writer::Sqlite(conn) = self {
            conn.execute("DELETE FROM mail_log WHERE at < ?1", [before])?;
            conn.execute("DELETE FROM queue_depth WHERE at < ?1", [before])?;
        }
        Ok(())
    }
}

/// The samples of the queue's depth, beside the log in MongoDB.
const DEPTH: &str = "queue_depth";

/// Makes the TTL indexes that keep `retention` seconds of log (and of queue depths) in
/// MongoDB, replacing ones made with another retention.
async fn retention_index(mongo: &Mongo, retention: u64) -> Result<(), QueueError> {
    for name in ["mail_log", DEPTH] {
        retention_index_of(mongo, name, retention).await?;
    }
    Ok(())
}

async fn retention_index_of(mongo: &Mongo, name: &str, retention: u64) -> Result<(), QueueError> {
    use mongodb::IndexModel;
    use mongodb::options::IndexOptions;
    let coll = mongo.coll(name);
    let ttl = || {
        IndexModel::builder()
            .keys(doc! { "at_date": 1 })
            .options(
                IndexOptions::builder()
                    .name("retention".to_string())
                    .expire_after(std::time::Duration::from_secs(retention))
                    .build(),
            )
            .build()
    };
    if let Err(e) = coll.create_index(ttl()).await {
        use mongodb::error::ErrorKind;
        // An index of that name with another expiry (IndexOptionsConflict, or
        // IndexKeySpecsConflict): make it again. Anything else is an error.
        match e.kind.as_ref() {
            ErrorKind::Command(c) if c.code == 85 || c.code == 86 => {
                coll.drop_index("retention").await?;
                coll.create_index(ttl()).await?;
            }
            _ => return Err(e.into()),
        }
    }
    coll.create_index(crate::mongo::index(doc! { "at": -1 }))
        .await?;
    Ok(())
}

impl MailLog {
    /// Opens data_dir/maillog.db and starts its writer thread.
    pub fn open(data_dir: &Path, retention_secs: u64) -> Result<MailLog, QueueError> {
        let path = data_dir.join("maillog.db");
        let writer = Writer::Sqlite(open(&path)?);
        let reader = Reader::Sqlite(Mutex::new(open(&path)?));
        Self::start(writer, reader, retention_secs)
    }

    /// Opens the mail log in MongoDB, shared by every node (each record names its node);
    /// records older than `retention_secs` expire by a TTL index.
    pub fn open_mongo(
        mongo: Arc<Mongo>,
        node: &str,
        retention_secs: u64,
    ) -> Result<MailLog, QueueError> {
        mongo.block(retention_index(&mongo, retention_secs))?;
        let writer = Writer::Mongo(mongo.clone(), node.to_string());
        Self::start(writer, Reader::Mongo(mongo), retention_secs)
    }

    fn start(
        mut writer: Writer,
        reader: Reader,
        retention_secs: u64,
    ) -> Result<MailLog, QueueError> {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("mail-log".into())
            .spawn(move || {
                let mut pruned: Option<std::time::Instant> = None;
                while let Ok(first) = rx.recv() {
                    if pruned.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                        pruned = Some(std::time::Instant::now());
                        let before = super::now_unix() - retention_secs as i64;
                        if let Err(e) = writer.prune(before) {
                            tracing::warn!(error = %e, "mail log not pruned");
                        }
                    }
                    // Nobody waits for a log record: gather for a moment so a busy server
                    // writes a few transactions a second, not two per message.
                    if matches!(first, Job::Record(_)) {
                        std::thread::sleep(GATHER);
                    }
                    let mut batch = Vec::new();
                    let mut flushed = Vec::new();
                    for job in std::iter::once(first).chain(rx.try_iter().take(MAX_BATCH - 1)) {
                        match job {
                            Job::Record(entry) => batch.push(entry),
                            Job::Depth(at, n) => {
                                if let Err(e) = writer.depth(at, n) {
                                    tracing::warn!(error = %e, "queue depth not recorded");
                                }
                            }
                            Job::Flush(done) => flushed.push(done),
                        }
                    }
                    if !batch.is_empty()
                        && let Err(e) = writer.write(&batch)
                    {
                        tracing::error!(error = %e, "mail log write failed");
                    }
                    for done in flushed {
                        let _ = done.send(());
                    }
                }
            })?;
        Ok(MailLog {
            tx,
            reader,
            counts: Default::default(),
        })
    }

    /// Records an event (never blocks on the disk) and traces it.
    pub fn record(&self, entry: Entry) {
        self.counts[entry.event as usize].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(event = entry.event.as_str(), message = entry.message_id, from = %entry.mail_from, rcpt = %entry.rcpt, detail = %entry.detail, "mail");
        let _ = self.tx.send(Job::Record(entry));
    }

    /// Notes how many deliveries wait in the queue now (never blocks on the disk): the
    /// overview draws the queue's depth over time from these samples.
    pub fn sample_queue(&self, at: i64, deliveries: u64) {
        let _ = self.tx.send(Job::Depth(at, deliveries));
    }

    /// The deepest the queue was sampled in each bucket of `bucket_secs`, for the
    /// `buckets` buckets that end at `now`, oldest first; None where nothing was sampled
    /// (the server was not running).
    pub fn queue_depth(
        &self,
        now: i64,
        bucket_secs: i64,
        buckets: usize,
    ) -> Result<Vec<Option<u64>>, QueueError> {
        let bucket_secs = bucket_secs.max(1);
        let since = now + 1 - bucket_secs * buckets as i64;
        let mut out = vec![None; buckets];
        let mut put = |bucket: i64, n: i64| {
            if let Ok(b) = usize::try_from(bucket)
                && b < buckets
            {
                let n = n.max(0) as u64;
                out[b] = Some(out[b].map_or(n, |m: u64| m.max(n)));
            }
        };
        match &self.reader {
            Reader::Sqlite(conn) => {
                let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
                let mut stmt = conn.prepare_cached(
                    "SELECT (at - ?1) / ?2 AS bucket, MAX(deliveries) FROM queue_depth
                     WHERE at >= ?1 GROUP BY bucket",
                )?;
                let rows = stmt.query_map(params![since, bucket_secs], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
                })?;
                for row in rows {
                    let (bucket, n) = row?;
                    put(bucket, n);
                }
            }
            Reader::Mongo(mongo) => {
                // Every node samples the one shared queue: the deepest sample counts.
                let docs: Vec<Document> = mongo.block(async {
                    mongo
                        .coll(DEPTH)
                        .find(doc! { "at": { "$gte": since } })
                        .projection(doc! { "at": 1, "deliveries": 1 })
                        .await?
                        .try_collect()
                        .await
                })?;
                for d in &docs {
                    let number = |key: &str| match d.get(key) {
                        Some(Bson::Int64(v)) => Some(*v),
                        Some(Bson::Int32(v)) => Some(i64::from(*v)),
                        _ => None,
                    };
                    if let (Some(at), Some(n)) = (number("at"), number("deliveries")) {
                        put((at - since) / bucket_secs, n);
                    }
                }
            }
        }
        Ok(out)
    }

    /// How many records of each event this process made.
    pub fn counts(&self) -> Vec<(Event, u64)> {
        Event::ALL
            .iter()
            .map(|e| {
                (
                    *e,
                    self.counts[*e as usize].load(std::sync::atomic::Ordering::Relaxed),
                )
            })
            .collect()
    }

    /// Blocks until every record so far is written (at shutdown).
    pub fn flush(&self) {
        let (done, wait) = mpsc::channel();
        if self.tx.send(Job::Flush(done)).is_ok() {
            let _ = wait.recv();
        }
    }

    /// The newest `limit` records, newest first.
    /// Records of each event (in `Event::ALL` order) per bucket of `bucket_secs`, for the
    /// `buckets` buckets that end at `now`, oldest first: the overview's charts.
    pub fn per_bucket(
        &self,
        now: i64,
        bucket_secs: i64,
        buckets: usize,
    ) -> Result<Vec<[u64; Outcome::ALL.len()]>, QueueError> {
        let bucket_secs = bucket_secs.max(1);
        // The last bucket ends with the current second.
        let since = now + 1 - bucket_secs * buckets as i64;
        let mut out = vec![[0u64; Outcome::ALL.len()]; buckets];
        let mut add = |at_bucket: i64, event: &str, junk: bool, n: i64| {
            if let (Ok(b), Some(o)) = (usize::try_from(at_bucket), Outcome::of(event, junk))
                && b < buckets
            {
                let cell = &mut out[b][o.index()];
                *cell = cell.saturating_add_signed(n);
            }
        };
        match &self.reader {
            Reader::Sqlite(conn) => {
                let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
                let mut stmt = conn.prepare_cached(
                    "SELECT (at - ?1) / ?2 AS bucket, event, substr(detail, 1, ?3) = ?4 AS junk,
                            COUNT(*)
                     FROM mail_log WHERE at >= ?1 GROUP BY bucket, event, junk",
                )?;
                let rows = stmt.query_map(
                    params![since, bucket_secs, JUNK_MARK.len() as i64, JUNK_MARK],
                    |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, bool>(2)?,
                            r.get::<_, i64>(3)?,
                        ))
                    },
                )?;
                for row in rows {
                    let (bucket, event, junk, n) = row?;
                    add(bucket, &event, junk, n.max(0));
                }
            }
            Reader::Mongo(mongo) => {
                let group = |filter: Document| {
                    vec![
                        doc! { "$match": filter },
                        doc! { "$group": {
                            "_id": {
                                "b": { "$floor": { "$divide": [ { "$subtract": ["$at", since] }, bucket_secs ] } },
                                "e": "$event",
                            },
                            "n": { "$sum": 1 },
                        } },
                    ]
                };
                // Every record by event; then the junk among the accepted, moved from
                // "accepted" to "spam" (a plain $regex match: no expression operators
                // beyond what every MongoDB-wire server has).
                let junk = format!("^{}", regex::escape(JUNK_MARK));
                let (all, junked): (Vec<Document>, Vec<Document>) = mongo.block(async {
                    let coll = mongo.coll("mail_log");
                    let all = coll
                        .aggregate(group(doc! { "at": { "$gte": since } }))
                        .await?
                        .try_collect()
                        .await?;
                    let junked = coll
                        .aggregate(group(doc! {
                            "at": { "$gte": since },
                            "event": Event::Accepted.as_str(),
                            "detail": { "$regex": junk },
                        }))
                        .await?
                        .try_collect()
                        .await?;
                    Ok::<_, mongodb::error::Error>((all, junked))
                })?;
                let docs = all
                    .iter()
                    .map(|d| (d, false, 1))
                    .chain(junked.iter().flat_map(|d| [(d, true, 1), (d, false, -1)]));
                for (d, junk, sign) in docs {
                    let Ok(id) = d.get_document("_id") else {
                        continue;
                    };
                    let bucket = match id.get("b") {
                        Some(Bson::Int64(v)) => *v,
                        Some(Bson::Int32(v)) => i64::from(*v),
                        Some(Bson::Double(v)) => *v as i64,
                        _ => continue,
                    };
                    let n = match d.get("n") {
                        Some(Bson::Int64(v)) => *v,
                        Some(Bson::Int32(v)) => i64::from(*v),
                        _ => 0,
                    };
                    add(
                        bucket,
                        id.get_str("e").unwrap_or_default(),
                        junk,
                        sign * n.max(0),
                    );
                }
            }
        }
        Ok(out)
    }

    pub fn recent(&self, limit: usize) -> Result<Vec<Entry>, QueueError> {
        self.search("", None, limit)
    }

    /// The newest records whose sender, recipient or detail contains `text` (any, when
    /// empty), of one event or all.
    pub fn search(
        &self,
        text: &str,
        event: Option<Event>,
        limit: usize,
    ) -> Result<Vec<Entry>, QueueError> {
        let conn = match &self.reader {
            Reader::Sqlite(conn) => conn,
            Reader::Mongo(mongo) => return search_mongo(mongo, text, event, limit),
        };
        let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut stmt = conn.prepare_cached(
            "SELECT at, event, message_id, mail_from, rcpt, remote_ip, detail FROM mail_log
             WHERE (?1 = '' OR mail_from LIKE ?2 ESCAPE '\\' OR rcpt LIKE ?2 ESCAPE '\\'
                    OR detail LIKE ?2 ESCAPE '\\')
               AND (?3 IS NULL OR event = ?3)
             ORDER BY id DESC LIMIT ?4",
        )?;
        let pattern = format!(
            "%{}%",
            text.replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        let args = params![text, pattern, event.map(Event::as_str), limit as i64];
        let rows = stmt.query_map(args, |r| {
            Ok(Entry {
                at: r.get(0)?,
                event: Event::parse(&r.get::<_, String>(1)?),
                message_id: r.get(2)?,
                mail_from: r.get(3)?,
                rcpt: r.get(4)?,
                remote_ip: r.get(5)?,
                detail: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn write(conn: &mut Connection, batch: &[Entry]) -> Result<(), QueueError> {
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO mail_log (at, event, message_id, mail_from, rcpt, remote_ip, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for e in batch {
            insert.execute(params![
                e.at,
                e.event.as_str(),
                e.message_id,
                e.mail_from,
                e.rcpt,
                e.remote_ip,
                e.detail
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// The newest records matching a search, from MongoDB: a case-insensitive substring of
/// the sender, recipient or detail, as SQLite's LIKE matches.
fn search_mongo(
    mongo: &Mongo,
    text: &str,
    event: Option<Event>,
    limit: usize,
) -> Result<Vec<Entry>, QueueError> {
    let mut filter = Document::new();
    if !text.is_empty() {
        let pattern = regex::escape(text);
        let like = |field: &str| doc! { field: { "$regex": &pattern, "$options": "i" } };
        filter.insert("$or", vec![like("mail_from"), like("rcpt"), like("detail")]);
    }
    if let Some(event) = event {
        filter.insert("event", event.as_str());
    }
    let docs: Vec<Document> = mongo.block(async {
        mongo
            .coll("mail_log")
            .find(filter)
            .sort(doc! { "at": -1, "_id": -1 })
            .limit(limit.min(i64::MAX as usize) as i64)
            .await?
            .try_collect()
            .await
    })?;
    Ok(docs
        .iter()
        .map(|d| Entry {
            at: d.get_i64("at").unwrap_or_default(),
            event: Event::parse(d.get_str("event").unwrap_or_default()),
            message_id: match d.get("message_id") {
                Some(Bson::Int64(v)) => Some(*v),
                Some(Bson::Int32(v)) => Some(i64::from(*v)),
                _ => None,
            },
            mail_from: crate::mongo::text(d, "mail_from"),
            rcpt: crate::mongo::text(d, "rcpt"),
            remote_ip: crate::mongo::text(d, "remote_ip"),
            detail: crate::mongo::text(d, "detail"),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_counted_per_bucket_and_event() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = MailLog::open(dir.path(), 86_400 * 30).expect("open");
        let now = crate::store::unix_now();
        let entry = |at: i64, event: Event| Entry {
            at,
            event,
            message_id: None,
            mail_from: String::new(),
            rcpt: String::new(),
            remote_ip: String::new(),
            detail: String::new(),
        };
        log.record(entry(now - 10, Event::Accepted));
        log.record(entry(now - 20, Event::Accepted));
        // Filed as junk: spam, not accepted.
        log.record(Entry {
            detail: format!("{JUNK_MARK}spam score 9.00 (add header)"),
            ..entry(now - 15, Event::Accepted)
        });
        log.record(entry(now - 30, Event::Delivered));
        log.record(entry(now - 3600 - 5, Event::Bounced));
        // Older than the chart: not counted.
        log.record(entry(now - 25 * 3600, Event::Rejected));
        log.flush();
        let counts = log.per_bucket(now, 3600, 24).expect("counts");
        assert_eq!(counts.len(), 24);
        // accepted, spam, rejected, delivered, deferred, bounced, held
        assert_eq!(counts[23], [2, 1, 0, 1, 0, 0, 0]);
        assert_eq!(counts[22], [0, 0, 0, 0, 0, 1, 0]);
        assert_eq!(counts.iter().flatten().sum::<u64>(), 5);
    }
}

//! The mail log: one structured record per accepted, rejected, delivered, deferred or
//! bounced message, for `queue log`, the admin pages and the API. Records go through a
//! channel to a writer thread, batched: into data_dir/maillog.db (WAL, no fsync: a log
//! needs none), or into MongoDB beside a shared store, where every node's records meet.

#[cfg(feature = "mongodb")]
use std::future::IntoFuture;
use std::path::Path;
#[cfg(feature = "mongodb")]
use std::sync::Arc;
use std::sync::{Mutex, mpsc};

#[cfg(feature = "mongodb")]
use futures_util::TryStreamExt;
#[cfg(feature = "mongodb")]
use mongodb::bson::{Bson, DateTime, Document, doc};
use rusqlite::{Connection, params};
use serde::Serialize;

use super::QueueError;
#[cfg(feature = "mongodb")]
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

    /// The outcome of a record of `event` (or of a stored outcome's name).
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
-- Records per hour and outcome, kept as they are written: the overview's charts read a
-- few hundred rows here instead of grouping a day of the log at every view.
CREATE TABLE IF NOT EXISTS mail_counts (
    hour INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (hour, outcome)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS queue_depth (
    at INTEGER PRIMARY KEY,
    deliveries INTEGER NOT NULL
);
";

fn open(path: &Path) -> Result<Connection, QueueError> {
    let conn = crate::sqlite::open(path, crate::sqlite::Durability::Normal)?;
    conn.execute_batch(SCHEMA)?;
    // A log written before the counts were kept: counted once, from the records.
    conn.execute(
        "INSERT INTO mail_counts (hour, outcome, n)
         SELECT at / 3600, CASE WHEN event = 'accepted' AND substr(detail, 1, ?1) = ?2
                                THEN 'spam' ELSE event END, COUNT(*)
         FROM mail_log WHERE NOT EXISTS (SELECT 1 FROM mail_counts)
         GROUP BY 1, 2",
        params![JUNK_MARK.len() as i64, JUNK_MARK],
    )?;
    Ok(conn)
}

/// The number (since the epoch, in `bucket_secs`) of the first of `buckets` buckets
/// whose last holds `now`.
fn first_bucket(now: i64, bucket_secs: i64, buckets: usize) -> i64 {
    now.div_euclid(bucket_secs) - (buckets as i64 - 1)
}

/// Records of a batch per (hour, outcome): what the counts gain.
fn tally(batch: &[Entry]) -> std::collections::HashMap<(i64, &'static str), i64> {
    let mut counts = std::collections::HashMap::new();
    for e in batch {
        let outcome = Outcome::of(e.event.as_str(), e.detail.starts_with(JUNK_MARK))
            .unwrap_or(Outcome::Accepted);
        *counts
            .entry((e.at.div_euclid(3600), outcome.as_str()))
            .or_insert(0) += 1;
    }
    counts
}

/// Where searches read.
enum Reader {
    Sqlite(Mutex<Connection>),
    #[cfg(feature = "mongodb")]
    Mongo(Arc<Mongo>),
}

/// Where the writer thread writes.
enum Writer {
    Sqlite(Connection),
    #[cfg(feature = "mongodb")]
    Mongo(Arc<Mongo>, String),
}

impl Writer {
    fn write(&mut self, batch: &[Entry]) -> Result<(), QueueError> {
        match self {
            Writer::Sqlite(conn) => write(conn, batch),
            #[cfg(feature = "mongodb")]
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
                mongo.block(async {
                    mongo.coll("mail_log").insert_many(&docs).await?;
                    // Each node counts its own records; the chart sums the nodes.
                    for ((hour, outcome), n) in tally(batch) {
                        mongo
                            .coll(COUNTS)
                            .update_one(
                                doc! { "hour": hour, "outcome": outcome, "node": node.as_str() },
                                doc! {
                                    "$inc": { "n": n },
                                    "$setOnInsert": {
                                        "at_date": DateTime::from_millis(hour.saturating_mul(3_600_000)),
                                    },
                                },
                            )
                            .upsert(true)
                            .await?;
                    }
                    Ok::<_, mongodb::error::Error>(())
                })?;
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
            #[cfg(feature = "mongodb")]
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
        match self {
            Writer::Sqlite(conn) => {
                conn.execute("DELETE FROM mail_log WHERE at < ?1", [before])?;
                conn.execute("DELETE FROM queue_depth WHERE at < ?1", [before])?;
                conn.execute("DELETE FROM mail_counts WHERE hour < ?1", [before / 3600])?;
            }
            // MongoDB's TTL index prunes there.
            #[cfg(feature = "mongodb")]
            Writer::Mongo(..) => {}
        }
        Ok(())
    }
}

/// The samples of the queue's depth, beside the log in MongoDB.
#[cfg(feature = "mongodb")]
const DEPTH: &str = "queue_depth";
/// Records per hour, outcome and node (`mail_counts` in SQLite).
#[cfg(feature = "mongodb")]
const COUNTS: &str = "mail_counts";

/// Makes the TTL indexes that keep `retention` seconds of log (and of queue depths) in
/// MongoDB, replacing ones made with another retention.
#[cfg(feature = "mongodb")]
async fn retention_index(mongo: &Mongo, retention: u64) -> Result<(), QueueError> {
    for name in ["mail_log", DEPTH, COUNTS] {
        retention_index_of(mongo, name, retention).await?;
    }
    Ok(())
}

#[cfg(feature = "mongodb")]
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
    #[cfg(feature = "mongodb")]
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
        tracing::info!(event = %entry.event.as_str(), msg_id = entry.message_id, from = %entry.mail_from, rcpt = %entry.rcpt, detail = %entry.detail, "mail");
        let _ = self.tx.send(Job::Record(entry));
    }

    /// Notes how many deliveries wait in the queue now (never blocks on the disk): the
    /// overview draws the queue's depth over time from these samples.
    pub fn sample_queue(&self, at: i64, deliveries: u64) {
        let _ = self.tx.send(Job::Depth(at, deliveries));
    }

    /// The deepest the queue was sampled in each bucket of `bucket_secs` (aligned to the
    /// clock, as `per_bucket`'s), for the `buckets` buckets up to the one `now` is in,
    /// oldest first; None where nothing was sampled (the server was not running).
    pub fn queue_depth(
        &self,
        now: i64,
        bucket_secs: i64,
        buckets: usize,
    ) -> Result<Vec<Option<u64>>, QueueError> {
        let bucket_secs = bucket_secs.max(1);
        let first = first_bucket(now, bucket_secs, buckets);
        let since = first * bucket_secs;
        let mut out = vec![None; buckets];
        let mut put = |at: i64, n: i64| {
            let bucket = at.div_euclid(bucket_secs) - first;
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
                let mut stmt =
                    conn.prepare_cached("SELECT at, deliveries FROM queue_depth WHERE at >= ?1")?;
                let rows =
                    stmt.query_map([since], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?;
                for row in rows {
                    let (at, n) = row?;
                    put(at, n);
                }
            }
            #[cfg(feature = "mongodb")]
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
                    put(
                        crate::mongo::int(d, "at"),
                        crate::mongo::int(d, "deliveries"),
                    );
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
    /// Records of each outcome (in `Outcome::ALL` order) per bucket of `bucket_secs`
    /// (whole hours, aligned to the UTC clock), for the `buckets` buckets up to the one
    /// `now` is in, oldest first: the overview's charts. Read from the hourly counts.
    pub fn per_bucket(
        &self,
        now: i64,
        bucket_secs: i64,
        buckets: usize,
    ) -> Result<Vec<[u64; Outcome::ALL.len()]>, QueueError> {
        let bucket_secs = (bucket_secs.max(3600) / 3600) * 3600;
        let first = first_bucket(now, bucket_secs, buckets);
        let first_hour = first * bucket_secs / 3600;
        let mut out = vec![[0u64; Outcome::ALL.len()]; buckets];
        let mut add = |hour: i64, outcome: &str, n: i64| {
            let bucket = (hour * 3600).div_euclid(bucket_secs) - first;
            if let (Ok(b), Some(o)) = (usize::try_from(bucket), Outcome::of(outcome, false))
                && b < buckets
            {
                let cell = &mut out[b][o.index()];
                *cell = cell.saturating_add(n.max(0) as u64);
            }
        };
        match &self.reader {
            Reader::Sqlite(conn) => {
                let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
                let mut stmt = conn
                    .prepare_cached("SELECT hour, outcome, n FROM mail_counts WHERE hour >= ?1")?;
                let rows = stmt.query_map([first_hour], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })?;
                for row in rows {
                    let (hour, outcome, n) = row?;
                    add(hour, &outcome, n);
                }
            }
            #[cfg(feature = "mongodb")]
            Reader::Mongo(mongo) => {
                let docs: Vec<Document> = mongo.block(async {
                    mongo
                        .coll(COUNTS)
                        .find(doc! { "hour": { "$gte": first_hour } })
                        .await?
                        .try_collect()
                        .await
                })?;
                for d in &docs {
                    add(
                        crate::mongo::int(d, "hour"),
                        d.get_str("outcome").unwrap_or_default(),
                        crate::mongo::int(d, "n"),
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
        // One arm only without the `mongodb` feature.
        #[cfg_attr(
            not(feature = "mongodb"),
            allow(clippy::infallible_destructuring_match)
        )]
        let conn = match &self.reader {
            Reader::Sqlite(conn) => conn,
            #[cfg(feature = "mongodb")]
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
        let mut count = tx.prepare_cached(
            "INSERT INTO mail_counts (hour, outcome, n) VALUES (?1, ?2, ?3)
             ON CONFLICT (hour, outcome) DO UPDATE SET n = n + excluded.n",
        )?;
        for ((hour, outcome), n) in tally(batch) {
            count.execute(params![hour, outcome, n])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// The newest records matching a search, from MongoDB: a case-insensitive substring of
/// the sender, recipient or detail, as SQLite's LIKE matches.
#[cfg(feature = "mongodb")]
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
        // Half past an hour: the records a minute before are in the same hour.
        let now = crate::store::unix_now() / 3600 * 3600 + 1800;
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

//! The mail log: one structured record per accepted, rejected, delivered, deferred or
//! bounced message, for `queue log` now and the admin pages later. Records go through a
//! channel to a writer thread (batched, WAL, synchronous=NORMAL: a log needs no fsync).

use std::path::Path;
use std::sync::{Mutex, mpsc};

use rusqlite::{Connection, params};
use serde::Serialize;

use super::QueueError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Event {
    Accepted,
    Rejected,
    Delivered,
    Deferred,
    Bounced,
}

impl Event {
    pub const ALL: [Event; 5] = [
        Event::Accepted,
        Event::Rejected,
        Event::Delivered,
        Event::Deferred,
        Event::Bounced,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Event::Accepted => "accepted",
            Event::Rejected => "rejected",
            Event::Delivered => "delivered",
            Event::Deferred => "deferred",
            Event::Bounced => "bounced",
        }
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
    Flush(mpsc::Sender<()>),
}

pub struct MailLog {
    tx: mpsc::Sender<Job>,
    reader: Mutex<Connection>,
    /// Records of each event since the process started (for /metrics), in `Event::ALL`
    /// order.
    counts: [std::sync::atomic::AtomicU64; 5],
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
";

fn open(path: &Path) -> Result<Connection, QueueError> {
    let conn = crate::sqlite::open(path, crate::sqlite::Durability::Normal)?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

impl MailLog {
    /// Opens data_dir/maillog.db and starts its writer thread.
    pub fn open(data_dir: &Path) -> Result<MailLog, QueueError> {
        let path = data_dir.join("maillog.db");
        let mut writer = open(&path)?;
        let reader = open(&path)?;
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("mail-log".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
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
                            Job::Flush(done) => flushed.push(done),
                        }
                    }
                    if !batch.is_empty()
                        && let Err(e) = write(&mut writer, &batch)
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
            reader: Mutex::new(reader),
            counts: Default::default(),
        })
    }

    /// Records an event (never blocks on the disk) and traces it.
    pub fn record(&self, entry: Entry) {
        self.counts[entry.event as usize].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(event = entry.event.as_str(), message = entry.message_id, from = %entry.mail_from, rcpt = %entry.rcpt, detail = %entry.detail, "mail");
        let _ = self.tx.send(Job::Record(entry));
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
        let conn = self.reader.lock().unwrap_or_else(|p| p.into_inner());
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
            let event = match r.get::<_, String>(1)?.as_str() {
                "accepted" => Event::Accepted,
                "rejected" => Event::Rejected,
                "delivered" => Event::Delivered,
                "deferred" => Event::Deferred,
                _ => Event::Bounced,
            };
            Ok(Entry {
                at: r.get(0)?,
                event,
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

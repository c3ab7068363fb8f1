//! Group commit in front of the queue database: sessions hand over finished messages,
//! one writer thread stores whatever has gathered in one transaction (one fsync), then
//! answers each session, which only then says 250.

use std::sync::Arc;
use std::sync::mpsc;

use tokio::sync::oneshot;

use super::{Envelope, NewDelivery, Queue, QueueError};

/// At most this many messages share one commit.
const MAX_BATCH: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("the queue writer has stopped")]
    Stopped,
}

enum Job {
    /// A message to store; the session waits for the reply before its 250.
    Store {
        envelope: Envelope,
        body: Vec<u8>,
        deliveries: Vec<NewDelivery>,
        reply: oneshot::Sender<Result<i64, String>>,
    },
    /// A delivery is done. Nobody waits: it rides along in the next commit, and if a crash
    /// loses it the message is delivered once more (at least once, never lost).
    Finish(i64),
    /// Answered once everything sent before it is committed.
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct Spool {
    jobs: mpsc::Sender<Job>,
    /// Woken after each commit so delivery workers start at once.
    pub committed: Arc<tokio::sync::Notify>,
}

impl Spool {
    pub fn start(db: Arc<dyn Queue>) -> Spool {
        let (jobs, rx) = mpsc::channel::<Job>();
        let committed = Arc::new(tokio::sync::Notify::new());
        let notify = committed.clone();
        std::thread::Builder::new()
            .name("queue-writer".into())
            .spawn(move || writer(db, rx, notify))
            .ok();
        Spool { jobs, committed }
    }

    /// Stores a message durably; returns its queue id once it is on disk.
    pub async fn enqueue(
        &self,
        envelope: Envelope,
        body: Vec<u8>,
        deliveries: Vec<NewDelivery>,
    ) -> Result<i64, SpoolError> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(Job::Store {
                envelope,
                body,
                deliveries,
                reply,
            })
            .map_err(|_| SpoolError::Stopped)?;
        match rx.await {
            Ok(Ok(id)) => Ok(id),
            Ok(Err(e)) => Err(SpoolError::Queue(QueueError::Data(e))),
            Err(_) => Err(SpoolError::Stopped),
        }
    }

    /// Removes a finished delivery (and its message after the last) with the next commit.
    pub fn finish(&self, delivery_id: i64) -> Result<(), SpoolError> {
        self.jobs
            .send(Job::Finish(delivery_id))
            .map_err(|_| SpoolError::Stopped)
    }

    /// Waits until every job sent so far is committed (at shutdown).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.jobs.send(Job::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

fn writer(db: Arc<dyn Queue>, rx: mpsc::Receiver<Job>, committed: Arc<tokio::sync::Notify>) {
    while let Ok(first) = rx.recv() {
        let mut batch = Vec::new();
        let mut replies = Vec::new();
        let mut finished = Vec::new();
        let mut flushed = Vec::new();
        for job in std::iter::once(first).chain(rx.try_iter().take(MAX_BATCH - 1)) {
            match job {
                Job::Store {
                    envelope,
                    body,
                    deliveries,
                    reply,
                } => {
                    batch.push((envelope, body, deliveries));
                    replies.push(reply);
                }
                Job::Finish(id) => finished.push(id),
                Job::Flush(done) => flushed.push(done),
            }
        }
        match db.commit(&batch, &finished) {
            Ok(ids) => {
                for (reply, id) in replies.into_iter().zip(ids) {
                    let _ = reply.send(Ok(id));
                }
                if !batch.is_empty() {
                    committed.notify_one();
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "queue write failed; {} message(s) refused with 451, {} finished deliveries left to their lease", replies.len(), finished.len());
                for reply in replies {
                    let _ = reply.send(Err(e.to_string()));
                }
            }
        }
        for done in flushed {
            let _ = done.send(());
        }
    }
}

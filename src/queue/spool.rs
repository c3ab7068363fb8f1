//! Group commit in front of the queue database: sessions hand over finished messages,
//! one writer thread stores whatever has gathered in one transaction (one fsync), then
//! answers each session, which only then says 250.

use std::sync::Arc;
use std::sync::mpsc;

use tokio::sync::oneshot;

use super::{Envelope, NewDelivery, QueueDb, QueueError};

/// At most this many messages share one commit.
const MAX_BATCH: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("the queue writer has stopped")]
    Stopped,
}

type Job = (
    Envelope,
    Vec<u8>,
    Vec<NewDelivery>,
    oneshot::Sender<Result<i64, String>>,
);

#[derive(Clone)]
pub struct Spool {
    jobs: mpsc::Sender<Job>,
    /// Woken after each commit so delivery workers start at once.
    pub committed: Arc<tokio::sync::Notify>,
}

impl Spool {
    pub fn start(db: Arc<QueueDb>) -> Spool {
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
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send((envelope, body, deliveries, tx))
            .map_err(|_| SpoolError::Stopped)?;
        match rx.await {
            Ok(Ok(id)) => Ok(id),
            Ok(Err(e)) => Err(SpoolError::Queue(QueueError::Data(e))),
            Err(_) => Err(SpoolError::Stopped),
        }
    }
}

fn writer(db: Arc<QueueDb>, rx: mpsc::Receiver<Job>, committed: Arc<tokio::sync::Notify>) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let (batch, replies): (Vec<_>, Vec<_>) = jobs
            .into_iter()
            .map(|(e, b, d, reply)| ((e, b, d), reply))
            .unzip();
        match db.insert_batch(&batch) {
            Ok(ids) => {
                for (reply, id) in replies.into_iter().zip(ids) {
                    let _ = reply.send(Ok(id));
                }
                committed.notify_one();
            }
            Err(e) => {
                tracing::error!(error = %e, "queue write failed; {} message(s) refused with 451", replies.len());
                for reply in replies {
                    let _ = reply.send(Err(e.to_string()));
                }
            }
        }
    }
}

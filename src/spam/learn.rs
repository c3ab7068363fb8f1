//! Learning from users: a message moved into Junk is taught to rspamd as spam, one moved
//! out of it (not to Trash) as ham, in the background so the IMAP command never waits.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::Rspamd;
use crate::mailbox::Mailboxes;

/// Lessons waiting at most; past this a burst's extra lessons are dropped (and logged):
/// the user's command is never held up by the filter.
const QUEUE: usize = 256;
/// Messages taught per lesson at most (a MOVE of a whole folder teaches its first ones).
const PER_LESSON: usize = 1000;
/// Messages larger than this are not taught (rspamd learns from text, not attachments).
const MAX_LEARN_SIZE: usize = 10 * 1024 * 1024;
/// Messages one account may teach per hour: the classifier is shared, and an account
/// moving its own campaign out of Junk by the thousand would teach everyone it is ham.
const PER_ACCOUNT_HOUR: u32 = 500;

/// Messages that just arrived in a folder, and what they teach.
#[derive(Debug)]
pub struct Lesson {
    pub account: String,
    pub folder: String,
    pub uids: Vec<u32>,
    pub spam: bool,
}

/// Hands lessons to the background task; cheap to clone.
#[derive(Clone)]
pub struct Learner {
    tx: mpsc::Sender<Lesson>,
    /// Per account: when its hour began and what it taught in it.
    taught: Arc<std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, u32)>>>,
}

impl Learner {
    /// Starts the task that teaches `rspamd` what users file (call inside the runtime).
    pub fn start(rspamd: Arc<Rspamd>, mailboxes: Mailboxes) -> Learner {
        let (tx, mut rx) = mpsc::channel::<Lesson>(QUEUE);
        tokio::spawn(async move {
            while let Some(lesson) = rx.recv().await {
                teach(&rspamd, &mailboxes, lesson).await;
            }
        });
        Learner {
            tx,
            taught: Default::default(),
        }
    }

    /// Queues a lesson without waiting, within the account's hourly allowance.
    pub fn learn(&self, mut lesson: Lesson) {
        {
            let mut taught = self.taught.lock().unwrap_or_else(|p| p.into_inner());
            let now = std::time::Instant::now();
            if taught.len() > 100_000 {
                taught.retain(|_, (since, _)| now.duration_since(*since).as_secs() < 3600);
            }
            let (since, count) = taught.entry(lesson.account.clone()).or_insert((now, 0));
            if now.duration_since(*since).as_secs() >= 3600 {
                (*since, *count) = (now, 0);
            }
            let left = PER_ACCOUNT_HOUR.saturating_sub(*count) as usize;
            if lesson.uids.len() > left {
                tracing::warn!(
                    account = %lesson.account,
                    "spam learning: the account taught {PER_ACCOUNT_HOUR} messages this hour; the rest are not taught"
                );
                lesson.uids.truncate(left);
            }
            *count += lesson.uids.len() as u32;
            if lesson.uids.is_empty() {
                return;
            }
        }
        if let Err(e) = self.tx.try_send(lesson) {
            tracing::warn!(error = %e, "spam learning is behind; a lesson was dropped");
        }
    }
}

/// Which way a move between folders teaches, if any: into Junk is spam; out of Junk,
/// except into Trash (deleting is not a verdict), is ham.
pub fn direction(from_use: Option<&str>, to_use: Option<&str>) -> Option<bool> {
    let junk = |u: Option<&str>| u == Some("\\Junk");
    match (junk(from_use), junk(to_use)) {
        (false, true) => Some(true),
        (true, false) if to_use != Some("\\Trash") => Some(false),
        _ => None,
    }
}

async fn teach(rspamd: &Rspamd, mailboxes: &Mailboxes, lesson: Lesson) {
    let Lesson {
        account,
        folder,
        mut uids,
        spam,
    } = lesson;
    uids.truncate(PER_LESSON);
    for uid in uids {
        let boxes = mailboxes.clone();
        let (who, name) = (account.clone(), folder.clone());
        let body = tokio::task::spawn_blocking(move || {
            let mailbox = boxes.open(&who)?;
            let Some(folder) = mailbox.folder(&name)? else {
                return Ok(None);
            };
            mailbox.body(&folder, uid)
        })
        .await;
        let body = match body {
            Ok(Ok(Some(body))) if body.len() <= MAX_LEARN_SIZE => body,
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => {
                tracing::warn!(account, error = %e, "could not read a message to learn from");
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "the learning task failed");
                continue;
            }
        };
        match rspamd.learn(spam, body).await {
            Ok(()) => tracing::info!(
                account,
                uid,
                verdict = if spam { "spam" } else { "ham" },
                "rspamd learned a message"
            ),
            Err(e) => tracing::warn!(account, error = %e, "rspamd did not learn a message"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::direction;

    #[test]
    fn only_moves_across_junk_teach() {
        assert_eq!(direction(None, Some("\\Junk")), Some(true));
        assert_eq!(direction(Some("\\Sent"), Some("\\Junk")), Some(true));
        assert_eq!(direction(Some("\\Junk"), None), Some(false));
        assert_eq!(direction(Some("\\Junk"), Some("\\Archive")), Some(false));
        assert_eq!(direction(Some("\\Junk"), Some("\\Trash")), None);
        assert_eq!(direction(Some("\\Junk"), Some("\\Junk")), None);
        assert_eq!(direction(None, Some("\\Trash")), None);
    }
}

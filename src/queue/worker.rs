//! Delivery workers: take due deliveries (leased, so a crash only delays them), carry
//! each out (forward, mailbox, webhook), and retry on a widening schedule or bounce.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, watch};

use super::bounce::{Action, Notice};
use super::filter::{self, Around, Filing};
use super::log::{Entry, Event};
use super::outbound::{Copies, DeliveryError, DsnRequest, Handed, Outbound};
use super::tls_policy::require_tls::TlsRequest;
use super::{Delivery, DeliveryKind, Dsn, Envelope, NewDelivery, Queue, Spool, now_unix};
use crate::mailbox::{MailboxError, Mailboxes};
use crate::routing::srs::Srs;
use crate::sieve::store::UserScripts;
use crate::sieve::{Facts, RunError, Scripts, SpamStatus};
use crate::snapshot::{Snapshot, SnapshotHandle};

/// Seconds to wait after the Nth failed attempt (2 minutes up to 4 hours, then 4 hours).
const RETRY_LADDER: [i64; 8] = [120, 300, 600, 900, 1800, 3600, 7200, 14_400];
/// How long one attempt may hold a delivery before another worker may take it.
const LEASE_SECS: i64 = 600;
const CONCURRENCY: usize = 32;
/// Simultaneous deliveries to one destination (domain, mailbox store or webhook host);
/// Postfix's default_destination_concurrency_limit is also 20.
const PER_DESTINATION: usize = 20;
/// Deliveries taken from the queue and not yet finished, at most (all well within a lease).
const MAX_TAKEN: usize = 512;
/// A delivery the process died in this many times (each time it ran alone the second
/// time) is held: the message is what kills it.
const INTERRUPTIONS_BEFORE_HOLD: u32 = 2;
/// How long a delivery that runs alone (see `attempt_guarded`) may take.
const ALONE_FOR: Duration = Duration::from_secs(180);

pub struct Worker {
    pub db: Arc<dyn Queue>,
    pub spool: Spool,
    pub outbound: Outbound,
    pub mailboxes: Mailboxes,
    pub snapshot: Arc<SnapshotHandle>,
    pub srs: Srs,
    pub hostname: String,
    pub http: reqwest::Client,
    pub log: Arc<super::log::MailLog>,
    /// Webhook failures are counted here; the MX reads them to answer 421.
    pub cache: Arc<dyn crate::cache::Cache>,
    pub webhook_key: Option<Vec<u8>>,
    /// Parsed DKIM keys, shared with the MX (which seals with them).
    pub signing: Arc<crate::dkim::signing::SigningKeys>,
    /// A message not delivered after this long is bounced (`delivery.expire_after`).
    pub expire_after: i64,
    /// One "delayed" notice after this long; 0 = none (`delivery.delay_warning`).
    pub delay_warning: i64,
    /// Per-destination concurrency, created on first use.
    pub destinations: std::sync::Mutex<std::collections::HashMap<String, Arc<Semaphore>>>,
    /// Runs accounts' Sieve scripts at mailbox delivery.
    pub sieve: Arc<crate::sieve::Interpreter>,
}

/// A webhook that failed this often within the window makes the MX answer 421 for the
/// addresses that post to it, so senders retry instead of piling mail onto a dead endpoint.
pub const WEBHOOK_FAILURES_BEFORE_421: u32 = 5;
pub const WEBHOOK_FAILURE_WINDOW: Duration = Duration::from_secs(600);

pub fn webhook_failure_key(url: &str) -> String {
    format!("webhook-fail:{url}")
}

/// A blocking task's panic goes on in the attempt (where `attempt_guarded` catches it
/// and holds the delivery); one cancelled at shutdown is a temporary failure.
fn rethrow(e: tokio::task::JoinError) -> DeliveryError {
    match e.try_into_panic() {
        Ok(panic) => std::panic::resume_unwind(panic),
        Err(e) => DeliveryError::temporary(e.to_string()),
    }
}

/// What a mailbox delivery's scripts came to.
enum Ran {
    /// There were none.
    Plain,
    /// What they ask; with the user's script's error when the spec's ran without it.
    Filtered(crate::sieve::Outcome, Option<RunError>),
    /// They failed: the message is kept.
    Failed(RunError),
}

/// The line put on top of a message a script failed on: one line of ASCII, bounded.
fn sieve_error_line(e: &RunError) -> String {
    let note: String = e
        .to_string()
        .chars()
        .map(|c| {
            if c.is_ascii() && !c.is_control() {
                c
            } else {
                ' '
            }
        })
        .take(300)
        .collect();
    format!("X-Sieve-Error: {note}\r\n")
}

/// What the spam filter said of this copy, for Sieve's `spamtest`: spam when it was filed
/// as junk or its X-Spam-Status says Yes; else its score against the threshold the
/// filter wrote beside it (SpamAssassin's reading of "score=S required=R"); unknown when
/// no filter looked.
/// The Return-Path field the final delivery writes for a reverse path, without the
/// characters that would make it malformed (controls, and the angle brackets a quoted
/// local part may hold). The quota check at DATA counts it.
pub fn return_path(mail_from: &str) -> String {
    let clean: String = mail_from
        .chars()
        .filter(|c| !c.is_control() && *c != '<' && *c != '>')
        .collect();
    format!("Return-Path: <{clean}>\r\n")
}

fn spam_judgement(folder: &str, prefix: &str) -> SpamStatus {
    if folder == "Junk" {
        return SpamStatus::Spam;
    }
    let Some(status) = prefix
        .lines()
        .find_map(|l| l.strip_prefix("X-Spam-Status: "))
    else {
        return SpamStatus::Unknown;
    };
    if status.starts_with("Yes") {
        return SpamStatus::Spam;
    }
    let number = |key: &str| {
        status
            .split([' ', ','])
            .find_map(|w| w.strip_prefix(key))
            .and_then(|v| v.parse::<f64>().ok())
    };
    match (number("score="), number("required=")) {
        (Some(score), _) if score <= 0.0 => SpamStatus::Ham,
        (Some(score), Some(required)) if required > 0.0 => {
            SpamStatus::MaybeSpam((score / required).clamp(0.1, 0.9))
        }
        _ => SpamStatus::Ham,
    }
}

pub fn retry_delay(attempts: u32) -> i64 {
    RETRY_LADDER[(attempts as usize).min(RETRY_LADDER.len() - 1)]
}

impl Worker {
    /// Runs until `shutdown` turns true; in-flight deliveries finish first.
    pub async fn run(self: Arc<Self>, wake: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
        let slots = Arc::new(Semaphore::new(CONCURRENCY));
        // Deliveries taken from the queue but not finished: bounded, so none outlives its
        // lease while it waits for a slot.
        let taken = Arc::new(Semaphore::new(MAX_TAKEN));
        loop {
            if *shutdown.borrow() {
                break;
            }
            let batch = (CONCURRENCY * 2).min(taken.available_permits().max(1));
            let db = self.db.clone();
            let due = tokio::task::spawn_blocking(move || db.take_due(batch, LEASE_SECS)).await;
            let due = match due {
                Ok(Ok(due)) => due,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "reading the queue failed");
                    Vec::new()
                }
                Err(_) => Vec::new(),
            };
            let idle = due.is_empty();
            for delivery in due {
                let Ok(held) = taken.clone().acquire_owned().await else {
                    break;
                };
                // One destination never takes every worker: a delivery first waits for a
                // slot of its destination, then for a worker, so a slow or tarpitting MX
                // delays only its own mail and never holds workers while it waits.
                let destination = self.destination_slots(&delivery);
                let (worker, slots) = (self.clone(), slots.clone());
                tokio::spawn(async move {
                    let Ok(turn) = destination.acquire_owned().await else {
                        return;
                    };
                    // A delivery in progress when the process died runs alone: should it
                    // bring the process down again, it alone is counted twice and held.
                    let width = if delivery.interrupted > 0 {
                        CONCURRENCY
                    } else {
                        1
                    };
                    let Ok(permit) = slots.acquire_many_owned(width as u32).await else {
                        return;
                    };
                    worker.attempt_guarded(delivery).await;
                    drop((permit, turn, held));
                });
            }
            if idle {
                let db = self.db.clone();
                let next = tokio::task::spawn_blocking(move || db.next_due_in())
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .flatten();
                // Looked at again every few seconds at most, so a `queue retry` from the
                // command line (another process) is noticed soon.
                let wait = Duration::from_secs(next.unwrap_or(5).clamp(1, 5) as u64);
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
        // Let running attempts finish (or their leases expire) before the process exits.
        let _ = taken.acquire_many(MAX_TAKEN as u32).await;
    }

    fn destination_slots(&self, d: &Delivery) -> Arc<Semaphore> {
        let key = match (d.kind, self.outbound.relay()) {
            // With a smarthost every forward goes to the same place.
            (DeliveryKind::Forward, Some(relay)) => relay.to_string(),
            (DeliveryKind::Forward, None) => d
                .target
                .rsplit_once('@')
                .map_or(d.target.as_str(), |(_, dom)| dom)
                .to_ascii_lowercase(),
            (DeliveryKind::Mailbox, _) => "mailboxes".to_string(),
            (DeliveryKind::Reports, _) => "reports".to_string(),
            (DeliveryKind::Webhook, _) => url::Url::parse(&d.target)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_default(),
        };
        let mut map = self.destinations.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 10_000 {
            map.retain(|_, s| s.available_permits() < PER_DESTINATION);
        }
        map.entry(key)
            .or_insert_with(|| Arc::new(Semaphore::new(PER_DESTINATION)))
            .clone()
    }

    /// One attempt, marked as started first; a delivery the process already died in
    /// twice, or whose attempt panics, is held rather than tried again, so one message
    /// can never keep the server down (the mail stays in the queue, shown with why).
    async fn attempt_guarded(&self, d: Delivery) {
        use futures_util::FutureExt;
        if d.interrupted >= INTERRUPTIONS_BEFORE_HOLD {
            let reason = format!(
                "held: processing failed: the server stopped {} times while delivering it; \
                 `ferrymail queue retry {}` tries it again",
                d.interrupted, d.id
            );
            self.hold(&d, reason).await;
            return;
        }
        let db = self.db.clone();
        let id = d.id;
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || db.begin_attempt(id)).await {
            tracing::warn!(delivery = id, error = %e, "could not mark a delivery attempt");
        }
        let mut d = d;
        let inline = d.body.take();
        let attempt = std::panic::AssertUnwindSafe(self.attempt(&d, inline)).catch_unwind();
        // A delivery that runs alone holds up every other: it gets a few minutes, then
        // waits for its next turn like any temporary failure.
        let outcome = if d.interrupted > 0 {
            match tokio::time::timeout(ALONE_FOR, attempt).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    self.later(&d, "the attempt run alone took too long").await;
                    return;
                }
            }
        } else {
            attempt.await
        };
        if let Err(panic) = outcome {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            let reason = format!(
                "held: processing failed: {why}; `ferrymail queue retry {}` tries it again",
                d.id
            );
            self.hold(&d, reason).await;
        }
    }

    /// A temporary failure: tried again on the usual ladder.
    async fn later(&self, d: &Delivery, why: &str) {
        self.record(d, Event::Deferred, why);
        let (db, id, why) = (self.db.clone(), d.id, why.to_string());
        let next = now_unix() + retry_delay(d.attempts);
        match tokio::task::spawn_blocking(move || db.retry_later(id, next, &why)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(delivery = id, error = %e, "could not defer a delivery"),
            Err(e) => tracing::error!(delivery = id, error = %e, "could not defer a delivery"),
        }
    }

    async fn hold(&self, d: &Delivery, reason: String) {
        tracing::error!(delivery = d.id, msg_id = d.message_id, "{reason}");
        self.record(d, Event::Held, &reason);
        let db = self.db.clone();
        let id = d.id;
        match tokio::task::spawn_blocking(move || db.hold(id, &reason)).await {
            Ok(Ok(())) => {}
            // Left to its lease: tried again later, and counted again.
            Ok(Err(e)) => tracing::error!(delivery = id, error = %e, "could not hold a delivery"),
            Err(e) => tracing::error!(delivery = id, error = %e, "could not hold a delivery"),
        }
    }

    /// `inline`: the message when it came with the delivery (see `INLINE_BODY`).
    async fn attempt(&self, d: &Delivery, inline: Option<Vec<u8>>) {
        let body = match inline {
            Some(body) => body,
            None => {
                let db = self.db.clone();
                let id = d.message_id;
                match tokio::task::spawn_blocking(move || db.body(id)).await {
                    Ok(Ok(Some(body))) => body,
                    // Gone (removed meanwhile): nothing to do.
                    Ok(Ok(None)) => return,
                    // Not readable now: an attempt that ended, to be tried again.
                    Ok(Err(e)) => {
                        return self.later(d, &format!("reading the message: {e}")).await;
                    }
                    Err(e) => return self.later(d, &format!("reading the message: {e}")).await,
                }
            }
        };
        // Ok(whether the next hop reports on it, what happened for the log).
        let result = match d.kind {
            DeliveryKind::Forward => self
                .forward(d, &body)
                .await
                .map(|handed| (handed.dsn_passed_on, handed.reply)),
            DeliveryKind::Mailbox => self.to_mailbox(d, body.clone()).await.map(|n| (true, n)),
            DeliveryKind::Webhook => self.webhook(d, &body).await.map(|()| (true, String::new())),
            DeliveryKind::Reports => self.keep_report(body.clone()).await.map(|n| (true, n)),
        };
        let age = now_unix() - d.received_at;
        match result {
            Ok((reports, detail)) => {
                self.record(d, Event::Delivered, &detail);
                self.finished(d.id);
                // A next hop that speaks DSN got the request and answers it itself.
                if d.dsn.on_success() {
                    let action = if reports {
                        Action::Delivered
                    } else {
                        Action::Relayed
                    };
                    self.notify(d, &body, action, "").await;
                }
            }
            Err(e) if e.permanent || age > self.expire_after => {
                let reason = if e.permanent {
                    e.message.clone()
                } else {
                    format!(
                        "{}; given up after {} of retrying",
                        e.message,
                        humantime::format_duration(Duration::from_secs(age.max(0) as u64))
                    )
                };
                self.record(d, Event::Bounced, &reason);
                if d.dsn.on_failure() {
                    self.notify(d, &body, Action::Failed, &reason).await;
                }
                self.finished(d.id);
            }
            Err(e) => {
                if self.delay_warning > 0 && age >= self.delay_warning && d.dsn.on_delay() {
                    self.notify(d, &body, Action::Delayed, &e.message).await;
                }
                self.later(d, &e.message).await;
            }
        }
    }

    fn finished(&self, delivery_id: i64) {
        if let Err(e) = self.spool.finish(delivery_id) {
            // Left to its lease: delivered again later rather than lost.
            tracing::error!(delivery = delivery_id, error = %e, "could not remove a finished delivery");
        }
    }

    fn record(&self, d: &Delivery, event: Event, detail: &str) {
        self.log.record(Entry {
            at: now_unix(),
            event,
            message_id: Some(d.message_id),
            mail_from: d.mail_from.clone(),
            rcpt: format!("{:?} {}", d.kind, d.target).to_lowercase(),
            remote_ip: String::new(),
            detail: detail.to_string(),
        });
    }

    /// Forwards a copy; Ok with what the next hop answered.
    async fn forward(&self, d: &Delivery, body: &[u8]) -> Result<Handed, DeliveryError> {
        let domain = d
            .alias
            .rsplit_once('@')
            .map(|(_, dom)| dom)
            .unwrap_or(&self.hostname)
            .to_string();
        let sender = self.srs.forward(&d.mail_from, &domain);
        let keys = self
            .snapshot
            .get()
            .dkim_keys
            .get(&domain)
            .cloned()
            .unwrap_or_default();
        let signing = self.signing.clone();
        let revision = self.snapshot.get().revision;
        let content = if d.from_rewrite.is_empty() {
            body.to_vec()
        } else {
            super::rewrite::friendly_from(body, &d.from_rewrite)
        };
        let (prefix, prefix_7bit) = (d.prefix.clone(), d.prefix_7bit.clone());
        // Both copies are signed before the next hop says which it takes: the 7-bit one
        // is made only for mail that needs it, and signing is cheap beside a connection.
        let (signed, signed_7bit) = tokio::task::spawn_blocking(move || {
            let sign = |prefix: String, content: &[u8]| {
                let mut message = prefix.into_bytes();
                message.extend_from_slice(content);
                let headers = super::sign::dkim_headers(&signing, &keys, revision, &message)?;
                let mut out = headers.into_bytes();
                out.extend_from_slice(&message);
                Ok::<_, crate::dkim::signing::KeyError>(out)
            };
            let seven_bit = match crate::mime::downgrade::downgrade(&content) {
                Ok(Some(copy)) => Ok(Some(sign(prefix_7bit, &copy)?)),
                Ok(None) => Ok(None),
                Err(why) => Err(why),
            };
            Ok::<_, crate::dkim::signing::KeyError>((sign(prefix, &content)?, seven_bit))
        })
        .await
        .map_err(rethrow)?
        .map_err(|e| DeliveryError::temporary(e.to_string()))?;
        // Read for the DSN request and for REQUIRETLS (RFC 8689), which must not be lost
        // to a store that fails to answer: then the delivery waits.
        let db = self.db.clone();
        let id = d.message_id;
        let envelope = tokio::task::spawn_blocking(move || db.envelope(id))
            .await
            .map_err(rethrow)?
            .map_err(|e| DeliveryError::temporary(format!("reading the envelope: {e}")))?;
        let request = envelope
            .as_ref()
            .filter(|_| d.dsn.notify != 0)
            .map(|e| DsnRequest {
                notify: d.dsn.notify,
                orcpt: d.dsn.orcpt.as_deref().unwrap_or(&d.dsn.rcpt),
                ret_full: e.ret_full,
                envid: e.envid.as_deref(),
            });
        let tls = TlsRequest::of(envelope.as_ref().is_some_and(|e| e.require_tls), body);
        self.outbound
            .send(
                &sender,
                std::slice::from_ref(&d.target),
                Copies {
                    original: &signed,
                    seven_bit: signed_7bit.as_ref().map(Option::as_deref),
                },
                request,
                tls,
            )
            .await
    }

    /// Reads a DMARC or TLS report about one of this server's domains and keeps it for
    /// the admin's report pages. Mail that is no such report is noted in the log, not kept.
    async fn keep_report(&self, body: Vec<u8>) -> Result<String, DeliveryError> {
        use super::dmarc_report::received;
        let now = now_unix();
        let read = tokio::task::spawn_blocking(move || received::read(&body, now))
            .await
            .map_err(rethrow)?;
        let report = match read {
            Ok(report) => report,
            Err(e) => return Ok(format!("no report kept: {e}")),
        };
        if report.body.len() > received::MAX_KEPT_BYTES {
            return Ok(format!(
                "no report kept: the report about {} from {} is larger than {} KB",
                report.domain,
                report.org,
                received::MAX_KEPT_BYTES / 1024
            ));
        }
        // Somebody else's report (a domain this server does not serve) is not kept.
        if !self.snapshot.get().domains.contains_key(&report.domain) {
            return Ok(format!(
                "no report kept: it is about {}, not a domain of this server",
                report.domain
            ));
        }
        let what = format!(
            "{} report about {} from {} ({})",
            if report.kind == "dmarc" {
                "DMARC"
            } else {
                "TLS"
            },
            report.domain,
            report.org,
            report.report_id
        );
        let db = self.db.clone();
        let added = tokio::task::spawn_blocking(move || {
            let (count, bytes) = db.received_report_totals(&report.domain, now - 86_400)?;
            if count >= received::MAX_PER_DAY
                || bytes + report.body.len() as u64 > received::MAX_BYTES_PER_DAY
            {
                return Ok(None);
            }
            let added = db.add_received_report(&report)?;
            db.forget_received_reports(now - received::KEEP_DAYS * 86_400)?;
            Ok::<_, super::QueueError>(Some(added))
        })
        .await
        .map_err(rethrow)?
        .map_err(|e| DeliveryError::temporary(format!("keeping the report: {e}")))?;
        Ok(match added {
            Some(true) => format!("kept the {what}"),
            Some(false) => format!("had the {what} already"),
            None => format!(
                "no report kept: the {what} is over the day's bound of {} reports or {} MB about one domain",
                received::MAX_PER_DAY,
                received::MAX_BYTES_PER_DAY / (1024 * 1024)
            ),
        })
    }

    /// Files the message in the account's mailbox, through its Sieve scripts when it has
    /// any. Ok with what the scripts did, for the mail log.
    async fn to_mailbox(&self, d: &Delivery, body: Vec<u8>) -> Result<String, DeliveryError> {
        let snapshot = self.snapshot.get();
        let quota = snapshot.accounts.get(&d.target).and_then(|a| a.quota);
        let folder = match d.folder.as_str() {
            "" => "INBOX".to_string(),
            name => name.to_string(),
        };
        // The lines for this copy only (the spam verdict for its recipient) go on top.
        let body = if d.prefix.is_empty() {
            body
        } else {
            let mut with = d.prefix.as_bytes().to_vec();
            with.extend_from_slice(&body);
            with
        };
        let spam = spam_judgement(&d.folder, &d.prefix);
        let mut scripts = self.scripts_for(&snapshot, &d.target, spam);
        // An owner's own reply and forwarding (self-service) are read beside the mail;
        // junk is neither answered nor forwarded.
        let owner = snapshot
            .accounts
            .get(&d.target)
            .filter(|r| crate::selfservice::keeps_delivery_settings(r) && spam != SpamStatus::Spam)
            .cloned();

        let (boxes, cache, interpreter) = (
            self.mailboxes.clone(),
            self.cache.clone(),
            self.sieve.clone(),
        );
        let (account, recipient, mail_from) =
            (d.target.clone(), d.dsn.rcpt.clone(), d.mail_from.clone());
        // One opening of the mailbox serves the script's questions and the filing.
        let (ran, body, mailbox) = tokio::task::spawn_blocking(move || {
            let mailbox = boxes
                .open(&account)
                .map_err(|e| DeliveryError::temporary(e.to_string()))?;
            // Settings that cannot be read leave the spec's scripts in place: the mail is
            // kept here either way, and a forward or reply missed is no mail lost.
            let own =
                owner.as_ref().and_then(|record| {
                    match crate::selfservice::settings::read_in(&boxes, &mailbox) {
                        Ok(own) => Some((record, own)),
                        Err(e) => {
                            tracing::warn!(account, "the owner's settings cannot be read: {e}");
                            None
                        }
                    }
                });
            if let Some((record, own)) = own {
                let today = crate::sieve::vacation::today(now_unix());
                match crate::selfservice::owner_script(record, &own, today) {
                    None => {}
                    Some(text) if text.is_empty() => scripts.vacation = None,
                    Some(text) => match crate::sieve::compile_cached(text.as_bytes()) {
                        Ok(script) => scripts.vacation = Some(script),
                        // Only what the page let through is in it; were it refused,
                        // the declared reply stays rather than the mail going unfiltered.
                        Err(e) => tracing::warn!(account, "the owner's settings: {e}"),
                    },
                }
            }
            // The user's own script (ManageSieve) runs after the spec's.
            let personal = UserScripts::active_in(&boxes, &mailbox)
                .map_err(|e| DeliveryError::temporary(format!("reading the Sieve script: {e}")))?;
            let mut broken = None;
            if let Some((name, text)) = personal {
                match crate::sieve::compile_cached(&text) {
                    Ok(script) => scripts.personal = Some(script),
                    Err(e) => broken = Some(RunError(format!("the script {name:?}: {e}"))),
                }
            }
            if scripts.is_empty() {
                let ran = match broken {
                    Some(e) => Ran::Failed(e),
                    None => Ran::Plain,
                };
                return Ok((ran, body, mailbox));
            }
            let mut around = Around {
                mailboxes: &boxes,
                mailbox: &mailbox,
                cache: cache.as_ref(),
                account: &account,
            };
            let facts = Facts {
                account: &account,
                recipient: if recipient.is_empty() {
                    &account
                } else {
                    &recipient
                },
                mail_from: &mail_from,
                spam,
            };
            let view = filter::sieve_view(&body);
            let ran = match (
                broken,
                interpreter.run(&view, &scripts, &facts, &mut around),
            ) {
                (None, Ok(outcome)) => Ran::Filtered(outcome, None),
                (Some(e), Ok(outcome)) => Ran::Filtered(outcome, Some(e)),
                // The user's script failed: the spec's run alone, as with Pigeonhole's
                // sieve_before, so a user (or a message made to trip their script)
                // cannot undo what the operator's script does.
                (None, Err(e)) if scripts.personal.is_some() => {
                    scripts.personal = None;
                    if scripts.is_empty() {
                        Ran::Failed(e)
                    } else {
                        match interpreter.run(&view, &scripts, &facts, &mut around) {
                            Ok(outcome) => Ran::Filtered(outcome, Some(e)),
                            Err(_) => Ran::Failed(e),
                        }
                    }
                }
                (_, Err(e)) => Ran::Failed(e),
            };
            drop(view);
            Ok::<_, DeliveryError>((ran, body, mailbox))
        })
        .await
        .map_err(rethrow)??;

        let plain = |message: Vec<u8>| Filing {
            folder: None,
            special_use: None,
            flags: Vec::new(),
            message,
        };
        let (outcome, user_error) = match ran {
            // No scripts: where it would have gone.
            Ran::Plain => {
                return self
                    .file(folder, vec![plain(body)], quota, mailbox, &d.mail_from)
                    .await
                    .map(|()| String::new());
            }
            // A script that fails never loses mail: kept where it would have gone, with
            // the reason on top for its owner to see.
            Ran::Failed(e) => {
                tracing::warn!(account = d.target, delivery = d.id, "Sieve: {e}; kept");
                let mut message = sieve_error_line(&e).into_bytes();
                message.extend_from_slice(&body);
                self.file(folder, vec![plain(message)], quota, mailbox, &d.mail_from)
                    .await?;
                return Ok(format!("Sieve error, kept: {e}"));
            }
            Ran::Filtered(outcome, user_error) => (outcome, user_error),
        };
        // A redirect sends the message on: what its sender asked of TLS (REQUIRETLS,
        // RFC 8689) goes with it.
        let require_tls = if outcome.redirects.is_empty() {
            false
        } else {
            let db = self.db.clone();
            let id = d.message_id;
            tokio::task::spawn_blocking(move || db.envelope(id))
                .await
                .map_err(rethrow)?
                .map_err(|e| DeliveryError::temporary(format!("reading the envelope: {e}")))?
                .is_some_and(|e| e.require_tls)
        };
        let mut carried = filter::carry(
            outcome,
            &body,
            filter::Sender {
                account: &d.target,
                mail_from: &d.mail_from,
                require_tls,
            },
            &snapshot,
            self.cache.as_ref(),
            &self.hostname,
        );
        if let Some(e) = &user_error {
            tracing::warn!(
                account = d.target,
                delivery = d.id,
                "Sieve: {e}; the spec's script alone ran"
            );
            for filing in &mut carried.filings {
                let mut message = sieve_error_line(e).into_bytes();
                message.extend_from_slice(&filing.message);
                filing.message = message;
            }
            carried.notes.insert(
                0,
                format!("error in the user's script ({e}), the spec's alone ran"),
            );
        }
        if let Some(reason) = carried.reject {
            filter::remember(self.cache.as_ref(), &d.target, &carried.remember);
            return Err(DeliveryError {
                permanent: true,
                message: format!("550 5.7.1 Refused by the recipient's filter: {reason}"),
            });
        }
        // Messages the scripts send are queued once per delivery: a retry (the mailbox
        // was full) files again but does not send again.
        let sent_key = format!("sieve-sent:{}", d.id);
        if !carried.sends.is_empty()
            && self.cache.take(
                &sent_key,
                1,
                1,
                Duration::from_secs(self.expire_after.max(60) as u64),
            )
        {
            for (envelope, message, deliveries) in carried.sends {
                if let Err(e) = self.spool.enqueue(envelope, message, deliveries).await {
                    self.cache.clear(&sent_key);
                    return Err(DeliveryError::temporary(format!(
                        "queueing what the Sieve scripts send: {e}"
                    )));
                }
            }
        }
        self.file(folder, carried.filings, quota, mailbox, &d.mail_from)
            .await?;
        // Only now is the message safe: a retry before this must not find its own ids
        // (a `duplicate` test would discard it).
        filter::remember(self.cache.as_ref(), &d.target, &carried.remember);
        Ok(format!("Sieve: {}", carried.notes.join("; ")))
    }

    /// The scripts that run on mail for `account`: the spec's, its vacation responder
    /// while in effect (never for junk), then the user's own.
    fn scripts_for(&self, snapshot: &Snapshot, account: &str, spam: SpamStatus) -> Scripts {
        let Some(declared) = snapshot.sieve.get(account) else {
            return Scripts::default();
        };
        let today = crate::sieve::vacation::today(now_unix());
        Scripts {
            operator: declared.script.clone(),
            vacation: declared
                .vacation
                .as_ref()
                .filter(|(v, _)| {
                    spam != SpamStatus::Spam && crate::sieve::vacation::in_effect(v, today)
                })
                .map(|(_, script)| script.clone()),
            personal: None,
        }
    }

    /// Stores the filings in the account's mailbox (opened for the scripts); one without a
    /// folder goes to `default` (the INBOX, or Junk for spam).
    async fn file(
        &self,
        default: String,
        filings: Vec<Filing>,
        quota: Option<u64>,
        mut mailbox: crate::mailbox::Mailbox,
        mail_from: &str,
    ) -> Result<(), DeliveryError> {
        if filings.is_empty() {
            return Ok(());
        }
        // RFC 5321 §4.4: the final delivery writes the envelope's reverse path on top
        // (as Dovecot's LDA does); it is not passed on (Sieve redirects what came).
        let return_path = return_path(mail_from);
        let filed = tokio::task::spawn_blocking(move || {
            let mut filed = Vec::new();
            for filing in filings {
                let folder = match (&filing.folder, &filing.special_use) {
                    (None, _) => mailbox.delivery_folder(&default),
                    (Some(name), Some(role)) => mailbox.special_folder(role, name),
                    (Some(name), None) => mailbox.folder_or_create(name),
                };
                // A name no folder may have (too long, too deep) files where the
                // message would have gone, rather than never.
                let folder = match folder {
                    Err(MailboxError::Refused(_)) => mailbox.delivery_folder(&default)?,
                    other => other?,
                };
                // `keep` and `fileinto "INBOX"` are one copy (RFC 5228 §2.10.3).
                if filed.contains(&folder.id) {
                    continue;
                }
                filed.push(folder.id);
                let mut message = Vec::with_capacity(return_path.len() + filing.message.len());
                message.extend_from_slice(return_path.as_bytes());
                message.extend_from_slice(&filing.message);
                mailbox.append(&folder, &message, &filing.flags, now_unix(), quota)?;
            }
            Ok::<_, MailboxError>(())
        })
        .await;
        match filed {
            Ok(Ok(())) => Ok(()),
            // Temporary (4.2.2): the owner may make room before the message expires.
            Ok(Err(e @ MailboxError::OverQuota { .. })) => {
                Err(DeliveryError::temporary(format!("452 4.2.2 {e}")))
            }
            Ok(Err(e)) => Err(DeliveryError::temporary(e.to_string())),
            Err(e) => Err(rethrow(e)),
        }
    }

    async fn webhook(&self, d: &Delivery, body: &[u8]) -> Result<(), DeliveryError> {
        let payload = super::webhook::payload(&d.mail_from, &d.alias, body);
        let json =
            serde_json::to_vec(&payload).map_err(|e| DeliveryError::temporary(e.to_string()))?;
        let mut request = self
            .http
            .post(&d.target)
            .timeout(Duration::from_secs(60))
            .header("content-type", "application/json")
            .header("user-agent", "ferrymail");
        if let Some(key) = &self.webhook_key {
            request = request.header("X-Webhook-Signature", super::webhook::signature(key, &json));
        }
        let key = webhook_failure_key(&d.target);
        let response = match request.body(json).send().await {
            Ok(response) => response,
            Err(e) => {
                self.cache.hit(&key, u32::MAX, WEBHOOK_FAILURE_WINDOW);
                return Err(DeliveryError::temporary(crate::error_chain::http(&e)));
            }
        };
        let status = response.status();
        if status.is_success() {
            self.cache.clear(&key);
            return Ok(());
        }
        self.cache.hit(&key, u32::MAX, WEBHOOK_FAILURE_WINDOW);
        // A 4xx other than 408/429 means the endpoint will not take it; retry the rest.
        let permanent =
            status.is_client_error() && status.as_u16() != 408 && status.as_u16() != 429;
        Err(DeliveryError {
            permanent,
            message: format!("webhook answered {status}"),
        })
    }

    /// Sends a delivery status notification (RFC 3464) to the original sender, unless
    /// the message was itself a bounce or auto-submitted (no bounce loops, no backscatter
    /// to lists). A message causes one failure notice and one delay notice at most.
    async fn notify(&self, d: &Delivery, body: &[u8], action: Action, reason: &str) {
        if d.mail_from.is_empty() || super::bounce::is_auto_submitted(body) {
            return;
        }
        let db = self.db.clone();
        let message_id = d.message_id;
        let (claimed, envelope) = tokio::task::spawn_blocking(move || {
            let claimed = match action {
                Action::Failed => db.claim_bounce(message_id),
                Action::Delayed => db.claim_delay_notice(message_id),
                Action::Delivered | Action::Relayed => Ok(true),
            };
            (claimed, db.envelope(message_id))
        })
        .await
        .unwrap_or((Ok(false), Ok(None)));
        if !matches!(claimed, Ok(true)) {
            return;
        }
        let envelope = envelope.ok().flatten();
        if envelope.as_ref().is_some_and(|e| e.no_notices) {
            tracing::info!(
                msg_id = d.message_id,
                "no {} notice: the sender failed SPF or DMARC on arrival (backscatter)",
                action.name()
            );
            return;
        }
        let domain = d
            .alias
            .rsplit_once('@')
            .map(|(_, dom)| dom.to_string())
            .unwrap_or_else(|| self.hostname.clone());
        let recipient = if d.dsn.rcpt.is_empty() {
            &d.target
        } else {
            &d.dsn.rcpt
        };
        let report = super::bounce::report(&Notice {
            hostname: &self.hostname,
            domain: &domain,
            sender: &d.mail_from,
            action,
            recipient,
            orcpt: d.dsn.orcpt.as_deref(),
            envid: envelope.as_ref().and_then(|e| e.envid.as_deref()),
            reason,
            original: body,
            // RFC 8689 §5: only the header of what was to travel over verified TLS goes
            // back (as with RET=HDRS), and that too only over verified TLS.
            full: envelope
                .as_ref()
                .is_some_and(|e| e.ret_full && !e.require_tls),
            arrival: d.received_at,
            retry_until: (action == Action::Delayed).then_some(d.received_at + self.expire_after),
        });
        let require_tls = envelope.as_ref().is_some_and(|e| e.require_tls);
        let envelope = Envelope {
            mail_from: String::new(),
            rcpt_to: vec![d.mail_from.clone()],
            remote_ip: "127.0.0.1".into(),
            helo: self.hostname.clone(),
            tls: false,
            ret_full: false,
            envid: None,
            no_notices: false,
            require_tls,
        };
        let delivery = NewDelivery {
            kind: DeliveryKind::Forward,
            target: d.mail_from.clone(),
            alias: format!("mailer-daemon@{domain}"),
            prefix: String::new(),
            from_rewrite: String::new(),
            prefix_7bit: String::new(),
            folder: String::new(),
            dsn: Dsn {
                rcpt: d.mail_from.clone(),
                // Notices about notices are never wanted (RFC 3461 §6.2).
                notify: smtp_proto::RCPT_NOTIFY_NEVER,
                orcpt: None,
            },
        };
        if let Err(e) = self.spool.enqueue(envelope, report, vec![delivery]).await {
            tracing::error!(error = %e, "could not queue a bounce");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spamtest_reads_the_filters_verdict() {
        assert_eq!(spam_judgement("", ""), SpamStatus::Unknown);
        assert_eq!(spam_judgement("Junk", ""), SpamStatus::Spam);
        let line = |s: &str| format!("X-Spam-Status: {s}\r\n");
        assert_eq!(
            spam_judgement("", &line("Yes, score=20.00 required=15.00")),
            SpamStatus::Spam
        );
        assert_eq!(
            spam_judgement("", &line("No, score=-1.00 required=15.00")),
            SpamStatus::Ham
        );
        assert_eq!(
            spam_judgement("", &line("No, score=6.00 required=15.00")),
            SpamStatus::MaybeSpam(0.4)
        );
        assert_eq!(spam_judgement("", &line("No, score=3.00")), SpamStatus::Ham);
    }
}

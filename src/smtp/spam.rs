//! The spam filter's turn at the end of DATA: rspamd's verdict refuses the message,
//! defers it, or decides per recipient whether the copy is junk (Junk folder, not forwarded).

use tokio::io::{AsyncRead, AsyncWrite};

use super::session::Session;
use crate::queue::{DeliveryKind, NewDelivery};
use crate::spam::{Action, Facts, Filter, Judgement, SpamError, Symbol, Verdict};
use crate::spec::model::CheckAction;
use crate::spec::model::SpamOnError;

/// An SMTP answer refusing the message.
type Refusal = (u16, &'static str, String);

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// Asks rspamd about `body` (scanned with `trace`, the headers this server adds on
    /// top) and applies its verdict: the body to store, with the spam headers, and the
    /// deliveries each recipient's domain wants. What it decided goes to `spam_note`.
    pub(super) async fn filter_spam(
        &mut self,
        trace: &[u8],
        body: Vec<u8>,
        deliveries: &mut Vec<NewDelivery>,
    ) -> Result<Vec<u8>, Refusal> {
        let Some(filter) = self.ctx.spam.clone() else {
            return Ok(body);
        };
        let submission = self.is_submission();
        if submission && !filter.scan_outbound {
            return Ok(body);
        }
        // What arrives is stored without the sender's own verdict, scanned or not.
        let unmarked = |body: Vec<u8>| {
            if submission {
                body
            } else {
                crate::spam::strip(body)
            }
        };
        let size = (trace.len() + body.len()) as u64;
        if let Some(clamd) = &filter.clamd
            && size > clamd.max_size
        {
            self.note(format!(
                "not scanned for viruses: larger than {} bytes",
                clamd.max_size
            ));
        } else if let Some(clamd) = &filter.clamd {
            match clamd.scan(&[trace, &body]).await {
                Ok(None) => {}
                Ok(Some(virus)) => {
                    self.note(format!("virus {virus} ({})", clamd.name));
                    return Err((
                        554,
                        "5.7.1",
                        format!("Message refused: it carries a virus ({virus})"),
                    ));
                }
                Err(e) => self.unscanned(&filter, e)?,
            }
        }
        // ferrymail's own checks: what they refuse is refused here; the rest is junk.
        let findings = crate::blocking::run(|| crate::spam::inspect(&body, &filter.checks));
        if let Some(refusal) = findings.iter().find(|f| f.action == CheckAction::Refuse) {
            self.note(format!("{}: {}", refusal.rule, refusal.what));
            return Err((554, "5.7.1", format!("Message refused: {}", refusal.what)));
        }
        for f in &findings {
            self.note(format!("{}: {} (junk)", f.rule, f.what));
        }
        let mail_from = self.state.mail_from.clone().unwrap_or_default();
        let helo = self.state.helo.clone().unwrap_or_default();
        let asked = match &filter.rspamd {
            Some(rspamd) => {
                let hostname = self.confirmed_hostname().await;
                let facts = Facts {
                    ip: self.remote.ip(),
                    helo: &helo,
                    mail_from: &mail_from,
                    rcpts: self
                        .state
                        .rcpts
                        .iter()
                        .map(|r| r.address.as_str())
                        .collect(),
                    user: self.state.account.as_deref(),
                    hostname: hostname.as_deref(),
                    tls: self.tls_facts.as_ref(),
                    mta: &self.ctx.hostname,
                };
                // rspamd reads the message as it will be stored, trace headers on top.
                let mut scanned = Vec::with_capacity(trace.len() + body.len());
                scanned.extend_from_slice(trace);
                scanned.extend_from_slice(&body);
                Some(rspamd.check(&facts, scanned).await)
            }
            None => None,
        };
        let mut verdict = match asked {
            Some(Ok(verdict)) => {
                self.note(format!("spam {}", verdict.summary()));
                verdict
            }
            Some(Err(e)) => {
                self.unscanned(&filter, e)?;
                if findings.is_empty() {
                    return Ok(unmarked(body));
                }
                Verdict::local()
            }
            None if findings.is_empty() => return Ok(unmarked(body)),
            None => Verdict::local(),
        };
        verdict.symbols.extend(findings.iter().map(|f| Symbol {
            name: f.rule.to_string(),
            score: 0.0,
            options: vec![f.what.clone()],
        }));
        let forced_junk = !findings.is_empty();
        let refused = |default: &str| {
            verdict
                .smtp_message
                .as_deref()
                .map(|m| m.chars().filter(|c| !c.is_control()).take(200).collect())
                .unwrap_or_else(|| default.to_string())
        };
        match verdict.action {
            Action::SoftReject => {
                return Err((451, "4.7.1", refused("Try again later")));
            }
            Action::Greylist if !submission => {
                let delay = self.state.rcpts.iter().map(|r| r.greylist_delay).max();
                // Every recipient's triple is recorded now: the sender's one retry then
                // passes for all of them.
                let waiting: Vec<String> = self
                    .state
                    .rcpts
                    .iter()
                    .filter_map(|r| self.greylist(&mail_from, &r.address, delay.unwrap_or(300)))
                    .collect();
                if let Some(text) = waiting.into_iter().next() {
                    return Err((451, "4.7.1", text));
                }
            }
            _ => {}
        }
        if submission {
            // What users send leaves as they wrote it; only what rspamd would refuse
            // from anyone is held back.
            return match verdict.action {
                Action::Reject => Err((554, "5.7.1", refused("Message refused as spam"))),
                _ => Ok(body),
            };
        }

        let judgements: Vec<(Judgement, Option<String>)> = deliveries
            .iter()
            .map(|d| {
                let rcpt = self.state.rcpts.iter().find(|r| {
                    r.deliveries
                        .iter()
                        .any(|x| x.kind == d.kind && x.target == d.target)
                });
                let (judgement, junk_forward) = match rcpt {
                    // The sender is on the allowlist (by its unauthenticated MAIL FROM):
                    // taken, but what rspamd refuses is filed as junk, not delivered.
                    Some(r) if r.allowlisted => {
                        let judgement = match verdict.judge(&r.spam) {
                            Judgement::Refuse => Judgement::Junk,
                            _ => Judgement::Deliver,
                        };
                        return (judgement, r.spam.junk_forward.clone());
                    }
                    Some(r) => (verdict.judge(&r.spam), r.spam.junk_forward.clone()),
                    None => (verdict.judge(&Default::default()), None),
                };
                match judgement {
                    Judgement::Deliver if forced_junk => (Judgement::Junk, junk_forward),
                    other => (other, junk_forward),
                }
            })
            .collect();
        self.state.junk = judgements.iter().any(|(j, _)| *j == Judgement::Junk);
        // One transaction, one answer: the strictest recipient domain decides.
        if judgements.iter().any(|(j, _)| *j == Judgement::Refuse) {
            return Err((554, "5.7.1", refused("Message refused as spam")));
        }
        let mut kept: Vec<NewDelivery> = Vec::with_capacity(deliveries.len());
        let mut notes = Vec::new();
        for (mut d, (judgement, junk_forward)) in deliveries.drain(..).zip(judgements) {
            let lines = verdict.status_lines(judgement);
            d.prefix.push_str(&lines);
            d.prefix_7bit.push_str(&lines);
            if judgement == Judgement::Junk {
                match (d.kind, junk_forward) {
                    (DeliveryKind::Mailbox, _) => d.folder = "Junk".into(),
                    (_, Some(to)) => {
                        notes.push(format!("junk for {} sent to {to}", d.target));
                        d.kind = DeliveryKind::Forward;
                        d.target = to;
                        // Never a bounce to a sender who is likely forged (backscatter).
                        d.dsn.notify = smtp_proto::RCPT_NOTIFY_NEVER;
                    }
                    // Never bounced (that would be backscatter), never sent on.
                    (_, None) => {
                        notes.push(format!("junk not forwarded to {}", d.target));
                        continue;
                    }
                }
            }
            if !kept
                .iter()
                .any(|x| x.kind == d.kind && x.target == d.target)
            {
                kept.push(d);
            }
        }
        *deliveries = kept;
        if !notes.is_empty() {
            self.note(notes.join("; "));
        }
        Ok(crate::spam::rewrite(body, &verdict))
    }

    /// What a scanner that did not answer means for the message: 451 (the sender comes
    /// back), or taken unscanned, as `[spam] on_error` says.
    fn unscanned(&mut self, filter: &Filter, error: SpamError) -> Result<(), Refusal> {
        tracing::warn!(error = %error, "a mail scanner did not answer");
        match filter.on_error {
            SpamOnError::Tempfail => {
                self.note(format!("spam filter: {error}"));
                Err((
                    451,
                    "4.3.0",
                    "The spam filter is not answering; please try again later".into(),
                ))
            }
            SpamOnError::Accept => {
                self.note(format!("taken unscanned: {error}"));
                Ok(())
            }
        }
    }

    /// The client's name when its reverse DNS is forward-confirmed (iprev, RFC 8601
    /// §3): rspamd counts a missing one against the message, as it should.
    async fn confirmed_hostname(&self) -> Option<String> {
        let authenticator = self.ctx.authenticator.as_ref()?;
        let iprev = authenticator.verify_iprev(self.remote.ip()).await;
        if iprev.result != mail_auth::IprevResult::Pass {
            return None;
        }
        let name = iprev.ptr?.first()?.trim_end_matches('.').to_string();
        Some(name)
    }

    /// Adds to what the mail log says of the filter's work on this message.
    fn note(&mut self, text: String) {
        match &mut self.state.spam_note {
            Some(note) => {
                note.push_str("; ");
                note.push_str(&text);
            }
            None => self.state.spam_note = Some(text),
        }
    }
}

//! The end of DATA/BDAT: checks on the whole message (bare line endings, size, hops),
//! the Received header, and the durable hand-over to the queue before the 250.

use tokio::io::{AsyncRead, AsyncWrite};

use super::auth::{Refusal, Sealer};
use super::session::Session;
use crate::mime::has_bare_line_ending;
use crate::queue::log::Event;
use crate::queue::{DeliveryKind, Envelope, NewDelivery};

fn domain_of(address: &str) -> Option<&str> {
    address.rsplit_once('@').map(|(_, d)| d)
}

/// More Received headers than this means a loop (RFC 5321 §6.3 suggests 100; Postfix's
/// hopcount_limit is 50, and a legitimate path through several forwarders stays far below).
const MAX_HOPS: usize = 50;

/// Longest line RFC 5322 §2.1.1 and RFC 5321 §4.5.3.1.6 allow, without its CRLF.
const MAX_LINE: usize = 998;

/// The first line longer than MAX_LINE, as (line number from 1, its length).
fn first_long_line(body: &[u8]) -> Option<(usize, usize)> {
    body.split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line).len())
        .enumerate()
        .find(|(_, len)| *len > MAX_LINE)
        .map(|(n, len)| (n + 1, len))
}

/// Why a message with a line over 998 cannot be forwarded: its 7-bit copy cannot be made,
/// or keeps a long line (a header field with no blank to fold at); None when it can go.
fn unforwardable_long_line(body: &[u8]) -> Option<String> {
    use crate::mime::downgrade::{Shape, downgrade};
    if !Shape::of(body).long_lines {
        return None;
    }
    match downgrade(body) {
        Ok(Some(copy)) if !Shape::of(&copy).long_lines => None,
        Err(why) => Some(format!(
            "A line is over {MAX_LINE} characters, and the message cannot be re-encoded to be forwarded: {why}"
        )),
        _ => Some(format!(
            "A header line is over {MAX_LINE} characters with no blank to fold it at, so the message cannot be forwarded (RFC 5322 §2.1.1)"
        )),
    }
}

/// Counts Received headers in the header section.
fn hops(body: &[u8]) -> usize {
    let (fields, _) = crate::mime::header_fields(body);
    fields
        .into_iter()
        .filter(|f| crate::mime::field_name(&body[f.clone()]).eq_ignore_ascii_case(b"received"))
        .count()
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub(super) async fn finish_message(&mut self, body: Vec<u8>) {
        let outcome = self.check_and_queue(body).await;
        let sender = self.state.mail_from.clone().unwrap_or_default();
        let rcpts: Vec<&str> = self
            .state
            .rcpts
            .iter()
            .map(|r| r.address.as_str())
            .collect();
        let rcpts = rcpts.join(", ");
        let spam = self.state.spam_note.take();
        let junk = std::mem::take(&mut self.state.junk);
        match outcome {
            Ok(Some(id)) => {
                let note = spam.as_deref().unwrap_or_default();
                let detail = if junk {
                    format!("{}{note}", crate::queue::log::JUNK_MARK)
                } else {
                    note.to_string()
                };
                self.log(Event::Accepted, Some(id), &sender, &rcpts, &detail);
                self.reply(250, "2.0.0", &format!("Queued as {id}"));
            }
            Ok(None) => {
                let why = match &spam {
                    Some(note) => format!("dropped: {note}"),
                    None => "dropped: every recipient is a quiet reject".to_string(),
                };
                self.log(Event::Accepted, None, &sender, &rcpts, &why);
                self.reply(250, "2.0.0", "OK");
            }
            Err((code, status, text)) => {
                let mut detail = format!("{code} {status} {text}");
                if let Some(note) = &spam {
                    detail.push_str("; ");
                    detail.push_str(note);
                }
                self.log(Event::Rejected, None, &sender, &rcpts, &detail);
                self.reply(code, status, &text);
            }
        }
        self.reset_transaction();
    }

    async fn check_and_queue(
        &mut self,
        body: Vec<u8>,
    ) -> Result<Option<i64>, (u16, &'static str, String)> {
        if has_bare_line_ending(&body) {
            return Err((
                550,
                "5.6.0",
                "Bare CR or LF in message; lines must end with CRLF".into(),
            ));
        }
        let limit = self
            .state
            .rcpts
            .iter()
            .map(|r| r.max_size)
            .min()
            .unwrap_or(self.ctx.max_message_size);
        if body.len() as u64 > limit {
            return Err((
                552,
                "5.3.4",
                format!("Message exceeds the recipient domain's limit of {limit} bytes"),
            ));
        }
        if hops(&body) > MAX_HOPS {
            return Err((554, "5.4.6", "Too many hops: mail loop".into()));
        }
        // A mail program can wrap or encode its own lines, and our signature is the only
        // one: a long line is refused at submission rather than sent on to be refused by
        // the next hop. (At the MX, a long line is the sender's, and is taken.)
        if self.is_submission()
            && let Some((line, length)) = first_long_line(&body)
        {
            return Err((
                550,
                "5.6.0",
                format!(
                    "Line {line} is {length} characters long; lines may be {MAX_LINE} at the most (RFC 5322 §2.1.1)"
                ),
            ));
        }
        let mut deliveries: Vec<NewDelivery> = Vec::new();
        for d in self.state.rcpts.iter().flat_map(|r| r.deliveries.iter()) {
            // Two aliases forwarding to the same place deliver one copy.
            if !deliveries
                .iter()
                .any(|x| x.kind == d.kind && x.target == d.target)
            {
                deliveries.push(d.clone());
            }
        }
        if deliveries.is_empty() {
            return Ok(None);
        }
        // A first line that continues a field before it would join the Received field
        // added above it: the message would read differently here and at the next hop.
        if matches!(body.first(), Some(b' ' | b'\t')) {
            return Err((
                550,
                "5.6.0",
                "The header section starts with a continuation line (RFC 5322 §2.2.3)".into(),
            ));
        }

        // Results that claim to come from this server were not made here (RFC 8601 §5):
        // a sender could otherwise hand the mailbox owner a forged "dkim=pass".
        let body = strip_results_of(body, &self.ctx.hostname);
        // A long line at the MX is the sender's and is taken, to go on re-encoded
        // (mime::downgrade); where that cannot shorten it, no next hop may be sent it, and
        // the sender hears it now rather than in a bounce (RFC 5321 §4.5.3.1.6).
        if deliveries.iter().any(|d| d.kind == DeliveryKind::Forward)
            && let Some(why) = crate::blocking::run(|| unforwardable_long_line(&body))
        {
            return Err((550, "5.6.0", why));
        }
        let verdict = if self.is_submission() {
            // Submitted mail is the account's own: no arrival checks, but its From: must
            // be an address the account may use.
            self.check_from_header(&body)?;
            self.take_sending_allowance(self.state.rcpts.len() as u32)?;
            super::auth::Verdict::none()
        } else {
            self.authenticate(&body).await?
        };
        let (auth_header, arc_sets, friendly) =
            (verdict.header, verdict.arc_sets, verdict.friendly_from);
        let bounce = self
            .state
            .mail_from
            .as_deref()
            .unwrap_or_default()
            .is_empty();
        for d in deliveries
            .iter_mut()
            .filter(|d| d.kind == DeliveryKind::Forward)
        {
            if let Some(sets) = arc_sets.iter().find(|s| s.alias == d.alias) {
                d.prefix = sets.set.clone();
                d.prefix_7bit = sets.set_7bit.clone();
            }
            if friendly && !bounce {
                d.from_rewrite = d.alias.clone();
            }
        }
        let envelope = Envelope {
            mail_from: self.state.mail_from.clone().unwrap_or_default(),
            rcpt_to: self.state.rcpts.iter().map(|r| r.address.clone()).collect(),
            remote_ip: self.remote.ip().to_string(),
            helo: self.state.helo.clone().unwrap_or_default(),
            tls: self.tls,
            ret_full: self.state.ret_full,
            envid: self.state.envid.clone(),
            no_notices: verdict.sender_unverified,
            require_tls: self.state.require_tls,
        };
        let mut message = self.received_header(&envelope).into_bytes();
        message.extend_from_slice(auth_header.as_bytes());
        let body = self.filter_spam(&message, body, &mut deliveries).await?;
        if deliveries.is_empty() {
            return Ok(None);
        }
        message.extend_from_slice(&body);
        // The quota counts the message as stored: trace headers and the Return-Path the
        // filing writes included.
        let stored =
            (message.len() + crate::queue::worker::return_path(&envelope.mail_from).len()) as u64;
        let too_big = deliveries.iter().any(|d| {
            d.kind == DeliveryKind::Mailbox
                && self
                    .ctx
                    .quota(&d.target)
                    .is_some_and(|(used, quota)| used + stored > quota)
        });
        if too_big {
            return Err((
                552,
                "5.2.2",
                "Mailbox full: the message does not fit in the recipient's quota".into(),
            ));
        }
        // A copy for the Sent folder, when the account asks for one (filed once queued).
        let sent_copy = self
            .state
            .account
            .clone()
            .filter(|a| {
                let snapshot = self.ctx.snapshot.get();
                snapshot.accounts.get(a).is_some_and(|r| r.save_sent)
            })
            .map(|account| (account, message.clone()));
        match self.ctx.spool.enqueue(envelope, message, deliveries).await {
            Ok(id) => {
                if let Some((account, copy)) = sent_copy {
                    self.file_sent_copy(&account, &copy);
                }
                Ok(Some(id))
            }
            Err(e) => {
                tracing::error!(error = %e, "could not queue a message");
                Err((
                    451,
                    "4.3.0",
                    "Temporary failure storing the message; try again".into(),
                ))
            }
        }
    }

    /// SPF/DKIM/ARC/DMARC: the Authentication-Results header, or the refusal the
    /// recipients' domains ask for (never for a sender on their allowlist).
    async fn authenticate(
        &self,
        body: &[u8],
    ) -> Result<super::auth::Verdict, (u16, &'static str, String)> {
        let Some(authenticator) = &self.ctx.authenticator else {
            return Ok(super::auth::Verdict::none());
        };
        let mail_from = self.state.mail_from.clone().unwrap_or_default();
        let helo = self.state.helo.clone().unwrap_or_default();
        let sealers = self.sealers(&mail_from).await;
        let mut verdict = super::auth::check(
            authenticator,
            &self.ctx.hostname,
            self.remote.ip(),
            &helo,
            &mail_from,
            body,
            super::auth::Wants {
                sealers: &sealers,
                dmarc_facts: self.ctx.dmarc_tally.is_some(),
            },
        )
        .await;
        let facts = verdict.dmarc_facts.take();
        let rcpts = &self.state.rcpts;
        let allowlisted = rcpts.iter().any(|r| r.allowlisted);
        let judged = match &verdict.refuse {
            Some(Refusal::Spf(text)) if !allowlisted && rcpts.iter().any(|r| r.reject_spf_fail) => {
                Err((550, "5.7.23", text.clone()))
            }
            Some(Refusal::Dmarc(text))
                if !allowlisted && rcpts.iter().any(|r| r.reject_dmarc_fail) =>
            {
                Err((550, "5.7.1", text.clone()))
            }
            _ => Ok(verdict),
        };
        // Counted whatever becomes of the message: refusals are what a domain's owner
        // most needs to see in its report.
        if let (Some(tally), Some(facts)) = (&self.ctx.dmarc_tally, facts)
            && let Some(row) = facts.row(judged.is_err())
        {
            tally.count(row);
        }
        judged
    }

    /// The aliases that will forward this message (bounces are not sealed), each with
    /// the key its domain seals with: RSA when it has one, receivers verify those best.
    async fn sealers(&self, mail_from: &str) -> Vec<Sealer> {
        if mail_from.is_empty() {
            return Vec::new();
        }
        let snapshot = self.ctx.snapshot.get();
        let mut aliases: Vec<&str> = self
            .state
            .rcpts
            .iter()
            .flat_map(|r| r.deliveries.iter())
            .filter(|d| d.kind == DeliveryKind::Forward)
            .map(|d| d.alias.as_str())
            .collect();
        aliases.sort();
        aliases.dedup();
        let mut keys = Vec::new();
        for alias in aliases {
            let Some(records) = domain_of(alias).and_then(|d| snapshot.dkim_keys.get(d)) else {
                continue;
            };
            let Some(record) = records
                .iter()
                .find(|k| k.algorithm == "rsa-2048")
                .or(records.first())
            else {
                continue;
            };
            keys.push((alias.to_string(), record.clone()));
        }
        let signing = self.ctx.signing.clone();
        let revision = snapshot.revision;
        tokio::task::spawn_blocking(move || {
            keys.into_iter()
                .filter_map(|(alias, k)| {
                    let key = signing.get(&k, revision).ok()?;
                    Some(Sealer {
                        alias,
                        domain: k.domain,
                        selector: k.selector,
                        key,
                    })
                })
                .collect()
        })
        .await
        .unwrap_or_default()
    }

    /// Files what the account sent in its Sent folder, \Seen. It counts against the
    /// quota but never stops the sending: a failure is only logged.
    fn file_sent_copy(&self, account: &str, copy: &[u8]) {
        let saved = crate::blocking::run(|| {
            let mut mailbox = self.ctx.mailboxes.open(account)?;
            let sent = mailbox.folder_or_create("Sent")?;
            let seen = ["\\Seen".to_string()];
            mailbox.append(&sent, copy, &seen, crate::clock::unix_now(), None)
        });
        if let Err(e) = saved {
            tracing::warn!(account, error = %e, "could not file the Sent copy");
        }
    }

    fn received_header(&self, envelope: &Envelope) -> String {
        let date = mail_parser::DateTime::from_timestamp(crate::clock::unix_now()).to_rfc822();
        // RFC 3848: A for authenticated, S for TLS.
        let with = match (self.state.account.is_some(), self.tls) {
            (true, true) => "ESMTPSA",
            (true, false) => "ESMTPA",
            (false, true) => "ESMTPS",
            (false, false) => "ESMTP",
        };
        // ASCII, so the copy forwarded needs no SMTPUTF8 for our own trace field: a
        // U-label HELO as its A-label, anything else 8-bit as "?".
        let helo = match idna::domain_to_ascii(&envelope.helo) {
            Ok(ascii) if !envelope.helo.is_ascii() => ascii,
            _ => envelope.helo.clone(),
        };
        let helo: String = helo
            .chars()
            .filter(|c| !c.is_control())
            .map(|c| if c.is_ascii() { c } else { '?' })
            .take(255)
            .collect();
        // A UTF-8 recipient is left out: the copy forwarded to an ASCII address would
        // need SMTPUTF8 for it alone.
        let for_clause = match envelope.rcpt_to.as_slice() {
            [one] if one.is_ascii() => format!("\r\n\tfor <{one}>"),
            _ => String::new(),
        };
        format!(
            "Received: from {helo} ([{ip}])\r\n\tby {host} (ferrymail) with {with}{for_clause};\r\n\t{date}\r\n",
            ip = envelope.remote_ip,
            host = self.ctx.hostname,
        )
    }
}

/// Removes the `Authentication-Results` fields whose authserv-id is `authserv_id`, any
/// `X-Sieve-Redirected-From` (only this server's own redirects may carry it: a
/// stranger's would turn off an account's redirects) and any `Return-Path` (the final
/// delivery writes it, RFC 5321 §4.4; one that arrives is not passed on, as Postfix's
/// message_drop_headers does), from the header section only (a field's folded
/// continuation lines go with it).
fn strip_results_of(message: Vec<u8>, authserv_id: &str) -> Vec<u8> {
    crate::mime::without_fields(message, |field| {
        let name = crate::mime::field_name(field);
        if name.eq_ignore_ascii_case(crate::sieve::REDIRECTED_FROM.as_bytes())
            || name.eq_ignore_ascii_case(b"Return-Path")
        {
            return true;
        }
        if !name.eq_ignore_ascii_case(b"Authentication-Results") {
            return false;
        }
        let value = field
            .iter()
            .position(|&b| b == b':')
            .map_or(&field[..0], |colon| &field[colon + 1..]);
        let text = String::from_utf8_lossy(value);
        let id = text
            .trim_start()
            .split(|c: char| c == ';' || c.is_whitespace())
            .next()
            .unwrap_or_default();
        id.eq_ignore_ascii_case(authserv_id)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_line_over_998_characters_is_found() {
        let ok = format!("a: b\r\n\r\n{}\r\nend", "x".repeat(998));
        assert_eq!(first_long_line(ok.as_bytes()), None);
        let long = format!("a: b\r\n\r\nfine\r\n{}\r\n", "y".repeat(999));
        assert_eq!(first_long_line(long.as_bytes()), Some((4, 999)));
        // The last line, without its line end, counts too.
        assert_eq!(first_long_line(&[b'z'; 1000]), Some((1, 1000)));
    }

    #[test]
    fn forged_results_for_this_server_redirect_marks_and_return_paths_are_removed() {
        let message =
            b"Authentication-Results: MX.example.test;\r\n\tdkim=pass header.d=bank.test\r\n\
            Return-Path: <forged@bank.test>\r\n\
            Subject: hi\r\n\
            Authentication-Results: other.test; spf=pass\r\n\
            Authentication-Results: mx.example.test.evil; spf=pass\r\n\
            X-Sieve-Redirected-From: <victim@example.test>\r\n\
            \r\n\
            Authentication-Results: mx.example.test; in the body stays\r\n"
                .to_vec();
        let out = String::from_utf8(strip_results_of(message, "mx.example.test")).unwrap();
        assert_eq!(
            out,
            "Subject: hi\r\n\
             Authentication-Results: other.test; spf=pass\r\n\
             Authentication-Results: mx.example.test.evil; spf=pass\r\n\
             \r\n\
             Authentication-Results: mx.example.test; in the body stays\r\n"
        );
    }

    #[test]
    fn bare_line_endings_are_found() {
        assert!(!has_bare_line_ending(b"a\r\nb\r\n"));
        assert!(has_bare_line_ending(b"a\nb\r\n"));
        assert!(has_bare_line_ending(b"a\r\n.\nb\r\n"));
        assert!(has_bare_line_ending(b"a\rb\r\n"));
        assert!(has_bare_line_ending(b"a\r"));
    }

    #[test]
    fn hops_count_received_headers_only() {
        let msg = b"Received: a\r\nreceived: b\r\nSubject: x\r\n\r\nReceived: not a header\r\n";
        assert_eq!(hops(msg), 2);
    }
}

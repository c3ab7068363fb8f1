//! MAIL FROM and RCPT TO: the envelope, checked against the Snapshot. Only recipients of
//! declared domains are accepted (no open relay); each carries its routing decision.

use smtp_proto::{
    MailFrom, RCPT_NOTIFY_DELAY, RCPT_NOTIFY_FAILURE, RCPT_NOTIFY_NEVER, RCPT_NOTIFY_SUCCESS,
    RcptTo,
};
use tokio::io::{AsyncRead, AsyncWrite};

use super::policy::{is_relay_trick, sender_verdict};
use super::session::{Accepted, Session};
use crate::address::normalize_domain;
use crate::cache::Greylist;
use crate::queue::local::expand;
use crate::queue::log::Event;
use crate::queue::worker::{
    WEBHOOK_FAILURE_WINDOW, WEBHOOK_FAILURES_BEFORE_421, webhook_failure_key,
};
use crate::queue::{DeliveryKind, Dsn, NewDelivery};
use crate::routing::{Action, RejectMode};

/// Recipients per message (RFC 5321 asks servers to take at least 100).
pub(super) const MAX_RECIPIENTS: usize = 100;
/// Refused recipients of one session logged one by one; the rest are counted.
const LOGGED_REFUSALS: u32 = 3;
const REFUSAL_WINDOW: std::time::Duration = std::time::Duration::from_secs(3600);

/// The cache key counting refused recipients of one client: its address, or its /64.
fn refused_key(ip: std::net::IpAddr) -> String {
    format!("rcpt-refused:{}", crate::listen::network_of(ip))
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub(super) fn handle_mail(&mut self, from: MailFrom<String>) {
        if self.state.helo.is_none() {
            return self.reply(503, "5.5.1", "Say EHLO first");
        }
        if self.state.mail_from.is_some() {
            return self.reply(503, "5.5.1", "Nested MAIL command");
        }
        if from.size as u64 > self.ctx.max_message_size {
            return self.reply(552, "5.3.4", "Message too big for this server");
        }
        if self.is_submission() {
            if self.state.account.is_none() {
                return self.reply(530, "5.7.0", "Authentication required");
            }
            if !self.may_send_as(&from.address) {
                let text = format!("Not allowed to send as <{}>", from.address);
                return self.reply(553, "5.7.1", &text);
            }
        }
        // RFC 3030 §3: BINARYMIME is not offered here; taken, it would be forwarded as if
        // it were 8-bit to hosts that cannot take binary.
        if from.flags & smtp_proto::MAIL_BODY_BINARYMIME != 0 {
            return self.reply(555, "5.5.4", "BODY=BINARYMIME is not offered here");
        }
        // RFC 6531 §3.4: a UTF-8 address is sent with SMTPUTF8, or not at all.
        let smtputf8 = from.flags & smtp_proto::MAIL_SMTPUTF8 != 0;
        if !smtputf8 && !from.address.is_ascii() {
            return self.reply(553, "5.6.7", "A UTF-8 address needs MAIL FROM's SMTPUTF8");
        }
        // RFC 8689 §4.1: REQUIRETLS only over TLS (it is not offered otherwise).
        let require_tls = from.flags & smtp_proto::MAIL_REQUIRETLS != 0;
        if require_tls && !self.tls {
            return self.reply(530, "5.7.10", "REQUIRETLS needs a TLS session");
        }
        self.state.require_tls = require_tls;
        self.state.smtputf8 = smtputf8;
        self.state.declared_size = from.size as u64;
        self.state.mail_from = Some(from.address);
        // DSN (RFC 3461): kept with the message for the notices it may cause.
        self.state.ret_full = from.flags & smtp_proto::MAIL_RET_FULL != 0;
        self.state.envid = from.env_id;
        self.reply(250, "2.1.0", "Sender OK");
    }

    pub(super) fn handle_rcpt(&mut self, to: RcptTo<String>) {
        if self.is_submission() {
            return self.handle_submission_rcpt(to);
        }
        let Some(sender) = self.state.mail_from.clone() else {
            return self.reply(503, "5.5.1", "MAIL first");
        };
        if self.state.rcpts.len() >= MAX_RECIPIENTS {
            return self.reply(452, "4.5.3", "Too many recipients");
        }
        let address = to.address;
        if !self.state.smtputf8 && !address.is_ascii() {
            return self.reply(553, "5.6.7", "A UTF-8 address needs MAIL FROM's SMTPUTF8");
        }
        if is_relay_trick(&address) {
            return self.refuse_rcpt(&address, 550, "5.7.1", "Relay syntax not accepted");
        }
        let snapshot = self.ctx.snapshot.get();
        let domain = address
            .rsplit_once('@')
            .and_then(|(_, d)| normalize_domain(d).ok())
            .unwrap_or_default();
        let Some(settings) = snapshot.domains.get(&domain) else {
            return self.refuse_rcpt(
                &address,
                550,
                "5.7.1",
                "Relaying denied: not a domain of this server",
            );
        };
        if settings.require_tls && !self.tls {
            return self.refuse_rcpt(&address, 530, "5.7.0", "This domain requires STARTTLS");
        }
        let verdict = sender_verdict(settings, self.remote.ip(), &sender);
        if verdict == Some(false) {
            return self.refuse_rcpt(
                &address,
                550,
                "5.7.1",
                "Sender refused by the recipient domain's policy",
            );
        }
        let mut policy = Accepted {
            address: String::new(),
            deliveries: Vec::new(),
            max_size: settings.max_message_size,
            reject_spf_fail: settings.reject_spf_fail,
            reject_dmarc_fail: settings.reject_dmarc_fail,
            allowlisted: verdict == Some(true),
            spam: settings.spam.clone(),
            greylist_delay: settings.greylist_delay,
            dsn: Dsn {
                rcpt: address.clone(),
                notify: to.flags
                    & (RCPT_NOTIFY_SUCCESS
                        | RCPT_NOTIFY_FAILURE
                        | RCPT_NOTIFY_DELAY
                        | RCPT_NOTIFY_NEVER),
                orcpt: to.orcpt.clone(),
            },
        };

        // A bounce coming back to one of our SRS addresses goes to the original sender.
        if address
            .get(..5)
            .is_some_and(|p| p.eq_ignore_ascii_case("SRS0="))
        {
            return match self.ctx.srs.reverse(&address) {
                Ok(original) => {
                    let delivery = NewDelivery {
                        kind: DeliveryKind::Forward,
                        target: original,
                        alias: address.clone(),
                        prefix: String::new(),
                        from_rewrite: String::new(),
                        prefix_7bit: String::new(),
                        folder: String::new(),
                        dsn: Dsn::default(),
                    };
                    self.accept(Accepted {
                        address,
                        deliveries: vec![delivery],
                        ..policy
                    });
                }
                Err(e) => {
                    self.refuse_rcpt(&address, 550, "5.1.1", &format!("Invalid SRS address: {e}"))
                }
            };
        }

        if settings.greylisting
            && verdict != Some(true)
            && let Some(text) = self.greylist(&sender, &address, settings.greylist_delay)
        {
            return self.refuse_rcpt(&address, 450, "4.7.1", &text);
        }

        // An address domains name for their DMARC and TLS reports: what arrives there is
        // read and kept, besides whatever the address itself is declared to do.
        let report_inbox = snapshot
            .report_inboxes
            .contains(&address.to_ascii_lowercase())
            .then(|| NewDelivery {
                kind: DeliveryKind::Reports,
                target: address.to_ascii_lowercase(),
                alias: address.to_ascii_lowercase(),
                prefix: String::new(),
                from_rewrite: String::new(),
                prefix_7bit: String::new(),
                folder: String::new(),
                dsn: policy.dsn.clone(),
            });
        let resolution = match snapshot.resolve(&address) {
            Ok(Some(r)) => r,
            Ok(None) => match report_inbox {
                Some(delivery) => {
                    return self.accept(Accepted {
                        address,
                        deliveries: vec![delivery],
                        ..policy
                    });
                }
                None => return self.refuse_rcpt(&address, 550, "5.1.1", "No such user here"),
            },
            Err(_) => {
                return self.refuse_rcpt(&address, 501, "5.1.3", "Bad recipient address syntax");
            }
        };
        let alias = resolution.alias.to_string();
        if let Some(to) = snapshot.junk_forwards.get(&alias) {
            policy.spam.junk_forward = Some(to.clone());
        }
        match resolution.action {
            Action::Reject {
                mode: RejectMode::Quiet,
                ..
            } => self.accept(Accepted { address, ..policy }),
            Action::Reject {
                mode: RejectMode::Soft,
                message,
            } => self.refuse_rcpt(
                &address,
                421,
                "4.7.1",
                message.as_deref().unwrap_or("Try again later"),
            ),
            Action::Reject {
                mode: RejectMode::Hard,
                message,
            } => self.refuse_rcpt(
                &address,
                550,
                "5.1.1",
                message.as_deref().unwrap_or("Recipient rejected"),
            ),
            Action::Deliver { mailbox, forward } => {
                let mut deliveries = Vec::new();
                let mut seen = vec![alias.clone()];
                expand(
                    &snapshot,
                    &alias,
                    mailbox,
                    forward,
                    &mut seen,
                    0,
                    &mut deliveries,
                );
                deliveries.extend(report_inbox);
                let failing = deliveries.iter().find(|d| {
                    d.kind == DeliveryKind::Webhook
                        && self
                            .ctx
                            .cache
                            .recent(&webhook_failure_key(&d.target), WEBHOOK_FAILURE_WINDOW)
                            >= WEBHOOK_FAILURES_BEFORE_421
                });
                if failing.is_some() {
                    return self.refuse_rcpt(
                        &address,
                        421,
                        "4.4.1",
                        "This address posts to a webhook that is failing; try again later",
                    );
                }
                if deliveries.is_empty() {
                    return self.refuse_rcpt(&address, 550, "5.1.1", "No such user here");
                }
                let full = deliveries.iter().any(|d| {
                    d.kind == DeliveryKind::Mailbox
                        && self
                            .ctx
                            .quota(&d.target)
                            .is_some_and(|(used, quota)| used >= quota)
                });
                if full {
                    // RFC 3463 4.2.2: the mailbox may have room later.
                    return self.refuse_rcpt(&address, 452, "4.2.2", "Mailbox full");
                }
                let max_size = self.chain_max_size(policy.max_size, &seen);
                self.accept(Accepted {
                    address,
                    deliveries,
                    max_size,
                    ..policy
                });
            }
        }
    }

    /// Refuses one recipient and logs why.
    /// Refused recipients (5xx) are counted: per session, and per client IP through
    /// the cache. Past a few, a session's further refusals are summed up in one record
    /// when it ends, so a harvester cannot flood the mail log.
    fn refuse_rcpt(&mut self, address: &str, code: u16, status: &str, text: &str) {
        self.reply(code, status, text);
        if code >= 500 {
            self.state.refused += 1;
            let per_hour = self.ctx.session_limits.refused_recipients_per_hour;
            if per_hour > 0 {
                let key = refused_key(self.remote.ip());
                self.ctx.cache.hit(&key, u32::MAX, REFUSAL_WINDOW);
            }
        }
        if self.refusals.logged >= LOGGED_REFUSALS {
            self.refusals.unlogged += 1;
            return;
        }
        self.refusals.logged += 1;
        let sender = self.state.mail_from.clone().unwrap_or_default();
        self.log(
            Event::Rejected,
            None,
            &sender,
            address,
            &format!("{code} {status} {text}"),
        );
    }

    /// Whether the client's address has had more recipients refused lately than
    /// `[limits] refused_recipients_per_hour` allows.
    pub(super) fn refusing_too_many(&self) -> bool {
        let per_hour = self.ctx.session_limits.refused_recipients_per_hour;
        per_hour > 0
            && self
                .ctx
                .cache
                .recent(&refused_key(self.remote.ip()), REFUSAL_WINDOW)
                >= per_hour
    }

    /// The largest message a recipient whose own limit is `limit` takes, when its mail
    /// goes through `chain` (the addresses of this server's domains `expand` followed):
    /// held to the smallest limit on it, the message is refused at once rather than
    /// bounced by the last of them.
    pub(super) fn chain_max_size(&self, limit: u64, chain: &[String]) -> u64 {
        let snapshot = self.ctx.snapshot.get();
        chain
            .iter()
            .filter_map(|address| {
                address
                    .rsplit_once('@')
                    .and_then(|(_, domain)| normalize_domain(domain).ok())
                    .and_then(|domain| snapshot.domains.get(&domain))
                    .map(|settings| settings.max_message_size)
            })
            .fold(limit, u64::min)
    }

    fn accept(&mut self, mut accepted: Accepted) {
        // RFC 1870 §6: a size declared over the limit is refused now, not after the data.
        if self.state.declared_size > accepted.max_size {
            let text = format!(
                "Message too big for this recipient: it takes {} bytes at the most",
                accepted.max_size
            );
            return self.refuse_rcpt(&accepted.address, 552, "5.3.4", &text);
        }
        for d in &mut accepted.deliveries {
            d.dsn = accepted.dsn.clone();
        }
        self.state.rcpts.push(accepted);
        self.reply(250, "2.1.5", "Recipient OK");
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// Greylisting (network, sender, recipient): the answer's text while the triple must
    /// still wait, None once it has waited `delay_secs` and come back.
    pub(super) fn greylist(&self, sender: &str, rcpt: &str, delay_secs: u64) -> Option<String> {
        let key = format!(
            "grey:{}:{}:{}",
            network_of(self.remote.ip()),
            sender.to_lowercase(),
            rcpt.to_lowercase()
        );
        let delay = std::time::Duration::from_secs(delay_secs);
        // Passed triples are remembered for 36 days, as Postgrey does.
        let remember = std::time::Duration::from_secs(36 * 86_400);
        match self.ctx.cache.greylist(&key, delay, remember) {
            Greylist::Defer { retry_in } => Some(format!(
                "Greylisted: please try again in {} seconds",
                retry_in.as_secs().max(1)
            )),
            _ => None,
        }
    }
}

/// The client's network for greylisting: senders retry from another address of the
/// same pool, so the /24 (IPv4) or /64 (IPv6) is what must match.
fn network_of(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        std::net::IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

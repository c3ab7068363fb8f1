//! Message submission (RFC 6409) on the same session code as the MX: AUTH PLAIN/LOGIN
//! only over TLS, senders limited to the addresses the account may use, any recipient.

use std::time::Duration;

use base64::Engine;
use smtp_proto::{AUTH_LOGIN, AUTH_PLAIN, RcptTo};
use tokio::io::{AsyncRead, AsyncWrite};

use super::policy::is_relay_trick;
use super::session::{Accepted, Input, Next, Session};
use crate::address::normalize_domain;
use crate::login::Outcome as LoginOutcome;
use crate::queue::local::expand;
use crate::queue::{DeliveryKind, Dsn, NewDelivery};
use crate::routing::{Action, Target};
use crate::spec::model::SendingLimits;

/// Longest SASL line taken.
const MAX_SASL_LINE: usize = 16 * 1024;

/// An AUTH exchange waiting for the client's next line.
pub struct Sasl {
    mechanism: u64,
    /// LOGIN: the user name, once given.
    user: Option<String>,
    line: Vec<u8>,
}

impl Sasl {
    /// Takes bytes up to the end of a line; true when the line is complete.
    pub fn ingest(&mut self, bytes: &mut std::slice::Iter<'_, u8>) -> bool {
        for &b in bytes.by_ref() {
            if b == b'\n' {
                return true;
            }
            if self.line.len() < MAX_SASL_LINE {
                self.line.push(b);
            }
        }
        false
    }
}

fn b64(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(text.trim().as_bytes())
        .ok()
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub(super) fn is_submission(&self) -> bool {
        self.ctx.logins.is_some()
    }

    /// AUTH is offered once the connection is encrypted (or when no certificate exists).
    pub(super) fn auth_offered(&self) -> bool {
        self.is_submission() && (self.tls || self.ctx.tls.is_none())
    }

    pub(super) async fn handle_auth(&mut self, mechanism: u64, initial: String) -> Next {
        if !self.is_submission() {
            self.reply(
                503,
                "5.5.1",
                "AUTH is offered on the submission port, not the MX",
            );
            return Next::Continue(Input::Command);
        }
        if !self.auth_offered() {
            self.reply(538, "5.7.11", "Encryption required: STARTTLS first");
            return Next::Continue(Input::Command);
        }
        if self.state.account.is_some() {
            self.reply(503, "5.5.1", "Already authenticated");
            return Next::Continue(Input::Command);
        }
        if self.state.mail_from.is_some() {
            self.reply(503, "5.5.1", "AUTH is not allowed during a transaction");
            return Next::Continue(Input::Command);
        }
        let sasl = Sasl {
            mechanism,
            user: None,
            line: Vec::new(),
        };
        match mechanism {
            AUTH_PLAIN if initial.is_empty() => {
                self.reply(334, "", "");
                Next::Continue(Input::Sasl(sasl))
            }
            AUTH_PLAIN => Next::Continue(self.sasl_answer(sasl, initial).await),
            AUTH_LOGIN if initial.is_empty() => {
                self.reply(334, "", "VXNlcm5hbWU6");
                Next::Continue(Input::Sasl(sasl))
            }
            AUTH_LOGIN => Next::Continue(self.sasl_answer(sasl, initial).await),
            _ => {
                self.reply(504, "5.5.4", "Only PLAIN and LOGIN are offered");
                Next::Continue(Input::Command)
            }
        }
    }

    /// The client's line in a SASL exchange.
    pub(super) async fn sasl_step(&mut self, mut sasl: Sasl) -> Input {
        let line = String::from_utf8_lossy(&std::mem::take(&mut sasl.line))
            .trim_end_matches('\r')
            .to_string();
        self.sasl_answer(sasl, line).await
    }

    async fn sasl_answer(&mut self, mut sasl: Sasl, line: String) -> Input {
        if line.trim() == "*" {
            self.reply(501, "5.0.0", "Authentication cancelled");
            return Input::Command;
        }
        let Some(decoded) = b64(&line) else {
            self.reply(501, "5.5.2", "Invalid base64");
            return Input::Command;
        };
        let ip = self.remote.ip();
        let Some(logins) = self.ctx.logins.clone() else {
            return Input::Command;
        };
        let outcome = if sasl.mechanism == AUTH_PLAIN {
            logins.check_plain(ip, &decoded).await
        } else if sasl.user.is_none() {
            sasl.user = Some(String::from_utf8_lossy(&decoded).into_owned());
            self.reply(334, "", "UGFzc3dvcmQ6");
            return Input::Sasl(sasl);
        } else {
            let user = sasl.user.take().unwrap_or_default();
            logins
                .check(ip, &user, &String::from_utf8_lossy(&decoded))
                .await
        };
        match outcome {
            LoginOutcome::Accepted(account) => {
                tracing::info!(remote = %self.remote, account = %account, "submission login");
                self.state.account = Some(account);
                if let Some(admission) = &self.admission {
                    admission.logged_in();
                }
                self.reply(235, "2.7.0", "Authentication successful");
            }
            LoginOutcome::Rejected => {
                self.reply(535, "5.7.8", "Authentication credentials invalid");
            }
            LoginOutcome::Throttled => {
                self.reply(454, "4.7.0", "Too many failed logins; try again later");
            }
        }
        Input::Command
    }

    /// Whether the logged-in account may use `address` as its sender: its own address
    /// (with or without a +tag), or an alias of this server that delivers to it.
    pub(super) fn may_send_as(&self, address: &str) -> bool {
        let Some(account) = self.state.account.as_deref() else {
            return false;
        };
        let Some((local, domain)) = address.rsplit_once('@') else {
            return false;
        };
        let domain = normalize_domain(domain).unwrap_or_default();
        let base = local.split('+').next().unwrap_or(local).to_lowercase();
        let plain = format!("{base}@{domain}");
        if plain == account {
            return true;
        }
        let snapshot = self.ctx.snapshot.get();
        match snapshot.resolve(&plain) {
            Ok(Some(resolution)) => match resolution.action {
                Action::Deliver { mailbox, forward } => {
                    mailbox.is_some_and(|m| m.to_string() == account)
                        || forward
                            .iter()
                            .any(|t| matches!(t, Target::Address(a) if a.to_string() == account))
                }
                Action::Reject { .. } => false,
            },
            _ => false,
        }
    }

    /// RCPT on the submission port: local recipients are routed as the MX would; any
    /// other address is forwarded as is (the client is authenticated).
    pub(super) fn handle_submission_rcpt(&mut self, to: RcptTo<String>) {
        let Some(sender) = self.state.mail_from.clone() else {
            return self.reply(503, "5.5.1", "MAIL first");
        };
        if self.state.rcpts.len() >= super::envelope::MAX_RECIPIENTS {
            return self.reply(452, "4.5.3", "Too many recipients");
        }
        if !self.state.smtputf8 && !to.address.is_ascii() {
            return self.reply(553, "5.6.7", "A UTF-8 address needs MAIL FROM's SMTPUTF8");
        }
        let most = self.sending_limits().recipients_per_message;
        if most > 0 && self.state.rcpts.len() >= most as usize {
            // RFC 5321 §4.5.3.1.10: the client sends the rest in another transaction.
            return self.reply(
                452,
                "4.5.3",
                &format!("Too many recipients: at most {most} for one message"),
            );
        }
        let address = to.address;
        if is_relay_trick(&address) || !address.contains('@') {
            return self.reply(553, "5.1.3", "Not a valid recipient address");
        }
        let dsn = Dsn {
            rcpt: address.clone(),
            notify: to.flags
                & (smtp_proto::RCPT_NOTIFY_SUCCESS
                    | smtp_proto::RCPT_NOTIFY_FAILURE
                    | smtp_proto::RCPT_NOTIFY_DELAY
                    | smtp_proto::RCPT_NOTIFY_NEVER),
            orcpt: to.orcpt.clone(),
        };
        let domain = address
            .rsplit_once('@')
            .and_then(|(_, d)| normalize_domain(d).ok())
            .unwrap_or_default();
        let snapshot = self.ctx.snapshot.get();
        let mut deliveries = Vec::new();
        let mut max_size = self.ctx.max_message_size;
        if let Some(settings) = snapshot.domains.get(&domain) {
            let resolution = match snapshot.resolve(&address) {
                Ok(Some(r)) => r,
                _ => return self.reply(550, "5.1.1", "No such user here"),
            };
            match resolution.action {
                Action::Reject { message, .. } => {
                    return self.reply(
                        550,
                        "5.1.1",
                        message.as_deref().unwrap_or("Recipient rejected"),
                    );
                }
                Action::Deliver { mailbox, forward } => {
                    let alias = resolution.alias.to_string();
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
                    max_size = self.chain_max_size(settings.max_message_size, &seen);
                }
            }
            if deliveries.is_empty() {
                return self.reply(550, "5.1.1", "No such user here");
            }
        } else {
            // Signed and sent as the sender's domain (its DKIM key, no SRS).
            deliveries.push(NewDelivery {
                kind: DeliveryKind::Forward,
                target: address.clone(),
                alias: sender.clone(),
                prefix: String::new(),
                from_rewrite: String::new(),
                prefix_7bit: String::new(),
                folder: String::new(),
                dsn: Dsn::default(),
            });
        }
        // RFC 1870 §6: a size declared over the limit is refused now, not after the data.
        if self.state.declared_size > max_size {
            let text = format!(
                "Message too big for this recipient: it takes {max_size} bytes at the most"
            );
            return self.reply(552, "5.3.4", &text);
        }
        for d in &mut deliveries {
            d.dsn = dsn.clone();
        }
        self.state.rcpts.push(Accepted {
            address,
            deliveries,
            max_size,
            reject_spf_fail: false,
            reject_dmarc_fail: false,
            allowlisted: true,
            dsn,
            spam: Default::default(),
            greylist_delay: 0,
        });
        self.reply(250, "2.1.5", "Recipient OK");
    }

    /// The sending limits of the account logged in: its own over `[limits.sending]`.
    fn sending_limits(&self) -> SendingLimits {
        let defaults = self.ctx.session_limits.sending;
        let snapshot = self.ctx.snapshot.get();
        self.state
            .account
            .as_ref()
            .and_then(|a| snapshot.accounts.get(a))
            .map_or(defaults, |r| r.sending.over(defaults))
    }

    /// Takes `count` messages (recipients) from the account's hourly and daily allowance,
    /// before the scans and the queue, each window in one step of the cache (across nodes
    /// with Redis): parallel sessions cannot all pass one check. The refusal if it is used
    /// up (what one window took stays taken when the next refuses).
    pub(super) fn take_sending_allowance(
        &self,
        count: u32,
    ) -> Result<(), (u16, &'static str, String)> {
        let Some(account) = &self.state.account else {
            return Ok(());
        };
        let limits = self.sending_limits();
        if let Some((limit, _, per)) = sending_windows(&limits).find(|(limit, _, _)| count > *limit)
        {
            return Err((
                550,
                "5.7.1",
                format!("More recipients than this account may send to {per} ({limit})"),
            ));
        }
        for (limit, window, per) in sending_windows(&limits) {
            if !self
                .ctx
                .cache
                .take(&format!("sent:{per}:{account}"), count, limit, window)
            {
                tracing::warn!(
                    account,
                    limit,
                    per,
                    "a mailbox reached its sending limit: what it sends is refused until \
                     the window has passed (a stolen password?)"
                );
                return Err((
                    450,
                    "4.7.1",
                    format!(
                        "Sending limit reached: at most {limit} messages {per} (each recipient counts); try again later"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A submitted message has exactly one From: and at most one Sender: (RFC 5322
    /// §3.6), and every address in them must be one the account may use: a second
    /// From: above the checked one is what a mail client shows.
    pub(super) fn check_from_header(
        &self,
        message: &[u8],
    ) -> Result<(), (u16, &'static str, String)> {
        use mail_parser::HeaderName;
        let parsed = mail_parser::MessageParser::new().parse_headers(message);
        let headers = parsed.as_ref().map(|m| m.headers()).unwrap_or_default();
        let count = |name: HeaderName<'_>| headers.iter().filter(|h| h.name == name).count();
        if count(HeaderName::From) > 1 || count(HeaderName::Sender) > 1 {
            return Err((
                550,
                "5.6.0",
                "More than one From: or Sender: header (RFC 5322 allows one)".into(),
            ));
        }
        let mut from = Vec::new();
        let mut unreadable = false;
        for header in headers
            .iter()
            .filter(|h| matches!(h.name, HeaderName::From | HeaderName::Sender))
        {
            match header.value.as_address() {
                Some(list) => {
                    for addr in list.iter() {
                        match addr.address.as_deref() {
                            Some(a) => from.push((header.name.clone(), a.to_string())),
                            None => unreadable = true,
                        }
                    }
                }
                None => unreadable = true,
            }
        }
        if unreadable || !from.iter().any(|(n, _)| *n == HeaderName::From) {
            return Err((
                550,
                "5.6.0",
                "The From: header must hold addresses only".into(),
            ));
        }
        match from.iter().find(|(_, a)| !self.may_send_as(a)) {
            Some((name, bad)) => Err((
                553,
                "5.7.1",
                format!("Not allowed to send as <{bad}> ({}: header)", name.as_str()),
            )),
            None => Ok(()),
        }
    }
}

/// The limited windows: (limit, length, how the refusal names it); 0 means no limit.
fn sending_windows(limits: &SendingLimits) -> impl Iterator<Item = (u32, Duration, &'static str)> {
    [
        (limits.per_hour, Duration::from_secs(3600), "an hour"),
        (limits.per_day, Duration::from_secs(86_400), "a day"),
    ]
    .into_iter()
    .filter(|(limit, _, _)| *limit > 0)
}

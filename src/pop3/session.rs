//! One POP3 connection (RFC 1939 with CAPA, STLS, AUTH PLAIN, UIDL and TOP): the INBOX as
//! it was at login, deletions marked until QUIT, and the maildrop locked meanwhile.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use super::listener::Pop3Context;
use crate::login::Outcome as LoginOutcome;
use crate::mailbox::{Folder, Mailbox};

/// RFC 1939 §3: an idle session may be closed after ten minutes.
const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest command line taken (RFC 2449 allows 255 octets of arguments).
const MAX_LINE: usize = 1024;
const MAX_ERRORS: u32 = 10;

pub enum Outcome<S> {
    Closed,
    StartTls(S),
}

/// One message of the maildrop as listed at login.
struct Entry {
    uid: u32,
    size: u64,
    deleted: bool,
}

struct Maildrop {
    account: String,
    mailbox: Mailbox,
    inbox: Folder,
    entries: Vec<Entry>,
}

pub struct Session<S> {
    ctx: Arc<Pop3Context>,
    io: BufReader<S>,
    remote: SocketAddr,
    tls: bool,
    user: Option<String>,
    drop: Option<Maildrop>,
    errors: u32,
    /// This connection's place in the listener's counts (told of a login).
    admission: Option<Arc<crate::listen::Admission>>,
    /// When the session began (see `silence`).
    since: std::time::Instant,
}

enum Next {
    Continue,
    Quit,
    StartTls,
}

/// The header, the blank line and the first `lines` lines of the body (TOP).
fn top(message: &[u8], lines: usize) -> &[u8] {
    let body_start = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(message.len(), |p| p + 4);
    let mut end = body_start;
    for _ in 0..lines {
        match message[end..].iter().position(|&b| b == b'\n') {
            Some(p) => end += p + 1,
            None => {
                end = message.len();
                break;
            }
        }
    }
    &message[..end]
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub fn new(ctx: Arc<Pop3Context>, io: S, remote: SocketAddr, tls: bool) -> Self {
        Session {
            ctx,
            io: BufReader::new(io),
            remote,
            tls,
            user: None,
            drop: None,
            errors: 0,
            admission: None,
            since: std::time::Instant::now(),
        }
    }

    pub fn with_admission(mut self, admission: Arc<crate::listen::Admission>) -> Self {
        self.admission = Some(admission);
        self
    }

    /// How long the client may stay silent: short until it has logged in, and logging
    /// in has a budget in all.
    fn silence(&self) -> Duration {
        if self.drop.is_some() {
            IDLE_TIMEOUT
        } else {
            crate::limits::silence_before_login(self.since)
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> bool {
        let io = self.io.get_mut();
        io.write_all(bytes).await.is_ok() && io.flush().await.is_ok()
    }

    async fn line(&mut self, text: &str) -> bool {
        self.send(format!("{text}\r\n").as_bytes()).await
    }

    fn login_allowed(&self) -> bool {
        self.tls || self.ctx.tls.is_none()
    }

    pub async fn run(mut self, greet: bool) -> Outcome<S> {
        if greet {
            let hello = format!("+OK {} ferrymail POP3 ready", self.ctx.hostname);
            if !self.line(&hello).await {
                return Outcome::Closed;
            }
        }
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let silence = self.silence();
            let mut limited = (&mut self.io).take(MAX_LINE as u64 + 2);
            let read = limited.read_until(b'\n', &mut buf);
            let n = match tokio::time::timeout(silence, read).await {
                Ok(Ok(n)) => n,
                Ok(Err(_)) => break,
                Err(_) => {
                    self.line("-ERR Idle for too long; closing").await;
                    break;
                }
            };
            if n == 0 {
                break;
            }
            if !buf.ends_with(b"\n") {
                self.line("-ERR Line too long").await;
                break;
            }
            let text = String::from_utf8_lossy(&buf)
                .trim_end_matches(['\r', '\n'])
                .to_string();
            match self.command(&text).await {
                Next::Continue => {}
                Next::Quit => break,
                Next::StartTls => {
                    // Anything the client sent after STLS is dropped with the buffer.
                    return Outcome::StartTls(self.io.into_inner());
                }
            }
            if self.errors > MAX_ERRORS {
                self.line("-ERR Too many errors; closing").await;
                break;
            }
        }
        self.release();
        Outcome::Closed
    }

    fn release(&mut self) {
        if let Some(drop) = self.drop.take() {
            self.ctx.unlock(&drop.account);
        }
    }

    async fn err(&mut self, text: &str) -> Next {
        self.errors += 1;
        self.line(&format!("-ERR {text}")).await;
        Next::Continue
    }

    async fn command(&mut self, line: &str) -> Next {
        let (verb, args) = line.split_once(' ').unwrap_or((line, ""));
        let verb = verb.to_ascii_uppercase();
        let args: Vec<&str> = args.split_whitespace().collect();
        match verb.as_str() {
            "CAPA" => {
                let mut caps = vec![
                    "CAPA",
                    "TOP",
                    "UIDL",
                    "RESP-CODES",
                    "AUTH-RESP-CODE",
                    "PIPELINING",
                ];
                if self.drop.is_none() {
                    if self.login_allowed() {
                        caps.extend(["USER", "SASL PLAIN"]);
                    }
                    if !self.tls && self.ctx.tls.is_some() {
                        caps.push("STLS");
                    }
                }
                caps.push("IMPLEMENTATION ferrymail");
                let mut out = String::from("+OK Capability list follows\r\n");
                for c in caps {
                    out.push_str(c);
                    out.push_str("\r\n");
                }
                out.push_str(".\r\n");
                self.send(out.as_bytes()).await;
                Next::Continue
            }
            "QUIT" => {
                self.update().await;
                Next::Quit
            }
            "NOOP" if self.drop.is_some() => {
                self.line("+OK").await;
                Next::Continue
            }
            "STLS" if self.drop.is_none() => {
                if self.tls || self.ctx.tls.is_none() {
                    return self.err("TLS is not available here").await;
                }
                if self.line("+OK Begin TLS negotiation").await {
                    Next::StartTls
                } else {
                    Next::Quit
                }
            }
            "USER" if self.drop.is_none() => {
                if !self.login_allowed() {
                    return self.err("[AUTH] Use STLS first").await;
                }
                match args.first() {
                    Some(user) => {
                        self.user = Some(user.to_string());
                        self.line("+OK Send your password").await;
                        Next::Continue
                    }
                    None => self.err("USER needs a name").await,
                }
            }
            "PASS" if self.drop.is_none() => {
                let Some(user) = self.user.take() else {
                    return self.err("USER first").await;
                };
                // The password is the rest of the line: it may contain spaces.
                let password = line.get(5..).unwrap_or_default().to_string();
                let outcome = self
                    .ctx
                    .logins
                    .check(self.remote.ip(), &user, &password)
                    .await;
                self.logged_in(outcome).await
            }
            "AUTH" if self.drop.is_none() => {
                if args.is_empty() {
                    self.send(b"+OK\r\nPLAIN\r\n.\r\n").await;
                    return Next::Continue;
                }
                if !args[0].eq_ignore_ascii_case("PLAIN") {
                    return self.err("Only SASL PLAIN is offered").await;
                }
                if !self.login_allowed() {
                    return self.err("[AUTH] Use STLS first").await;
                }
                let encoded = match args.get(1) {
                    Some(initial) => initial.to_string(),
                    None => {
                        self.line("+ ").await;
                        let mut answer = Vec::new();
                        let silence = self.silence();
                        let mut limited = (&mut self.io).take(MAX_LINE as u64 * 4);
                        let read = limited.read_until(b'\n', &mut answer);
                        if !matches!(tokio::time::timeout(silence, read).await, Ok(Ok(n)) if n > 0)
                        {
                            return Next::Quit;
                        }
                        String::from_utf8_lossy(&answer).trim().to_string()
                    }
                };
                if encoded == "*" {
                    return self.err("AUTH cancelled").await;
                }
                let Ok(response) =
                    base64::engine::general_purpose::STANDARD.decode(encoded.as_bytes())
                else {
                    return self.err("Invalid base64").await;
                };
                let outcome = self
                    .ctx
                    .logins
                    .check_plain(self.remote.ip(), &response)
                    .await;
                self.logged_in(outcome).await
            }
            _ if self.drop.is_none() => self.err("Log in first").await,
            "STAT" => {
                let drop = self.maildrop();
                let live = drop.entries.iter().filter(|e| !e.deleted);
                let (count, size) = live.fold((0, 0), |(c, s), e| (c + 1, s + e.size));
                self.line(&format!("+OK {count} {size}")).await;
                Next::Continue
            }
            "LIST" | "UIDL" => {
                let uidl = verb == "UIDL";
                let validity = self.maildrop().inbox.uidvalidity;
                let show = |n: usize, e: &Entry| {
                    if uidl {
                        format!("{n} {validity}.{}", e.uid)
                    } else {
                        format!("{n} {}", e.size)
                    }
                };
                if let Some(arg) = args.first() {
                    match self.entry(arg) {
                        Ok(n) => {
                            let text = show(n, &self.maildrop().entries[n - 1]);
                            self.line(&format!("+OK {text}")).await;
                            Next::Continue
                        }
                        Err(why) => self.err(why).await,
                    }
                } else {
                    let mut out = String::from("+OK\r\n");
                    for (i, e) in self.maildrop().entries.iter().enumerate() {
                        if !e.deleted {
                            out.push_str(&show(i + 1, e));
                            out.push_str("\r\n");
                        }
                    }
                    out.push_str(".\r\n");
                    self.send(out.as_bytes()).await;
                    Next::Continue
                }
            }
            "RETR" | "TOP" => {
                let n = match args.first().map(|a| self.entry(a)) {
                    Some(Ok(n)) => n,
                    Some(Err(why)) => return self.err(why).await,
                    None => return self.err("Which message?").await,
                };
                let lines = if verb == "TOP" {
                    match args.get(1).and_then(|l| l.parse::<usize>().ok()) {
                        Some(l) => Some(l),
                        None => return self.err("TOP needs a line count").await,
                    }
                } else {
                    None
                };
                let uid = self.maildrop().entries[n - 1].uid;
                let drop = self.maildrop();
                let body = crate::blocking::run(|| drop.mailbox.body(&drop.inbox, uid));
                match body {
                    Ok(Some(body)) => {
                        let part = match lines {
                            Some(l) => top(&body, l),
                            None => &body[..],
                        };
                        let mut out = format!("+OK {} octets\r\n", body.len()).into_bytes();
                        out.extend_from_slice(&crate::smtp::dot::stuffed(part));
                        self.send(&out).await;
                        Next::Continue
                    }
                    Ok(None) => self.err("That message was removed meanwhile").await,
                    Err(e) => {
                        tracing::error!(error = %e, "POP3 read failed");
                        self.err("[SYS/TEMP] Could not read the message").await
                    }
                }
            }
            "DELE" => match args.first().map(|a| self.entry(a)) {
                Some(Ok(n)) => {
                    self.maildrop_mut().entries[n - 1].deleted = true;
                    self.line(&format!("+OK Message {n} deleted")).await;
                    Next::Continue
                }
                Some(Err(why)) => self.err(why).await,
                None => self.err("Which message?").await,
            },
            "RSET" => {
                for e in &mut self.maildrop_mut().entries {
                    e.deleted = false;
                }
                self.line("+OK").await;
                Next::Continue
            }
            _ => self.err("Unknown command").await,
        }
    }

    fn maildrop(&self) -> &Maildrop {
        self.drop
            .as_ref()
            .unwrap_or_else(|| unreachable!("checked before transaction commands"))
    }

    fn maildrop_mut(&mut self) -> &mut Maildrop {
        self.drop
            .as_mut()
            .unwrap_or_else(|| unreachable!("checked before transaction commands"))
    }

    /// A message number that names a message not marked deleted.
    fn entry(&self, arg: &str) -> Result<usize, &'static str> {
        let n: usize = arg.parse().map_err(|_| "Not a message number")?;
        let entries = &self.maildrop().entries;
        if n == 0 || n > entries.len() {
            return Err("No such message");
        }
        if entries[n - 1].deleted {
            return Err("Message already deleted");
        }
        Ok(n)
    }

    async fn logged_in(&mut self, outcome: LoginOutcome) -> Next {
        let account = match outcome {
            LoginOutcome::Accepted(account) => account,
            LoginOutcome::Rejected => return self.err("[AUTH] Invalid credentials").await,
            LoginOutcome::Throttled => {
                return self
                    .err("[SYS/TEMP] Too many failed logins; try again later")
                    .await;
            }
        };
        if !self.ctx.lock(&account) {
            return self
                .err("[IN-USE] The maildrop is in use by another session")
                .await;
        }
        let opened = crate::blocking::run(|| {
            let mailbox = self.ctx.mailboxes.open(&account)?;
            let inbox = mailbox
                .folder("INBOX")?
                .ok_or_else(|| crate::mailbox::MailboxError::NoFolder("INBOX".into()))?;
            let entries = mailbox
                .messages(&inbox)?
                .into_iter()
                .map(|m| Entry {
                    uid: m.uid,
                    size: m.size,
                    deleted: false,
                })
                .collect();
            Ok::<_, crate::mailbox::MailboxError>((mailbox, inbox, entries))
        });
        match opened {
            Ok((mailbox, inbox, entries)) => {
                tracing::info!(remote = %self.remote, account = %account, "POP3 login");
                self.drop = Some(Maildrop {
                    account,
                    mailbox,
                    inbox,
                    entries,
                });
                if let Some(admission) = &self.admission {
                    admission.logged_in();
                }
                let count = self.maildrop().entries.len();
                self.line(&format!("+OK Maildrop locked, {count} messages"))
                    .await;
            }
            Err(e) => {
                self.ctx.unlock(&account);
                tracing::error!(error = %e, "POP3 maildrop failed");
                self.err("[SYS/TEMP] The maildrop could not be opened")
                    .await;
            }
        }
        Next::Continue
    }

    /// QUIT in the transaction state: deletions take effect (RFC 1939 §6).
    async fn update(&mut self) {
        let Some(mut drop) = self.drop.take() else {
            self.line(&format!("+OK {} says goodbye", self.ctx.hostname))
                .await;
            return;
        };
        let doomed: Vec<u32> = drop
            .entries
            .iter()
            .filter(|e| e.deleted)
            .map(|e| e.uid)
            .collect();
        let result = crate::blocking::run(|| {
            if doomed.is_empty() {
                return Ok(Vec::new());
            }
            let inbox = drop.inbox.clone();
            drop.mailbox.set_flags(
                &inbox,
                &doomed,
                crate::mailbox::FlagChange::Add,
                &["\\Deleted".into()],
                None,
            )?;
            drop.mailbox.expunge(&inbox, Some(&doomed))
        });
        self.ctx.unlock(&drop.account);
        match result {
            Ok(gone) => {
                let left = drop.entries.len() - gone.len();
                self.line(&format!("+OK Goodbye ({left} messages left)"))
                    .await;
            }
            Err(e) => {
                tracing::error!(error = %e, "POP3 update failed");
                self.line("-ERR [SYS/TEMP] Some deleted messages were not removed")
                    .await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_stuffing_and_top() {
        assert_eq!(
            crate::smtp::dot::stuffed(b"a\r\n.b\r\n..\r\n"),
            b"a\r\n..b\r\n...\r\n.\r\n"
        );
        assert_eq!(
            crate::smtp::dot::stuffed(b"no newline"),
            b"no newline\r\n.\r\n"
        );
        let m = b"Subject: x\r\n\r\none\r\ntwo\r\nthree\r\n";
        assert_eq!(top(m, 0), b"Subject: x\r\n\r\n");
        assert_eq!(top(m, 2), b"Subject: x\r\n\r\none\r\ntwo\r\n");
        assert_eq!(top(m, 10), &m[..]);
    }
}

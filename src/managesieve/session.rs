//! One ManageSieve connection (RFC 5804): capabilities, STARTTLS, AUTHENTICATE PLAIN
//! after TLS, and the script commands over the account's own scripts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

use super::command::{self, ReadError, Word};
use super::listener::ManageSieveContext;
use crate::login::Outcome as LoginOutcome;
use crate::sieve::store::{ScriptStoreError, UserScripts};

/// An authenticated client may stay silent this long (Dovecot's is 30 minutes).
const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
const MAX_ERRORS: u32 = 10;

pub enum Outcome<S> {
    Closed,
    StartTls(S),
}

enum Next {
    Continue,
    Quit,
    StartTls,
}

pub struct Session<S> {
    ctx: Arc<ManageSieveContext>,
    io: BufReader<S>,
    remote: SocketAddr,
    tls: bool,
    account: Option<String>,
    errors: u32,
    admission: Option<Arc<crate::listen::Admission>>,
    since: std::time::Instant,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub fn new(ctx: Arc<ManageSieveContext>, io: S, remote: SocketAddr, tls: bool) -> Self {
        Session {
            ctx,
            io: BufReader::new(io),
            remote,
            tls,
            account: None,
            errors: 0,
            admission: None,
            since: std::time::Instant::now(),
        }
    }

    pub fn with_admission(mut self, admission: Arc<crate::listen::Admission>) -> Self {
        self.admission = Some(admission);
        self
    }

    /// Short until the client has logged in, with a budget for logging in in all.
    fn silence(&self) -> Duration {
        if self.account.is_some() {
            IDLE_TIMEOUT
        } else {
            crate::limits::silence_before_login(self.since)
        }
    }

    fn max_literal(&self) -> usize {
        if self.account.is_some() {
            command::MAX_LITERAL
        } else {
            command::MAX_LITERAL_BEFORE_LOGIN
        }
    }

    fn login_allowed(&self) -> bool {
        self.tls || self.ctx.tls.is_none()
    }

    async fn send(&mut self, bytes: &[u8]) -> bool {
        let io = self.io.get_mut();
        io.write_all(bytes).await.is_ok() && io.flush().await.is_ok()
    }

    /// `OK`/`NO`/`BYE` with an optional response code and a human text.
    async fn reply(&mut self, status: &str, code: Option<&str>, text: &str) -> bool {
        let mut out = status.as_bytes().to_vec();
        if let Some(code) = code {
            out.extend_from_slice(format!(" ({code})").as_bytes());
        }
        if !text.is_empty() {
            out.push(b' ');
            out.extend_from_slice(&command::string(text.as_bytes()));
        }
        out.extend_from_slice(b"\r\n");
        self.send(&out).await
    }

    /// NO to what is not a command here (syntax, unknown, out of state): these count
    /// toward the errors that end the session.
    async fn no(&mut self, code: Option<&str>, text: &str) -> Next {
        self.errors += 1;
        self.refuse(code, text).await
    }

    /// NO to a command a client may fairly send (a script that does not compile, one
    /// that does not exist): a client checking its scripts is not misbehaving.
    async fn refuse(&mut self, code: Option<&str>, text: &str) -> Next {
        self.reply("NO", code, text).await;
        Next::Continue
    }

    /// The capability lines (the greeting, CAPABILITY, and again after STARTTLS).
    fn capabilities(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut line = |name: &str, value: Option<&str>| {
            out.extend_from_slice(&command::string(name.as_bytes()));
            if let Some(value) = value {
                out.push(b' ');
                out.extend_from_slice(&command::string(value.as_bytes()));
            }
            out.extend_from_slice(b"\r\n");
        };
        line("IMPLEMENTATION", Some("ferrymail"));
        // No mechanism before TLS: a client must not send a password in the clear.
        line(
            "SASL",
            Some(if self.login_allowed() { "PLAIN" } else { "" }),
        );
        line("SIEVE", Some(&crate::sieve::extensions().join(" ")));
        if !self.tls && self.ctx.tls.is_some() && self.account.is_none() {
            line("STARTTLS", None);
        }
        line(
            "MAXREDIRECTS",
            Some(&crate::sieve::MAX_REDIRECTS.to_string()),
        );
        if let Some(account) = &self.account {
            line("OWNER", Some(account));
        }
        line("UNAUTHENTICATE", None);
        line("VERSION", Some("1.0"));
        out
    }

    pub async fn run(mut self, greet: bool) -> Outcome<S> {
        if greet {
            let mut hello = self.capabilities();
            hello.extend_from_slice(b"OK \"ferrymail ManageSieve ready\"\r\n");
            if !self.send(&hello).await {
                return Outcome::Closed;
            }
        }
        loop {
            let silence = self.silence();
            let max_literal = self.max_literal();
            let words = match command::read(&mut self.io, silence, max_literal).await {
                Ok(words) => words,
                Err(ReadError::Syntax(why)) => {
                    self.no(None, &format!("Syntax error: {why}")).await;
                    if self.errors > MAX_ERRORS {
                        self.reply("BYE", None, "Too many errors").await;
                        break;
                    }
                    continue;
                }
                Err(ReadError::TooLong) => {
                    self.reply("BYE", None, "Line or literal too long").await;
                    break;
                }
                Err(ReadError::Idle) => {
                    self.reply("BYE", None, "Idle for too long").await;
                    break;
                }
                Err(ReadError::Closed) => break,
            };
            match self.command(words).await {
                Next::Continue => {}
                Next::Quit => break,
                Next::StartTls => return Outcome::StartTls(self.io.into_inner()),
            }
            if self.errors > MAX_ERRORS {
                self.reply("BYE", None, "Too many errors").await;
                break;
            }
        }
        Outcome::Closed
    }

    async fn command(&mut self, words: Vec<Word>) -> Next {
        let mut words = words.into_iter();
        let Some(Word::Atom(verb)) = words.next() else {
            return self.no(None, "A command starts with its name").await;
        };
        let args: Vec<Word> = words.collect();
        let verb = verb.to_ascii_uppercase();
        // Arguments are strings, but for HAVESPACE's size, a number (an atom); an atom
        // where a string is due is taken as its text, as Dovecot does not, harmlessly.
        let strings: Vec<Vec<u8>> = args
            .into_iter()
            .map(|w| match w {
                Word::Text(t) => t,
                Word::Atom(a) => a.into_bytes(),
            })
            .collect();
        let arity = |n: usize| strings.len() == n;
        match verb.as_str() {
            "CAPABILITY" if arity(0) => {
                let mut out = self.capabilities();
                out.extend_from_slice(b"OK\r\n");
                self.send(&out).await;
                Next::Continue
            }
            "LOGOUT" if arity(0) => {
                self.reply("OK", None, "Logout complete").await;
                Next::Quit
            }
            "NOOP" if strings.len() <= 1 => {
                match strings.first() {
                    // RFC 5804 §2.13: the tag comes back in a TAG response code.
                    Some(tag) => {
                        let code =
                            format!("TAG {}", String::from_utf8_lossy(&command::string(tag)));
                        self.reply("OK", Some(&code), "Done").await
                    }
                    None => self.reply("OK", None, "Done").await,
                };
                Next::Continue
            }
            "STARTTLS" if arity(0) && self.account.is_none() => {
                if self.tls || self.ctx.tls.is_none() {
                    return self.no(None, "TLS is not available here").await;
                }
                if self.reply("OK", None, "Begin TLS negotiation now").await {
                    Next::StartTls
                } else {
                    Next::Quit
                }
            }
            "AUTHENTICATE" if self.account.is_none() && (arity(1) || arity(2)) => {
                self.authenticate(&strings).await
            }
            "UNAUTHENTICATE" if arity(0) && self.account.is_some() => {
                self.account = None;
                // A new login gets the whole budget, as a new connection would.
                self.since = std::time::Instant::now();
                self.reply("OK", None, "Logged out").await;
                Next::Continue
            }
            _ if self.account.is_none() => {
                if ["CAPABILITY", "LOGOUT", "NOOP", "STARTTLS", "AUTHENTICATE"]
                    .contains(&verb.as_str())
                {
                    self.no(None, "Wrong number of arguments").await
                } else {
                    self.no(None, "Log in first").await
                }
            }
            _ => self.script_command(&verb, strings).await,
        }
    }

    async fn authenticate(&mut self, args: &[Vec<u8>]) -> Next {
        if !args[0].eq_ignore_ascii_case(b"PLAIN") {
            return self.no(None, "Only PLAIN is offered").await;
        }
        if !self.login_allowed() {
            return self.no(Some("ENCRYPT-NEEDED"), "Use STARTTLS first").await;
        }
        let encoded = match args.get(1) {
            Some(initial) => initial.clone(),
            None => {
                // An empty challenge; the client answers with a string.
                if !self.send(b"\"\"\r\n").await {
                    return Next::Quit;
                }
                let silence = self.silence();
                let max_literal = self.max_literal();
                match command::read(&mut self.io, silence, max_literal).await {
                    Ok(words) => match words.as_slice() {
                        [Word::Text(answer)] => answer.clone(),
                        _ => return self.no(None, "Expected a string").await,
                    },
                    Err(ReadError::Syntax(_)) => return self.no(None, "Expected a string").await,
                    Err(_) => return Next::Quit,
                }
            }
        };
        if encoded == b"*" {
            return self.no(None, "Authentication cancelled").await;
        }
        let Ok(response) = base64::engine::general_purpose::STANDARD.decode(&encoded) else {
            return self.no(None, "Invalid base64").await;
        };
        match self
            .ctx
            .logins
            .check_plain_at(self.remote.ip(), &response, crate::login::Door::Sieve)
            .await
        {
            LoginOutcome::Accepted(account) => {
                tracing::info!(remote = %self.remote, account = %account, "ManageSieve login");
                self.account = Some(account);
                if let Some(admission) = &self.admission {
                    admission.logged_in();
                }
                self.reply("OK", None, "Logged in").await;
                Next::Continue
            }
            LoginOutcome::Rejected => self.no(None, "Authentication failed").await,
            LoginOutcome::Throttled => {
                self.no(Some("TRYLATER"), "Too many failed logins; try again later")
                    .await
            }
        }
    }

    async fn script_command(&mut self, verb: &str, args: Vec<Vec<u8>>) -> Next {
        let Some(account) = self.account.clone() else {
            return self.no(None, "Log in first").await;
        };
        let name = |i: usize| args.get(i).and_then(|b| String::from_utf8(b.clone()).ok());
        let arity = args.len();
        // Checks that need no store first.
        let too_large = format!(
            "A script is at most {} bytes",
            crate::sieve::MAX_SCRIPT_SIZE
        );
        match (verb, arity) {
            ("CHECKSCRIPT" | "PUTSCRIPT", _)
                if args
                    .last()
                    .is_some_and(|a| a.len() > crate::sieve::MAX_SCRIPT_SIZE) =>
            {
                return self.refuse(Some("QUOTA/MAXSIZE"), &too_large).await;
            }
            ("CHECKSCRIPT", 1) => {
                // A megabyte of script compiles off the async worker.
                return match crate::blocking::run(|| crate::sieve::compile(&args[0])) {
                    Ok(_) => {
                        self.reply("OK", None, "").await;
                        Next::Continue
                    }
                    Err(e) => self.refuse(None, &e.to_string()).await,
                };
            }
            ("PUTSCRIPT", 2) => {
                if let Err(e) = crate::blocking::run(|| crate::sieve::compile(&args[1])) {
                    return self.refuse(None, &e.to_string()).await;
                }
            }
            ("HAVESPACE", 2) => {
                let size = String::from_utf8_lossy(&args[1])
                    .parse::<u64>()
                    .unwrap_or(u64::MAX);
                if size > crate::sieve::MAX_SCRIPT_SIZE as u64 {
                    return self.refuse(Some("QUOTA/MAXSIZE"), &too_large).await;
                }
            }
            ("LISTSCRIPTS", 0)
            | ("GETSCRIPT", 1)
            | ("SETACTIVE", 1)
            | ("DELETESCRIPT", 1)
            | ("RENAMESCRIPT", 2) => {}
            (
                "CHECKSCRIPT" | "PUTSCRIPT" | "HAVESPACE" | "LISTSCRIPTS" | "GETSCRIPT"
                | "SETACTIVE" | "DELETESCRIPT" | "RENAMESCRIPT",
                _,
            ) => return self.no(None, "Wrong number of arguments").await,
            _ => return self.no(None, "Unknown command").await,
        }
        if (0..arity).any(|i| name(i).is_none()) && verb != "PUTSCRIPT" {
            return self.no(None, "Names are UTF-8 text").await;
        }
        let first = name(0).unwrap_or_default();
        let mailboxes = self.ctx.mailboxes.clone();
        let verb_owned = verb.to_string();
        let done = crate::blocking::run(move || {
            let mut scripts = UserScripts::open(&mailboxes, &account)?;
            let answer: Answer = match verb_owned.as_str() {
                "LISTSCRIPTS" => Answer::Listed(scripts.list()?),
                "GETSCRIPT" => match scripts.get(&first)? {
                    Some(body) => Answer::Script(body),
                    None => return Err(ScriptStoreError::NoScript(first)),
                },
                "PUTSCRIPT" => {
                    scripts.put(&first, &args[1])?;
                    Answer::Done
                }
                "SETACTIVE" => {
                    scripts.set_active((!first.is_empty()).then_some(first.as_str()))?;
                    Answer::Done
                }
                "DELETESCRIPT" => {
                    scripts.delete(&first)?;
                    Answer::Done
                }
                "RENAMESCRIPT" => {
                    let to = String::from_utf8(args[1].clone()).unwrap_or_default();
                    scripts.rename(&first, &to)?;
                    Answer::Done
                }
                _ => {
                    // HAVESPACE: room for one more, unless it replaces one.
                    let listed = scripts.list()?;
                    if listed.len() >= crate::sieve::MAX_SCRIPTS
                        && !listed.iter().any(|l| l.name == first)
                    {
                        return Err(ScriptStoreError::TooMany);
                    }
                    Answer::Done
                }
            };
            Ok::<_, ScriptStoreError>(answer)
        });
        match done {
            Ok(Answer::Done) => {
                self.reply("OK", None, "").await;
            }
            Ok(Answer::Listed(listed)) => {
                let mut out = Vec::new();
                for l in listed {
                    out.extend_from_slice(&command::string(l.name.as_bytes()));
                    if l.active {
                        out.extend_from_slice(b" ACTIVE");
                    }
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"OK\r\n");
                self.send(&out).await;
            }
            Ok(Answer::Script(body)) => {
                let mut out = format!("{{{}}}\r\n", body.len()).into_bytes();
                out.extend_from_slice(&body);
                out.extend_from_slice(b"\r\nOK\r\n");
                self.send(&out).await;
            }
            Err(e) => {
                let code = match &e {
                    ScriptStoreError::NoScript(_) => Some("NONEXISTENT"),
                    ScriptStoreError::Exists(_) => Some("ALREADYEXISTS"),
                    ScriptStoreError::Active(_) => Some("ACTIVE"),
                    ScriptStoreError::TooMany => Some("QUOTA/MAXSCRIPTS"),
                    ScriptStoreError::TooLarge => Some("QUOTA/MAXSIZE"),
                    ScriptStoreError::BadName => None,
                    _ => {
                        tracing::error!(account = ?self.account, error = %e, "ManageSieve: storage failed");
                        return self
                            .refuse(Some("TRYLATER"), "The scripts cannot be reached now")
                            .await;
                    }
                };
                return self.refuse(code, &e.to_string()).await;
            }
        }
        Next::Continue
    }
}

enum Answer {
    Done,
    Listed(Vec<crate::sieve::store::Listed>),
    Script(Vec<u8>),
}

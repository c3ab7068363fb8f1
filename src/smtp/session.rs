//! One SMTP session: reads with timeouts, feeds bytes to smtp-proto's receivers, and
//! dispatches each parsed command to its handler. Replies are buffered and flushed when
//! the input runs dry, which is what PIPELINING needs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use smtp_proto::request::receiver::{BdatReceiver, DummyDataReceiver, RequestReceiver};
use smtp_proto::{Error as ProtoError, Request};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::listener::MxContext;
use crate::listen::Admission;
use crate::queue::NewDelivery;
use crate::queue::log::{Entry, Event};

use crate::limits::{SMTP_DATA_SILENCE, SMTP_MAX_ERRORS};

/// How a session ended.
pub enum Outcome<S> {
    Closed,
    /// The client asked for STARTTLS; the caller upgrades `S` and starts a new session,
    /// which keeps the connection's place in the per-IP count and its refused recipients
    /// (a TLS restart must not reset what a harvester has used up).
    StartTls(S, Option<Admission>, u32),
}

/// A recipient accepted in this transaction.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub address: String,
    pub deliveries: Vec<NewDelivery>,
    /// Largest message the recipient's domain accepts.
    pub max_size: u64,
    /// The recipient domain refuses SPF hard fails / DMARC `p=reject` failures.
    pub reject_spf_fail: bool,
    pub reject_dmarc_fail: bool,
    /// The sender is on the recipient domain's allowlist: no refusals on auth results.
    pub allowlisted: bool,
    /// The notices the sender asked for about this recipient (DSN).
    pub dsn: crate::queue::Dsn,
    /// What the recipient domain does with the spam filter's verdict.
    pub spam: crate::store::records::SpamPolicy,
    /// Seconds a new sender waits when greylisted (here or on rspamd's advice).
    pub greylist_delay: u64,
}

/// The session's state: who the client said it is and the transaction in progress. A
/// STARTTLS upgrade starts a new session, so none of it crosses TLS (RFC 3207).
#[derive(Debug, Default)]
pub struct State {
    pub helo: Option<String>,
    pub mail_from: Option<String>,
    /// The account logged in with AUTH (submission only).
    pub account: Option<String>,
    /// MAIL FROM's DSN parameters: RET=FULL and ENVID.
    pub ret_full: bool,
    pub envid: Option<String>,
    /// MAIL FROM said REQUIRETLS (RFC 8689).
    pub require_tls: bool,
    /// MAIL FROM's SIZE= (RFC 1870), 0 when not given.
    pub declared_size: u64,
    /// MAIL FROM said SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
    pub rcpts: Vec<Accepted>,
    /// Protocol errors so far; past SMTP_MAX_ERRORS the session is closed.
    pub errors: u32,
    /// Recipients refused so far (see `limits::Smtp::refused_recipients`).
    pub refused: u32,
    /// What the spam filter made of the message in progress, for the mail log.
    pub spam_note: Option<String>,
    /// The spam filter filed it as junk for some recipient (the log marks it spam).
    pub junk: bool,
}

pub(super) enum Input {
    Command,
    /// An AUTH exchange on the submission port, waiting for the client's next line.
    Sasl(super::submission::Sasl),
    Data {
        reader: super::dot::DataReader,
        body: Vec<u8>,
        /// The server's message memory ran out: the rest is read and dropped, and the
        /// sender told to try again later.
        starved: bool,
    },
    /// Discarding the rest of a message; answers 552 at its end when a reason is given.
    Discard(DummyDataReceiver, Option<&'static str>),
    Bdat {
        receiver: BdatReceiver,
        last: bool,
    },
}

pub struct Session<S> {
    pub ctx: Arc<MxContext>,
    pub stream: S,
    pub remote: SocketAddr,
    pub tls: bool,
    /// The TLS version and cipher suite, for the spam filter.
    pub tls_facts: Option<(String, String)>,
    pub state: State,
    pub out: Vec<u8>,
    /// BDAT chunks gathered so far.
    pub bdat_body: Vec<u8>,
    /// This connection's place in its IP's open-connection count, given back at QUIT.
    pub admission: Option<Admission>,
    /// Refused recipients logged one by one, and those only counted.
    pub refusals: RefusalLog,
    /// This session's share of the server's message memory (the body being received).
    pub memory: crate::limits::Reservation,
}

/// The refused recipients of a session past the first few: summed up in one mail log
/// record when the session ends (however it ends), not one record each.
pub struct RefusalLog {
    pub logged: u32,
    pub unlogged: u32,
    log: Arc<crate::queue::log::MailLog>,
    remote: SocketAddr,
}

impl Drop for RefusalLog {
    fn drop(&mut self) {
        if self.unlogged > 0 {
            self.log.record(Entry {
                at: crate::clock::unix_now(),
                event: Event::Rejected,
                message_id: None,
                mail_from: String::new(),
                rcpt: String::new(),
                remote_ip: self.remote.ip().to_string(),
                detail: format!(
                    "{} more recipients refused in this session (not logged one by one)",
                    self.unlogged
                ),
            });
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub fn new(ctx: Arc<MxContext>, stream: S, remote: SocketAddr, tls: bool) -> Self {
        Session {
            refusals: RefusalLog {
                logged: 0,
                unlogged: 0,
                log: ctx.log.clone(),
                remote,
            },
            memory: crate::limits::Reservation::new(ctx.message_memory.clone()),
            ctx,
            stream,
            remote,
            tls,
            tls_facts: None,
            state: State::default(),
            out: Vec::new(),
            bdat_body: Vec::new(),
            admission: None,
        }
    }

    pub fn with_tls_facts(mut self, facts: Option<(String, String)>) -> Self {
        self.tls_facts = facts;
        self
    }

    pub fn with_admission(mut self, admission: Option<Admission>) -> Self {
        self.admission = admission;
        self
    }

    /// Recipients this connection already had refused (before STARTTLS).
    pub fn with_refused(mut self, refused: u32) -> Self {
        self.state.refused = refused;
        self
    }

    pub fn reply(&mut self, code: u16, status: &str, text: &str) {
        // One line; a message from the spec may not inject more lines.
        let text: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let line = if status.is_empty() {
            format!("{code} {text}\r\n")
        } else {
            format!("{code} {status} {text}\r\n")
        };
        self.out.extend_from_slice(line.as_bytes());
    }

    pub fn log(
        &self,
        event: Event,
        message_id: Option<i64>,
        mail_from: &str,
        rcpt: &str,
        detail: &str,
    ) {
        self.ctx.log.record(Entry {
            at: crate::clock::unix_now(),
            event,
            message_id,
            mail_from: mail_from.to_string(),
            rcpt: rcpt.to_string(),
            remote_ip: self.remote.ip().to_string(),
            detail: detail.to_string(),
        });
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.stream.flush().await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Runs the session until the client quits, the connection drops, or STARTTLS.
    pub async fn run(mut self, greet: bool) -> Outcome<S> {
        if greet {
            let banner = format!("{} ESMTP ferrymail", self.ctx.hostname);
            self.reply(220, "", &banner);
        }
        let mut commands = RequestReceiver::default();
        let mut input = Input::Command;
        let mut buf = vec![0u8; 64 * 1024];
        // When the command (or message) now coming in began: however it trickles in, it
        // must be whole within its budget.
        let mut began = Instant::now();
        let mut was_command = true;
        loop {
            if self.flush().await.is_err() {
                return Outcome::Closed;
            }
            let limits = self.ctx.session_limits;
            let is_command = matches!(input, Input::Command | Input::Sasl(_));
            if is_command != was_command {
                began = Instant::now();
                was_command = is_command;
            }
            // Within DATA, a silence of its own; and each has a budget in all.
            let (silence, budget) = if is_command {
                (limits.command_timeout, limits.command_timeout)
            } else {
                (SMTP_DATA_SILENCE, limits.data_timeout)
            };
            let timeout = silence.min(budget.saturating_sub(began.elapsed()));
            let n = match tokio::time::timeout(timeout, self.stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Outcome::Closed,
                Ok(Ok(n)) => n,
                Err(_) => {
                    self.reply(421, "4.4.2", "Timeout; closing connection");
                    let _ = self.flush().await;
                    return Outcome::Closed;
                }
            };
            let mut bytes = buf[..n].iter();
            while bytes.len() > 0 {
                input = match input {
                    Input::Command => match commands.ingest(&mut bytes) {
                        Ok(request) => {
                            began = Instant::now();
                            let request = request.into_owned();
                            match self.command(request).await {
                                Next::Continue(next) => next,
                                Next::Quit => {
                                    // Released before the 221 goes out: a client that
                                    // reconnects as soon as it reads it must fit again.
                                    drop(self.admission.take());
                                    let _ = self.flush().await;
                                    return Outcome::Closed;
                                }
                                Next::StartTls => {
                                    // Anything pipelined after STARTTLS is discarded: it
                                    // was sent in the clear (CVE-2011-0411).
                                    let _ = self.flush().await;
                                    let refused = self.state.refused;
                                    return Outcome::StartTls(self.stream, self.admission, refused);
                                }
                            }
                        }
                        Err(ProtoError::NeedsMoreData { .. }) => Input::Command,
                        Err(e) => {
                            self.protocol_error(e);
                            if self.state.errors > SMTP_MAX_ERRORS {
                                self.reply(421, "4.7.0", "Too many errors; closing connection");
                                let _ = self.flush().await;
                                return Outcome::Closed;
                            }
                            Input::Command
                        }
                    },
                    Input::Sasl(mut sasl) => {
                        if sasl.ingest(&mut bytes) {
                            self.sasl_step(sasl).await
                        } else {
                            Input::Sasl(sasl)
                        }
                    }
                    Input::Data {
                        mut reader,
                        mut body,
                        mut starved,
                    } => {
                        let done = reader.ingest(&mut bytes, &mut body);
                        if !starved && !self.memory.cover(body.capacity()) {
                            starved = true;
                            reader.keep_nothing();
                            body = Vec::new();
                        }
                        if !done {
                            Input::Data {
                                reader,
                                body,
                                starved,
                            }
                        } else if starved {
                            self.reply(
                                451,
                                "4.3.1",
                                "Insufficient system resources; try again later",
                            );
                            self.reset_transaction();
                            Input::Command
                        } else if reader.overflowed() {
                            self.reply(552, "5.3.4", "Message exceeds the size limit");
                            self.reset_transaction();
                            Input::Command
                        } else {
                            self.finish_message(body).await;
                            Input::Command
                        }
                    }
                    Input::Discard(mut receiver, why) => {
                        if receiver.ingest(&mut bytes) {
                            if let Some(why) = why {
                                self.reply(552, "5.3.4", why);
                                self.reset_transaction();
                            }
                            Input::Command
                        } else {
                            Input::Discard(receiver, why)
                        }
                    }
                    Input::Bdat { mut receiver, last } => {
                        let mut chunk = std::mem::take(&mut self.bdat_body);
                        let done = receiver.ingest(&mut bytes, &mut chunk);
                        self.bdat_body = chunk;
                        if !done {
                            Input::Bdat { receiver, last }
                        } else if last {
                            let body = std::mem::take(&mut self.bdat_body);
                            self.finish_message(body).await;
                            Input::Command
                        } else {
                            let size = self.bdat_body.len();
                            self.reply(250, "2.6.0", &format!("{size} octets received"));
                            Input::Command
                        }
                    }
                };
            }
        }
    }

    fn protocol_error(&mut self, e: ProtoError) {
        self.state.errors += 1;
        match e {
            ProtoError::UnknownCommand => self.reply(500, "5.5.1", "Unknown command"),
            ProtoError::InvalidSenderAddress => {
                self.reply(501, "5.1.7", "Bad sender address syntax")
            }
            ProtoError::InvalidRecipientAddress => {
                self.reply(501, "5.1.3", "Bad recipient address syntax")
            }
            ProtoError::SyntaxError { syntax } => {
                self.reply(501, "5.5.2", &format!("Syntax: {syntax}"))
            }
            ProtoError::InvalidParameter { param } => {
                self.reply(501, "5.5.4", &format!("Invalid parameter {param}"))
            }
            ProtoError::UnsupportedParameter { param } => {
                self.reply(504, "5.5.4", &format!("Unsupported parameter {param}"))
            }
            ProtoError::ResponseTooLong => self.reply(500, "5.5.2", "Line too long"),
            ProtoError::NeedsMoreData { .. } | ProtoError::InvalidResponse { .. } => {
                self.reply(500, "5.5.2", "Syntax error")
            }
        }
    }

    async fn command(&mut self, request: Request<String>) -> Next {
        match request {
            Request::Ehlo { host } => self.handle_ehlo(host, true),
            Request::Helo { host } => self.handle_ehlo(host, false),
            Request::Lhlo { .. } => self.reply(500, "5.5.1", "LHLO is for LMTP"),
            Request::Mail { from } => self.handle_mail(from),
            Request::Rcpt { to } => return self.rcpt_within_limits(to).await,
            Request::Data => return self.handle_data(),
            // An empty chunk has no bytes to wait for (RFC 3030 allows `BDAT 0 LAST`).
            Request::Bdat {
                chunk_size: 0,
                is_last,
            } => return self.empty_bdat(is_last).await,
            Request::Bdat {
                chunk_size,
                is_last,
            } => return self.handle_bdat(chunk_size, is_last),
            Request::Rset => {
                self.reset_transaction();
                self.reply(250, "2.0.0", "OK");
            }
            Request::Noop { .. } => self.reply(250, "2.0.0", "OK"),
            Request::Quit => {
                self.reply(221, "2.0.0", "Bye");
                return Next::Quit;
            }
            Request::Vrfy { .. } | Request::Expn { .. } => self.reply(
                252,
                "2.5.2",
                "Cannot verify; send mail and it will be tried",
            ),
            Request::Help { .. } => self.reply(214, "2.0.0", "See RFC 5321"),
            Request::StartTls => return self.handle_starttls(),
            Request::Auth {
                mechanism,
                initial_response,
            } => return self.handle_auth(mechanism, initial_response).await,
            Request::Etrn { .. } | Request::Atrn { .. } | Request::Burl { .. } => {
                self.reply(502, "5.5.1", "Command not implemented")
            }
        }
        Next::Continue(Input::Command)
    }

    /// RCPT, unless the client has had too many recipients refused (in this session, or
    /// from its address lately): then 421 and the connection is closed. From the third
    /// refusal on, each is answered a second late, which is nothing to a sender who
    /// mistyped and ruin to a harvester (or an SRS forger).
    async fn rcpt_within_limits(&mut self, to: smtp_proto::RcptTo<String>) -> Next {
        if self.state.refused >= self.ctx.session_limits.refused_recipients {
            self.reply(
                421,
                "4.7.0",
                "Too many refused recipients; closing connection",
            );
            return Next::Quit;
        }
        // Past its address's hourly count, a client still gets its good recipients (a
        // shared provider's outbound address must not be blocked for everyone by one
        // sender's guessing); a recipient that would be refused ends the connection
        // with 421 instead, so each connection guesses once at most.
        let over_hourly = self.refusing_too_many();
        let (before, replies) = (self.state.refused, self.out.len());
        self.handle_rcpt(to);
        if over_hourly && self.state.refused > before {
            self.out.truncate(replies);
            self.reply(
                421,
                "4.7.0",
                "Too many refused recipients from your address; try again later",
            );
            return Next::Quit;
        }
        if self.state.refused > before
            && self.state.refused >= crate::limits::SMTP_REFUSALS_BEFORE_SLEEP
        {
            tokio::time::sleep(self.ctx.session_limits.error_sleep).await;
        }
        Next::Continue(Input::Command)
    }

    fn handle_starttls(&mut self) -> Next {
        if self.tls {
            self.reply(503, "5.5.1", "Already in TLS");
        } else if self.ctx.tls.is_none() {
            self.reply(454, "4.7.0", "TLS not available");
        } else {
            self.reply(220, "2.0.0", "Ready to start TLS");
            return Next::StartTls;
        }
        Next::Continue(Input::Command)
    }

    fn handle_data(&mut self) -> Next {
        if let Some(err) = self.transaction_ready() {
            self.reply(err.0, err.1, err.2);
            return Next::Continue(Input::Command);
        }
        self.reply(354, "", "Start mail input; end with <CRLF>.<CRLF>");
        Next::Continue(Input::Data {
            reader: super::dot::DataReader::new(self.ctx.max_message_size),
            body: Vec::with_capacity(16 * 1024),
            starved: false,
        })
    }

    fn handle_bdat(&mut self, size: usize, last: bool) -> Next {
        if let Some(err) = self.transaction_ready() {
            // The chunk still follows on the wire: read it and drop it.
            self.reply(err.0, err.1, err.2);
            return Next::Continue(Input::Discard(DummyDataReceiver::new_bdat(size), None));
        }
        // Checked before a byte of the chunk is read: it is never buffered to find out.
        let total = (self.bdat_body.len() as u64).saturating_add(size as u64);
        if total > self.ctx.max_message_size {
            self.reply(552, "5.3.4", "Message exceeds the size limit");
            self.reset_transaction();
            return Next::Continue(Input::Discard(DummyDataReceiver::new_bdat(size), None));
        }
        if !self.memory.cover(total as usize) {
            self.reply(
                451,
                "4.3.1",
                "Insufficient system resources; try again later",
            );
            self.reset_transaction();
            return Next::Continue(Input::Discard(DummyDataReceiver::new_bdat(size), None));
        }
        Next::Continue(Input::Bdat {
            receiver: BdatReceiver::new(size, last),
            last,
        })
    }

    async fn empty_bdat(&mut self, last: bool) -> Next {
        if let Some(err) = self.transaction_ready() {
            self.reply(err.0, err.1, err.2);
        } else if last {
            let body = std::mem::take(&mut self.bdat_body);
            self.finish_message(body).await;
        } else {
            let size = self.bdat_body.len();
            self.reply(250, "2.6.0", &format!("{size} octets received"));
        }
        Next::Continue(Input::Command)
    }

    /// Why DATA/BDAT cannot start now, if it cannot.
    fn transaction_ready(&self) -> Option<(u16, &'static str, &'static str)> {
        if self.state.mail_from.is_none() {
            Some((503, "5.5.1", "MAIL first"))
        } else if self.state.rcpts.is_empty() {
            Some((554, "5.5.1", "No valid recipients"))
        } else {
            None
        }
    }

    pub fn reset_transaction(&mut self) {
        self.state.mail_from = None;
        self.state.ret_full = false;
        self.state.envid = None;
        self.state.require_tls = false;
        self.state.declared_size = 0;
        self.state.smtputf8 = false;
        self.state.rcpts.clear();
        self.state.spam_note = None;
        self.state.junk = false;
        // The buffer goes too, not only its contents: its memory is given back.
        self.bdat_body = Vec::new();
        self.memory.release();
    }
}

pub(super) enum Next {
    Continue(Input),
    Quit,
    StartTls,
}

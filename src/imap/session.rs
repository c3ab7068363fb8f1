//! One IMAP connection: the protocol loop, login (LOGIN, AUTHENTICATE, STARTTLS), IDLE,
//! and the dispatch of commands to folders.rs and messages.rs.

use std::net::SocketAddr;
use std::sync::Arc;

use imap_next::imap_types::IntoStatic;
use imap_next::imap_types::auth::{AuthMechanism, AuthenticateData};
use imap_next::imap_types::command::{Command, CommandBody};
use imap_next::imap_types::core::{AString, IString, NString, Tag, Vec1};
use imap_next::imap_types::extensions::binary::LiteralOrLiteral8;
use imap_next::imap_types::extensions::compress::CompressionAlgorithm;
use imap_next::imap_types::extensions::sort::SortAlgorithm;
use imap_next::imap_types::extensions::thread::ThreadingAlgorithm;
use imap_next::imap_types::extensions::uidplus::{UidElement, UidSet};
use imap_next::imap_types::extensions::utf8::QuotedUtf8;
use imap_next::imap_types::mailbox::Mailbox as WireMailbox;
use imap_next::imap_types::response::{
    Capability, Code, CommandContinuationRequest, Data, Greeting, Status,
};
use imap_next::server::{Error as ProtocolError, Event, Options, ResponseHandle, Server};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use super::compress::Stream;
use super::driver::{self, Step};
use super::extended::{self, Extras, Parsed};
use super::listener::ImapContext;
use super::selected::Selected;
use super::{convert, mutf7};
use crate::login::Outcome as LoginOutcome;
use crate::mailbox::{Folder, Mailbox, MailboxError};

/// A message this large (an APPEND's) has its memory given back to the OS once stored.
const LARGE_MESSAGE: usize = 1 << 20;
/// A command that ran this long worked through much of a folder; the memory it took goes
/// back to the OS after it (a collect costs well under a millisecond).
const LONG_COMMAND: std::time::Duration = std::time::Duration::from_millis(20);

/// FETCH responses queued before they are written out, so a FETCH of a whole large
/// folder never sits in memory at once.
pub(super) const FETCH_CHUNK: usize = 64;

pub enum Outcome<S> {
    Closed,
    /// STARTTLS was accepted: the caller wraps `S` in TLS and starts a new session.
    StartTls(S),
}

pub(super) struct User {
    pub(super) account: String,
    pub(super) mailbox: Mailbox,
    pub(super) changes: watch::Receiver<u64>,
}

pub struct Session<S> {
    pub(super) ctx: Arc<ImapContext>,
    pub(super) io: Stream<S>,
    pub(super) server: Server,
    pub(super) remote: SocketAddr,
    pub(super) tls: bool,
    pub(super) buf: Vec<u8>,
    /// Responses encoded but not yet written (see driver::next).
    pub(super) out: driver::Outbox,
    pub(super) user: Option<User>,
    pub(super) selected: Option<Selected>,
    pub(super) auth_tag: Option<Tag<'static>>,
    pub(super) idle_tag: Option<Tag<'static>>,
    pub(super) condstore: bool,
    /// ENABLE QRESYNC (RFC 7162): expunges are told as VANISHED (UIDs), and SELECT and
    /// UID FETCH may resynchronise from a MODSEQ.
    pub(super) qresync: bool,
    /// ENABLE UTF8=ACCEPT (RFC 6855): folder names travel as UTF-8, not modified UTF-7.
    pub(super) utf8: bool,
    /// ENABLE IMAP4rev2 (RFC 9051): its rules where they differ from rev1's.
    pub(super) rev2: bool,
    /// What the client may still send, and for how long (see driver::Guard).
    pub(super) guard: driver::Guard,
    /// The tagged completion of the command in progress, held back until the untagged
    /// updates it brings are queued: they must reach the client before it (RFC 3501 §7).
    pub(super) completion: Option<Status<'static>>,
    /// This connection's place in the listener's counts (told of a login).
    pub(super) admission: Option<Arc<crate::listen::Admission>>,
    /// What an extended command form added to the command in progress (see extended.rs).
    pub(super) extras: Option<Extras>,
}

enum Flow {
    Continue,
    Logout,
    StartTls,
}

/// Literals up to the largest message a domain accepts (within IMAP_MAX_LITERAL);
/// before login the driver holds clients to far less (driver::Guard).
fn options(max_append: u32) -> Options {
    let largest = max_append.clamp(64 * 1024, crate::limits::IMAP_MAX_LITERAL);
    let mut options = Options::default();
    options.max_literal_size = largest;
    options.max_command_size = largest + 64 * 1024;
    // imap-next answers an over-large synchronizing literal with BAD and this text (it
    // cannot carry RFC 7889's [TOOBIG] code); APPENDLIMIT tells clients the size first.
    let _ = options.set_literal_reject_text(format!(
        "Literal too large: the most taken is {largest} octets (APPENDLIMIT)"
    ));
    options
}

/// Text for a status line: printable ASCII, never empty.
pub(super) fn text(s: &str) -> String {
    let t: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if t.trim().is_empty() {
        "done".into()
    } else {
        t
    }
}

pub(super) fn status_ok(
    tag: Option<Tag<'static>>,
    code: Option<Code<'static>>,
    msg: &str,
) -> Status<'static> {
    Status::ok(tag.clone(), code, text(msg))
        .or_else(|_| Status::ok(tag, None, "done"))
        .unwrap_or_else(|_| unreachable!("a plain OK is always valid"))
}

pub(super) fn status_no(tag: Tag<'static>, msg: &str) -> Status<'static> {
    Status::no(Some(tag.clone()), None, text(msg))
        .or_else(|_| Status::no(Some(tag), None, "failed"))
        .unwrap_or_else(|_| unreachable!("a plain NO is always valid"))
}

pub(super) fn status_bad(tag: Option<Tag<'static>>, msg: &str) -> Status<'static> {
    Status::bad(tag.clone(), None, text(msg))
        .or_else(|_| Status::bad(tag, None, "bad"))
        .unwrap_or_else(|_| unreachable!("a plain BAD is always valid"))
}

/// A name as the client sent it, to UTF-8: modified UTF-7 (RFC 3501 §5.1.3), or UTF-8
/// itself once the client enabled UTF8=ACCEPT (RFC 6855 §3). Non-ASCII bytes can only be
/// UTF-8, so they are taken as such either way.
pub(super) fn decode_name(wire: &[u8], utf8: bool) -> Option<String> {
    if utf8 || !wire.is_ascii() {
        std::str::from_utf8(wire).ok().map(str::to_string)
    } else {
        mutf7::decode(wire)
    }
}

pub(super) fn wire_name(mailbox: &WireMailbox<'_>, utf8: bool) -> Option<String> {
    match mailbox {
        WireMailbox::Inbox => Some("INBOX".into()),
        WireMailbox::Other(o) => decode_name(o.as_ref(), utf8),
    }
}

/// A stored name as the client expects it (see `decode_name`).
pub(super) fn to_wire(name: &str, utf8: bool) -> Option<WireMailbox<'static>> {
    if !utf8 || name.is_ascii() {
        return WireMailbox::try_from(mutf7::encode(name)).ok();
    }
    let quoted = QuotedUtf8::try_from(name.to_string()).ok()?;
    Some(WireMailbox::from(AString::String(IString::QuotedUtf8(
        quoted,
    ))))
}

/// LIST pattern matching (RFC 3501 §6.3.8): `*` matches anything, `%` anything but the
/// hierarchy delimiter. Run as a set of pattern positions over the name, so it takes
/// pattern × name steps at most, whatever the pattern (a backtracking match of
/// `*d*d*x` against a long name never ends).
pub(super) fn pattern_matches(pattern: &[char], name: &[char]) -> bool {
    // live[i]: the first i pattern characters can match the name read so far.
    let close = |live: &mut Vec<bool>| {
        for i in 0..pattern.len() {
            if live[i] && matches!(pattern[i], '*' | '%') {
                live[i + 1] = true;
            }
        }
    };
    let mut live = vec![false; pattern.len() + 1];
    let mut next = live.clone();
    live[0] = true;
    close(&mut live);
    for &c in name {
        next.fill(false);
        for (i, &p) in pattern.iter().enumerate() {
            if !live[i] {
                continue;
            }
            match p {
                '*' => next[i] = true,
                '%' if c != '/' => next[i] = true,
                '%' => {}
                p if p == c => next[i + 1] = true,
                _ => {}
            }
        }
        close(&mut next);
        if !next.contains(&true) {
            return false;
        }
        std::mem::swap(&mut live, &mut next);
    }
    live[pattern.len()]
}

pub(super) fn uid_set(uids: &[u32]) -> Option<UidSet> {
    let mut elements: Vec<UidElement> = Vec::new();
    let mut i = 0;
    while i < uids.len() {
        let start = uids[i];
        let mut end = start;
        while i + 1 < uids.len() && uids[i + 1] == end + 1 {
            i += 1;
            end = uids[i];
        }
        elements.push(if start == end {
            UidElement::Single(convert::nz(start))
        } else {
            UidElement::Range(convert::nz(start), convert::nz(end))
        });
        i += 1;
    }
    Vec1::try_from(elements).ok().map(UidSet)
}

pub(super) fn error_text(e: &MailboxError) -> String {
    match e {
        MailboxError::NoFolder(_) => "[NONEXISTENT] No such folder".into(),
        MailboxError::FolderExists(_) => "[ALREADYEXISTS] Folder already exists".into(),
        MailboxError::OverQuota { .. } => "[OVERQUOTA] Quota exceeded".into(),
        MailboxError::Refused(why) => why.to_string(),
        other => {
            tracing::error!(error = %other, "mailbox error");
            "[SERVERBUG] Internal error; try again".into()
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// A session on a new connection (`greet`), or after STARTTLS (no second greeting).
    pub fn new(ctx: Arc<ImapContext>, io: S, remote: SocketAddr, tls: bool, greet: bool) -> Self {
        let max_append = ctx.max_append;
        let mut session = Session {
            ctx,
            io: Stream::Plain(io),
            server: Server::new(
                options(max_append),
                Greeting::ok(None, "unused").unwrap_or_else(|_| unreachable!()),
            ),
            remote,
            tls,
            buf: vec![0u8; 64 * 1024],
            out: driver::Outbox::default(),
            user: None,
            selected: None,
            auth_tag: None,
            idle_tag: None,
            condstore: false,
            qresync: false,
            utf8: false,
            rev2: false,
            guard: driver::Guard::new(),
            completion: None,
            admission: None,
            extras: None,
        };
        let ready = format!("{} ferrymail IMAP ready", text(&session.ctx.hostname));
        let greeting = Greeting::ok(
            Some(Code::Capability(session.capabilities())),
            ready.as_str(),
        )
        .map(|g| g.into_static())
        .or_else(|_| Greeting::ok(None, "ferrymail IMAP ready"))
        .unwrap_or_else(|_| unreachable!());
        session.server = Server::new(options(max_append), greeting);
        if !greet {
            // imap-next always queues a greeting; after STARTTLS none may be sent.
            while let Err(imap_next::Interrupt::Io(imap_next::Io::Output(_))) =
                imap_next::State::next(&mut session.server)
            {}
        }
        session
    }

    pub fn with_admission(mut self, admission: Arc<crate::listen::Admission>) -> Self {
        self.admission = Some(admission);
        self
    }

    pub(super) fn capabilities(&self) -> Vec1<Capability<'static>> {
        let other = |s: &str| Capability::try_from(s.to_string()).ok();
        let mut caps = vec![Capability::Imap4Rev1];
        // Both, so rev1 clients keep rev1 until they ENABLE IMAP4rev2 (RFC 9051 §2.1).
        caps.extend(other("IMAP4rev2"));
        caps.extend([Capability::LiteralPlus, Capability::SaslIr]);
        if self.tls || self.ctx.tls.is_none() {
            caps.push(Capability::Auth(AuthMechanism::Plain));
        }
        if !self.tls {
            if self.ctx.tls.is_some() {
                caps.push(Capability::StartTls);
            }
            caps.push(Capability::LoginDisabled);
        }
        if self.user.is_some() {
            caps.extend([
                Capability::Idle,
                Capability::UidPlus,
                Capability::Move,
                Capability::Namespace,
                Capability::Id,
                Capability::Enable,
                Capability::Unselect,
                Capability::CondStore,
                Capability::QResync,
                Capability::Quota,
                Capability::Sort(None),
                Capability::Sort(Some(SortAlgorithm::Display)),
                Capability::Thread(ThreadingAlgorithm::OrderedSubject),
                Capability::Thread(ThreadingAlgorithm::References),
                Capability::Compress {
                    algorithm: CompressionAlgorithm::Deflate,
                },
            ]);
            caps.extend(
                [
                    "SPECIAL-USE",
                    "CREATE-SPECIAL-USE",
                    "CHILDREN",
                    "LIST-EXTENDED",
                    "LIST-STATUS",
                    "ESEARCH",
                    "SEARCHRES",
                    "QUOTA=RES-STORAGE",
                    "STATUS=SIZE",
                    "BINARY",
                    "UTF8=ACCEPT",
                ]
                .into_iter()
                .filter_map(other),
            );
            // RFC 7889: the largest APPEND taken (a larger literal is refused).
            caps.extend(other(&format!(
                "APPENDLIMIT={}",
                options(self.ctx.max_append).max_literal_size
            )));
        } else {
            // ENABLE and IDLE before login too, as Dovecot does: clients built on
            // Python's imaplib keep the greeting's list and check ENABLE against it.
            caps.extend([Capability::Id, Capability::Enable, Capability::Idle]);
        }
        Vec1::try_from(caps).unwrap_or_else(|_| Vec1::from(Capability::Imap4Rev1))
    }

    /// Logins travel only over TLS; a server with no certificate at all (tests, local
    /// setups) cannot offer it and allows them in the clear.
    fn login_allowed(&self) -> bool {
        self.tls || self.ctx.tls.is_none()
    }

    pub async fn run(mut self) -> Outcome<S> {
        loop {
            let watch = match (&self.idle_tag, self.user.as_mut()) {
                (Some(_), Some(user)) => Some(&mut user.changes),
                _ => None,
            };
            let step = driver::next(
                &mut self.io,
                &mut self.server,
                &mut self.buf,
                &mut self.out,
                watch,
                &mut self.guard,
            )
            .await;
            let flow = match step {
                Step::Closed => return Outcome::Closed,
                Step::Limit(why) => {
                    let bye = Status::bye(None, why).unwrap_or_else(|_| unreachable!());
                    self.server.enqueue_status(bye);
                    // What imap-next has to say (the BYE) goes out; nothing more is read.
                    while let Err(imap_next::Interrupt::Io(imap_next::Io::Output(bytes))) =
                        imap_next::State::next(&mut self.server)
                    {
                        self.out.extend(&bytes);
                    }
                    let _ = driver::flush(&mut self.io, &mut self.out).await;
                    return Outcome::Closed;
                }
                Step::Changed => {
                    self.updates(true, true);
                    Flow::Continue
                }
                Step::Protocol(e) => match self.protocol_error(e) {
                    Some((command, extras)) => {
                        self.extras = extras;
                        let flow = self.command(command).await;
                        self.extras = None;
                        flow
                    }
                    None => Flow::Continue,
                },
                Step::Event(event) => self.event(event).await,
            };
            match flow {
                Flow::Continue => {}
                Flow::Logout => return Outcome::Closed,
                Flow::StartTls => {
                    return match self.io.into_plain() {
                        Some(io) => Outcome::StartTls(io),
                        None => Outcome::Closed,
                    };
                }
            }
        }
    }

    /// Answers what imap-next could not read; a command in one of the extended forms
    /// only we read comes back to be run.
    fn protocol_error(&mut self, e: ProtocolError) -> Option<(Command<'static>, Option<Extras>)> {
        match e {
            ProtocolError::LiteralTooLong { .. } => {}
            ProtocolError::CommandTooLong { .. } => {
                self.server.enqueue_status(
                    Status::bye(None, "Command too long").unwrap_or_else(|_| unreachable!()),
                );
            }
            ProtocolError::MalformedMessage { discarded_bytes }
            | ProtocolError::ExpectedCrlfGotLf { discarded_bytes } => {
                if let Some(tag) = self.auth_tag.take() {
                    let _ = self
                        .server
                        .authenticate_finish(status_bad(Some(tag), "Invalid base64"));
                    return None;
                }
                let raw: &[u8] = discarded_bytes.declassify();
                if self.user.is_some() && raw.ends_with(b"\r\n") {
                    let selected = self.selected.as_ref();
                    let saved = |uid: bool| {
                        selected.map_or_else(|| u32::MAX.to_string(), |s| s.saved_set(uid))
                    };
                    match extended::parse(raw, &saved) {
                        Parsed::Command(command, extras) => return Some((command, extras)),
                        Parsed::Bad(tag, why) => {
                            self.server.enqueue_status(status_bad(Some(tag), why));
                            return None;
                        }
                        Parsed::Unknown => {}
                    }
                }
                let tag = raw
                    .split(|&b| b == b' ')
                    .next()
                    .and_then(|t| Tag::try_from(t.to_vec()).ok());
                self.server
                    .enqueue_status(status_bad(tag, "Could not parse the command"));
            }
        }
        None
    }

    /// Sends a response imap-codec cannot encode (ESEARCH, LIST's extended data), in
    /// its place among those queued around it.
    pub(super) fn raw(&mut self, line: Vec<u8>) -> ResponseHandle {
        let placeholder = self.server.enqueue_data(Data::Exists(0));
        self.out.substitute(placeholder, line);
        placeholder
    }

    /// Writes everything queued up to and including `handle`.
    pub(super) async fn send_through(&mut self, handle: ResponseHandle) -> bool {
        loop {
            match driver::next(
                &mut self.io,
                &mut self.server,
                &mut self.buf,
                &mut self.out,
                None,
                &mut self.guard,
            )
            .await
            {
                Step::Event(Event::ResponseSent { handle: sent, .. }) if sent == handle => {
                    return driver::flush(&mut self.io, &mut self.out).await;
                }
                Step::Closed | Step::Limit(_) => return false,
                _ => {}
            }
        }
    }

    async fn event(&mut self, event: Event) -> Flow {
        match event {
            Event::GreetingSent { .. } | Event::ResponseSent { .. } => Flow::Continue,
            Event::CommandAuthenticateReceived {
                command_authenticate,
            } => {
                let tag = command_authenticate.tag;
                if self.user.is_some() {
                    let _ = self
                        .server
                        .authenticate_finish(status_bad(Some(tag), "Already logged in"));
                } else if command_authenticate.mechanism != AuthMechanism::Plain {
                    let _ = self
                        .server
                        .authenticate_finish(status_no(tag, "Only AUTHENTICATE PLAIN is offered"));
                } else if !self.login_allowed() {
                    let _ = self.server.authenticate_finish(status_no(
                        tag,
                        "[PRIVACYREQUIRED] Use STARTTLS first",
                    ));
                } else if let Some(response) = command_authenticate.initial_response {
                    let outcome = self
                        .ctx
                        .logins
                        .check_plain(self.remote.ip(), response.declassify())
                        .await;
                    self.finish_login(tag, outcome, true);
                } else {
                    let _ = self
                        .server
                        .authenticate_continue(CommandContinuationRequest::base64(&b""[..]));
                    self.auth_tag = Some(tag);
                }
                Flow::Continue
            }
            Event::AuthenticateDataReceived { authenticate_data } => {
                let Some(tag) = self.auth_tag.take() else {
                    return Flow::Continue;
                };
                match authenticate_data {
                    AuthenticateData::Cancel => {
                        let _ = self
                            .server
                            .authenticate_finish(status_bad(Some(tag), "AUTHENTICATE cancelled"));
                    }
                    AuthenticateData::Continue(data) => {
                        let outcome = self
                            .ctx
                            .logins
                            .check_plain(self.remote.ip(), data.declassify())
                            .await;
                        self.finish_login(tag, outcome, true);
                    }
                }
                Flow::Continue
            }
            Event::IdleCommandReceived { tag } => {
                if self.user.is_none() {
                    let _ = self.server.idle_reject(status_no(tag, "Log in first"));
                    return Flow::Continue;
                }
                let go_ahead = CommandContinuationRequest::basic(None, "idling")
                    .unwrap_or_else(|_| unreachable!("a fixed, valid continuation text"));
                if self.server.idle_accept(go_ahead).is_ok() {
                    self.idle_tag = Some(tag);
                    // Anything that happened before IDLE began is told at once.
                    self.send_updates(true);
                }
                Flow::Continue
            }
            Event::IdleDoneReceived => {
                if let Some(tag) = self.idle_tag.take() {
                    self.send_updates(true);
                    self.server
                        .enqueue_status(status_ok(Some(tag), None, "IDLE terminated"));
                }
                Flow::Continue
            }
            Event::CommandReceived { command } => self.command(command).await,
        }
    }

    fn finish_login(&mut self, tag: Tag<'static>, outcome: LoginOutcome, sasl: bool) {
        let status = match outcome {
            LoginOutcome::Accepted(account) => match self.ctx.mailboxes.open(&account) {
                Ok(mailbox) => {
                    tracing::info!(remote = %self.remote, account = %account, "IMAP login");
                    let changes = self.ctx.mailboxes.events().subscribe(&account);
                    self.user = Some(User {
                        account,
                        mailbox,
                        changes,
                    });
                    self.guard.logged_in();
                    if let Some(admission) = &self.admission {
                        admission.logged_in();
                    }
                    status_ok(
                        Some(tag),
                        Some(Code::Capability(self.capabilities())),
                        "Logged in",
                    )
                }
                Err(e) => status_no(tag, &error_text(&e)),
            },
            LoginOutcome::Rejected => status_no(tag, "[AUTHENTICATIONFAILED] Invalid credentials"),
            LoginOutcome::Throttled => {
                status_no(tag, "[UNAVAILABLE] Too many failed logins; try again later")
            }
        };
        if sasl {
            let _ = self.server.authenticate_finish(status);
        } else {
            self.server.enqueue_status(status);
        }
    }

    /// Ends the command in progress with `status` (sent after its untagged updates).
    pub(super) fn done(&mut self, status: Status<'static>) {
        self.completion = Some(status);
    }

    pub(super) fn ok(&mut self, tag: Tag<'static>, msg: &str) {
        self.done(status_ok(Some(tag), None, msg));
    }

    pub(super) fn no(&mut self, tag: Tag<'static>, msg: &str) {
        self.done(status_no(tag, msg));
    }

    async fn command(&mut self, command: Command<'static>) -> Flow {
        let flow = self.command_body(command).await;
        if let Some(status) = self.completion.take() {
            self.server.enqueue_status(status);
        }
        flow
    }

    async fn command_body(&mut self, command: Command<'static>) -> Flow {
        let Command { tag, body } = command;
        // Commands any state takes.
        match body {
            CommandBody::Capability => {
                self.server
                    .enqueue_data(Data::Capability(self.capabilities()));
                self.ok(tag, "CAPABILITY completed");
                return Flow::Continue;
            }
            CommandBody::Noop => {
                crate::blocking::run_here(|| self.send_updates(true));
                self.ok(tag, "NOOP completed");
                return Flow::Continue;
            }
            CommandBody::Logout => {
                self.server.enqueue_status(
                    Status::bye(None, "Logging out").unwrap_or_else(|_| unreachable!()),
                );
                let handle =
                    self.server
                        .enqueue_status(status_ok(Some(tag), None, "LOGOUT completed"));
                self.send_through(handle).await;
                return Flow::Logout;
            }
            CommandBody::Id { .. } => {
                let pairs = [
                    ("name", "ferrymail"),
                    ("version", env!("CARGO_PKG_VERSION")),
                ];
                let parameters = pairs
                    .iter()
                    .filter_map(|(k, v)| {
                        Some((IString::try_from(*k).ok()?, NString::try_from(*v).ok()?))
                    })
                    .collect();
                self.server.enqueue_data(Data::Id {
                    parameters: Some(parameters),
                });
                self.ok(tag, "ID completed");
                return Flow::Continue;
            }
            CommandBody::StartTLS => {
                if self.tls || self.ctx.tls.is_none() {
                    self.done(status_bad(Some(tag), "TLS is not available here"));
                    return Flow::Continue;
                }
                let handle = self.server.enqueue_status(status_ok(
                    Some(tag),
                    None,
                    "Begin TLS negotiation now",
                ));
                return if self.send_through(handle).await {
                    Flow::StartTls
                } else {
                    Flow::Logout
                };
            }
            CommandBody::Login { username, password } => {
                if self.user.is_some() {
                    self.done(status_bad(Some(tag), "Already logged in"));
                } else if !self.login_allowed() {
                    self.no(tag, "[PRIVACYREQUIRED] LOGIN is disabled until STARTTLS");
                } else {
                    let user = String::from_utf8_lossy(username.as_ref()).into_owned();
                    let pass = String::from_utf8_lossy(password.declassify().as_ref()).into_owned();
                    let outcome = self.ctx.logins.check(self.remote.ip(), &user, &pass).await;
                    self.finish_login(tag, outcome, false);
                }
                return Flow::Continue;
            }
            CommandBody::Compress { .. } if self.user.is_some() => {
                if self.io.is_compressed() {
                    self.no(tag, "[COMPRESSIONACTIVE] DEFLATE is already on");
                    return Flow::Continue;
                }
                // The OK goes out plain; everything after it, both ways, is DEFLATE.
                let handle =
                    self.server
                        .enqueue_status(status_ok(Some(tag), None, "DEFLATE active"));
                if !self.send_through(handle).await {
                    return Flow::Logout;
                }
                self.io.compress();
                return Flow::Continue;
            }
            other if self.user.is_none() => {
                let _ = other;
                self.no(tag, "Log in first");
                return Flow::Continue;
            }
            body => {
                let name = body.name();
                // A message of megabytes: its memory goes back once it is stored.
                let large = match &body {
                    CommandBody::Append { message, .. } => {
                        let len = match message {
                            LiteralOrLiteral8::Literal(l) => l.data().len(),
                            LiteralOrLiteral8::Literal8(l) => l.data.len(),
                        };
                        len >= LARGE_MESSAGE
                    }
                    _ => false,
                };
                // One hand-over of the worker thread for the command and its catch-up
                // together (each costs a thread wake-up), none for a short read.
                let short = self.is_short(&body);
                let started = std::time::Instant::now();
                let work = || {
                    let result = self.authenticated(tag.clone(), body);
                    if let Err(e) = result {
                        tracing::debug!(command = name, error = %e, "IMAP command failed");
                        self.no(tag, &error_text(&e));
                    }
                    // What changed meanwhile goes out before the tagged completion;
                    // expunges wait while FETCH, STORE and SEARCH (RFC 3501 §7.4.1), and
                    // SORT and THREAD like it, answer in sequence numbers the client must
                    // be able to trust (the UID forms share the names, and wait too).
                    let expunges =
                        !matches!(name, "FETCH" | "STORE" | "SEARCH" | "SORT" | "THREAD");
                    self.send_updates(expunges);
                    // So does a long command's (a whole folder fetched or searched):
                    // the allocator would keep it for the next one, an idle session has none.
                    if large || started.elapsed() >= LONG_COMMAND {
                        crate::trim::give_back();
                    }
                };
                if short {
                    crate::blocking::run_here(work);
                } else {
                    crate::blocking::run(work);
                }
            }
        }
        Flow::Continue
    }

    pub(super) fn user(&mut self) -> &mut User {
        self.user
            .as_mut()
            .unwrap_or_else(|| unreachable!("checked before authenticated commands"))
    }

    pub(super) fn folder_named(
        &mut self,
        mailbox: &WireMailbox<'_>,
    ) -> Result<Folder, MailboxError> {
        let name =
            wire_name(mailbox, self.utf8).ok_or(MailboxError::Refused("Invalid folder name"))?;
        self.user()
            .mailbox
            .folder(&name)?
            .ok_or(MailboxError::NoFolder(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_patterns() {
        let m = |p: &str, n: &str| {
            pattern_matches(
                &p.chars().collect::<Vec<_>>(),
                &n.chars().collect::<Vec<_>>(),
            )
        };
        assert!(m("*", "a/b"));
        assert!(m("%", "a"));
        assert!(!m("%", "a/b"));
        assert!(m("a/%", "a/b"));
        assert!(m("INBOX", "INBOX"));
        assert!(!m("Sent", "Sent/x"));
        assert!(m("*b", "a/b"));
        assert!(m("a%c", "abc"));
        assert!(!m("a%c", "a/c"));
        assert!(m("", ""));
        assert!(!m("", "a"));
        // A pattern that backtracks exponentially, against a long name: answered at once.
        let name = "d/".repeat(2500) + "y";
        assert!(!m("*d*d*d*d*d*d*d*d*x", &name));
        assert!(m("*d*d*d*d*d*d*d*d*y", &name));
    }

    #[test]
    fn uid_sets_are_compressed() {
        let set = uid_set(&[1, 2, 3, 5, 7, 8]).unwrap();
        assert_eq!(set.0.as_ref().len(), 3);
        assert!(uid_set(&[]).is_none());
    }
}

//! One IMAP connection: login, the commands of the authenticated and selected states,
//! IDLE, and the untagged updates that keep the client's view in step with the store.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use imap_next::imap_types::IntoStatic;
use imap_next::imap_types::auth::{AuthMechanism, AuthenticateData};
use imap_next::imap_types::command::{
    Command, CommandBody, FetchModifier, SelectParameter, StoreModifier,
};
use imap_next::imap_types::core::{AString, Atom, IString, NString, QuotedChar, Tag, Vec1};
use imap_next::imap_types::extensions::enable::CapabilityEnable;
use imap_next::imap_types::extensions::namespace::Namespace;
use imap_next::imap_types::extensions::quota::{QuotaGet, Resource};
use imap_next::imap_types::extensions::uidplus::{UidElement, UidSet};
use imap_next::imap_types::fetch::{
    MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName,
};
use imap_next::imap_types::flag::{Flag, FlagNameAttribute, FlagPerm, StoreResponse, StoreType};
use imap_next::imap_types::mailbox::{ListMailbox, Mailbox as WireMailbox};
use imap_next::imap_types::response::{
    Capability, Code, CommandContinuationRequest, Data, Greeting, Status,
};
use imap_next::imap_types::sequence::SequenceSet;
use imap_next::imap_types::status::{StatusDataItem, StatusDataItemName};
use imap_next::server::{Error as ProtocolError, Event, Options, ResponseHandle, Server};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use super::driver::{self, Step};
use super::listener::ImapContext;
use super::selected::Selected;
use super::{convert, fetch, mutf7, search};
use crate::login::Outcome as LoginOutcome;
use crate::mailbox::{FlagChange, Folder, Mailbox, MailboxError};

/// Largest APPEND (and command) a client may send.
const MAX_LITERAL: u32 = 64 * 1024 * 1024;
/// FETCH responses queued before they are written out, so a FETCH of a whole large
/// folder never sits in memory at once.
const FETCH_CHUNK: usize = 64;

pub enum Outcome<S> {
    Closed,
    /// STARTTLS was accepted: the caller wraps `S` in TLS and starts a new session.
    StartTls(S),
}

struct User {
    account: String,
    mailbox: Mailbox,
    changes: watch::Receiver<u64>,
}

pub struct Session<S> {
    ctx: Arc<ImapContext>,
    io: S,
    server: Server,
    remote: SocketAddr,
    tls: bool,
    buf: Vec<u8>,
    /// Responses encoded but not yet written (see driver::next).
    pending: Vec<u8>,
    user: Option<User>,
    selected: Option<Selected>,
    auth_tag: Option<Tag<'static>>,
    idle_tag: Option<Tag<'static>>,
    condstore: bool,
}

enum Flow {
    Continue,
    Logout,
    StartTls,
}

fn options() -> Options {
    let mut options = Options::default();
    options.max_literal_size = MAX_LITERAL;
    options.max_command_size = MAX_LITERAL + 64 * 1024;
    options
}

/// Text for a status line: printable ASCII, never empty.
fn text(s: &str) -> String {
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

fn status_ok(tag: Option<Tag<'static>>, code: Option<Code<'static>>, msg: &str) -> Status<'static> {
    Status::ok(tag.clone(), code, text(msg))
        .or_else(|_| Status::ok(tag, None, "done"))
        .unwrap_or_else(|_| unreachable!("a plain OK is always valid"))
}

fn status_no(tag: Tag<'static>, msg: &str) -> Status<'static> {
    Status::no(Some(tag.clone()), None, text(msg))
        .or_else(|_| Status::no(Some(tag), None, "failed"))
        .unwrap_or_else(|_| unreachable!("a plain NO is always valid"))
}

fn status_bad(tag: Option<Tag<'static>>, msg: &str) -> Status<'static> {
    Status::bad(tag.clone(), None, text(msg))
        .or_else(|_| Status::bad(tag, None, "bad"))
        .unwrap_or_else(|_| unreachable!("a plain BAD is always valid"))
}

fn wire_name(mailbox: &WireMailbox<'_>) -> Option<String> {
    match mailbox {
        WireMailbox::Inbox => Some("INBOX".into()),
        WireMailbox::Other(o) => mutf7::decode(o.as_ref()),
    }
}

fn to_wire(name: &str) -> Option<WireMailbox<'static>> {
    WireMailbox::try_from(mutf7::encode(name)).ok()
}

/// LIST pattern matching (RFC 3501 §6.3.8): `*` matches anything, `%` anything but the
/// hierarchy delimiter.
fn pattern_matches(pattern: &[char], name: &[char]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some(('*', rest)) => (0..=name.len()).any(|i| pattern_matches(rest, &name[i..])),
        Some(('%', rest)) => {
            let stop = name.iter().position(|&c| c == '/').unwrap_or(name.len());
            (0..=stop).any(|i| pattern_matches(rest, &name[i..]))
        }
        Some((p, rest)) => name.first() == Some(p) && pattern_matches(rest, &name[1..]),
    }
}

fn uid_set(uids: &[u32]) -> Option<UidSet> {
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

fn error_text(e: &MailboxError) -> String {
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
        let mut session = Session {
            ctx,
            io,
            server: Server::new(
                options(),
                Greeting::ok(None, "unused").unwrap_or_else(|_| unreachable!()),
            ),
            remote,
            tls,
            buf: vec![0u8; 64 * 1024],
            pending: Vec::new(),
            user: None,
            selected: None,
            auth_tag: None,
            idle_tag: None,
            condstore: false,
        };
        let ready = format!("{} ferrymail IMAP ready", text(&session.ctx.hostname));
        let greeting = Greeting::ok(
            Some(Code::Capability(session.capabilities())),
            ready.as_str(),
        )
        .map(|g| g.into_static())
        .or_else(|_| Greeting::ok(None, "ferrymail IMAP ready"))
        .unwrap_or_else(|_| unreachable!());
        session.server = Server::new(options(), greeting);
        if !greet {
            // imap-next always queues a greeting; after STARTTLS none may be sent.
            while let Err(imap_next::Interrupt::Io(imap_next::Io::Output(_))) =
                imap_next::State::next(&mut session.server)
            {}
        }
        session
    }

    fn capabilities(&self) -> Vec1<Capability<'static>> {
        let mut caps = vec![
            Capability::Imap4Rev1,
            Capability::LiteralPlus,
            Capability::SaslIr,
        ];
        let other = |s: &str| Capability::try_from(s.to_string()).ok();
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
                Capability::Quota,
            ]);
            caps.extend(
                ["SPECIAL-USE", "CHILDREN", "QUOTA=RES-STORAGE"]
                    .into_iter()
                    .filter_map(other),
            );
        } else {
            caps.push(Capability::Id);
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
                &mut self.pending,
                watch,
            )
            .await;
            let flow = match step {
                Step::Closed => return Outcome::Closed,
                Step::Changed => {
                    self.updates(true, true);
                    Flow::Continue
                }
                Step::Protocol(e) => {
                    self.protocol_error(e);
                    Flow::Continue
                }
                Step::Event(event) => self.event(event).await,
            };
            match flow {
                Flow::Continue => {}
                Flow::Logout => return Outcome::Closed,
                Flow::StartTls => return Outcome::StartTls(self.io),
            }
        }
    }

    fn protocol_error(&mut self, e: ProtocolError) {
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
                    return;
                }
                let raw: &[u8] = discarded_bytes.declassify();
                let tag = raw
                    .split(|&b| b == b' ')
                    .next()
                    .and_then(|t| Tag::try_from(t.to_vec()).ok());
                self.server
                    .enqueue_status(status_bad(tag, "Could not parse the command"));
            }
        }
    }

    /// Writes everything queued up to and including `handle`.
    async fn send_through(&mut self, handle: ResponseHandle) -> bool {
        loop {
            match driver::next(
                &mut self.io,
                &mut self.server,
                &mut self.buf,
                &mut self.pending,
                None,
            )
            .await
            {
                Step::Event(Event::ResponseSent { handle: sent, .. }) if sent == handle => {
                    return driver::flush(&mut self.io, &mut self.pending).await;
                }
                Step::Closed => return false,
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

    fn ok(&mut self, tag: Tag<'static>, msg: &str) {
        self.server.enqueue_status(status_ok(Some(tag), None, msg));
    }

    fn no(&mut self, tag: Tag<'static>, msg: &str) {
        self.server.enqueue_status(status_no(tag, msg));
    }

    async fn command(&mut self, command: Command<'static>) -> Flow {
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
                self.send_updates(true);
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
                    self.server
                        .enqueue_status(status_bad(Some(tag), "TLS is not available here"));
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
                    self.server
                        .enqueue_status(status_bad(Some(tag), "Already logged in"));
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
            other if self.user.is_none() => {
                let _ = other;
                self.no(tag, "Log in first");
                return Flow::Continue;
            }
            body => {
                let name = body.name();
                let result = crate::blocking::run(|| self.authenticated(tag.clone(), body));
                if let Err(e) = result {
                    tracing::debug!(command = name, error = %e, "IMAP command failed");
                    self.no(tag, &error_text(&e));
                }
                // Updates ride along after every command except those RFC 3501 §7.4.1 names.
                if !matches!(
                    name,
                    "FETCH" | "STORE" | "SEARCH" | "UID FETCH" | "UID STORE" | "UID SEARCH"
                ) {
                    self.send_updates(true);
                } else {
                    self.send_updates(false);
                }
            }
        }
        Flow::Continue
    }

    fn user(&mut self) -> &mut User {
        self.user
            .as_mut()
            .unwrap_or_else(|| unreachable!("checked before authenticated commands"))
    }

    fn folder_named(&mut self, mailbox: &WireMailbox<'_>) -> Result<Folder, MailboxError> {
        let name = wire_name(mailbox).ok_or(MailboxError::Refused("Invalid folder name"))?;
        self.user()
            .mailbox
            .folder(&name)?
            .ok_or(MailboxError::NoFolder(name))
    }

    /// Commands of the authenticated and selected states (blocking: the mailbox is SQLite).
    fn authenticated(
        &mut self,
        tag: Tag<'static>,
        body: CommandBody<'static>,
    ) -> Result<(), MailboxError> {
        match body {
            CommandBody::Select {
                mailbox,
                parameters,
            } => {
                self.select(tag, &mailbox, false, &parameters)?;
            }
            CommandBody::Examine {
                mailbox,
                parameters,
            } => {
                self.select(tag, &mailbox, true, &parameters)?;
            }
            CommandBody::Create { mailbox } => {
                let name =
                    wire_name(&mailbox).ok_or(MailboxError::Refused("Invalid folder name"))?;
                let name = name.trim_end_matches('/').to_string();
                self.user().mailbox.create_folder(&name)?;
                self.ok(tag, "CREATE completed");
            }
            CommandBody::Delete { mailbox } => {
                let folder = self.folder_named(&mailbox)?;
                if self
                    .selected
                    .as_ref()
                    .is_some_and(|s| s.folder.id == folder.id)
                {
                    self.selected = None;
                }
                self.user().mailbox.delete_folder(&folder.name)?;
                self.ok(tag, "DELETE completed");
            }
            CommandBody::Rename { from, to } => {
                let from = self.folder_named(&from)?;
                let to = wire_name(&to).ok_or(MailboxError::Refused("Invalid folder name"))?;
                self.user().mailbox.rename_folder(&from.name, &to)?;
                self.ok(tag, "RENAME completed");
            }
            CommandBody::Subscribe { mailbox } => {
                let folder = self.folder_named(&mailbox)?;
                self.user().mailbox.subscribe(&folder.name, true)?;
                self.ok(tag, "SUBSCRIBE completed");
            }
            CommandBody::Unsubscribe { mailbox } => {
                let name =
                    wire_name(&mailbox).ok_or(MailboxError::Refused("Invalid folder name"))?;
                self.user().mailbox.subscribe(&name, false)?;
                self.ok(tag, "UNSUBSCRIBE completed");
            }
            CommandBody::List {
                reference,
                mailbox_wildcard,
            } => {
                self.list(&reference, &mailbox_wildcard, false)?;
                self.ok(tag, "LIST completed");
            }
            CommandBody::Lsub {
                reference,
                mailbox_wildcard,
            } => {
                self.list(&reference, &mailbox_wildcard, true)?;
                self.ok(tag, "LSUB completed");
            }
            CommandBody::Status {
                mailbox,
                item_names,
            } => {
                let folder = self.folder_named(&mailbox)?;
                self.status(&folder, &mailbox, &item_names)?;
                self.ok(tag, "STATUS completed");
            }
            CommandBody::Append {
                mailbox,
                flags,
                date,
                message,
            } => {
                let folder = match self.folder_named(&mailbox) {
                    Ok(f) => f,
                    Err(MailboxError::NoFolder(_)) => {
                        self.no(tag, "[TRYCREATE] No such folder");
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                };
                let bytes: Vec<u8> = match &message {
                    imap_next::imap_types::extensions::binary::LiteralOrLiteral8::Literal(l) => {
                        l.data().to_vec()
                    }
                    imap_next::imap_types::extensions::binary::LiteralOrLiteral8::Literal8(l) => {
                        l.data.to_vec()
                    }
                };
                let flags: Vec<String> = flags.iter().map(convert::flag_name).collect();
                let when = date
                    .map(|d| d.as_ref().timestamp())
                    .unwrap_or_else(crate::queue::now_unix);
                let quota = self.quota_of_user();
                let (validity, uid) = self
                    .user()
                    .mailbox
                    .append(&folder, &bytes, &flags, when, quota)?;
                self.server.enqueue_status(status_ok(
                    Some(tag),
                    Some(Code::AppendUid {
                        uid_validity: convert::nz(validity),
                        uid: convert::nz(uid),
                    }),
                    "APPEND completed",
                ));
            }
            CommandBody::Namespace => {
                let personal = IString::try_from("")
                    .ok()
                    .map(|prefix| Namespace::new(prefix, QuotedChar::try_from('/').ok()));
                self.server.enqueue_data(Data::Namespace {
                    personal: personal.into_iter().collect(),
                    other: Vec::new(),
                    shared: Vec::new(),
                });
                self.ok(tag, "NAMESPACE completed");
            }
            CommandBody::Enable { capabilities } => {
                let mut enabled = Vec::new();
                for c in capabilities.as_ref() {
                    if matches!(c, CapabilityEnable::CondStore) {
                        self.condstore = true;
                        enabled.push(c.clone());
                    }
                }
                self.server.enqueue_data(Data::Enabled {
                    capabilities: enabled,
                });
                self.ok(tag, "ENABLE completed");
            }
            CommandBody::GetQuotaRoot { mailbox } => {
                self.folder_named(&mailbox)?;
                let root = AString::try_from("").unwrap_or_else(|_| unreachable!());
                self.server.enqueue_data(Data::QuotaRoot {
                    mailbox: mailbox.clone(),
                    roots: vec![root],
                });
                self.quota_data()?;
                self.ok(tag, "GETQUOTAROOT completed");
            }
            CommandBody::GetQuota { root } => {
                if !root.as_ref().is_empty() {
                    self.no(tag, "No such quota root");
                    return Ok(());
                }
                self.quota_data()?;
                self.ok(tag, "GETQUOTA completed");
            }
            CommandBody::SetQuota { .. } => {
                self.no(tag, "Quotas are set in the spec");
            }
            other if self.selected.is_none() => {
                let _ = other;
                self.server
                    .enqueue_status(status_bad(Some(tag), "No folder selected"));
            }
            other => self.selected_command(tag, other)?,
        }
        Ok(())
    }

    fn quota_of_user(&mut self) -> Option<u64> {
        let account = self.user().account.clone();
        self.ctx
            .snapshot
            .get()
            .accounts
            .get(&account)
            .and_then(|a| a.quota)
    }

    fn quota_data(&mut self) -> Result<(), MailboxError> {
        let used = self.user().mailbox.quota_used()?;
        let Some(limit) = self.quota_of_user() else {
            return Ok(());
        };
        let root = AString::try_from("").unwrap_or_else(|_| unreachable!());
        self.server.enqueue_data(Data::Quota {
            root,
            quotas: Vec1::from(QuotaGet::new(
                Resource::Storage,
                used.div_ceil(1024),
                limit / 1024,
            )),
        });
        Ok(())
    }

    fn list(
        &mut self,
        reference: &WireMailbox<'_>,
        wildcard: &ListMailbox<'_>,
        subscribed_only: bool,
    ) -> Result<(), MailboxError> {
        let reference = match reference {
            WireMailbox::Inbox => "INBOX".to_string(),
            WireMailbox::Other(o) => mutf7::decode(o.as_ref()).unwrap_or_default(),
        };
        let pattern = match wildcard {
            ListMailbox::Token(t) => mutf7::decode(t.as_ref()),
            ListMailbox::String(s) => mutf7::decode(s.as_ref()),
        }
        .unwrap_or_default();
        let delimiter = QuotedChar::try_from('/').ok();
        if pattern.is_empty() {
            // The hierarchy delimiter and root (RFC 3501 §6.3.8).
            self.server.enqueue_data(Data::List {
                items: vec![FlagNameAttribute::Noselect],
                delimiter,
                mailbox: WireMailbox::try_from("").unwrap_or(WireMailbox::Inbox),
            });
            return Ok(());
        }
        let full: Vec<char> = format!("{reference}{pattern}").chars().collect();
        let folders = self.user().mailbox.folders()?;
        for folder in &folders {
            if subscribed_only && !folder.subscribed {
                continue;
            }
            let name: Vec<char> = folder.name.chars().collect();
            let inbox_match = folder.name == "INBOX"
                && pattern_matches(
                    &full
                        .iter()
                        .map(|c| c.to_ascii_uppercase())
                        .collect::<Vec<_>>(),
                    &name,
                );
            if !(pattern_matches(&full, &name) || inbox_match) {
                continue;
            }
            let children = folders
                .iter()
                .any(|f| f.name.starts_with(&format!("{}/", folder.name)));
            let mut items = Vec::new();
            let atom = |s: &str| {
                Atom::try_from(s.to_string())
                    .ok()
                    .map(FlagNameAttribute::from)
            };
            items.extend(atom(if children {
                "HasChildren"
            } else {
                "HasNoChildren"
            }));
            if !subscribed_only && folder.subscribed {
                items.extend(atom("Subscribed"));
            }
            if let Some(role) = &folder.special_use {
                items.extend(atom(role.trim_start_matches('\\')));
            }
            let Some(mailbox) = to_wire(&folder.name) else {
                continue;
            };
            let data = if subscribed_only {
                Data::Lsub {
                    items,
                    delimiter,
                    mailbox,
                }
            } else {
                Data::List {
                    items,
                    delimiter,
                    mailbox,
                }
            };
            self.server.enqueue_data(data);
        }
        Ok(())
    }

    fn status(
        &mut self,
        folder: &Folder,
        wire: &WireMailbox<'static>,
        names: &[StatusDataItemName],
    ) -> Result<(), MailboxError> {
        let messages = self.user().mailbox.messages(folder)?;
        let folder = self.user().mailbox.refresh(folder)?;
        let mut items = Vec::new();
        for name in names {
            items.push(match name {
                StatusDataItemName::Messages => StatusDataItem::Messages(messages.len() as u32),
                StatusDataItemName::Recent => StatusDataItem::Recent(0),
                StatusDataItemName::UidNext => StatusDataItem::UidNext(convert::nz(folder.uidnext)),
                StatusDataItemName::UidValidity => {
                    StatusDataItem::UidValidity(convert::nz(folder.uidvalidity))
                }
                StatusDataItemName::Unseen => StatusDataItem::Unseen(
                    messages.iter().filter(|m| !m.has("\\Seen")).count() as u32,
                ),
                StatusDataItemName::Deleted => StatusDataItem::Deleted(
                    messages.iter().filter(|m| m.has("\\Deleted")).count() as u32,
                ),
                StatusDataItemName::HighestModSeq => {
                    StatusDataItem::HighestModSeq(folder.highestmodseq)
                }
                _ => continue,
            });
        }
        self.server.enqueue_data(Data::Status {
            mailbox: wire.clone(),
            items: Cow::Owned(items),
        });
        Ok(())
    }

    fn select(
        &mut self,
        tag: Tag<'static>,
        mailbox: &WireMailbox<'_>,
        examine: bool,
        parameters: &[SelectParameter],
    ) -> Result<(), MailboxError> {
        self.selected = None;
        let folder = match self.folder_named(mailbox) {
            Ok(f) => f,
            Err(e) => {
                self.no(tag, &error_text(&e));
                return Ok(());
            }
        };
        if parameters
            .iter()
            .any(|p| matches!(p, SelectParameter::CondStore))
        {
            self.condstore = true;
        }
        // What happened before this point is in the view read now.
        self.user().changes.borrow_and_update();
        let view = self.user().mailbox.messages(&folder)?;
        let system = [
            Flag::Answered,
            Flag::Flagged,
            Flag::Deleted,
            Flag::Seen,
            Flag::Draft,
        ];
        let mut keywords: Vec<String> = view
            .iter()
            .flat_map(|m| m.flags.iter().cloned())
            .filter(|f| !f.starts_with('\\'))
            .collect();
        keywords.sort();
        keywords.dedup();
        let mut flags: Vec<Flag<'static>> = system.to_vec();
        flags.extend(keywords.iter().filter_map(|k| convert::flag(k)));
        self.server.enqueue_data(Data::Flags(flags.clone()));
        self.server.enqueue_data(Data::Exists(view.len() as u32));
        self.server.enqueue_data(Data::Recent(0));
        let mut perm: Vec<FlagPerm<'static>> = flags.into_iter().map(FlagPerm::Flag).collect();
        perm.push(FlagPerm::Asterisk);
        let untagged = |code: Code<'static>, msg: &str| status_ok(None, Some(code), msg);
        if let Some(first_unseen) = view.iter().position(|m| !m.has("\\Seen")) {
            self.server.enqueue_status(untagged(
                Code::Unseen(convert::nz(first_unseen as u32 + 1)),
                "First unseen",
            ));
        }
        self.server.enqueue_status(untagged(
            Code::UidValidity(convert::nz(folder.uidvalidity)),
            "UIDs valid",
        ));
        self.server.enqueue_status(untagged(
            Code::UidNext(convert::nz(folder.uidnext)),
            "Predicted next UID",
        ));
        if let Some(m) = std::num::NonZeroU64::new(folder.highestmodseq) {
            self.server
                .enqueue_status(untagged(Code::HighestModSeq(m), "Highest"));
        }
        if !examine {
            self.server
                .enqueue_status(untagged(Code::PermanentFlags(perm), "Flags permitted"));
        } else {
            self.server
                .enqueue_status(untagged(Code::PermanentFlags(Vec::new()), "Read-only"));
        }
        self.selected = Some(Selected {
            folder,
            read_only: examine,
            view,
            held_expunges: false,
        });
        let code = if examine {
            Code::ReadOnly
        } else {
            Code::ReadWrite
        };
        let done = if examine {
            "EXAMINE completed"
        } else {
            "SELECT completed"
        };
        self.server
            .enqueue_status(status_ok(Some(tag), Some(code), done));
        Ok(())
    }

    /// Tells the client what changed in its selected folder since it last heard.
    fn send_updates(&mut self, expunges: bool) {
        self.updates(expunges, false);
    }

    /// `woken`: the IDLE wait already took the change notice, so look regardless.
    fn updates(&mut self, expunges: bool, woken: bool) {
        let (Some(user), Some(selected)) = (self.user.as_mut(), self.selected.as_mut()) else {
            return;
        };
        // Only when something changed (here or elsewhere) since the last look, or an
        // expunge is still to be told: SELECT of 10,000 messages is not re-read per command.
        let changed = woken || user.changes.has_changed().unwrap_or(false);
        if !changed && !selected.held_expunges {
            return;
        }
        user.changes.borrow_and_update();
        let now = match crate::blocking::run(|| user.mailbox.messages(&selected.folder)) {
            Ok(now) => now,
            Err(e) => {
                tracing::debug!(error = %e, "IMAP update failed");
                return;
            }
        };
        let changes = selected.catch_up(now, expunges);
        for seq in &changes.expunged {
            self.server.enqueue_data(Data::Expunge(convert::nz(*seq)));
        }
        if let Some(n) = changes.exists {
            self.server.enqueue_data(Data::Exists(n));
        }
        for seq in &changes.flags {
            let Some(info) = selected.view.get(*seq as usize - 1) else {
                continue;
            };
            let mut items = vec![
                MessageDataItem::Flags(convert::flags(&info.flags)),
                MessageDataItem::Uid(convert::nz(info.uid)),
            ];
            if self.condstore
                && let Some(m) = std::num::NonZeroU64::new(info.modseq)
            {
                items.push(MessageDataItem::ModSeq(m));
            }
            if let Ok(items) = Vec1::try_from(items) {
                self.server.enqueue_data(Data::Fetch {
                    seq: convert::nz(*seq),
                    items,
                });
            }
        }
    }

    fn selected_command(
        &mut self,
        tag: Tag<'static>,
        body: CommandBody<'static>,
    ) -> Result<(), MailboxError> {
        match body {
            CommandBody::Check => self.ok(tag, "CHECK completed"),
            CommandBody::Close => {
                if let Some(selected) = self.selected.take()
                    && !selected.read_only
                {
                    self.user().mailbox.expunge(&selected.folder, None)?;
                }
                self.ok(tag, "CLOSE completed");
            }
            CommandBody::Unselect => {
                self.selected = None;
                self.ok(tag, "UNSELECT completed");
            }
            CommandBody::Expunge => self.expunge(tag, None)?,
            CommandBody::ExpungeUid { sequence_set } => self.expunge(tag, Some(&sequence_set))?,
            CommandBody::Fetch {
                sequence_set,
                macro_or_item_names,
                uid,
                modifiers,
            } => {
                let names: Vec<MessageDataItemName<'static>> = match macro_or_item_names {
                    MacroOrMessageDataItemNames::Macro(m) => {
                        m.expand().into_iter().map(|n| n.into_static()).collect()
                    }
                    MacroOrMessageDataItemNames::MessageDataItemNames(names) => names,
                };
                // CONDSTORE (RFC 7162 §3.1.4): only what changed since the client's MODSEQ.
                let changed_since = modifiers.iter().find_map(|m| match m {
                    FetchModifier::ChangedSince(n) => Some(n.get()),
                    _ => None,
                });
                if changed_since.is_some() {
                    self.condstore = true;
                }
                self.fetch(tag, &sequence_set, names, uid, changed_since)?;
            }
            CommandBody::Store {
                sequence_set,
                kind,
                response,
                flags,
                uid,
                modifiers,
            } => {
                let unchanged_since = modifiers
                    .iter()
                    .map(|StoreModifier::UnchangedSince(m)| *m)
                    .next();
                self.store(
                    tag,
                    &sequence_set,
                    kind,
                    response,
                    &flags,
                    uid,
                    unchanged_since,
                )?;
            }
            CommandBody::Copy {
                sequence_set,
                mailbox,
                uid,
            } => self.copy(tag, &sequence_set, &mailbox, uid, false)?,
            CommandBody::Move {
                sequence_set,
                mailbox,
                uid,
            } => self.copy(tag, &sequence_set, &mailbox, uid, true)?,
            CommandBody::Search {
                charset,
                criteria,
                uid,
            } => {
                if let Some(c) = charset {
                    let name = match &c {
                        imap_next::imap_types::core::Charset::Atom(a) => a.as_ref().to_string(),
                        imap_next::imap_types::core::Charset::Quoted(q) => q.as_ref().to_string(),
                    };
                    if !name.eq_ignore_ascii_case("UTF-8") && !name.eq_ignore_ascii_case("US-ASCII")
                    {
                        self.no(tag, "[BADCHARSET (UTF-8 US-ASCII)] Unsupported charset");
                        return Ok(());
                    }
                }
                self.search(tag, criteria.as_ref(), uid)?;
            }
            other => {
                self.server.enqueue_status(status_bad(
                    Some(tag),
                    &format!("{} is not supported", other.name()),
                ));
            }
        }
        Ok(())
    }

    fn selected(&self) -> &Selected {
        self.selected
            .as_ref()
            .unwrap_or_else(|| unreachable!("checked before selected-state commands"))
    }

    fn expunge(
        &mut self,
        tag: Tag<'static>,
        uids: Option<&SequenceSet>,
    ) -> Result<(), MailboxError> {
        if self.selected().read_only {
            self.no(tag, "The folder is read-only");
            return Ok(());
        }
        let folder = self.selected().folder.clone();
        let only: Option<Vec<u32>> = uids.map(|set| {
            let s = self.selected();
            s.resolve(set, true)
                .into_iter()
                .map(|i| s.view[i].uid)
                .collect()
        });
        self.user().mailbox.expunge(&folder, only.as_deref())?;
        self.send_updates(true);
        self.ok(tag, "EXPUNGE completed");
        Ok(())
    }

    fn fetch(
        &mut self,
        tag: Tag<'static>,
        set: &SequenceSet,
        names: Vec<MessageDataItemName<'static>>,
        uid: bool,
        changed_since: Option<u64>,
    ) -> Result<(), MailboxError> {
        let mut targets = self.selected().resolve(set, uid);
        if let Some(since) = changed_since {
            let view = &self.selected().view;
            targets.retain(|&i| view[i].modseq > since);
        }
        let mut names = names;
        if self.condstore
            && !names
                .iter()
                .any(|n| matches!(n, MessageDataItemName::ModSeq))
            && (changed_since.is_some()
                || names
                    .iter()
                    .any(|n| matches!(n, MessageDataItemName::Flags)))
        {
            names.push(MessageDataItemName::ModSeq);
        }
        // Reading a body marks it \Seen (not in EXAMINE, not with .PEEK).
        if fetch::sets_seen(&names) && !self.selected().read_only {
            let folder = self.selected().folder.clone();
            let unseen: Vec<u32> = targets
                .iter()
                .map(|&i| &self.selected().view[i])
                .filter(|m| !m.has("\\Seen"))
                .map(|m| m.uid)
                .collect();
            if !unseen.is_empty() {
                let (changed, _) = self.user().mailbox.set_flags(
                    &folder,
                    &unseen,
                    FlagChange::Add,
                    &["\\Seen".into()],
                    None,
                )?;
                let selected = self.selected.as_mut().unwrap_or_else(|| unreachable!());
                for fresh in changed {
                    if let Some(m) = selected.view.iter_mut().find(|m| m.uid == fresh.uid) {
                        *m = fresh;
                    }
                }
                if !names
                    .iter()
                    .any(|n| matches!(n, MessageDataItemName::Flags))
                {
                    names.push(MessageDataItemName::Flags);
                }
            }
        }
        let (need_body, need_meta) = fetch::needs_of(&names);
        let envelope_only = !need_body
            && !names.iter().any(|n| {
                matches!(
                    n,
                    MessageDataItemName::BodyStructure | MessageDataItemName::Body
                )
            });
        for chunk in targets.chunks(FETCH_CHUNK) {
            let (bodies, metas) = {
                let user = self.user.as_ref().unwrap_or_else(|| unreachable!());
                let selected = self.selected.as_ref().unwrap_or_else(|| unreachable!());
                let uids: Vec<u32> = chunk.iter().map(|&i| selected.view[i].uid).collect();
                load(
                    &user.mailbox,
                    &selected.folder,
                    &uids,
                    need_body,
                    need_meta,
                    envelope_only,
                )?
            };
            let mut last = None;
            for &i in chunk {
                let selected = self.selected.as_ref().unwrap_or_else(|| unreachable!());
                let info = &selected.view[i];
                // Expunged by another session meanwhile: nothing to say about it yet.
                let body = bodies.get(&info.uid);
                let meta = metas.get(&info.uid);
                if (need_body && body.is_none()) || (need_meta && meta.is_none()) {
                    continue;
                }
                let items = fetch::items(info, &names, uid, body.map(Vec::as_slice), meta);
                if let Ok(items) = Vec1::try_from(items) {
                    last = Some(self.server.enqueue_data(Data::Fetch {
                        seq: convert::nz(i as u32 + 1),
                        items,
                    }));
                }
            }
            if let Some(handle) = last {
                // Write out this chunk before building the next (bounded memory); a
                // client that went away gets no more (the session loop then ends).
                if !tokio::runtime::Handle::current().block_on(self.send_through(handle)) {
                    return Ok(());
                }
            }
        }
        self.ok(
            tag,
            if uid {
                "UID FETCH completed"
            } else {
                "FETCH completed"
            },
        );
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn store(
        &mut self,
        tag: Tag<'static>,
        set: &SequenceSet,
        kind: StoreType,
        response: StoreResponse,
        flags: &[Flag<'static>],
        uid: bool,
        unchanged_since: Option<u64>,
    ) -> Result<(), MailboxError> {
        if self.selected().read_only {
            self.no(tag, "The folder is read-only");
            return Ok(());
        }
        let folder = self.selected().folder.clone();
        let targets: Vec<u32> = {
            let s = self.selected();
            s.resolve(set, uid)
                .into_iter()
                .map(|i| s.view[i].uid)
                .collect()
        };
        let change = match kind {
            StoreType::Add => FlagChange::Add,
            StoreType::Remove => FlagChange::Remove,
            StoreType::Replace => FlagChange::Replace,
        };
        let names: Vec<String> = flags.iter().map(convert::flag_name).collect();
        let (changed, refused) =
            self.user()
                .mailbox
                .set_flags(&folder, &targets, change, &names, unchanged_since)?;
        let condstore = self.condstore || unchanged_since.is_some();
        let selected = self.selected.as_mut().unwrap_or_else(|| unreachable!());
        let position: std::collections::HashMap<u32, usize> = selected
            .view
            .iter()
            .enumerate()
            .map(|(i, m)| (m.uid, i))
            .collect();
        let silent = response == StoreResponse::Silent;
        let mut untagged = Vec::new();
        let mut reported = std::collections::HashSet::new();
        for fresh in changed {
            let Some(&pos) = position.get(&fresh.uid) else {
                continue;
            };
            selected.view[pos] = fresh.clone();
            // .SILENT says nothing, except the new MODSEQ under CONDSTORE (RFC 7162 §3.2).
            if silent && !condstore {
                continue;
            }
            let mut items = Vec::new();
            if !silent {
                items.push(MessageDataItem::Flags(convert::flags(&fresh.flags)));
            }
            if uid || condstore {
                items.push(MessageDataItem::Uid(convert::nz(fresh.uid)));
            }
            if condstore && let Some(m) = std::num::NonZeroU64::new(fresh.modseq) {
                items.push(MessageDataItem::ModSeq(m));
            }
            if let Ok(items) = Vec1::try_from(items) {
                reported.insert(fresh.uid);
                untagged.push(Data::Fetch {
                    seq: convert::nz(pos as u32 + 1),
                    items,
                });
            }
        }
        // Messages whose flags were already as asked are still reported (RFC 3501).
        if !silent {
            for &u in &targets {
                if reported.contains(&u) || refused.contains(&u) {
                    continue;
                }
                let Some(&pos) = position.get(&u) else {
                    continue;
                };
                let m = &selected.view[pos];
                let mut items = vec![MessageDataItem::Flags(convert::flags(&m.flags))];
                if uid {
                    items.push(MessageDataItem::Uid(convert::nz(m.uid)));
                }
                if let Ok(items) = Vec1::try_from(items) {
                    untagged.push(Data::Fetch {
                        seq: convert::nz(pos as u32 + 1),
                        items,
                    });
                }
            }
        }
        for data in untagged {
            self.server.enqueue_data(data);
        }
        let code = if refused.is_empty() {
            None
        } else {
            let numbers: Vec<String> = refused
                .iter()
                .filter_map(|u| {
                    if uid {
                        Some(u.to_string())
                    } else {
                        position.get(u).map(|p| (p + 1).to_string())
                    }
                })
                .collect();
            SequenceSet::try_from(numbers.join(",").as_str())
                .ok()
                .map(Code::Modified)
        };
        self.server.enqueue_status(status_ok(
            Some(tag),
            code,
            if uid {
                "UID STORE completed"
            } else {
                "STORE completed"
            },
        ));
        Ok(())
    }

    fn copy(
        &mut self,
        tag: Tag<'static>,
        set: &SequenceSet,
        mailbox: &WireMailbox<'_>,
        uid: bool,
        moving: bool,
    ) -> Result<(), MailboxError> {
        let to = match self.folder_named(mailbox) {
            Ok(f) => f,
            Err(MailboxError::NoFolder(_)) => {
                self.no(tag, "[TRYCREATE] No such folder");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if moving && self.selected().read_only {
            self.no(tag, "The folder is read-only");
            return Ok(());
        }
        let from = self.selected().folder.clone();
        let uids: Vec<u32> = {
            let s = self.selected();
            s.resolve(set, uid)
                .into_iter()
                .map(|i| s.view[i].uid)
                .collect()
        };
        let pairs = if moving {
            self.user().mailbox.move_messages(&from, &uids, &to)?
        } else {
            self.user().mailbox.copy(&from, &uids, &to)?
        };
        let source: Vec<u32> = pairs.iter().map(|p| p.0).collect();
        let dest: Vec<u32> = pairs.iter().map(|p| p.1).collect();
        let code = match (uid_set(&source), uid_set(&dest)) {
            (Some(source), Some(destination)) => Some(Code::CopyUid {
                uid_validity: convert::nz(to.uidvalidity),
                source,
                destination,
            }),
            _ => None,
        };
        if moving {
            // RFC 6851: COPYUID comes untagged, before the EXPUNGEs.
            if let Some(code) = code {
                self.server
                    .enqueue_status(status_ok(None, Some(code), "Moved"));
            }
            self.send_updates(true);
            self.ok(
                tag,
                if uid {
                    "UID MOVE completed"
                } else {
                    "MOVE completed"
                },
            );
        } else {
            self.server.enqueue_status(status_ok(
                Some(tag),
                code,
                if uid {
                    "UID COPY completed"
                } else {
                    "COPY completed"
                },
            ));
        }
        Ok(())
    }

    fn search(
        &mut self,
        tag: Tag<'static>,
        criteria: &[imap_next::imap_types::search::SearchKey<'static>],
        uid: bool,
    ) -> Result<(), MailboxError> {
        let user = self.user.as_ref().unwrap_or_else(|| unreachable!());
        let selected = self.selected.as_ref().unwrap_or_else(|| unreachable!());
        let largest_seq = selected.view.len() as u32;
        let largest_uid = selected.largest_uid();
        let mut found = Vec::new();
        let mut highest = 0u64;
        let uses_modseq = criteria
            .iter()
            .any(|k| format!("{k:?}").contains("ModSequence"));
        for (i, info) in selected.view.iter().enumerate() {
            let candidate = search::Candidate::new(
                &user.mailbox,
                &selected.folder,
                i as u32 + 1,
                info,
                largest_seq,
                largest_uid,
            );
            if criteria.iter().all(|k| search::matches(k, &candidate)) {
                found.push(convert::nz(if uid { info.uid } else { i as u32 + 1 }));
                highest = highest.max(info.modseq);
            }
        }
        let modseq = if uses_modseq {
            std::num::NonZeroU64::new(highest)
        } else {
            None
        };
        self.server.enqueue_data(Data::Search(found, modseq));
        self.ok(
            tag,
            if uid {
                "UID SEARCH completed"
            } else {
                "SEARCH completed"
            },
        );
        Ok(())
    }
}

/// The bytes and metadata a FETCH needs of `uids` (ascending): one range query when the
/// UIDs are close together, one query each when they are scattered.
type Loaded = (
    std::collections::HashMap<u32, Vec<u8>>,
    std::collections::HashMap<u32, crate::mailbox::meta::Meta>,
);

fn load(
    mailbox: &Mailbox,
    folder: &Folder,
    uids: &[u32],
    need_body: bool,
    need_meta: bool,
    envelope_only: bool,
) -> Result<Loaded, MailboxError> {
    let (mut bodies, mut metas) = (
        std::collections::HashMap::new(),
        std::collections::HashMap::new(),
    );
    let (Some(&first), Some(&last)) = (uids.first(), uids.last()) else {
        return Ok((bodies, metas));
    };
    let wanted: std::collections::HashSet<u32> = uids.iter().copied().collect();
    let dense = (last - first) as usize <= uids.len() * 4;
    if need_body {
        if dense {
            bodies.extend(
                mailbox
                    .bodies_between(folder, first, last)?
                    .into_iter()
                    .filter(|(u, _)| wanted.contains(u)),
            );
        } else {
            for &u in uids {
                if let Some(b) = mailbox.body(folder, u)? {
                    bodies.insert(u, b);
                }
            }
        }
    }
    if need_meta {
        if dense {
            metas.extend(
                mailbox
                    .metas_between(folder, first, last, envelope_only)?
                    .into_iter()
                    .filter(|(u, _)| wanted.contains(u)),
            );
        } else {
            for &u in uids {
                if let Some(m) = mailbox.meta(folder, u)? {
                    metas.insert(u, m);
                }
            }
        }
    }
    Ok((bodies, metas))
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
    }

    #[test]
    fn uid_sets_are_compressed() {
        let set = uid_set(&[1, 2, 3, 5, 7, 8]).unwrap();
        assert_eq!(set.0.as_ref().len(), 3);
        assert!(uid_set(&[]).is_none());
    }
}

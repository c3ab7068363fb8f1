//! One delivery's run of its scripts (the operator's, the declared vacation, the user's
//! own) as one Sieve program, answering the interpreter's questions and gathering what it
//! asks to be done; nothing is done here, so a script that fails changes nothing.

use std::sync::Arc;
use std::time::Duration;

use sieve::compiler::grammar::actions::action_redirect::Notify;
use sieve::runtime::RuntimeError;
use sieve::{Envelope, Event, Input, Recipient, Runtime, Script, Sieve, SpamStatus};

use super::compile::{allowed, compile};

/// Instructions one delivery's scripts may execute (sieve-rs counts each one), by the
/// size of the message: one instruction may scan a whole body, so a large message gets
/// fewer (Pigeonhole bounds CPU time instead; sieve-rs cannot be stopped mid-instruction).
const CPU_LIMITS: [(usize, usize); 3] = [(1 << 20, 20_000), (10 << 20, 5_000), (usize::MAX, 2_000)];
/// Redirects one message may cause; Dovecot's sieve_max_redirects is 4 too.
pub const MAX_REDIRECTS: usize = 4;
/// Messages one run may send (redirects and the vacation reply together).
const MAX_OUT_MESSAGES: usize = 6;
/// Folders one message may be filed in; Dovecot's sieve_max_actions is 32.
const MAX_STORES: usize = 32;
/// Messages one run may make (edited copies and replies): each is a whole message, and
/// editheader before every `keep` would otherwise make thousands.
const MAX_MADE: usize = 16;
/// A message that has passed this many hops is looping: never redirected or answered.
const MAX_RECEIVED: usize = 25;
/// Shortest time before the same sender may get a second reply (RFC 6131 lets a server
/// raise `:seconds`; Dovecot's own minimum is a day, which would make a test wait).
const MIN_REPLY_PERIOD: Duration = Duration::from_secs(3600);
/// Longest time an id is remembered: a script's `:days` or `:seconds` is a user's number.
const MAX_PERIOD: Duration = Duration::from_secs(366 * 86_400);

/// What runs for one mailbox: the operator's script and vacation (from the spec) first,
/// then the user's active script (ManageSieve), like Dovecot's sieve_before.
#[derive(Default, Clone)]
pub struct Scripts {
    pub operator: Option<Arc<Sieve>>,
    pub vacation: Option<Arc<Sieve>>,
    pub personal: Option<Arc<Sieve>>,
}

impl Scripts {
    pub fn is_empty(&self) -> bool {
        self.operator.is_none() && self.vacation.is_none() && self.personal.is_none()
    }
}

/// What a run asks of the mailbox it delivers to and of the server's memory.
pub trait Surroundings {
    /// Whether a folder of this name exists (the `mailboxexists` test).
    fn folder_exists(&mut self, name: &str) -> bool;
    /// Whether a folder marked with this special use exists (`specialuse_exists`).
    fn special_use_exists(&mut self, special_use: &str) -> bool;
    /// Whether `id` was remembered within `period`: the vacation responder's "once per
    /// sender" and the `duplicate` test. Nothing is remembered here: ids new to this run
    /// are in `Outcome::remember`, for delivery to record once the message is safe
    /// (RFC 7352 §3: only when the script completed; a retry must not find its own id).
    fn seen(&mut self, id: &str, period: Duration) -> bool;
    /// The user's script of that name (`include :personal`).
    fn personal_script(&mut self, name: &str) -> Option<Arc<Sieve>>;
}

/// Who the message is for and from, as delivery knows it.
pub struct Facts<'a> {
    /// The mailbox account it is delivered to.
    pub account: &'a str,
    /// The address it was sent to (RCPT TO), which may be an alias of the account.
    pub recipient: &'a str,
    /// The envelope sender; empty for a bounce.
    pub mail_from: &'a str,
    /// The spam filter's judgement, for `spamtest` (RFC 5235).
    pub spam: SpamStatus,
}

/// Where a copy of the message goes: a folder (None is where it would have gone
/// without scripts: the implicit or explicit `keep`), with its flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    pub folder: Option<String>,
    pub special_use: Option<String>,
    pub flags: Vec<String>,
    /// 0 is the message as delivered; n is `Outcome::messages[n - 1]` (edited headers).
    pub message: usize,
}

/// A message to send: a redirected copy or a vacation reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub to: String,
    pub message: usize,
}

/// Everything the scripts asked, in order; discarding is asking for nothing.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub stores: Vec<Store>,
    pub redirects: Vec<Outgoing>,
    pub replies: Vec<Outgoing>,
    /// `reject`/`ereject`: refused, with this reason for the sender.
    pub reject: Option<String>,
    /// Messages the run made: edited copies and replies, numbered from 1.
    pub messages: Vec<Vec<u8>>,
    /// Ids to remember once delivery succeeded (see `Surroundings::seen`); one that
    /// stands for a vacation reply names it (an index into `replies`), so a reply not
    /// sent is not remembered either.
    pub remember: Vec<Remember>,
}

/// An id the run saw for the first time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remember {
    pub id: String,
    pub period: Duration,
    pub reply: Option<usize>,
}

impl Outcome {
    /// The bytes of message `n` (see `Store::message`).
    pub fn message<'a>(&'a self, original: &'a [u8], n: usize) -> &'a [u8] {
        match n.checked_sub(1).and_then(|i| self.messages.get(i)) {
            Some(made) => made,
            None => original,
        }
    }
}

/// Why a run stopped: the message is then kept as if there were no scripts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RunError(pub String);

/// The interpreter set up once for the server.
pub struct Interpreter {
    /// By message size (see `CPU_LIMITS`).
    runtimes: Vec<(usize, Runtime)>,
    /// The program that includes the scripts present, by which are: bit 0 operator,
    /// bit 1 vacation, bit 2 personal.
    wrappers: Vec<Option<Arc<Sieve>>>,
    /// The names it includes them by: random, so a user's `include :global` cannot
    /// name them (sieve-rs would run its cached copy without asking).
    names: [String; 3],
}

impl Interpreter {
    pub fn new(hostname: &str) -> Interpreter {
        let runtime = |cpu_limit: usize| {
            allowed(Runtime::new())
                .with_cpu_limit(cpu_limit)
                .with_max_redirects(MAX_REDIRECTS)
                .with_max_out_messages(MAX_OUT_MESSAGES)
                .with_max_received_headers(MAX_RECEIVED)
                // The wrapper is one level; users keep the three RFC 6609 suggests.
                .with_max_nested_includes(4)
                .with_default_vacation_expiry(super::vacation::DEFAULT_DAYS as u64 * 86_400)
                .with_default_duplicate_expiry(7 * 86_400)
                .with_local_hostname(hostname.to_string())
                // RFC 5293 §6: scripts must not hide where mail came from or that it was
                // automatic; nor remove the mark that stops redirect loops here.
                .with_protected_header("Received")
                .with_protected_header("Auto-Submitted")
                .with_protected_header(super::REDIRECTED_FROM)
                .with_env_variable("name", "ferrymail")
                .with_env_variable("version", env!("CARGO_PKG_VERSION"))
                .with_env_variable("host", hostname.to_string())
                .with_env_variable("domain", hostname.to_string())
                .with_env_variable("location", "MDA")
                .with_env_variable("phase", "during")
        };
        let runtimes = CPU_LIMITS
            .iter()
            .map(|&(size, limit)| (size, runtime(limit)))
            .collect();
        let mut nonce = [0u8; 8];
        let _ = aws_lc_rs::rand::fill(&mut nonce);
        let tag: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
        let names = ["operator", "vacation", "personal"].map(|n| format!("ferrymail/{n}/{tag}"));
        let wrappers = (0..8u8)
            .map(|which| {
                let mut text = String::from("require \"include\";\n");
                for (bit, name) in [1, 2, 4].iter().zip(&names) {
                    if which & bit != 0 {
                        text.push_str(&format!("include :global \"{name}\";\n"));
                    }
                }
                compile(text.as_bytes()).ok()
            })
            .collect();
        Interpreter {
            runtimes,
            wrappers,
            names,
        }
    }

    /// Runs `scripts` over `message`. Ok with what to do, or why nothing should be.
    pub fn run(
        &self,
        message: &[u8],
        scripts: &Scripts,
        facts: &Facts,
        around: &mut dyn Surroundings,
    ) -> Result<Outcome, RunError> {
        let which = scripts.operator.is_some() as usize
            | (scripts.vacation.is_some() as usize) << 1
            | (scripts.personal.is_some() as usize) << 2;
        let Some(Some(program)) = self.wrappers.get(which) else {
            return Err(RunError("the script wrapper did not compile".into()));
        };
        let runtime = self
            .runtimes
            .iter()
            .find(|(size, _)| message.len() <= *size)
            .map(|(_, r)| r)
            .ok_or_else(|| RunError("no interpreter for the message's size".into()))?;
        let mut ctx = runtime.filter(message);
        ctx.set_envelope(Envelope::From, facts.mail_from);
        ctx.set_envelope(Envelope::To, facts.recipient);
        ctx.set_user_address(facts.account);
        ctx.set_spam_status(facts.spam);

        let mut outcome = Outcome::default();
        let mut given = [false; 3];
        // The vacation test's id, until its reply is made.
        let mut pending_reply: Option<usize> = None;
        let mut input = Input::script("ferrymail", program.clone());
        while let Some(result) = ctx.run(input) {
            let event = result.map_err(|e| RunError(describe(e)))?;
            input = match event {
                Event::IncludeScript { name, optional } => {
                    let found = match &name {
                        Script::Global(n) => self
                            .names
                            .iter()
                            .position(|wanted| wanted == n)
                            .filter(|&i| !std::mem::replace(&mut given[i], true))
                            .and_then(|i| {
                                [&scripts.operator, &scripts.vacation, &scripts.personal][i].clone()
                            }),
                        Script::Personal(n) => around.personal_script(n),
                    };
                    match found {
                        Some(script) => Input::script(name, script),
                        None if optional => Input::False,
                        None => {
                            return Err(RunError(format!(
                                "no script named {:?}, or it does not compile",
                                name.as_str()
                            )));
                        }
                    }
                }
                Event::MailboxExists {
                    mailboxes,
                    special_use,
                } => {
                    let folders = mailboxes.iter().all(|m| match m {
                        sieve::Mailbox::Name(name) => around.folder_exists(name),
                        sieve::Mailbox::Id(_) => false,
                    });
                    let uses = special_use.iter().all(|u| around.special_use_exists(u));
                    (folders && uses).into()
                }
                Event::DuplicateId { id, expiry, .. } => {
                    let period = Duration::from_secs(expiry).clamp(MIN_REPLY_PERIOD, MAX_PERIOD);
                    let seen =
                        around.seen(&id, period) || outcome.remember.iter().any(|r| r.id == id);
                    pending_reply = None;
                    if !seen {
                        if outcome.remember.len() >= MAX_STORES {
                            return Err(RunError("the scripts test too many ids".into()));
                        }
                        pending_reply = Some(outcome.remember.len());
                        outcome.remember.push(Remember {
                            id,
                            period,
                            reply: None,
                        });
                    }
                    seen.into()
                }
                Event::CreatedMessage {
                    message_id,
                    message,
                } => {
                    if message_id != outcome.messages.len() + 1 {
                        return Err(RunError("messages made out of order".into()));
                    }
                    if outcome.messages.len() >= MAX_MADE {
                        return Err(RunError(format!(
                            "the scripts make more than {MAX_MADE} messages"
                        )));
                    }
                    outcome.messages.push(message);
                    Input::True
                }
                Event::Keep { flags, message_id } => {
                    outcome.store(None, None, flags, message_id)?;
                    Input::True
                }
                Event::FileInto {
                    folder,
                    flags,
                    special_use,
                    message_id,
                    ..
                } => {
                    outcome.store(Some(folder), special_use, flags, message_id)?;
                    Input::True
                }
                Event::Discard => Input::True,
                Event::Reject { reason, .. } => {
                    outcome.reject = Some(reason);
                    Input::True
                }
                Event::SendMessage {
                    recipient: Recipient::Address(to),
                    notify,
                    message_id,
                    ..
                } => {
                    let sent = Outgoing {
                        to,
                        message: message_id,
                    };
                    // Only the vacation action asks for no notices: `redirect :notify`
                    // (redirect-dsn) is withheld.
                    if notify == Notify::Never {
                        if let Some(r) = pending_reply
                            .take()
                            .and_then(|i| outcome.remember.get_mut(i))
                        {
                            r.reply = Some(outcome.replies.len());
                        }
                        outcome.replies.push(sent);
                    } else {
                        outcome.redirects.push(sent);
                    }
                    Input::True
                }
                // Lists and notification methods are withheld (compile.rs): nothing to
                // send them to.
                Event::SendMessage { .. } | Event::Notify { .. } => Input::False,
                Event::ListContains { .. } | Event::Function { .. } => Input::False,
                Event::SetEnvelope { .. } => Input::True,
            };
        }
        Ok(outcome)
    }
}

impl Outcome {
    fn store(
        &mut self,
        folder: Option<String>,
        special_use: Option<String>,
        flags: Vec<String>,
        message: usize,
    ) -> Result<(), RunError> {
        let store = Store {
            folder,
            special_use,
            flags,
            message,
        };
        // Filing twice in one place files once (RFC 5228 §2.10.3).
        if self
            .stores
            .iter()
            .any(|s| s.folder == store.folder && s.special_use == store.special_use)
        {
            return Ok(());
        }
        if self.stores.len() >= MAX_STORES {
            return Err(RunError(format!(
                "the scripts file the message in more than {MAX_STORES} folders"
            )));
        }
        self.stores.push(store);
        Ok(())
    }
}

fn describe(e: RuntimeError) -> String {
    match e {
        RuntimeError::TooManyIncludes => "too many nested includes".into(),
        RuntimeError::InvalidInstruction(i) => format!(
            "line {}, column {}: {} cannot run here",
            i.line_num(),
            i.line_pos(),
            i.name()
        ),
        RuntimeError::ScriptErrorMessage(text) => format!("the script stopped: {text}"),
        RuntimeError::CapabilityNotAllowed(c) => {
            format!(
                "the extension {:?} is not supported by this server",
                c.to_string()
            )
        }
        RuntimeError::CapabilityNotSupported(c) => {
            format!("the extension {c:?} is not supported by this server")
        }
        RuntimeError::CPULimitReached => {
            "the scripts ran more instructions than a message may cost".to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[derive(Default)]
    struct Around {
        folders: Vec<String>,
        seen: std::collections::HashSet<String>,
        scripts: HashMap<String, Arc<Sieve>>,
    }

    impl Surroundings for Around {
        fn folder_exists(&mut self, name: &str) -> bool {
            self.folders.iter().any(|f| f == name)
        }
        fn special_use_exists(&mut self, _: &str) -> bool {
            false
        }
        fn seen(&mut self, id: &str, _: Duration) -> bool {
            self.seen.contains(id)
        }
        fn personal_script(&mut self, name: &str) -> Option<Arc<Sieve>> {
            self.scripts.get(name).cloned()
        }
    }

    const MESSAGE: &[u8] = b"From: Ann <ann@example.org>\r\nTo: me@example.test\r\n\
        Subject: hello\r\nMessage-ID: <m1@example.org>\r\nList-Id: <rust.lists.example.org>\r\n\r\nHi!\r\n";

    fn facts() -> Facts<'static> {
        Facts {
            account: "me@example.test",
            recipient: "me@example.test",
            mail_from: "ann@example.org",
            spam: SpamStatus::Ham,
        }
    }

    fn run(scripts: &Scripts, around: &mut Around, message: &[u8]) -> Result<Outcome, RunError> {
        Interpreter::new("mx.example.test").run(message, scripts, &facts(), around)
    }

    fn script(text: &str) -> Option<Arc<Sieve>> {
        Some(compile(text.as_bytes()).expect("compiles"))
    }

    #[test]
    fn no_script_keeps() {
        let outcome = run(&Scripts::default(), &mut Around::default(), MESSAGE).unwrap();
        assert_eq!(outcome.stores.len(), 1);
        assert_eq!(outcome.stores[0].folder, None);
    }

    #[test]
    fn fileinto_with_flags_replaces_the_keep() {
        let scripts = Scripts {
            personal: script(
                "require [\"fileinto\", \"imap4flags\"];\n\
                 if header :contains \"list-id\" \"rust\" { fileinto :flags \"\\\\Seen\" \"Lists/rust\"; }",
            ),
            ..Default::default()
        };
        let outcome = run(&scripts, &mut Around::default(), MESSAGE).unwrap();
        assert_eq!(outcome.stores.len(), 1, "{outcome:?}");
        assert_eq!(outcome.stores[0].folder.as_deref(), Some("Lists/rust"));
        assert_eq!(outcome.stores[0].flags, vec!["\\Seen".to_string()]);
    }

    #[test]
    fn the_operators_stop_ends_the_users_script_too() {
        let scripts = Scripts {
            operator: script("require \"fileinto\";\nfileinto \"Audit\";\nstop;"),
            personal: script("discard;"),
            ..Default::default()
        };
        let outcome = run(&scripts, &mut Around::default(), MESSAGE).unwrap();
        assert_eq!(outcome.stores.len(), 1);
        assert_eq!(outcome.stores[0].folder.as_deref(), Some("Audit"));
        // Without the stop, the user's discard leaves the operator's fileinto alone.
        let scripts = Scripts {
            operator: script("require [\"fileinto\", \"copy\"];\nfileinto :copy \"Audit\";"),
            personal: script("discard;"),
            ..Default::default()
        };
        let outcome = run(&scripts, &mut Around::default(), MESSAGE).unwrap();
        let folders: Vec<_> = outcome.stores.iter().map(|s| s.folder.clone()).collect();
        assert_eq!(folders, vec![Some("Audit".to_string())], "{outcome:?}");
    }

    #[test]
    fn vacation_replies_once_per_sender_and_redirects_are_told_apart() {
        let scripts = Scripts {
            vacation: script(&crate::sieve::vacation::script(
                &crate::spec::model::Vacation {
                    body: "Away.".into(),
                    ..Default::default()
                },
            )),
            personal: script("require \"copy\";\nredirect :copy \"other@example.net\";"),
            ..Default::default()
        };
        let plain = b"From: ann@example.org\r\nTo: me@example.test\r\nSubject: hi\r\nMessage-ID: <m2@x>\r\n\r\nHi\r\n";
        let mut around = Around::default();
        let outcome = run(&scripts, &mut around, plain).unwrap();
        assert_eq!(outcome.replies.len(), 1, "{outcome:?}");
        assert_eq!(outcome.replies[0].to, "ann@example.org");
        let reply = String::from_utf8_lossy(outcome.message(plain, outcome.replies[0].message))
            .into_owned();
        assert!(reply.contains("Auto-Submitted: auto-replied"), "{reply}");
        assert!(reply.contains("In-Reply-To: <m2@x>"), "{reply}");
        assert_eq!(
            outcome.redirects,
            vec![Outgoing {
                to: "other@example.net".into(),
                message: 0
            }]
        );
        assert_eq!(outcome.stores.len(), 1, "redirect :copy keeps");
        // Once delivered, the sender is remembered: the second message gets no reply.
        assert_eq!(outcome.remember.len(), 1);
        assert_eq!(outcome.remember[0].reply, Some(0));
        around.seen.insert(outcome.remember[0].id.clone());
        let again = run(&scripts, &mut around, plain).unwrap();
        assert!(again.replies.is_empty(), "{again:?}");
        // A list message never gets one.
        let outcome = run(&scripts, &mut Around::default(), MESSAGE).unwrap();
        assert!(outcome.replies.is_empty(), "{outcome:?}");
    }

    #[test]
    fn an_edited_header_is_filed_and_received_lines_cannot_be_removed() {
        let scripts = Scripts {
            personal: script(
                "require [\"editheader\", \"fileinto\"];\n\
                 addheader \"X-Filed-By\" \"rules\";\n\
                 deleteheader \"Received\";\n\
                 fileinto \"Filed\";",
            ),
            ..Default::default()
        };
        let message = b"Received: from a by b\r\nSubject: hi\r\n\r\nbody\r\n";
        let outcome = run(&scripts, &mut Around::default(), message).unwrap();
        assert_eq!(outcome.stores.len(), 1, "{outcome:?}");
        let filed = String::from_utf8_lossy(outcome.message(message, outcome.stores[0].message))
            .into_owned();
        assert!(filed.contains("X-Filed-By: rules"), "{filed}");
        assert!(filed.contains("Received: from a by b"), "{filed}");
    }

    #[test]
    fn a_vacation_period_past_any_calendar_is_bounded() {
        let scripts = Scripts {
            personal: script(
                "require [\"vacation\", \"vacation-seconds\"];\n\
                 vacation :days 99999999999999 \"away\";\n\
                 vacation :seconds 18446744073709551614 :handle \"b\" \"away\";",
            ),
            ..Default::default()
        };
        let plain = b"From: ann@example.org\r\nTo: me@example.test\r\nSubject: hi\r\n\r\nHi\r\n";
        let outcome = run(&scripts, &mut Around::default(), plain).unwrap();
        assert!(!outcome.remember.is_empty());
        assert!(
            outcome.remember.iter().all(|r| r.period <= MAX_PERIOD),
            "{outcome:?}"
        );
    }

    #[test]
    fn a_script_cannot_make_copies_without_end() {
        let copies = "addheader \"X-A\" \"b\";\nfileinto :copy \"F\";\n".repeat(200);
        let scripts = Scripts {
            personal: script(&format!(
                "require [\"editheader\", \"fileinto\", \"copy\"];\n{copies}"
            )),
            ..Default::default()
        };
        let e = run(&scripts, &mut Around::default(), MESSAGE).unwrap_err();
        assert!(e.0.contains("messages"), "{e}");
    }

    #[test]
    fn a_runaway_script_is_an_error_not_a_hang() {
        let loop_ = format!(
            "require \"variables\";\n{}",
            "if header :matches \"subject\" \"*\" { set \"a\" \"${1}${1}\"; }\n".repeat(20_000 / 4)
        );
        let scripts = Scripts {
            personal: script(&loop_),
            ..Default::default()
        };
        let e = run(&scripts, &mut Around::default(), MESSAGE).unwrap_err();
        assert!(e.0.contains("instructions"), "{e}");
        let many = (0..40)
            .map(|i| format!("fileinto :copy \"f{i}\";\n"))
            .collect::<String>();
        let scripts = Scripts {
            personal: script(&format!("require [\"fileinto\", \"copy\"];\n{many}")),
            ..Default::default()
        };
        assert!(run(&scripts, &mut Around::default(), MESSAGE).is_err());
    }

    #[test]
    fn personal_includes_come_from_the_users_scripts() {
        let mut around = Around::default();
        around.scripts.insert(
            "lists".into(),
            compile(b"require \"fileinto\";\nfileinto \"L\";").unwrap(),
        );
        let scripts = Scripts {
            personal: script("require \"include\";\ninclude :personal \"lists\";"),
            ..Default::default()
        };
        let outcome = run(&scripts, &mut around, MESSAGE).unwrap();
        assert_eq!(outcome.stores[0].folder.as_deref(), Some("L"));
        let scripts = Scripts {
            personal: script("require \"include\";\ninclude :global \"ferrymail/operator\";"),
            ..Default::default()
        };
        assert!(
            run(&scripts, &mut around, MESSAGE).is_err(),
            "the operator's names are not the user's"
        );
    }
}

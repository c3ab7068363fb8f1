//! One delivery's run of its scripts (the operator's, the declared vacation, the user's
//! own) as one Sieve program, answering the interpreter's questions and gathering what it
//! asks to be done; nothing is done here, so a script that fails changes nothing.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use sieve::runtime::RuntimeError;
use sieve::{Envelope, Event, Input, Recipient, Runtime, Script, Sieve, SpamStatus};

use super::compile::{allowed, compile};

/// Instructions one delivery's scripts may execute (sieve-rs counts each one).
const CPU_LIMIT: usize = 20_000;
/// Redirects one message may cause; Dovecot's sieve_max_redirects is 4 too.
pub const MAX_REDIRECTS: usize = 4;
/// Messages one run may send (redirects and the vacation reply together).
const MAX_OUT_MESSAGES: usize = 6;
/// Folders one message may be filed in; Dovecot's sieve_max_actions is 32.
const MAX_STORES: usize = 32;
/// A message that has passed this many hops is looping: never redirected or answered.
const MAX_RECEIVED: usize = 25;
/// Shortest time before the same sender may get a second reply (RFC 6131 lets a server
/// raise `:seconds`; Dovecot's own minimum is a day, which would make a test wait).
const MIN_REPLY_PERIOD: Duration = Duration::from_secs(3600);
/// Script names the wrapper program includes; only it is given them, each once.
const OPERATOR: &str = "ferrymail/operator";
const VACATION: &str = "ferrymail/vacation";
const PERSONAL: &str = "ferrymail/personal";

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
    /// Records `id` for `period` and says whether this is its first time in it: the
    /// vacation responder's "once per sender" and the `duplicate` test.
    fn first_time(&mut self, id: &str, period: Duration) -> bool;
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
    runtime: Runtime,
    /// The program that includes the scripts present, by which are: bit 0 operator,
    /// bit 1 vacation, bit 2 personal.
    wrappers: Vec<Option<Arc<Sieve>>>,
}

impl Interpreter {
    pub fn new(hostname: &str) -> Interpreter {
        let runtime = allowed(Runtime::new())
            .with_cpu_limit(CPU_LIMIT)
            .with_max_redirects(MAX_REDIRECTS)
            .with_max_out_messages(MAX_OUT_MESSAGES)
            .with_max_received_headers(MAX_RECEIVED)
            // The wrapper is one level; users keep the three RFC 6609 suggests.
            .with_max_nested_includes(4)
            .with_default_vacation_expiry(super::vacation::DEFAULT_DAYS as u64 * 86_400)
            .with_default_duplicate_expiry(7 * 86_400)
            .with_local_hostname(hostname.to_string())
            // RFC 5293 §6: scripts must not hide where mail came from or that it was
            // automatic.
            .with_protected_header("Received")
            .with_protected_header("Auto-Submitted")
            .with_env_variable("name", "ferrymail")
            .with_env_variable("version", env!("CARGO_PKG_VERSION"))
            .with_env_variable("host", hostname.to_string())
            .with_env_variable("domain", hostname.to_string())
            .with_env_variable("location", "MDA")
            .with_env_variable("phase", "during");
        let wrappers = (0..8u8)
            .map(|which| {
                let mut text = String::from("require \"include\";\n");
                for (bit, name) in [(1, OPERATOR), (2, VACATION), (4, PERSONAL)] {
                    if which & bit != 0 {
                        text.push_str(&format!("include :global \"{name}\";\n"));
                    }
                }
                compile(text.as_bytes()).ok()
            })
            .collect();
        Interpreter { runtime, wrappers }
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
        let mut ctx = self.runtime.filter(message);
        ctx.set_envelope(Envelope::From, facts.mail_from);
        ctx.set_envelope(Envelope::To, facts.recipient);
        ctx.set_user_address(facts.account);
        ctx.set_spam_status(facts.spam);

        let mut outcome = Outcome::default();
        let mut given: HashSet<&str> = HashSet::new();
        // The reply a vacation test just allowed is the next message made.
        let mut replying = false;
        let mut replies: HashSet<usize> = HashSet::new();
        let mut input = Input::script("ferrymail", program.clone());
        while let Some(result) = ctx.run(input) {
            let event = result.map_err(|e| RunError(describe(e)))?;
            input = match event {
                Event::IncludeScript { name, optional } => {
                    let found = match &name {
                        Script::Global(n) => [
                            (OPERATOR, &scripts.operator),
                            (VACATION, &scripts.vacation),
                            (PERSONAL, &scripts.personal),
                        ]
                        .into_iter()
                        .find(|(wanted, _)| n == wanted && given.insert(wanted))
                        .and_then(|(_, script)| script.clone()),
                        Script::Personal(n) => around.personal_script(n),
                    };
                    match found {
                        Some(script) => Input::script(name, script),
                        None if optional => Input::False,
                        None => {
                            return Err(RunError(format!("no script named {:?}", name.as_str())));
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
                    let period = Duration::from_secs(expiry).max(MIN_REPLY_PERIOD);
                    let first = around.first_time(&id, period);
                    // sieve-rs names the vacation responder's ids "_v<sender><handle>".
                    replying = first && id.starts_with("_v");
                    (!first).into()
                }
                Event::CreatedMessage {
                    message_id,
                    message,
                } => {
                    if std::mem::take(&mut replying) && is_reply(&message) {
                        replies.insert(message_id);
                    }
                    if message_id != outcome.messages.len() + 1 {
                        return Err(RunError("messages made out of order".into()));
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
                    message_id,
                    ..
                } => {
                    let sent = Outgoing {
                        to,
                        message: message_id,
                    };
                    if replies.contains(&message_id) {
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

/// The vacation action's message says what it is in its header.
fn is_reply(message: &[u8]) -> bool {
    let head = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(message, |end| &message[..end]);
    String::from_utf8_lossy(head)
        .to_ascii_lowercase()
        .contains("\nauto-submitted: auto-replied")
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
            format!("the scripts ran more than {CPU_LIMIT} instructions")
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
        seen: HashSet<String>,
        scripts: HashMap<String, Arc<Sieve>>,
    }

    impl Surroundings for Around {
        fn folder_exists(&mut self, name: &str) -> bool {
            self.folders.iter().any(|f| f == name)
        }
        fn special_use_exists(&mut self, _: &str) -> bool {
            false
        }
        fn first_time(&mut self, id: &str, _: Duration) -> bool {
            self.seen.insert(id.to_string())
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
        // The second message from the same sender gets no reply.
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

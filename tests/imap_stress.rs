//! Several clients at once on one mailbox, each doing random APPEND, STORE, EXPUNGE,
//! FETCH, SEARCH and NOOP (one of them with QRESYNC on), and each keeping a model of its session's view (message
//! numbers, UIDs, flags) from nothing but what the server told it. Every response is
//! held against the model as it arrives (numbers in range, UIDs that match, EXPUNGE
//! never while FETCH, STORE or SEARCH answer, a STORE's flags that show its change);
//! at the end every model must equal the mailbox as a fresh session sees it.
//!
//! FERRYMAIL_STRESS_SECONDS sets how long the clients run (default 60: a minute).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::imap::{Client, Server, message};

const ME: &str = "me@example.test";
const CLIENTS: usize = 4;
const FLAGS: [&str; 4] = ["\\Seen", "\\Flagged", "\\Deleted", "$Work"];

#[derive(Clone, Debug, PartialEq)]
struct Msg {
    uid: Option<u32>,
    flags: BTreeSet<String>,
}

/// One session's view, built from the untagged responses it was sent.
struct Model {
    view: Vec<Msg>,
    who: usize,
}

/// The flags in a FETCH line's FLAGS (...), \Recent left out (it is per session).
fn flags_of(line: &str) -> Option<BTreeSet<String>> {
    let start = line.find("FLAGS (")? + "FLAGS (".len();
    let end = start + line[start..].find(')')?;
    Some(
        line[start..end]
            .split_whitespace()
            .filter(|f| !f.eq_ignore_ascii_case("\\Recent"))
            .map(str::to_string)
            .collect(),
    )
}

fn uid_of(line: &str) -> Option<u32> {
    let at = line.find(" UID ").or_else(|| line.find("(UID "))? + " UID ".len();
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

impl Model {
    /// Applies the responses of `command`; panics on one the rules forbid.
    fn apply(&mut self, command: &str, lines: &[String]) {
        let (tagged, untagged) = lines.split_last().expect("a completion");
        let numbered = !command.starts_with("UID ")
            && ["FETCH", "STORE", "SEARCH"]
                .iter()
                .any(|c| command.starts_with(c));
        // A message another session expunged keeps its number until this one is told;
        // STORE and FETCH of it may fail so (RFC 2180 §4.1, §4.2; RFC 5530).
        let expunged = numbered && tagged.starts_with("T NO [EXPUNGEISSUED]");
        assert!(
            tagged.starts_with("T OK") || expunged,
            "client {}: {command} → {tagged}",
            self.who
        );
        for line in untagged {
            if let Some(uids) = line.strip_prefix("* VANISHED ") {
                assert!(!numbered, "client {}: VANISHED during {command}", self.who);
                for uid in expand(uids) {
                    let at = self.view.iter().position(|m| m.uid == Some(uid));
                    let at = at.unwrap_or_else(|| {
                        panic!("client {}: VANISHED {uid}, not in its view", self.who)
                    });
                    self.view.remove(at);
                }
                continue;
            }
            let words: Vec<&str> = line.split(' ').collect();
            let n = words.get(1).and_then(|w| w.parse::<usize>().ok());
            match (words.get(2).copied(), n) {
                (Some("EXISTS"), Some(n)) => {
                    assert!(
                        n >= self.view.len(),
                        "client {}: EXISTS {n} below {} without EXPUNGE ({command})",
                        self.who,
                        self.view.len()
                    );
                    self.view.resize(
                        n,
                        Msg {
                            uid: None,
                            flags: BTreeSet::new(),
                        },
                    );
                }
                (Some("EXPUNGE"), Some(n)) => {
                    assert!(!numbered, "client {}: EXPUNGE during {command}", self.who);
                    assert!(
                        n >= 1 && n <= self.view.len(),
                        "client {}: EXPUNGE {n} of {} ({command})",
                        self.who,
                        self.view.len()
                    );
                    self.view.remove(n - 1);
                }
                (Some("FETCH"), Some(n)) => {
                    assert!(
                        n >= 1 && n <= self.view.len(),
                        "client {}: FETCH {n} of {} ({command}): {line}",
                        self.who,
                        self.view.len()
                    );
                    let m = &mut self.view[n - 1];
                    if let Some(uid) = uid_of(line) {
                        if let Some(known) = m.uid {
                            assert_eq!(
                                known, uid,
                                "client {}: message {n} changed its UID ({command}): {line}",
                                self.who
                            );
                        }
                        m.uid = Some(uid);
                    }
                    if let Some(flags) = flags_of(line) {
                        m.flags = flags;
                    }
                }
                _ => {}
            }
        }
    }

    /// Numbers whose UID the session was not told yet.
    fn unknown(&self) -> Vec<usize> {
        (1..=self.view.len())
            .filter(|&n| self.view[n - 1].uid.is_none())
            .collect()
    }
}

/// The UIDs of a set like "3:5,9".
fn expand(set: &str) -> Vec<u32> {
    set.split(',')
        .flat_map(|part| {
            let (a, b) = part.split_once(':').unwrap_or((part, part));
            let (a, b): (u32, u32) = (a.parse().expect("uid"), b.parse().expect("uid"));
            a.min(b)..=a.max(b)
        })
        .collect()
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n.max(1)
    }
}

fn run(c: &mut Client, model: &mut Model, command: &str) -> Vec<String> {
    let lines = c.run(command);
    model.apply(command, &lines);
    lines
}

/// Learns the UIDs and flags of messages told by EXISTS only, as a client does (EXISTS
/// says nothing of a new message's flags: another session may have set some already).
/// Asks the UIDs of the messages announced without one, again while that teaches
/// something: the FETCH itself may announce new arrivals (EXISTS), and a later VANISHED
/// names them by UID. (One expunged meanwhile stays unknown until its expunge is told.)
fn learn_uids(c: &mut Client, model: &mut Model) {
    let mut before = Vec::new();
    loop {
        let unknown = model.unknown();
        let (Some(&first), Some(&last)) = (unknown.first(), unknown.last()) else {
            return;
        };
        if unknown == before {
            return;
        }
        run(c, model, &format!("FETCH {first}:{last} (UID FLAGS)"));
        before = unknown;
    }
}

fn client(port: u16, who: usize, until: Instant) -> (Client, Model, usize) {
    let mut c = Client::login(port, ME);
    let mut model = Model {
        view: Vec::new(),
        who,
    };
    // The first client has QRESYNC on: it hears of expunges as VANISHED UIDs.
    if who == 0 {
        run(&mut c, &mut model, "ENABLE QRESYNC");
    }
    run(&mut c, &mut model, "SELECT INBOX");
    run(&mut c, &mut model, "FETCH 1:* (UID FLAGS)");
    let mut rng = Rng(who as u64 * 7919 + 17);
    let mut commands = 0;
    while Instant::now() < until {
        learn_uids(&mut c, &mut model);
        let len = model.view.len();
        let flag = FLAGS[rng.below(FLAGS.len())];
        let sign = if rng.below(2) == 0 { '+' } else { '-' };
        match rng.below(100) {
            0..15 => {
                let lines = c.append("INBOX", "", &message(&format!("from {who}")));
                model.apply("APPEND", &lines);
            }
            15..30 if len > 0 => {
                let n = rng.below(len) + 1;
                let command = format!("STORE {n} {sign}FLAGS ({flag})");
                let lines = run(&mut c, &mut model, &command);
                if lines.last().is_some_and(|l| l.starts_with("T NO")) {
                    continue;
                }
                let shown = lines
                    .iter()
                    .find(|l| l.starts_with(&format!("* {n} FETCH")))
                    .and_then(|l| flags_of(l));
                let shown = shown.unwrap_or_else(|| {
                    panic!("client {who}: {command} did not show the flags: {lines:?}")
                });
                assert_eq!(
                    shown.contains(flag),
                    sign == '+',
                    "client {who}: {command} → {lines:?}"
                );
            }
            30..45 if len > 0 => {
                let n = rng.below(len) + 1;
                if let Some(uid) = model.view[n - 1].uid {
                    let command = format!("UID STORE {uid} {sign}FLAGS.SILENT ({flag})");
                    run(&mut c, &mut model, &command);
                    // .SILENT: the client applies its own change; anything else about the
                    // message must come from the server.
                    if let Some(m) = model.view.iter_mut().find(|m| m.uid == Some(uid)) {
                        if sign == '+' {
                            m.flags.insert(flag.to_string());
                        } else {
                            m.flags.remove(flag);
                        }
                    }
                }
            }
            45..52 => {
                run(&mut c, &mut model, "EXPUNGE");
            }
            52..57 if len > 0 => {
                if let Some(uid) = model.view[rng.below(len)].uid {
                    run(&mut c, &mut model, &format!("UID EXPUNGE {uid}"));
                }
            }
            57..72 if len > 0 => {
                let a = rng.below(len) + 1;
                let b = (a + rng.below(5)).min(len);
                let lines = run(&mut c, &mut model, &format!("FETCH {a}:{b} (UID FLAGS)"));
                let told = lines.iter().filter(|l| l.contains(" FETCH (")).count();
                let complete = lines.last().is_some_and(|l| l.starts_with("T OK"));
                assert!(
                    told > b - a || !complete,
                    "client {who}: FETCH {a}:{b} → {lines:?}"
                );
            }
            72..80 if len > 0 => {
                let n = rng.below(len) + 1;
                if let Some(uid) = model.view[n - 1].uid {
                    let lines = run(&mut c, &mut model, &format!("UID FETCH {uid} (FLAGS)"));
                    // Expunged meanwhile, it may be gone; if told, under its own UID.
                    for l in lines.iter().filter(|l| l.contains(" FETCH (")) {
                        if l.contains("FLAGS") && !l.contains(&format!("UID {uid}")) {
                            assert!(uid_of(l).is_some(), "client {who}: {l}");
                        }
                    }
                }
            }
            80..88 => {
                let lines = run(&mut c, &mut model, "SEARCH FLAGGED");
                let found = lines.iter().find(|l| l.starts_with("* SEARCH")).cloned();
                for n in found.iter().flat_map(|l| l.split(' ').skip(2)) {
                    let n: usize = n.parse().expect("a number");
                    assert!(
                        n >= 1 && n <= model.view.len(),
                        "client {who}: SEARCH found {n} of {}",
                        model.view.len()
                    );
                }
            }
            _ => {
                run(&mut c, &mut model, "NOOP");
            }
        }
        commands += 1;
    }
    (c, model, commands)
}

#[test]
fn clients_at_once_on_one_mailbox_keep_a_true_view() {
    let seconds: u64 = std::env::var("FERRYMAIL_STRESS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let server = Server::start(&[ME]);
    let mut setup = server.login(ME);
    for i in 0..40 {
        setup.append("INBOX", "", &message(&format!("seed {i}")));
    }
    let until = Instant::now() + Duration::from_secs(seconds);
    let port = server.port;
    let handles: Vec<_> = (0..CLIENTS)
        .map(|who| std::thread::spawn(move || client(port, who, until)))
        .collect();
    let mut done = Vec::new();
    for h in handles {
        match h.join() {
            Ok(d) => done.push(d),
            Err(e) => {
                let log = server.process.log_text();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                eprintln!("server log, last lines first:\n{}", tail.join("\n"));
                std::panic::resume_unwind(e)
            }
        }
    }
    // Everyone has stopped: one NOOP each brings every update, and then each view must
    // be the mailbox as it is.
    let mut truth_session = server.login(ME);
    let mut truth = Model {
        view: Vec::new(),
        who: 99,
    };
    run(&mut truth_session, &mut truth, "SELECT INBOX");
    run(&mut truth_session, &mut truth, "FETCH 1:* (UID FLAGS)");
    let mut total = 0;
    for (mut c, mut model, commands) in done {
        total += commands;
        run(&mut c, &mut model, "NOOP");
        learn_uids(&mut c, &mut model);
        assert_eq!(
            model.view.len(),
            truth.view.len(),
            "client {}: {} messages, the mailbox has {}",
            model.who,
            model.view.len(),
            truth.view.len()
        );
        for (n, (m, t)) in model.view.iter().zip(&truth.view).enumerate() {
            assert_eq!(m, t, "client {}: message {}", model.who, n + 1);
        }
        let late = c.unsolicited(Duration::from_millis(300));
        assert!(late.is_empty(), "unasked: {late:?}");
    }
    println!(
        "{CLIENTS} clients, {total} commands in {seconds} s; {} messages at the end",
        truth.view.len()
    );
    assert!(total > 100, "too few commands ran: {total}");
    let log = server.process.log_text();
    assert!(!log.contains("panicked"), "the server panicked:\n{log}");
}

//! When untagged updates reach a client (RFC 3501 §7, §7.4.1; RFC 9051 §7.5.1): what
//! another session changed arrives before the tagged completion of the next command,
//! never after it and never while no command is in progress; EXPUNGE waits while FETCH,
//! STORE and SEARCH answer; STORE shows a message's real flags; a new keyword brings a
//! new FLAGS; \Recent goes to exactly one session. Two real sessions, scripted.

mod common;

use std::time::Duration;

use common::imap::{Server, expect, message};

const ME: &str = "me@example.test";

/// Nothing may arrive while no command is in progress (IDLE aside).
#[track_caller]
fn quiet(c: &mut common::imap::Client) {
    let late = c.unsolicited(Duration::from_millis(400));
    assert!(
        late.is_empty(),
        "sent with no command in progress: {late:?}"
    );
}

/// Two sessions with INBOX selected; it holds `n` messages, seen (as \Recent) by a
/// third session before them.
fn two_sessions(n: usize) -> (Server, common::imap::Client, common::imap::Client) {
    let server = Server::start(&[ME]);
    let mut setup = server.login(ME);
    for i in 0..n {
        let done = setup.append("INBOX", "", &message(&format!("message {}", i + 1)));
        expect(&done, &["T OK [APPENDUID … …] …"]);
    }
    let selected = setup.run("SELECT INBOX");
    assert!(selected.contains(&format!("* {n} RECENT")), "{selected:?}");
    let mut a = server.login(ME);
    let mut b = server.login(ME);
    a.run("SELECT INBOX");
    b.run("SELECT INBOX");
    (server, a, b)
}

#[test]
fn the_test_patterns_match_as_meant() {
    use common::imap::{literal_length, matches};
    assert!(matches("* 3 EXISTS", "* 3 EXISTS"));
    assert!(matches("T OK …", "T OK done"));
    assert!(matches(
        "* … FETCH (FLAGS (…))",
        "* 2 FETCH (FLAGS (\\Seen))"
    ));
    assert!(!matches("* 3 EXISTS", "* 4 EXISTS"));
    assert!(!matches("T OK …", "T NO done"));
    assert!(!matches("a…b", "ab-"));
    assert_eq!(literal_length(b"* 1 FETCH (BODY[] {12}"), Some(12));
}

#[test]
fn another_sessions_arrivals_come_before_the_tagged_completion_of_any_command() {
    let (_server, mut a, mut b) = two_sessions(1);
    // Each command of A's sees one more message B appended just before it.
    let commands = [
        "CHECK",
        "NOOP",
        "FETCH 1 FLAGS",
        "STORE 1 +FLAGS (\\Flagged)",
        "SEARCH ALL",
        "UID FETCH 1 FLAGS",
        "STATUS Trash (MESSAGES)",
        "LIST \"\" Trash",
    ];
    for (i, command) in commands.iter().enumerate() {
        b.append("INBOX", "", &message(&format!("arrival {i}")));
        let done = a.run(command);
        let exists = format!("* {} EXISTS", i + 2);
        let at = done.iter().position(|l| *l == exists);
        assert!(
            at.is_some() && done.last().unwrap().starts_with("T OK"),
            "{command}: {done:?}"
        );
        // \Recent went to B, whose own APPEND showed it the message first.
        assert_eq!(done[at.unwrap() + 1], "* 0 RECENT", "{command}: {done:?}");
        quiet(&mut a);
    }
    // An APPEND of A's own to its selected folder: EXISTS before the completion too.
    let done = a.append("INBOX", "", &message("own"));
    expect(
        &done,
        &["* 10 EXISTS", "* 1 RECENT", "T OK [APPENDUID … 10] …"],
    );
    quiet(&mut a);
}

#[test]
fn expunges_wait_while_fetch_store_and_search_answer_and_never_come_unasked() {
    let (_server, mut a, mut b) = two_sessions(3);
    expect(&b.run("STORE 2 +FLAGS.SILENT (\\Deleted)"), &["T OK …"]);
    expect(&b.run("EXPUNGE"), &["* 2 EXPUNGE", "T OK …"]);
    quiet(&mut a);
    // A's message numbers stay as they were while it asks in sequence numbers.
    expect(
        &a.run("FETCH 1:* (UID)"),
        &[
            "* 1 FETCH (UID 1)",
            "* 2 FETCH (UID 2)",
            "* 3 FETCH (UID 3)",
            "T OK …",
        ],
    );
    expect(&a.run("SEARCH ALL"), &["* SEARCH 1 2 3", "T OK …"]);
    expect(
        &a.run("STORE 3 +FLAGS (\\Seen)"),
        &["* 3 FETCH (FLAGS (\\Seen))", "T OK …"],
    );
    quiet(&mut a);
    // A command that may tell it does, before its completion.
    expect(&a.run("NOOP"), &["* 2 EXPUNGE", "T OK …"]);
    expect(
        &a.run("FETCH 1:* (UID)"),
        &["* 1 FETCH (UID 1)", "* 2 FETCH (UID 3)", "T OK …"],
    );
    quiet(&mut a);
    // During IDLE it comes at once.
    b.run("STORE 1 +FLAGS.SILENT (\\Deleted)");
    a.send(b"I1 IDLE\r\n");
    assert!(a.line().unwrap().starts_with("+ "));
    // What happened before IDLE began is told at once.
    assert_eq!(a.line().unwrap(), "* 1 FETCH (FLAGS (\\Deleted) UID 1)");
    b.run("EXPUNGE");
    assert_eq!(a.line().unwrap(), "* 1 EXPUNGE");
    a.send(b"DONE\r\n");
    expect(&a.until("I1"), &["T OK …"]);
    quiet(&mut a);
}

#[test]
fn a_store_reply_shows_the_flags_the_message_really_has() {
    let (_server, mut a, mut b) = two_sessions(2);
    b.run("STORE 1 +FLAGS.SILENT (\\Deleted)");
    expect(
        &a.run("STORE 1 +FLAGS (\\Flagged)"),
        &["* 1 FETCH (FLAGS (\\Deleted \\Flagged))", "T OK …"],
    );
    // Asking for what is already there: the real flags too, and nothing twice.
    b.run("STORE 2 +FLAGS.SILENT (\\Answered)");
    expect(
        &a.run("STORE 1:2 +FLAGS (\\Flagged)"),
        &[
            "* 1 FETCH (FLAGS (\\Deleted \\Flagged))",
            "* 2 FETCH (FLAGS (\\Answered \\Flagged))",
            "T OK …",
        ],
    );
    expect(&a.run("NOOP"), &["T OK …"]);
    // UID STORE carries the UID (RFC 3501 §6.4.8).
    expect(
        &a.run("UID STORE 2 -FLAGS (\\Answered)"),
        &["* 2 FETCH (FLAGS (\\Flagged) UID 2)", "T OK …"],
    );
}

#[test]
fn a_new_keyword_brings_a_new_flags_list_to_every_session() {
    let (_server, mut a, mut b) = two_sessions(1);
    // The session that sets it hears FLAGS before the FETCH that carries it.
    expect(
        &b.run("STORE 1 +FLAGS ($Work)"),
        &[
            "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work)",
            "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work \\*)] …",
            "* 1 FETCH (FLAGS ($Work))",
            "T OK …",
        ],
    );
    expect(
        &a.run("NOOP"),
        &[
            "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work)",
            "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work \\*)] …",
            "* 1 FETCH (FLAGS ($Work) UID 1)",
            "T OK …",
        ],
    );
    // A keyword already told is not told again.
    b.run("STORE 1 -FLAGS ($Work)");
    expect(&a.run("NOOP"), &["* 1 FETCH (FLAGS () UID 1)", "T OK …"]);
    b.run("STORE 1 +FLAGS ($Work)");
    expect(
        &a.run("NOOP"),
        &["* 1 FETCH (FLAGS ($Work) UID 1)", "T OK …"],
    );
    // A new session lists it from the start.
    let mut c = _server.login(ME);
    let selected = c.run("SELECT INBOX");
    assert!(
        selected.contains(&"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work)".into()),
        "{selected:?}"
    );
}

#[test]
fn recent_goes_to_exactly_one_session() {
    let server = Server::start(&[ME]);
    let mut other = server.login(ME);
    for i in 0..2 {
        other.append("INBOX", "", &message(&format!("before {i}")));
    }
    // Nobody has seen them: STATUS counts them as recent.
    expect(
        &other.run("STATUS INBOX (RECENT MESSAGES)"),
        &["* STATUS INBOX (RECENT 2 MESSAGES 2)", "T OK …"],
    );
    // EXAMINE looks without taking them (RFC 3501 §6.3.2).
    let mut looker = server.login(ME);
    let examined = looker.run("EXAMINE INBOX");
    assert!(examined.contains(&"* 2 RECENT".into()), "{examined:?}");
    let mut a = server.login(ME);
    let selected = a.run("SELECT INBOX");
    assert!(selected.contains(&"* 2 RECENT".into()), "{selected:?}");
    let mut b = server.login(ME);
    let selected = b.run("SELECT INBOX");
    assert!(selected.contains(&"* 0 RECENT".into()), "{selected:?}");
    expect(
        &other.run("STATUS INBOX (RECENT)"),
        &["* STATUS INBOX (RECENT 0)", "T OK …"],
    );
    expect(
        &a.run("FETCH 1 FLAGS"),
        &["* 1 FETCH (FLAGS (\\Recent))", "T OK …"],
    );
    expect(&b.run("FETCH 1 FLAGS"), &["* 1 FETCH (FLAGS ())", "T OK …"]);
    expect(&a.run("SEARCH RECENT"), &["* SEARCH 1 2", "T OK …"]);
    expect(&b.run("SEARCH RECENT"), &["* SEARCH", "T OK …"]);
    expect(&b.run("SEARCH OLD"), &["* SEARCH 1 2", "T OK …"]);
    // A new arrival: the first session to hear of it has it as recent.
    other.append("INBOX", "", &message("after"));
    expect(&b.run("NOOP"), &["* 3 EXISTS", "* 1 RECENT", "T OK …"]);
    expect(&a.run("NOOP"), &["* 3 EXISTS", "* 2 RECENT", "T OK …"]);
    expect(&b.run("SEARCH NEW"), &["* SEARCH 3", "T OK …"]);
    b.run("STORE 3 +FLAGS (\\Seen)");
    expect(&b.run("SEARCH NEW"), &["* SEARCH", "T OK …"]);
    expect(&b.run("SEARCH RECENT"), &["* SEARCH 3", "T OK …"]);
    // \Recent is the server's: a client cannot set it.
    expect(
        &b.run("STORE 1 +FLAGS (\\Recent)"),
        &["* 1 FETCH (FLAGS ())", "T OK …"],
    );
}

/// SORT and THREAD answer in sequence numbers, as SEARCH does: an expunge another
/// session made waits until a command that may tell it.
#[test]
fn sort_and_thread_hold_expunges_as_search_does() {
    let (_server, mut a, mut b) = two_sessions(3);
    b.run("STORE 2 +FLAGS.SILENT (\\Deleted)");
    b.run("EXPUNGE");
    expect(
        &a.run("SORT (ARRIVAL) UTF-8 ALL"),
        &["* SORT 1 2 3", "T OK …"],
    );
    // Message 2's content is gone; it is still numbered 2 and threaded somewhere.
    let threaded = a.run("THREAD ORDEREDSUBJECT UTF-8 ALL");
    expect(&threaded, &["* THREAD …", "T OK …"]);
    for n in ["(1)", "(2)", "(3)"] {
        assert!(threaded[0].contains(n), "{threaded:?}");
    }
    expect(&a.run("NOOP"), &["* 2 EXPUNGE", "T OK …"]);
}

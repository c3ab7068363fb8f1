//! CONDSTORE and QRESYNC (RFC 7162) to the letter, after the RFC's own examples: ENABLE
//! QRESYNC, expunges told as VANISHED, SELECT … (QRESYNC (uidvalidity modseq uids))
//! telling what a client missed, UID FETCH … (CHANGEDSINCE m VANISHED), and [CLOSED]
//! between two folders' responses.

mod common;

use common::imap::{Client, Server, expect, message};

const ME: &str = "me@example.test";

/// The number after `key` in the responses (`HIGHESTMODSEQ 7` → 7).
fn number_after(lines: &[String], key: &str) -> u64 {
    lines
        .iter()
        .find_map(|l| {
            let at = l.find(key)? + key.len();
            l[at..]
                .trim_start()
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {key} in {lines:?}"))
}

fn with_five() -> (Server, Client) {
    let server = Server::start(&[ME]);
    let mut c = server.login(ME);
    for i in 1..=5 {
        c.append("INBOX", "", &message(&format!("m{i}")));
    }
    (server, c)
}

/// Any CONDSTORE enabling command turns it on (RFC 7162 §3.1), not only ENABLE and
/// SELECT (CONDSTORE): the first one while a folder is selected tells its
/// HIGHESTMODSEQ, and every flag change told from then on carries its MODSEQ
/// (imaptest's esearch-condstore case).
#[test]
fn a_fetch_of_modseq_enables_condstore() {
    let (_server, mut c) = with_five();
    c.run("SELECT INBOX");
    let first = c.run("FETCH 1 (MODSEQ)");
    expect(
        &first,
        &[
            "* OK [HIGHESTMODSEQ …] …",
            "* 1 FETCH (MODSEQ (…))",
            "T OK …",
        ],
    );
    let highest = number_after(&first, "HIGHESTMODSEQ ");
    let stored = c.run("STORE 2 +FLAGS (\\Seen)");
    expect(
        &stored,
        &["* 2 FETCH (FLAGS (\\Seen …) UID 2 MODSEQ (…))", "T OK …"],
    );
    assert!(number_after(&stored, "MODSEQ (") > highest);
    // Only the first enabling command says it.
    expect(
        &c.run("FETCH 1 (MODSEQ)"),
        &["* 1 FETCH (MODSEQ (…))", "T OK …"],
    );
}

#[test]
fn enabled_qresync_tells_expunges_as_vanished_uids() {
    let (server, mut other) = with_five();
    let mut a = server.login(ME);
    let caps = a.run("CAPABILITY");
    assert!(
        caps[0].contains(" QRESYNC") && caps[0].contains(" CONDSTORE"),
        "{caps:?}"
    );
    expect(&a.run("ENABLE QRESYNC"), &["* ENABLED QRESYNC", "T OK …"]);
    a.run("SELECT INBOX");
    other.run("SELECT INBOX");
    other.run("STORE 2,4 +FLAGS.SILENT (\\Deleted)");
    other.run("EXPUNGE");
    // No EXPUNGE (with numbers) once QRESYNC is on: one VANISHED with the UIDs.
    expect(&a.run("NOOP"), &["* VANISHED 2,4", "T OK …"]);
    expect(
        &a.run("FETCH 1:* (UID)"),
        &[
            "* 1 FETCH (UID 1)",
            "* 2 FETCH (UID 3)",
            "* 3 FETCH (UID 5)",
            "T OK …",
        ],
    );
    // Its own expunge too.
    a.run("STORE 1 +FLAGS.SILENT (\\Deleted)");
    expect(&a.run("EXPUNGE"), &["* VANISHED 1", "T OK …"]);
}

/// RFC 7162 §3.2.5's flow: a client that knows UIDVALIDITY and a MODSEQ from last time
/// learns at SELECT what vanished and what changed, and nothing else.
#[test]
fn select_with_qresync_tells_what_the_client_missed() {
    let (server, mut other) = with_five();
    let mut first = server.login(ME);
    let selected = first.run("SELECT INBOX");
    let validity = number_after(&selected, "UIDVALIDITY");
    let modseq = number_after(&selected, "HIGHESTMODSEQ");
    drop(first);

    other.run("SELECT INBOX");
    other.run("STORE 2 +FLAGS (\\Seen)");
    other.run("STORE 3 +FLAGS (\\Deleted)");
    other.run("EXPUNGE");

    let mut back = server.login(ME);
    back.run("ENABLE QRESYNC");
    let done = back.run(&format!("SELECT INBOX (QRESYNC ({validity} {modseq} 1:5))"));
    let tail = &done[done.len() - 3..];
    expect(
        tail,
        &[
            "* VANISHED (EARLIER) 3",
            "* 2 FETCH (UID 2 FLAGS (\\Seen) MODSEQ (…))",
            "T OK [READ-WRITE] …",
        ],
    );
    // Only the UIDs the client said it knew are told.
    back.run("UNSELECT");
    let done = back.run(&format!("SELECT INBOX (QRESYNC ({validity} {modseq} 4:5))"));
    assert!(!done.iter().any(|l| l.contains("VANISHED")), "{done:?}");
    // Another UIDVALIDITY: the client must start over; nothing to resync from.
    back.run("UNSELECT");
    let done = back.run(&format!(
        "SELECT INBOX (QRESYNC ({} {modseq}))",
        validity + 1
    ));
    assert!(
        !done
            .iter()
            .any(|l| l.contains("VANISHED") || l.contains("FETCH")),
        "{done:?}"
    );
    // The same, by UID FETCH (RFC 7162 §3.2.6).
    expect(
        &back.run(&format!(
            "UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq} VANISHED)"
        )),
        &[
            "* VANISHED (EARLIER) 3",
            "* 2 FETCH (UID 2 FLAGS (\\Seen) MODSEQ (…))",
            "T OK …",
        ],
    );
}

#[test]
fn qresync_needs_enable_and_vanished_needs_changedsince() {
    let (server, _other) = with_five();
    let mut c = server.login(ME);
    expect(&c.run("SELECT INBOX (QRESYNC (1 1))"), &["T BAD …"]);
    c.run("SELECT INBOX");
    expect(
        &c.run("UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)"),
        &["T BAD …"],
    );
    c.run("ENABLE QRESYNC");
    expect(
        &c.run("FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)"),
        &["T BAD …"],
    );
}

/// RFC 7162 §3.2.11: [CLOSED] marks where one folder's responses end.
#[test]
fn selecting_another_folder_says_the_first_is_closed() {
    let (server, _other) = with_five();
    let mut c = server.login(ME);
    let first = c.run("SELECT INBOX");
    assert!(!first.iter().any(|l| l.contains("[CLOSED]")), "{first:?}");
    let second = c.run("EXAMINE Trash");
    assert_eq!(
        second[0], "* OK [CLOSED] Previous folder closed",
        "{second:?}"
    );
    let failed = c.run("SELECT Nowhere");
    expect(&failed, &["* OK [CLOSED] …", "T NO …"]);
    // Nothing is selected now.
    expect(&c.run("FETCH 1 (UID)"), &["T BAD …"]);
}

/// The same resynchronisation from Python's imaplib, an independent client.
#[test]
fn python_imaplib_resynchronises_with_qresync() {
    let server = Server::start(&[ME]);
    server.peer_passes("imap_qresync.py", ME);
}

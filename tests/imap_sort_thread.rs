//! SORT and THREAD (RFC 5256, RFC 5957's DISPLAYFROM): a small mailbox whose order and
//! threads are worked out by hand from the RFC's rules (base subjects, References
//! before In-Reply-To, a dummy parent for a lost message, replies gathered by subject),
//! held against the server's answers, from our client and from Python's imaplib.

mod common;

use common::imap::{Client, Server, expect};

const ME: &str = "me@example.test";

/// (From, Subject, hour of the Date, Message-ID, References).
const MAIL: [(&str, &str, u32, &str, &str); 7] = [
    ("Zed <zed@x.test>", "Hello", 10, "a@x", ""),
    (
        "Yves <amy@x.test>",
        "Re: hello",
        11,
        "b@x",
        "In-Reply-To: <a@x>\r\nReferences: <a@x>\r\n",
    ),
    ("Bob <bob@x.test>", "Other", 9, "c@x", ""),
    ("", "Re: Hello", 12, "d@x", "References: <a@x> <b@x>\r\n"),
    ("", "Fwd: other", 13, "e@x", ""),
    ("", "lost parent", 8, "f@x", "References: <missing@x>\r\n"),
    (
        "",
        "Re: lost parent",
        8,
        "g@x",
        "In-Reply-To: <missing@x>\r\n",
    ),
];

fn message(i: usize) -> String {
    let (from, subject, hour, id, refs) = MAIL[i];
    let from = if from.is_empty() {
        String::new()
    } else {
        format!("From: {from}\r\n")
    };
    // g is half an hour after f.
    let minute = if id == "g@x" { 30 } else { 0 };
    format!(
        "{from}Subject: {subject}\r\nDate: Tue, 1 Jul 2025 {hour:02}:{minute:02}:00 +0000\r\n\
Message-ID: <{id}>\r\n{refs}\r\nbody {i}\r\n"
    )
}

fn mailbox() -> (Server, Client) {
    let server = Server::start(&[ME]);
    let mut c = server.login(ME);
    for i in 0..MAIL.len() {
        expect(&c.append("INBOX", "", &message(i)), &["T OK …"]);
    }
    c.run("SELECT INBOX");
    (server, c)
}

#[test]
fn sort_orders_by_each_key_with_ties_by_number() {
    let (_server, mut c) = mailbox();
    let caps = c.run("CAPABILITY");
    for cap in [
        "SORT",
        "SORT=DISPLAY",
        "THREAD=REFERENCES",
        "THREAD=ORDEREDSUBJECT",
    ] {
        assert!(caps[0].split(' ').any(|w| w == cap), "{cap}: {caps:?}");
    }
    let cases = [
        // Base subjects: hello (1 2 4), lost parent (6 7), other (3 5).
        ("(SUBJECT) UTF-8 ALL", "* SORT 1 2 4 6 7 3 5"),
        ("(DATE) UTF-8 ALL", "* SORT 6 7 3 1 2 4 5"),
        ("(REVERSE DATE) UTF-8 ALL", "* SORT 5 4 2 1 3 7 6"),
        // No From sorts first; then the mailboxes amy, bob, zed.
        ("(FROM) UTF-8 ALL", "* SORT 4 5 6 7 2 3 1"),
        // RFC 5957: the display names Bob, Yves, Zed.
        ("(DISPLAYFROM) UTF-8 ALL", "* SORT 4 5 6 7 3 2 1"),
        ("(ARRIVAL) US-ASCII ALL", "* SORT 1 2 3 4 5 6 7"),
        ("(SUBJECT REVERSE DATE) UTF-8 ALL", "* SORT 4 2 1 7 6 5 3"),
        ("(DATE) UTF-8 SUBJECT hello", "* SORT 1 2 4"),
    ];
    for (args, want) in cases {
        expect(&c.run(&format!("SORT {args}")), &[want, "T OK …"]);
    }
    c.run("STORE 2 +FLAGS.SILENT (\\Deleted)");
    c.run("EXPUNGE");
    // UID SORT answers in UIDs: uid 2 is gone, 3.. are numbers 2..
    expect(
        &c.run("UID SORT (DATE) UTF-8 ALL"),
        &["* SORT 6 7 3 1 4 5", "T OK …"],
    );
    expect(
        &c.run("SORT (DATE) ISO-8859-1 ALL"),
        &["T NO [BADCHARSET …"],
    );
}

/// SORT compares with i;ascii-casemap, which folds to upper case (RFC 5256 §3, RFC 4790
/// §9.2): "[" and "_" sort after the letters, not between the cases (imaptest's
/// sort-subject case). A subject that is only a blob keeps it as its base subject.
#[test]
fn sort_folds_to_upper_case_as_its_collation_does() {
    let server = Server::start(&[ME]);
    let mut c = server.login(ME);
    for subject in ["_", "b", "[xyz]", "A", "Re: c"] {
        let m = format!("Subject: {subject}\r\n\r\nx\r\n");
        expect(&c.append("INBOX", "", &m), &["T OK …"]);
    }
    c.run("SELECT INBOX");
    expect(
        &c.run("SORT (SUBJECT) US-ASCII ALL"),
        &["* SORT 4 2 5 3 1", "T OK …"],
    );
    expect(
        &c.run("SORT (REVERSE SUBJECT) US-ASCII ALL"),
        &["* SORT 1 3 5 2 4", "T OK …"],
    );
}

#[test]
fn thread_references_and_orderedsubject_as_the_rfc_builds_them() {
    let (_server, mut c) = mailbox();
    // 1 → 2 → 4 by References; 5 is a forward of 3's subject; 6 and 7 share a
    // parent nobody has, and hang under a dummy; threads by their first dates.
    expect(
        &c.run("THREAD REFERENCES UTF-8 ALL"),
        &["* THREAD ((6)(7))(3 5)(1 2 4)", "T OK …"],
    );
    expect(
        &c.run("THREAD ORDEREDSUBJECT UTF-8 ALL"),
        &["* THREAD (6 7)(3 5)(1 (2)(4))", "T OK …"],
    );
    // A search narrows what is threaded.
    expect(
        &c.run("THREAD REFERENCES UTF-8 SUBJECT hello"),
        &["* THREAD (1 2 4)", "T OK …"],
    );
    // A fork: two replies to 1.
    c.append(
        "INBOX",
        "",
        "Subject: Re: Hello\r\nDate: Tue, 1 Jul 2025 10:30:00 +0000\r\nMessage-ID: <h@x>\r\n\
References: <a@x>\r\n\r\nfork\r\n",
    );
    expect(
        &c.run("UID THREAD REFERENCES UTF-8 SUBJECT hello"),
        &["* THREAD (1 (8)(2 4))", "T OK …"],
    );
    expect(&c.run("THREAD NOSUCH UTF-8 ALL"), &["T BAD …"]);
}

/// Python's imaplib speaks SORT and THREAD too: an independent client of the same
/// answers.
#[test]
fn python_imaplib_sorts_and_threads() {
    let (server, _c) = mailbox();
    server.peer_passes("imap_sort_thread.py", ME);
}

/// The attacker's mailbox: 1,500 messages that fork at every level (each has a reply
/// that is replied to, and one that is not), 750 levels deep. The answer comes, cut
/// to a chain past a depth, and the server lives on.
#[test]
fn a_thread_forking_at_every_level_is_answered_without_deep_recursion() {
    let server = Server::start(&[ME]);
    let mut c = server.login(ME);
    let levels: usize = 750;
    let mut batch = String::new();
    for i in 0..levels {
        for kind in ["n", "leaf"] {
            let parent = i.checked_sub(1);
            let refs = parent
                .map(|p| format!("References: <n{p}@x>\r\n"))
                .unwrap_or_default();
            let m = format!("Subject: deep\r\nMessage-ID: <{kind}{i}@x>\r\n{refs}\r\nx\r\n");
            batch.push_str(&format!(
                "A{kind}{i} APPEND INBOX {{{}+}}\r\n{m}\r\n",
                m.len()
            ));
        }
    }
    c.send(batch.as_bytes());
    c.until(&format!("Aleaf{}", levels - 1));
    c.run("SELECT INBOX");
    let done = c.run("THREAD REFERENCES UTF-8 ALL");
    // The two first messages share the subject: one dummy holds both threads.
    expect(&done, &["* THREAD ((1 (3 (5 …)(2))", "T OK …"]);
    let line = &done[0];
    // Every message is in the answer once.
    let numbers = line
        .split(|ch: char| !ch.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .count();
    assert_eq!(numbers, 2 * levels, "{}", &line[..200.min(line.len())]);
    expect(&c.run("NOOP"), &["T OK …"]);
}

/// RFC 5256 §4 (5): a thread held by a dummy (two replies to a lost message) keeps its
/// place when a non-reply with the same subject comes: the message goes under the
/// dummy. Subjects in any script sort and thread (nothing is cut inside a character).
#[test]
fn a_dummy_keeps_its_subject_and_any_script_sorts() {
    let server = Server::start(&[ME]);
    let mut c = server.login(ME);
    let mail = [
        ("Re: foo", 9, "x@x", "References: <lost@x>\r\n"),
        ("Re: foo", 10, "y@x", "References: <lost@x>\r\n"),
        ("foo", 11, "b@x", ""),
        ("Привет (fwd)", 12, "p@x", ""),
        ("🎉 [fwd: 日本語]", 13, "j@x", ""),
    ];
    for (subject, hour, id, refs) in mail {
        let m = format!(
            "Subject: {subject}\r\nDate: Tue, 1 Jul 2025 {hour:02}:00:00 +0000\r\n\
Message-ID: <{id}>\r\n{refs}\r\nx\r\n"
        );
        expect(&c.append("INBOX", "", &m), &["T OK …"]);
    }
    c.run("SELECT INBOX");
    expect(
        &c.run("THREAD REFERENCES UTF-8 SUBJECT foo"),
        &["* THREAD ((1)(2)(3))", "T OK …"],
    );
    expect(
        &c.run("SORT (SUBJECT) UTF-8 ALL"),
        &["* SORT 1 2 3 4 5", "T OK …"],
    );
    expect(
        &c.run("THREAD ORDEREDSUBJECT UTF-8 ALL"),
        &["* THREAD (1 (2)(3))(4)(5)", "T OK …"],
    );
}

/// Many threads at once: 3,000 messages, each its own subject but every tenth a reply
/// ("Re: ") to the one before it. Every message is in the answer once, and the replies
/// are gathered under their originals by subject.
#[test]
fn thousands_of_threads_are_gathered_once_each() {
    let server = Server::start(&[ME]);
    let mut c = server.login(ME);
    let total: usize = 3000;
    let mut batch = String::new();
    for i in 0..total {
        let subject = if i % 10 == 9 {
            format!("Re: topic {}", i - 1)
        } else {
            format!("topic {i}")
        };
        let m = format!("Subject: {subject}\r\nMessage-ID: <t{i}@x>\r\n\r\nx\r\n");
        batch.push_str(&format!("A{i} APPEND INBOX {{{}+}}\r\n{m}\r\n", m.len()));
    }
    c.send(batch.as_bytes());
    c.until(&format!("A{}", total - 1));
    c.run("SELECT INBOX");
    let done = c.run("THREAD REFERENCES UTF-8 ALL");
    expect(&done, &["* THREAD …", "T OK …"]);
    let line = &done[0]["* THREAD ".len()..];
    let mut numbers: Vec<usize> = line
        .split(|ch: char| !ch.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .map(|w| w.parse().unwrap())
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=total).collect::<Vec<_>>());
    // Message 9 ("topic 8") holds its reply 10 ("Re: topic 8").
    assert!(line.contains("(9 10)"), "{}", &line[..300.min(line.len())]);
    assert_eq!(line.matches("(9 10)").count(), 1);
}

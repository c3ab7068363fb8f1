//! The extended command forms, to the letter: LIST-EXTENDED (RFC 5258, its §5 examples'
//! shapes), LIST-STATUS (RFC 5819), ESEARCH (RFC 4731) and CREATE-SPECIAL-USE (RFC 6154),
//! COMPRESS=DEFLATE (RFC 4978) and BINARY beside them, from our raw client and from
//! Python's imaplib.

mod common;

use common::imap::{Client, Server, expect};

const ME: &str = "me@example.test";

/// Fruit is not subscribed but Fruit/Apple is; Vegetable and Vegetable/Broccoli both are;
/// Tree/Oak has no Tree folder above it (CREATE made one, and it was deleted).
fn tree(c: &mut Client) {
    for name in [
        "Fruit",
        "Fruit/Apple",
        "Vegetable",
        "Vegetable/Broccoli",
        "Tree/Oak",
    ] {
        expect(&c.run(&format!("CREATE {name}")), &["T OK …"]);
    }
    expect(&c.run("DELETE Tree"), &["T OK …"]);
    for name in ["Fruit/Apple", "Vegetable", "Vegetable/Broccoli"] {
        expect(&c.run(&format!("SUBSCRIBE {name}")), &["T OK …"]);
    }
}

#[test]
fn capabilities_advertise_the_extended_forms() {
    let server = Server::start(&[ME]);
    let mut c = server.login(ME);
    let caps = c.run("CAPABILITY").join(" ");
    for cap in [
        "LIST-EXTENDED",
        "LIST-STATUS",
        "ESEARCH",
        "CREATE-SPECIAL-USE",
        "SPECIAL-USE",
    ] {
        assert!(caps.contains(&format!(" {cap}")), "{cap} missing: {caps}");
    }
}

#[test]
fn list_selection_and_return_options() {
    let server = Server::start(&[ME]);
    let mut c = server.login(ME);
    tree(&mut c);
    // SUBSCRIBED selects by subscription and says so.
    expect(
        &c.run("LIST (SUBSCRIBED) \"\" \"*\""),
        &[
            "* LIST (\\HasNoChildren \\Archive \\Subscribed) \"/\" Archive",
            "* LIST (\\HasNoChildren \\Drafts \\Subscribed) \"/\" Drafts",
            "* LIST (\\HasNoChildren \\Subscribed) \"/\" Fruit/Apple",
            "* LIST (\\HasNoChildren \\Subscribed) \"/\" INBOX",
            "* LIST (\\HasNoChildren \\Junk \\Subscribed) \"/\" Junk",
            "* LIST (\\HasNoChildren \\Sent \\Subscribed) \"/\" Sent",
            "* LIST (\\HasNoChildren \\Trash \\Subscribed) \"/\" Trash",
            "* LIST (\\HasChildren \\Subscribed) \"/\" Vegetable",
            "* LIST (\\HasNoChildren \\Subscribed) \"/\" Vegetable/Broccoli",
            "T OK …",
        ],
    );
    // Without RECURSIVEMATCH, % stops at names that are themselves subscribed.
    expect(
        &c.run("LIST (SUBSCRIBED) \"\" \"V%\""),
        &[
            "* LIST (\\HasChildren \\Subscribed) \"/\" Vegetable",
            "T OK …",
        ],
    );
    // RFC 5258 §5 example 8's shape: a parent the pattern reaches, with a subscribed
    // child it does not, comes with CHILDINFO; subscribed itself, with \Subscribed too.
    expect(
        &c.run("LIST (SUBSCRIBED RECURSIVEMATCH) \"\" \"%\" RETURN (CHILDREN)"),
        &[
            "* LIST (\\HasNoChildren \\Archive \\Subscribed) \"/\" Archive",
            "* LIST (\\HasNoChildren \\Drafts \\Subscribed) \"/\" Drafts",
            "* LIST (\\HasChildren) \"/\" Fruit (\"CHILDINFO\" (\"SUBSCRIBED\"))",
            "* LIST (\\HasNoChildren \\Subscribed) \"/\" INBOX",
            "* LIST (\\HasNoChildren \\Junk \\Subscribed) \"/\" Junk",
            "* LIST (\\HasNoChildren \\Sent \\Subscribed) \"/\" Sent",
            "* LIST (\\HasNoChildren \\Trash \\Subscribed) \"/\" Trash",
            "* LIST (\\HasChildren \\Subscribed) \"/\" Vegetable (\"CHILDINFO\" (\"SUBSCRIBED\"))",
            "T OK …",
        ],
    );
    // With *, every subscribed child is listed itself: no parent needs CHILDINFO.
    let all = c.run("LIST (RECURSIVEMATCH SUBSCRIBED) \"\" \"Fruit*\"");
    expect(
        &all,
        &[
            "* LIST (\\HasNoChildren \\Subscribed) \"/\" Fruit/Apple",
            "T OK …",
        ],
    );
    // RETURN (SUBSCRIBED) lists everything and marks what is subscribed; a level with no
    // folder of its own is \NonExistent.
    expect(
        &c.run("LIST \"\" \"%\" RETURN (SUBSCRIBED)"),
        &[
            "* LIST (\\HasNoChildren \\Archive \\Subscribed) \"/\" Archive",
            "* LIST (\\HasNoChildren \\Drafts \\Subscribed) \"/\" Drafts",
            "* LIST (\\HasChildren) \"/\" Fruit",
            "* LIST (\\HasNoChildren \\Subscribed) \"/\" INBOX",
            "* LIST (\\HasNoChildren \\Junk \\Subscribed) \"/\" Junk",
            "* LIST (\\HasNoChildren \\Sent \\Subscribed) \"/\" Sent",
            "* LIST (\\HasNoChildren \\Trash \\Subscribed) \"/\" Trash",
            "* LIST (\\NonExistent \\HasChildren) \"/\" Tree",
            "* LIST (\\HasChildren \\Subscribed) \"/\" Vegetable",
            "T OK …",
        ],
    );
    // Several patterns at once; a literal among them.
    c.send(b"T LIST \"\" (\"INBOX\" {4+}\r\nTre%) RETURN ()\r\n");
    expect(
        &c.until("T"),
        &[
            "* LIST (\\HasNoChildren) \"/\" INBOX",
            "* LIST (\\NonExistent \\HasChildren) \"/\" Tree",
            "T OK …",
        ],
    );
    // SPECIAL-USE selects the folders that have one (RFC 6154 §3).
    expect(
        &c.run("LIST (SPECIAL-USE) \"\" \"*\" RETURN (SPECIAL-USE)"),
        &[
            "* LIST (\\HasNoChildren \\Archive) \"/\" Archive",
            "* LIST (\\HasNoChildren \\Drafts) \"/\" Drafts",
            "* LIST (\\HasNoChildren \\Junk) \"/\" Junk",
            "* LIST (\\HasNoChildren \\Sent) \"/\" Sent",
            "* LIST (\\HasNoChildren \\Trash) \"/\" Trash",
            "T OK …",
        ],
    );
    // Plain LIST is unchanged: no \Subscribed, \Noselect for the missing level.
    expect(
        &c.run("LIST \"\" \"T%\""),
        &[
            "* LIST (\\HasNoChildren \\Trash) \"/\" Trash",
            "* LIST (\\Noselect \\HasChildren) \"/\" Tree",
            "T OK …",
        ],
    );
    // What RFC 5258 §3 makes BAD.
    for bad in [
        "LIST (RECURSIVEMATCH) \"\" \"*\"",
        "LIST (BOGUS) \"\" \"*\"",
        "LIST \"\" \"*\" RETURN (BOGUS)",
        "LIST \"\" \"*\" RETURN (STATUS (BOGUS))",
    ] {
        expect(&c.run(bad), &["T BAD …"]);
    }
    // The session goes on.
    expect(&c.run("NOOP"), &["T OK …"]);
}

/// RFC 5819: a STATUS after each selectable folder, none for a level with no folder.
#[test]
fn list_status_follows_each_listed_folder() {
    let server = Server::start(&[ME]);
    let mut c = server.login(ME);
    c.run("CREATE Tree/Oak");
    c.run("DELETE Tree");
    c.append("INBOX", "(\\Seen)", &common::imap::message("one"));
    c.append("INBOX", "()", &common::imap::message("two"));
    expect(
        &c.run("LIST \"\" (INBOX \"Tre*\") RETURN (STATUS (MESSAGES UNSEEN SIZE))"),
        &[
            "* LIST (\\HasNoChildren) \"/\" INBOX",
            "* STATUS INBOX (MESSAGES 2 UNSEEN 1 SIZE …)",
            "* LIST (\\NonExistent \\HasChildren) \"/\" Tree",
            "* LIST (\\HasNoChildren) \"/\" Tree/Oak",
            "* STATUS Tree/Oak (MESSAGES 0 UNSEEN 0 SIZE 0)",
            "T OK …",
        ],
    );
}

/// RFC 4731 §3.1's examples' shapes: MIN, MAX, COUNT and ALL as asked, COUNT 0 alone
/// when nothing matches, ALL when the list is empty; UID forms; MODSEQ with CONDSTORE.
#[test]
fn esearch_answers_what_was_asked() {
    let server = Server::start(&[ME]);
    let mut c = server.login(ME);
    for (i, flags) in ["(\\Seen)", "()", "()", "(\\Seen)", "()"]
        .iter()
        .enumerate()
    {
        c.append("INBOX", flags, &common::imap::message(&format!("m{i}")));
    }
    c.run("SELECT INBOX");
    expect(
        &c.run("STORE 1 -FLAGS (\\Seen)"),
        &["* 1 FETCH …", "T OK …"],
    );
    expect(
        &c.run("SEARCH RETURN (MIN COUNT) UNSEEN"),
        &["* ESEARCH (TAG \"…\") MIN 1 COUNT 4", "T OK …"],
    );
    expect(
        &c.run("SEARCH RETURN (MIN MAX COUNT ALL) UNSEEN"),
        &[
            "* ESEARCH (TAG \"…\") MIN 1 MAX 5 ALL 1:3,5 COUNT 4",
            "T OK …",
        ],
    );
    expect(
        &c.run("UID SEARCH RETURN () SEEN"),
        &["* ESEARCH (TAG \"…\") UID ALL 4", "T OK …"],
    );
    expect(
        &c.run("UID SEARCH RETURN (MIN MAX COUNT ALL) KEYWORD nothing"),
        &["* ESEARCH (TAG \"…\") UID COUNT 0", "T OK …"],
    );
    // MODSEQ in a SEARCH enables CONDSTORE, so the first says the folder's highest
    // (RFC 7162 §3.1); with MIN or MAX alone the MODSEQ is that of the messages
    // returned (RFC 4731 §3.2), not the highest of all that matched.
    c.run("STORE 5 +FLAGS (\\Answered)");
    c.run("STORE 1 +FLAGS (\\Answered)");
    expect(
        &c.run("SEARCH RETURN (MAX) MODSEQ 1"),
        &[
            "* OK [HIGHESTMODSEQ …] …",
            "* ESEARCH (TAG \"…\") MAX 5 MODSEQ …",
            "T OK …",
        ],
    );
    let modseq = |c: &mut Client, n: u32| -> String {
        let line = c.run(&format!("FETCH {n} (MODSEQ)")).join(" ");
        let at = line.find("MODSEQ (").expect("a MODSEQ") + 8;
        line[at..].split(')').next().unwrap_or_default().to_string()
    };
    let (first, last) = (modseq(&mut c, 1), modseq(&mut c, 5));
    assert!(first.parse::<u64>().unwrap() > last.parse::<u64>().unwrap());
    expect(
        &c.run("SEARCH RETURN (MAX) MODSEQ 1"),
        &[
            &format!("* ESEARCH (TAG \"…\") MAX 5 MODSEQ {last}"),
            "T OK …",
        ],
    );
    expect(
        &c.run("SEARCH RETURN (MIN MAX) MODSEQ 1"),
        &[
            &format!("* ESEARCH (TAG \"…\") MIN 1 MAX 5 MODSEQ {first}"),
            "T OK …",
        ],
    );
    expect(
        &c.run("SEARCH RETURN (COUNT) 4:5 MODSEQ 1"),
        &[
            &format!("* ESEARCH (TAG \"…\") COUNT 2 MODSEQ {last}"),
            "T OK …",
        ],
    );
    // An option RFC 4731 does not define is BAD.
    expect(&c.run("SEARCH RETURN (BOGUS) ALL"), &["T BAD …"]);
    // Pipelined: each answer in its place, tagged as sent.
    c.send(b"a SEARCH RETURN (COUNT) ALL\r\nb NOOP\r\nc UID SEARCH RETURN (MAX) ALL\r\n");
    let got = c.until("c");
    expect(
        &got,
        &[
            "* ESEARCH (TAG \"a\") COUNT 5",
            "a OK …",
            "b OK …",
            "* ESEARCH (TAG \"c\") UID MAX 5",
            "T OK …",
        ],
    );
    // Plain SEARCH is unchanged.
    expect(&c.run("SEARCH SEEN"), &["* SEARCH 4", "T OK …"]);
}

#[test]
fn create_special_use_sets_the_use() {
    let server = Server::start(&[ME]);
    let mut c = server.login(ME);
    expect(&c.run("CREATE \"Old Mail\" (USE (\\Archive))"), &["T OK …"]);
    expect(&c.run("CREATE Stuff (USE ())"), &["T OK …"]);
    expect(&c.run("CREATE Odd (USE (\\Bogus))"), &["T NO [USEATTR] …"]);
    expect(
        &c.run("CREATE Two (USE (\\Sent \\Trash))"),
        &["T NO [USEATTR] …"],
    );
    expect(&c.run("LIST \"\" Odd"), &["T OK …"]);
    expect(
        &c.run("LIST (SPECIAL-USE) \"\" \"*Mail\""),
        &[
            "* LIST (\\HasNoChildren \\Archive) \"/\" \"Old Mail\"",
            "T OK …",
        ],
    );
    expect(
        &c.run("LIST \"\" Stuff"),
        &["* LIST (\\HasNoChildren) \"/\" Stuff", "T OK …"],
    );
    expect(
        &c.run("CREATE Stuff (USE (\\Junk))"),
        &["T NO [ALREADYEXISTS] …"],
    );
}

#[test]
fn python_imaplib_lists_searches_and_creates_with_the_extensions() {
    let server = Server::start(&[ME]);
    server.peer_passes("imap_extended.py", ME);
}

/// RFC 4978 from imaplib wrapped in zlib: the session goes on compressed, a large
/// message crosses both ways, a second COMPRESS is refused.
#[test]
fn python_imaplib_compresses_with_deflate() {
    let server = Server::start(&[ME]);
    server.peer_passes("imap_compress.py", ME);
}

/// Garbage after COMPRESS is the end of the session, not a crash or a hang.
#[test]
fn a_broken_deflate_stream_ends_the_session() {
    let server = Server::start(&[ME]);
    let mut c = server.login(ME);
    expect(&c.run("COMPRESS DEFLATE"), &["T OK …"]);
    c.send(&[0xff; 64]);
    c.send(b"\r\n");
    assert_eq!(c.line(), None);
    // The server still serves others.
    let mut other = server.login(ME);
    expect(&other.run("NOOP"), &["T OK …"]);
}

/// RFC 6855: after ENABLE UTF8=ACCEPT folder names travel as UTF-8 both ways, and APPEND
/// takes its UTF8 (literal8) form; a session that did not enable it keeps modified UTF-7.
#[test]
fn utf8_accept_switches_folder_names_to_utf8() {
    let server = Server::start(&[ME]);
    let mut c = server.login(ME);
    let caps = c.run("CAPABILITY").join(" ");
    assert!(caps.contains(" UTF8=ACCEPT"), "{caps}");
    expect(&c.run("CREATE Entw&APw-rfe"), &["T OK …"]);
    expect(
        &c.run("LIST \"\" Entw*"),
        &["* LIST (\\HasNoChildren) \"/\" Entw&APw-rfe", "T OK …"],
    );
    expect(
        &c.run("ENABLE UTF8=ACCEPT"),
        &["* ENABLED UTF8=ACCEPT", "T OK …"],
    );
    expect(
        &c.run("LIST \"\" Entw*"),
        &["* LIST (\\HasNoChildren) \"/\" \"Entwürfe\"", "T OK …"],
    );
    expect(&c.run("CREATE \"Données\""), &["T OK …"]);
    // '&' is itself now, not the start of modified UTF-7.
    expect(&c.run("CREATE \"R&D\""), &["T OK …"]);
    expect(
        &c.run("STATUS \"Données\" (MESSAGES)"),
        &["* STATUS \"Données\" (MESSAGES 0)", "T OK …"],
    );
    let message = "Subject: Grüße\r\nFrom: Jürgen <j@example.test>\r\n\r\nHallo\r\n";
    c.send(
        format!(
            "A APPEND \"Données\" UTF8 (~{{{}+}}\r\n{message})\r\n",
            message.len()
        )
        .as_bytes(),
    );
    expect(&c.until("A"), &["T OK [APPENDUID …"]);
    c.run("SELECT \"Données\"");
    expect(
        &c.run("FETCH 1 BODY.PEEK[HEADER.FIELDS (SUBJECT)]"),
        &[
            "* 1 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {20}\r\nSubject: Grüße\r\n\r\n)",
            "T OK …",
        ],
    );
    // Another session, not enabled: the same folders in modified UTF-7.
    let mut other = server.login(ME);
    // Not valid modified UTF-7: a pattern that matches nothing.
    expect(&other.run("LIST \"\" \"*&*\""), &["T OK …"]);
    expect(
        &other.run("LIST \"\" \"*&-*\""),
        &["* LIST (\\HasNoChildren) \"/\" R&-D", "T OK …"],
    );
    expect(
        &other.run("LIST \"\" (Donn* Entw* R*)"),
        &[
            "* LIST (\\HasNoChildren) \"/\" Donn&AOk-es",
            "* LIST (\\HasNoChildren) \"/\" Entw&APw-rfe",
            "* LIST (\\HasNoChildren) \"/\" R&-D",
            "T OK …",
        ],
    );
}

/// The attacker's SEARCH: sets of 300,000 numbers (a logged-in line may be as long as
/// the largest message). Each set is resolved once into ranges, so every message costs
/// one binary search, not 300,000 comparisons; the answers are right, under NOT and OR
/// too, and for 20,000 sets in one search; and the session goes on.
#[test]
fn search_sets_of_hundreds_of_thousands_of_numbers_are_answered_right() {
    let server = Server::start(&[ME]);
    let mut c = server.login(ME);
    for i in 0..5 {
        c.append("INBOX", "()", &common::imap::message(&format!("m{i}")));
    }
    c.run("SELECT INBOX");
    // Every even number up to 600,000: of UIDs and numbers 1 to 5, 2 and 4.
    let evens: Vec<String> = (1..=300_000u32).map(|n| (n * 2).to_string()).collect();
    let evens = evens.join(",");
    c.send(format!("X1 UID SEARCH UID {evens}\r\n").as_bytes());
    expect(&c.until("X1"), &["* SEARCH 2 4", "T OK …"]);
    c.send(format!("X2 SEARCH NOT {evens}\r\n").as_bytes());
    expect(&c.until("X2"), &["* SEARCH 1 3 5", "T OK …"]);
    c.send(format!("X3 SEARCH OR UID {evens} 5\r\n").as_bytes());
    expect(&c.until("X3"), &["* SEARCH 2 4 5", "T OK …"]);
    // Many sets rather than one long one: 20,000 keys, each found for every message
    // by binary search among the others.
    c.send(format!("X4 SEARCH {}2:4\r\n", "1:5 ".repeat(20_000)).as_bytes());
    expect(&c.until("X4"), &["* SEARCH 2 3 4", "T OK …"]);
    expect(&c.run("NOOP"), &["T OK …"]);
}

/// The attacker's line for the extended forms: 8 MB of `( ` after SEARCH RETURN (a
/// logged-in command may be as long as the largest message). It is refused without
/// noting millions of tokens, and the session goes on.
#[test]
fn a_line_of_millions_of_tokens_is_refused_without_noting_them() {
    let server = Server::start(&[ME]);
    let mut c = server.login(ME);
    c.run("SELECT INBOX");
    let before = server.process.memory_kib("VmHWM");
    let line = format!("X SEARCH RETURN (COUNT) {}ALL\r\n", "( ".repeat(4_000_000));
    c.send(line.as_bytes());
    expect(&c.until("X"), &["T BAD …"]);
    let grew = server.process.memory_kib("VmHWM").saturating_sub(before);
    assert!(grew < 64 * 1024, "the line grew the peak by {grew} KiB");
    expect(&c.run("NOOP"), &["T OK …"]);
}

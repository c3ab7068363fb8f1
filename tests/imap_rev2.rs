//! IMAP4rev2 (RFC 9051) beside IMAP4rev1: a client that ENABLEs it gets rev2's rules
//! (ESEARCH answers, no \Recent, a LIST in SELECT's answer, UTF-8 names, \NonExistent),
//! one that does not keeps rev1's; and SEARCHRES (RFC 5182), which rev2 requires.

mod common;

use common::imap::{Server, expect, message};

const ME: &str = "me@example.test";

#[test]
fn rev2_is_advertised_and_enabled_per_session() {
    let server = Server::start(&[ME]);
    let mut c = common::imap::Client::connect(server.port);
    c.starttls();
    let caps = c.run("CAPABILITY").join(" ");
    assert!(
        caps.to_uppercase().contains(" IMAP4REV1 IMAP4REV2 "),
        "{caps}"
    );
    let mut c = server.login(ME);
    expect(&c.append("INBOX", "(\\Seen)", &message("one")), &["T OK …"]);
    expect(&c.append("INBOX", "", &message("two")), &["T OK …"]);
    expect(&c.run("CREATE Work/2025"), &["T OK …"]);
    // CREATE made Work too; without it, Work is a level with no folder.
    expect(&c.run("DELETE Work"), &["T OK …"]);
    expect(&c.run("CREATE \"Données\""), &["T OK …"]);
    expect(
        &c.run("ENABLE IMAP4rev2"),
        &["* ENABLED IMAP4rev2", "T OK …"],
    );
    expect(
        &c.run("SELECT INBOX"),
        &[
            "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)",
            "* 2 EXISTS",
            "* OK [UIDVALIDITY …",
            "* OK [UIDNEXT 3] …",
            "* OK [HIGHESTMODSEQ …",
            "* OK [PERMANENTFLAGS …",
            "* LIST (\\HasNoChildren) \"/\" INBOX",
            "T OK [READ-WRITE] …",
        ],
    );
    expect(
        &c.run("SEARCH UNSEEN"),
        &["* ESEARCH (TAG \"…\") ALL 2", "T OK …"],
    );
    expect(
        &c.run("UID SEARCH ALL"),
        &["* ESEARCH (TAG \"…\") UID ALL 1:2", "T OK …"],
    );
    expect(
        &c.run("SEARCH KEYWORD none"),
        &["* ESEARCH (TAG \"…\")", "T OK …"],
    );
    expect(
        &c.run("FETCH 1:* FLAGS"),
        &[
            "* 1 FETCH (FLAGS (\\Seen))",
            "* 2 FETCH (FLAGS ())",
            "T OK …",
        ],
    );
    // A new message: EXISTS alone, no RECENT.
    let mut other = server.login(ME);
    expect(&other.append("INBOX", "", &message("three")), &["T OK …"]);
    expect(&c.run("NOOP"), &["* 3 EXISTS", "T OK …"]);
    // Names are UTF-8 and a missing level is \NonExistent, in plain LIST too.
    expect(
        &c.run("LIST \"\" \"%\""),
        &[
            "* LIST (\\HasNoChildren \\Archive) \"/\" Archive",
            "* LIST (\\HasNoChildren) \"/\" \"Données\"",
            "* LIST (\\HasNoChildren \\Drafts) \"/\" Drafts",
            "* LIST (\\HasNoChildren) \"/\" INBOX",
            "* LIST (\\HasNoChildren \\Junk) \"/\" Junk",
            "* LIST (\\HasNoChildren \\Sent) \"/\" Sent",
            "* LIST (\\HasNoChildren \\Trash) \"/\" Trash",
            "* LIST (\\NonExistent \\HasChildren) \"/\" Work",
            "T OK …",
        ],
    );
    // The rev2 session claimed no \Recent: a rev1 session still gets them.
    expect(
        &other.run("SELECT INBOX"),
        &[
            "* FLAGS …",
            "* 3 EXISTS",
            "* 3 RECENT",
            "* OK [UNSEEN 2] …",
            "* OK [UIDVALIDITY …",
            "* OK [UIDNEXT 4] …",
            "* OK [HIGHESTMODSEQ …",
            "* OK [PERMANENTFLAGS …",
            "T OK [READ-WRITE] …",
        ],
    );
    expect(&other.run("SEARCH UNSEEN"), &["* SEARCH 2 3", "T OK …"]);
}

/// RFC 5182's examples' shapes: SAVE keeps a result for `$` (UIDs in UID commands,
/// sequence numbers otherwise), SAVE alone answers only OK, SAVE with MIN/MAX keeps
/// only those, an empty result matches nothing, an expunged message drops out.
#[test]
fn searchres_saves_a_result_for_dollar() {
    let server = Server::start(&[ME]);
    let mut c = server.login(ME);
    for (i, flags) in ["(\\Seen)", "()", "()", "(\\Seen)", "()"]
        .iter()
        .enumerate()
    {
        c.append("INBOX", flags, &message(&format!("m{i}")));
    }
    c.run("SELECT INBOX");
    let caps = c.run("CAPABILITY").join(" ");
    assert!(caps.contains(" SEARCHRES"), "{caps}");
    expect(&c.run("SEARCH RETURN (SAVE) UNSEEN"), &["T OK …"]);
    expect(
        &c.run("FETCH $ (UID)"),
        &[
            "* 2 FETCH (UID 2)",
            "* 3 FETCH (UID 3)",
            "* 5 FETCH (UID 5)",
            "T OK …",
        ],
    );
    expect(&c.run("UID STORE $ +FLAGS.SILENT (\\Flagged)"), &["T OK …"]);
    expect(&c.run("SEARCH FLAGGED"), &["* SEARCH 2 3 5", "T OK …"]);
    expect(&c.run("SEARCH NOT $"), &["* SEARCH 1 4", "T OK …"]);
    expect(&c.run("UID SEARCH UID $ SEEN"), &["* SEARCH", "T OK …"]);
    // After an expunge, $ still names the same messages, by their new numbers.
    expect(&c.run("STORE 1 +FLAGS.SILENT (\\Deleted)"), &["T OK …"]);
    expect(&c.run("EXPUNGE"), &["* 1 EXPUNGE", "T OK …"]);
    expect(
        &c.run("FETCH $ (UID)"),
        &[
            "* 1 FETCH (UID 2)",
            "* 2 FETCH (UID 3)",
            "* 4 FETCH (UID 5)",
            "T OK …",
        ],
    );
    // SAVE with MIN and MAX keeps only those; ESEARCH answers what else was asked.
    expect(
        &c.run("UID SEARCH RETURN (SAVE MIN MAX) UNSEEN"),
        &["* ESEARCH (TAG \"…\") UID MIN 2 MAX 5", "T OK …"],
    );
    expect(
        &c.run("UID FETCH $ (FLAGS)"),
        &[
            "* 1 FETCH (UID 2 FLAGS (\\Flagged \\Recent))",
            "* 4 FETCH (UID 5 FLAGS (\\Flagged \\Recent))",
            "T OK …",
        ],
    );
    // An empty result: $ matches nothing.
    expect(&c.run("SEARCH RETURN (SAVE) KEYWORD none"), &["T OK …"]);
    expect(&c.run("FETCH $ (UID)"), &["T OK …"]);
    expect(&c.run("SEARCH NOT $"), &["* SEARCH 1 2 3 4", "T OK …"]);
    // A new SELECT forgets it.
    c.run("SEARCH RETURN (SAVE) ALL");
    c.run("SELECT INBOX");
    expect(&c.run("FETCH $ (UID)"), &["T OK …"]);
}

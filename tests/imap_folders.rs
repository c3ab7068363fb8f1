//! Folders to the letter (RFC 3501 §6.3, RFC 5258 §3 on \Subscribed, RFC 6154): CREATE
//! leaves subscribing to the client, LIST and LSUB show the levels a `%` stops at as
//! \Noselect, plain LIST says nothing of subscriptions, RENAME and DELETE follow the
//! RFC's own examples.

mod common;

use common::imap::{Server, expect};

const ME: &str = "me@example.test";

#[test]
fn create_does_not_subscribe_and_plain_list_does_not_tell_subscriptions() {
    let server = Server::start(&[ME]);
    let mut c = server.login(ME);
    expect(&c.run("CREATE Work"), &["T OK …"]);
    expect(
        &c.run("LIST \"\" *"),
        &[
            "* LIST (\\HasNoChildren \\Archive) \"/\" Archive",
            "* LIST (\\HasNoChildren \\Drafts) \"/\" Drafts",
            "* LIST (\\HasNoChildren) \"/\" INBOX",
            "* LIST (\\HasNoChildren \\Junk) \"/\" Junk",
            "* LIST (\\HasNoChildren \\Sent) \"/\" Sent",
            "* LIST (\\HasNoChildren \\Trash) \"/\" Trash",
            "* LIST (\\HasNoChildren) \"/\" Work",
            "T OK …",
        ],
    );
    // The folders every mailbox starts with are subscribed; the new one is not.
    expect(
        &c.run("LSUB \"\" *"),
        &[
            "* LSUB (…) \"/\" Archive",
            "* LSUB (…) \"/\" Drafts",
            "* LSUB (…) \"/\" INBOX",
            "* LSUB (…) \"/\" Junk",
            "* LSUB (…) \"/\" Sent",
            "* LSUB (…) \"/\" Trash",
            "T OK …",
        ],
    );
    expect(&c.run("SUBSCRIBE Work"), &["T OK …"]);
    expect(
        &c.run("LSUB \"\" Work"),
        &["* LSUB (…) \"/\" Work", "T OK …"],
    );
    expect(&c.run("UNSUBSCRIBE Work"), &["T OK …"]);
    expect(&c.run("LSUB \"\" Work"), &["T OK …"]);
}

/// RFC 3501 §6.3.9: "if foo/bar is subscribed and foo is not, LSUB with % must return
/// foo with \Noselect"; with * only what is subscribed.
#[test]
fn lsub_shows_an_unsubscribed_parent_of_a_subscribed_child_as_noselect() {
    let server = Server::start(&[ME]);
    let mut c = server.login(ME);
    c.run("CREATE Work");
    c.run("CREATE Work/2025");
    c.run("SUBSCRIBE Work/2025");
    expect(
        &c.run("LSUB \"\" Work%"),
        &["* LSUB (\\Noselect …) \"/\" Work", "T OK …"],
    );
    expect(
        &c.run("LSUB \"\" Work*"),
        &["* LSUB (…) \"/\" Work/2025", "T OK …"],
    );
    expect(
        &c.run("LSUB Work/ %"),
        &["* LSUB (…) \"/\" Work/2025", "T OK …"],
    );
    // Subscribed, the parent is shown as it is.
    c.run("SUBSCRIBE Work");
    let shown = c.run("LSUB \"\" Work%");
    expect(&shown, &["* LSUB (\\HasChildren) \"/\" Work", "T OK …"]);
}

/// CREATE of `a/b/c` makes `a` and `a/b` too (RFC 3501 §6.3.3's SHOULD); once they are
/// deleted, a level with no folder of its own is listed as \Noselect where the pattern
/// stops, so a client walking the tree with % still finds c.
#[test]
fn list_shows_levels_without_a_folder_as_noselect() {
    let server = Server::start(&[ME]);
    let mut c = server.login(ME);
    expect(&c.run("CREATE a/b/c"), &["T OK …"]);
    expect(
        &c.run("LIST \"\" a*"),
        &[
            "* LIST (\\HasChildren) \"/\" a",
            "* LIST (\\HasChildren) \"/\" a/b",
            "* LIST (\\HasNoChildren) \"/\" a/b/c",
            "T OK …",
        ],
    );
    let selected = c.run("SELECT a/b");
    assert!(
        selected.last().unwrap().starts_with("T OK [READ-WRITE]"),
        "{selected:?}"
    );
    expect(&c.run("CREATE a/b"), &["T NO [ALREADYEXISTS] …"]);
    expect(&c.run("CLOSE"), &["T OK …"]);
    // RFC 3501 §6.3.4: a deleted name with inferiors stays, as \Noselect.
    expect(&c.run("DELETE a/b"), &["T OK …"]);
    expect(&c.run("DELETE a"), &["T OK …"]);
    expect(
        &c.run("LIST \"\" a%"),
        &["* LIST (\\Noselect \\HasChildren) \"/\" a", "T OK …"],
    );
    expect(
        &c.run("LIST a/ %"),
        &["* LIST (\\Noselect \\HasChildren) \"/\" a/b", "T OK …"],
    );
    expect(
        &c.run("LIST \"\" a/b/%"),
        &["* LIST (\\HasNoChildren) \"/\" a/b/c", "T OK …"],
    );
    expect(&c.run("SELECT a/b"), &["T NO …"]);
    // The hierarchy delimiter (RFC 3501 §6.3.8).
    expect(
        &c.run("LIST \"\" \"\""),
        &["* LIST (\\Noselect) \"/\" \"\"", "T OK …"],
    );
}

/// The attacker's CREATE: the levels it makes are bounded by the nesting limit (32), and
/// a name past it is refused before any level is made.
#[test]
fn create_makes_at_most_the_nesting_limit_of_levels() {
    let server = Server::start(&[ME]);
    let mut c = server.login(ME);
    let deep = |levels: usize| vec!["d"; levels].join("/");
    expect(&c.run(&format!("CREATE {}", deep(33))), &["T NO [LIMIT] …"]);
    expect(&c.run("LIST \"\" d*"), &["T OK …"]);
    expect(&c.run(&format!("CREATE {}", deep(32))), &["T OK …"]);
    let listed = c.run("LIST \"\" d*");
    assert_eq!(listed.len(), 33, "{listed:?}");
    assert!(listed.iter().all(|l| !l.contains("Noselect")), "{listed:?}");
}

/// A subscription outlives its folder (RFC 3501 §6.3.6: the server MUST NOT remove a
/// name from the subscriptions unilaterally): LSUB shows it \Noselect, LIST
/// (SUBSCRIBED) \NonExistent (RFC 5258 §3.1), a folder made again under the name is
/// subscribed, and UNSUBSCRIBE of the lost name works.
#[test]
fn a_deleted_folder_stays_subscribed() {
    let server = Server::start(&[ME]);
    let mut c = server.login(ME);
    for command in [
        "CREATE Old",
        "SUBSCRIBE Old",
        "CREATE Gone",
        "SUBSCRIBE Gone",
    ] {
        expect(&c.run(command), &["T OK …"]);
    }
    expect(&c.run("DELETE Old"), &["T OK …"]);
    expect(&c.run("DELETE Gone"), &["T OK …"]);
    expect(
        &c.run("LSUB \"\" Old"),
        &["* LSUB (\\Noselect) \"/\" Old", "T OK …"],
    );
    expect(
        &c.run("LIST (SUBSCRIBED) \"\" (Old Gone)"),
        &[
            "* LIST (\\NonExistent \\Subscribed) \"/\" Gone",
            "* LIST (\\NonExistent \\Subscribed) \"/\" Old",
            "T OK …",
        ],
    );
    // Plain LIST does not show names without a folder.
    expect(&c.run("LIST \"\" Old"), &["T OK …"]);
    expect(&c.run("CREATE Old"), &["T OK …"]);
    expect(
        &c.run("LIST \"\" Old RETURN (SUBSCRIBED)"),
        &["* LIST (\\HasNoChildren \\Subscribed) \"/\" Old", "T OK …"],
    );
    expect(&c.run("UNSUBSCRIBE Gone"), &["T OK …"]);
    expect(&c.run("LSUB \"\" Gone"), &["T OK …"]);
    expect(&c.run("UNSUBSCRIBE Gone"), &["T NO …"]);
}

/// RFC 3501 §6.3.5's example: renaming a folder renames those below it; renaming
/// INBOX moves its messages to a new folder and leaves INBOX empty.
#[test]
fn rename_and_delete_as_the_rfc_shows() {
    let server = Server::start(&[ME]);
    let mut c = server.login(ME);
    for name in ["foo", "foo/bar", "foo/baz"] {
        expect(&c.run(&format!("CREATE {name}")), &["T OK …"]);
    }
    expect(&c.run("RENAME foo zowie"), &["T OK …"]);
    expect(
        &c.run("LIST \"\" zowie*"),
        &[
            "* LIST (\\HasChildren) \"/\" zowie",
            "* LIST (\\HasNoChildren) \"/\" zowie/bar",
            "* LIST (\\HasNoChildren) \"/\" zowie/baz",
            "T OK …",
        ],
    );
    expect(&c.run("LIST \"\" foo*"), &["T OK …"]);
    expect(&c.run("RENAME zowie/bar Sent"), &["T NO [ALREADYEXISTS] …"]);
    c.append("INBOX", "", &common::imap::message("kept"));
    expect(&c.run("RENAME INBOX Old"), &["T OK …"]);
    expect(
        &c.run("STATUS INBOX (MESSAGES)"),
        &["* STATUS INBOX (MESSAGES 0)", "T OK …"],
    );
    expect(
        &c.run("STATUS Old (MESSAGES)"),
        &["* STATUS Old (MESSAGES 1)", "T OK …"],
    );
    expect(&c.run("DELETE INBOX"), &["T NO …"]);
    expect(&c.run("DELETE zowie/baz"), &["T OK …"]);
    expect(&c.run("DELETE nothing-here"), &["T NO [NONEXISTENT] …"]);
}

/// STATUS=SIZE (RFC 8438) and APPENDLIMIT (RFC 7889): the folder's size as RFC822.SIZE
/// counts it, and the largest APPEND taken, advertised.
#[test]
fn status_size_and_appendlimit() {
    let server = Server::start(&[ME]);
    let mut c = server.login(ME);
    let caps = c.run("CAPABILITY");
    assert!(caps[0].contains(" STATUS=SIZE"), "{caps:?}");
    assert!(caps[0].contains(" APPENDLIMIT="), "{caps:?}");
    let (one, two) = (
        common::imap::message("one"),
        common::imap::message("second one"),
    );
    c.append("INBOX", "", &one);
    c.append("INBOX", "", &two);
    expect(
        &c.run("STATUS INBOX (SIZE MESSAGES)"),
        &[
            &format!("* STATUS INBOX (SIZE {} MESSAGES 2)", one.len() + two.len()),
            "T OK …",
        ],
    );
    // One octet over the advertised limit is refused before any of it is sent (no
    // continuation), and the session goes on with nothing appended.
    let limit: usize = caps[0]
        .split(" APPENDLIMIT=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("APPENDLIMIT=N");
    c.send(format!("A APPEND INBOX {{{}}}\r\n", limit + 1).as_bytes());
    let refused = c.until("A");
    assert!(
        refused.iter().all(|l| !l.starts_with('+')),
        "a continuation for an over-limit literal: {refused:?}"
    );
    expect(&refused, &["T BAD …APPENDLIMIT…"]);
    expect(
        &c.run("STATUS INBOX (MESSAGES)"),
        &["* STATUS INBOX (MESSAGES 2)", "T OK …"],
    );
}

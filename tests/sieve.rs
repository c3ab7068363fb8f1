//! Sieve at delivery through the real server: the operator's script files, rejects and
//! redirects, the declared vacation responder answers once per sender and never lists
//! or bounces, a failing script keeps the mail; the sink, IMAP and dkimpy check it.

mod common;

use std::time::Duration;

use common::{TEST_HASH, Workspace, free_port, python_peer, received, swaks, wait_for};

const SCRIPT: &str = r#"require ["fileinto", "reject", "envelope", "imap4flags", "include"];
# Lists go to their folder, already read.
if header :contains "List-Id" "rust.lists" {
    fileinto :flags "\\Seen" "Lists/rust";
    stop;
}
if envelope :is "from" "pest@sender.test" {
    reject "I do not take mail from you.";
    stop;
}
if header :contains "subject" "please forward" {
    redirect "friend@elsewhere.test";
    stop;
}
if header :contains "subject" "broken" {
    include :personal "missing";
}
"#;

fn spec(mx: u16, imap: u16, relay: u16, dns: u16, mailbox_extra: &str) -> String {
    format!(
        r#"
[tls]
mode = "self-signed"

[listeners]
mx = "127.0.0.1:{mx}"
imap = "127.0.0.1:{imap}"

[dns]
resolver = "127.0.0.1:{dns}"

[delivery]
relay = "127.0.0.1:{relay}"

[domains."example.test".aliases.info]
forward = ["me@example.test"]

[domains."example.test".aliases.me.mailbox]
password = {{ hash = "{TEST_HASH}" }}
sieve = {{ file = "me.sieve" }}
{mailbox_extra}
"#
    )
}

const VACATION: &str =
    r#"vacation = { body = "I am away until Monday.\nAsk bob@example.test meanwhile.", days = 7 }"#;

fn send(mx: u16, from: &str, to: &str, subject: &str, extra: &[&str]) {
    let mut args = vec![
        "--from",
        from,
        "--to",
        to,
        "--h-Subject",
        subject,
        "--body",
        "Hello there.",
    ];
    args.extend_from_slice(extra);
    let run = swaks(mx, &args);
    run.ok();
    assert!(run.stdout.contains("250 2.0.0"), "{}", run.stdout);
}

/// A server whose mailbox me@example.test runs `script` (me.sieve) from the spec, with
/// `mailbox_extra` in its table; the MX's port, and the DNS server to keep alive.
struct Scripted {
    w: Workspace,
    server: common::Process,
    mx: u16,
    imap: u16,
    relay: u16,
    _dns: common::Process,
}

fn scripted(script: &str, mailbox_extra: &str) -> Scripted {
    let w = Workspace::new("");
    std::fs::write(w.path().join("me.sieve"), script).unwrap();
    let (mx, imap, relay) = (free_port(), free_port(), free_port());
    let (dns_server, dns) = common::quiet_dns(w.path());
    w.write_spec(&spec(mx, imap, relay, dns, mailbox_extra));
    let server = w.serve(mx);
    Scripted {
        w,
        server,
        mx,
        imap,
        relay,
        _dns: dns_server,
    }
}

#[test]
fn a_declared_script_files_rejects_redirects_and_the_vacation_responder_answers_once() {
    let Scripted {
        w,
        server,
        mx,
        imap,
        relay,
        _dns,
    } = scripted(SCRIPT, VACATION);
    let sink_dir = w.path().join("sink");
    let _sink = python_peer(
        "sink.py",
        &[&relay.to_string(), sink_dir.to_str().unwrap()],
        w.path(),
    );

    // A list message: filed, marked read, and never answered.
    send(
        mx,
        "list@lists.test",
        "me@example.test",
        "[rust] release",
        &[
            "--add-header",
            "List-Id: Rust users <rust.lists.example.org>",
        ],
    );
    // A sender the script refuses: the sender is told why.
    send(mx, "pest@sender.test", "me@example.test", "buy now", &[]);
    // Redirected, signed for the account's domain and SRS-rewritten like any forward.
    send(
        mx,
        "alice@sender.test",
        "me@example.test",
        "please forward this",
        &[],
    );
    // The script fails on this one: kept in the INBOX, the reason on top.
    send(
        mx,
        "carol@sender.test",
        "me@example.test",
        "broken thing",
        &[],
    );
    // The vacation responder: one reply to Dave however often he writes.
    for n in 0..2 {
        send(
            mx,
            "dave@sender.test",
            "me@example.test",
            &format!("hello {n}"),
            &[
                "--add-header",
                &format!("Message-ID: <dave{n}@sender.test>"),
            ],
        );
    }
    // Nor to bulk mail or to a bounce.
    send(
        mx,
        "news@sender.test",
        "me@example.test",
        "newsletter",
        &["--add-header", "Precedence: list"],
    );
    send(mx, "<>", "me@example.test", "Undelivered Mail", &[]);
    // Mail to an alias of the mailbox is answered too (the alias is one of its addresses).
    send(
        mx,
        "frank@sender.test",
        "info@example.test",
        "question",
        &[],
    );
    // A stranger's subject that decodes to line breaks ("x", CR LF CR LF, "Click here")
    // must not break the reply's header open.
    send(
        mx,
        "mallory@sender.test",
        "me@example.test",
        "=?UTF-8?B?eA0KDQpDbGljayBoZXJl?=",
        &[],
    );

    // The rejection notice, the redirect and three replies; nothing else.
    assert!(
        wait_for(Duration::from_secs(30), || received(&sink_dir).len() >= 5),
        "sink has {}:\n{}",
        received(&sink_dir).len(),
        server.log_text()
    );
    std::thread::sleep(Duration::from_secs(2));
    let sent = received(&sink_dir);
    let summary: Vec<String> = sent
        .iter()
        .map(|m| format!("{} -> {:?}", m.mail_from, m.rcpt_to))
        .collect();
    assert_eq!(sent.len(), 5, "{summary:?}");
    let to = |rcpt: &str| {
        sent.iter()
            .find(|m| m.rcpt_to == [rcpt])
            .unwrap_or_else(|| panic!("nothing to {rcpt}: {summary:?}"))
    };

    let notice = to("pest@sender.test");
    assert_eq!(notice.mail_from, "<>", "notices go from the null sender");
    assert!(
        notice.content.contains("I do not take mail from you."),
        "{}",
        notice.content
    );
    assert!(
        notice.content.contains("multipart/report"),
        "{}",
        notice.content
    );

    let redirect = to("friend@elsewhere.test");
    assert!(
        redirect.mail_from.starts_with("SRS0=")
            && redirect
                .mail_from
                .ends_with("=sender.test=alice@example.test"),
        "{}",
        redirect.mail_from
    );
    assert!(redirect.content.contains("Subject: please forward this"));
    assert!(
        redirect
            .content
            .contains("X-Sieve-Redirected-From: <me@example.test>")
    );
    let verdict = common::dkimpy("dkim", &redirect.path, &[&common::dkim_txt(&w)]);
    assert!(
        verdict.ok().stdout.contains("PASS example.test ferrymail"),
        "{}",
        verdict.stdout
    );

    let reply = to("dave@sender.test");
    assert_eq!(
        reply.mail_from, "<>",
        "RFC 5230 §5.1: replies go from the null sender"
    );
    for line in [
        // No subject declared: "Auto: " and the message's own.
        "Subject: Auto: hello 0",
        "Auto-Submitted: auto-replied",
        "In-Reply-To: <dave0@sender.test>",
        "From: me@example.test",
        "I am away until Monday.\r\nAsk bob@example.test meanwhile.",
    ] {
        assert!(
            reply.content.contains(line),
            "{line:?} missing:\n{}",
            reply.content
        );
    }
    verdict_passes(&w, &reply.path);
    to("frank@sender.test");
    let tricked = &to("mallory@sender.test").content;
    let (head, body) = tricked.split_once("\r\n\r\n").unwrap();
    assert!(
        head.contains("Subject: Auto: x    Click here\r\n"),
        "{tricked}"
    );
    assert!(head.contains("Auto-Submitted: auto-replied"), "{tricked}");
    assert!(!body.contains("Click"), "{tricked}");

    // Over IMAP: the list folder holds the list mail, read; the INBOX the rest.
    common::python_peer_run(
        "imap_expect.py",
        &[
            &imap.to_string(),
            "me@example.test",
            "quickstart",
            "Lists/rust=1",
            "Lists/rust:SEEN=1",
            // carol's, dave's two, the newsletter, the bounce, frank's and mallory's.
            "INBOX=7",
        ],
        w.path(),
    )
    .ok();
    let inbox: Vec<String> = w
        .inbox("me@example.test")
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect();
    let broken = inbox
        .iter()
        .find(|m| m.contains("Subject: broken thing"))
        .expect("the message the script failed on is kept");
    assert!(
        broken.starts_with("Return-Path: <")
            && broken.contains("\r\nX-Sieve-Error: no script named \"missing\""),
        "{broken}"
    );
    assert!(
        !inbox.iter().any(|m| m.contains("buy now")),
        "rejected mail is not kept"
    );
    assert!(
        !inbox.iter().any(|m| m.contains("please forward")),
        "redirect without :copy"
    );

    // The mail log (traced in the server's log too) says what the scripts did.
    let log = server.log_text();
    for said in [
        "Sieve: filed in Lists/rust",
        "Sieve: redirected to friend@elsewhere.test",
        "Sieve: vacation reply to dave@sender.test",
        "Sieve error, kept: no script named \"missing\"",
        "550 5.7.1 Refused by the recipient's filter: I do not take mail from you.",
    ] {
        assert!(log.contains(said), "{said:?} not in the log:\n{log}");
    }
}

/// dkimpy verifies the reply's signature: it leaves as the account's domain's mail.
fn verdict_passes(w: &Workspace, path: &std::path::Path) {
    let verdict = common::dkimpy("dkim", path, &[&common::dkim_txt(w)]);
    assert!(
        verdict.ok().stdout.contains("PASS example.test ferrymail"),
        "{}",
        verdict.stdout
    );
}

#[test]
fn a_broken_script_is_refused_at_validate_with_its_line() {
    let (mx, imap, relay, dns) = (free_port(), free_port(), free_port(), free_port());
    let w = Workspace::new(&spec(mx, imap, relay, dns, ""));
    std::fs::write(
        w.path().join("me.sieve"),
        "require \"fileinto\";\n\nif header :contains \"subject\" \"x\" {\n    fileinto;\n}\n",
    )
    .unwrap();
    let run = w.run(&["validate"]);
    run.code(1);
    assert!(
        run.stderr.contains("in me.sieve, line 4, column"),
        "{}",
        run.stderr
    );
    // An inline script and a vacation with a bad date: each named where it is.
    let inline = spec(mx, imap, relay, dns, "").replace(
        "sieve = { file = \"me.sieve\" }",
        "sieve = '''\nrequire \"enotify\";\nkeep;\n'''\nvacation = { until = \"next week\", body = \"Away.\" }",
    );
    w.write_spec(&inline);
    let run = w.run(&["validate"]);
    run.code(1);
    assert!(
        run.stderr.contains(
            "in the script, line 1, column 10: the extension \"enotify\" is not supported"
        ),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("\"next week\" is not a date"),
        "{}",
        run.stderr
    );
}

#[test]
fn the_plan_says_when_the_vacation_responder_is_on_and_the_script_changed() {
    let (mx, imap, relay, dns) = (free_port(), free_port(), free_port(), free_port());
    let w = Workspace::new(&spec(mx, imap, relay, dns, ""));
    std::fs::write(w.path().join("me.sieve"), SCRIPT).unwrap();
    w.run(&["apply", "--auto-approve"]).ok();
    w.write_spec(&spec(
        mx,
        imap,
        relay,
        dns,
        "vacation = { until = \"2027-01-05\", body = \"Away.\" }",
    ));
    std::fs::write(w.path().join("me.sieve"), format!("{SCRIPT}\nkeep;\n")).unwrap();
    let plan = w.run(&["plan"]);
    plan.ok();
    assert!(
        plan.stdout.contains("~ account me@example.test"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains("vacation: off → on until 2027-01-05"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains("sieve: a script of 17 lines (")
            && plan.stdout.contains("→ a script of 19 lines ("),
        "{}",
        plan.stdout
    );
}

/// A mailbox me@example.test, the MX and ManageSieve (STARTTLS, self-signed).
fn managesieve_spec(mx: u16, sieve: u16) -> String {
    format!(
        r#"
[tls]
mode = "self-signed"

[listeners]
mx = "127.0.0.1:{mx}"
managesieve = "127.0.0.1:{sieve}"

[domains."example.test".aliases.me]
mailbox = {{ password = {{ hash = "{TEST_HASH}" }} }}
"#
    )
}

/// Runs a ManageSieve client from tests/peers as me@example.test against `port`; it must
/// end saying "all done".
#[track_caller]
fn peer_passes(script: &str, port: u16, dir: &std::path::Path) {
    let run = common::python_peer_run(
        script,
        &[&port.to_string(), "me@example.test", "quickstart"],
        dir,
    );
    assert!(
        run.stdout.contains("all done"),
        "{script}:\n{}\n{}",
        run.stdout,
        run.stderr
    );
}

/// Runs Debian's sieve-connect as me@example.test (password on stdin) with `args`.
fn sieve_connect(port: u16, dir: &std::path::Path, args: &[&str]) -> common::Run {
    use std::io::Write;
    let mut child = std::process::Command::new("sieve-connect")
        .current_dir(dir)
        .args(["--server", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--user",
            "me@example.test",
            "--notlsverify",
            "--passwordfd",
            "0",
        ])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("sieve-connect must be installed (scripts/test installs it)");
    let _ = child.stdin.take().unwrap().write_all(b"quickstart\n");
    common::Run::from(child.wait_with_output().unwrap())
}

#[test]
fn users_manage_their_own_scripts_over_managesieve_and_the_next_delivery_obeys() {
    let (mx, sieve) = (free_port(), free_port());
    let w = Workspace::new(&managesieve_spec(mx, sieve));
    let server = w.serve(sieve);

    // Before TLS no mechanism is offered, and a login is refused unread.
    {
        use std::io::{BufRead, BufReader, Write};
        let stream = std::net::TcpStream::connect(("127.0.0.1", sieve)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut greeting = String::new();
        while !greeting.lines().last().is_some_and(|l| l.starts_with("OK")) {
            assert!(reader.read_line(&mut greeting).unwrap() > 0, "{greeting}");
        }
        assert!(greeting.contains("\"SASL\" \"\"\r\n"), "{greeting}");
        assert!(greeting.contains("\"STARTTLS\"\r\n"), "{greeting}");
        (&stream)
            .write_all(b"AUTHENTICATE \"PLAIN\" \"AG1lQGV4YW1wbGUudGVzdABxdWlja3N0YXJ0\"\r\n")
            .unwrap();
        let mut answer = String::new();
        reader.read_line(&mut answer).unwrap();
        assert!(answer.starts_with("NO (ENCRYPT-NEEDED)"), "{answer}");
    }

    // What neither client sends: the challenge form of AUTHENTICATE, a cancelled and a
    // failed one, NOOP with a tag, UNAUTHENTICATE.
    peer_passes("managesieve_raw.py", sieve, w.path());

    // sievelib uploads, checks, renames and activates "filters" (and is refused what
    // RFC 5804 refuses); the next message obeys it.
    peer_passes("sievelib_session.py", sieve, w.path());
    send(mx, "list@lists.test", "me@example.test", "[rust] news", &[]);
    assert!(
        wait_for(Duration::from_secs(20), || w
            .folder("me@example.test", "Lists")
            .len()
            == 1),
        "{}",
        server.log_text()
    );

    // sieve-connect: upload another, make it the active one, read it back, list.
    let away = "require \"fileinto\";\n# filed while away\nfileinto \"Away\";\n";
    std::fs::write(w.path().join("away.sieve"), away).unwrap();
    sieve_connect(
        sieve,
        w.path(),
        &[
            "--upload",
            "--localsieve",
            "away.sieve",
            "--remotesieve",
            "away",
        ],
    )
    .ok();
    sieve_connect(sieve, w.path(), &["--activate", "--remotesieve", "away"]).ok();
    let listed = sieve_connect(sieve, w.path(), &["--list"]);
    assert!(
        listed.ok().stdout.contains("\"away\" ACTIVE"),
        "{}",
        listed.stdout
    );
    assert!(listed.stdout.contains("\"filters\""), "{}", listed.stdout);
    sieve_connect(
        sieve,
        w.path(),
        &[
            "--download",
            "--remotesieve",
            "away",
            "--localsieve",
            "back.sieve",
        ],
    )
    .ok();
    assert_eq!(
        std::fs::read_to_string(w.path().join("back.sieve")).unwrap(),
        away
    );
    send(mx, "ann@sender.test", "me@example.test", "[rust] more", &[]);
    assert!(wait_for(Duration::from_secs(20), || w
        .folder("me@example.test", "Away")
        .len()
        == 1));
    // A broken upload is refused with its line; the active one stays.
    std::fs::write(w.path().join("broken.sieve"), "keep;\nfileinto \"x\";\n").unwrap();
    let refused = sieve_connect(
        sieve,
        w.path(),
        &[
            "--upload",
            "--localsieve",
            "broken.sieve",
            "--remotesieve",
            "broken",
        ],
    );
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("line 2"), "{}", refused.stderr);

    // Deactivated and deleted: mail goes to the INBOX again.
    sieve_connect(sieve, w.path(), &["--deactivate"]).ok();
    sieve_connect(sieve, w.path(), &["--delete", "--remotesieve", "filters"]).ok();
    let listed = sieve_connect(sieve, w.path(), &["--list"]);
    assert_eq!(listed.ok().stdout.trim(), "\"away\"", "{}", listed.stdout);
    send(mx, "ann@sender.test", "me@example.test", "[rust] last", &[]);
    assert!(wait_for(Duration::from_secs(20), || w
        .inbox("me@example.test")
        .len()
        == 1));
}

/// The attacker's side of ManageSieve: literals announced before logging in are refused
/// unread (a stranger makes the server hold nothing), a 4 GB length is refused, errors
/// end the session, and a real client is served meanwhile.
#[test]
fn strangers_cannot_make_managesieve_hold_memory() {
    use std::io::{Read, Write};
    let (mx, sieve) = (free_port(), free_port());
    let w = Workspace::new(&managesieve_spec(mx, sieve));
    let server = w.serve(sieve);
    let start_rss = server.memory_kib("VmRSS");
    let greeting = |c: &mut std::net::TcpStream| {
        let mut seen = Vec::new();
        let mut byte = [0u8; 1];
        while !seen.ends_with(b"ready\"\r\n") {
            assert_eq!(
                c.read(&mut byte).unwrap(),
                1,
                "{}",
                String::from_utf8_lossy(&seen)
            );
            seen.push(byte[0]);
        }
    };
    // 60 connections from 30 addresses each announce a 1 MB literal and send it.
    let mut clients = Vec::new();
    for i in 0..60 {
        let mut c = common::connect_from(&format!("127.0.0.{}", 2 + i % 30), sieve);
        greeting(&mut c);
        let _ = c.write_all(b"AUTHENTICATE \"PLAIN\" {1048576+}\r\n");
        let junk = vec![b'x'; 1 << 20];
        let _ = c.write_all(&junk);
        clients.push(c);
    }
    for mut c in clients {
        let mut answer = Vec::new();
        let _ = c.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("BYE"), "{answer}");
    }
    // A length no literal may have; a flood of nonsense.
    let mut c = common::connect_from("127.0.0.40", sieve);
    greeting(&mut c);
    c.write_all(b"PUTSCRIPT \"x\" {4294967296+}\r\n").unwrap();
    let mut answer = String::new();
    let _ = c.read_to_string(&mut answer);
    assert!(answer.starts_with("BYE"), "{answer}");
    let mut c = common::connect_from("127.0.0.41", sieve);
    greeting(&mut c);
    let _ = c.write_all(&b"\"unterminated\r\n".repeat(1000));
    let mut answer = String::new();
    // The connection ends after the error budget (its BYE may be lost to the reset the
    // unread flood causes; the count of answers is what shows it).
    let _ = c.read_to_string(&mut answer);
    let refusals = answer.matches("NO \"Syntax error").count();
    assert!((10..=12).contains(&refusals), "{answer}");

    let peak = server.memory_kib("VmHWM");
    assert!(
        peak < start_rss + 30 * 1024,
        "peak {peak} KiB from {start_rss} KiB"
    );
    // And a real client is served.
    peer_passes("sievelib_session.py", sieve, w.path());
}

/// An edited script file beside the spec is taken up like an edited spec: the next
/// message follows the new text.
#[test]
fn an_edited_script_file_is_reloaded_without_a_restart() {
    let Scripted {
        w,
        server,
        mx,
        _dns,
        ..
    } = scripted("require \"fileinto\";\nfileinto \"Before\";\n", "");
    send(mx, "ann@sender.test", "me@example.test", "one", &[]);
    assert!(wait_for(Duration::from_secs(20), || w
        .folder("me@example.test", "Before")
        .len()
        == 1));
    std::fs::write(
        w.path().join("me.sieve"),
        "require \"fileinto\";\nfileinto \"After\";\n",
    )
    .unwrap();
    assert!(
        wait_for(Duration::from_secs(20), || w
            .run(&["status"])
            .stdout
            .contains("serving revision 2")),
        "{}",
        server.log_text()
    );
    send(mx, "ann@sender.test", "me@example.test", "two", &[]);
    assert!(
        wait_for(Duration::from_secs(20), || w
            .folder("me@example.test", "After")
            .len()
            == 1),
        "{}",
        server.log_text()
    );
}

/// A user's script that fails cannot undo the operator's: the spec's script runs alone
/// and its filing stands, with the user's error on top of the message.
#[test]
fn a_failing_user_script_leaves_the_operators_filing_in_place() {
    let Scripted {
        w,
        server,
        mx,
        _dns,
        ..
    } = scripted(
        "require \"fileinto\";\nif header :contains \"subject\" \"invoice\" { fileinto \"Quarantine\"; }\n",
        "",
    );
    {
        let key = std::fs::read_to_string(w.data_dir().join("master.key")).unwrap();
        let boxes = ferrymail::mailbox::Mailboxes::new(
            &w.data_dir(),
            ferrymail::mailbox::MasterKey::new(key.trim().as_bytes()).unwrap(),
        );
        let mut scripts =
            ferrymail::sieve::store::UserScripts::open(&boxes, "me@example.test").unwrap();
        scripts
            .put("mine", b"require [\"include\", \"fileinto\"];\ninclude :personal \"gone\";\nfileinto \"Mine\";\n")
            .unwrap();
        scripts.set_active(Some("mine")).unwrap();
    }
    send(mx, "ann@sender.test", "me@example.test", "invoice 42", &[]);
    assert!(
        wait_for(Duration::from_secs(20), || w
            .folder("me@example.test", "Quarantine")
            .len()
            == 1),
        "{}",
        server.log_text()
    );
    let filed = String::from_utf8_lossy(&w.folder("me@example.test", "Quarantine")[0]).into_owned();
    assert!(
        filed.starts_with("Return-Path: <")
            && filed.contains("\r\nX-Sieve-Error: no script named \"gone\""),
        "{filed}"
    );
    assert!(w.folder("me@example.test", "Mine").is_empty());
}

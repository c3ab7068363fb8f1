//! The spam filter with a real rspamd (Debian's, offline): what it rejects is refused at
//! the MX, what it marks is junk (Junk folder, not forwarded), ham arrives with headers,
//! and while it is down senders are asked to retry and nothing is lost.

mod common;

use std::time::Duration;

use common::rspamd::{GREY_SUBJECT, GTUBE, JUNK_SUBJECT, SOFT_SUBJECT};
use common::{TEST_HASH, Workspace, free_port, python_peer, received, swaks, wait_for};

fn spec(mx: u16, relay: u16, dns: u16, spam: &str) -> String {
    format!(
        r#"
[listeners]
mx = "127.0.0.1:{mx}"

[dns]
resolver = "127.0.0.1:{dns}"

[delivery]
relay = "127.0.0.1:{relay}"

[domains."example.test".aliases.me]
mailbox = {{ password = {{ hash = "{TEST_HASH}" }} }}

[domains."example.test".aliases.fwd]
forward = ["friend@elsewhere.test"]

[domains."example.test".aliases.fwd2]
forward = ["buddy@elsewhere.test"]
junk_forward = "trap2@elsewhere.test"

[domains."lenient.test"]
spam = {{ reject_score = 100, junk_forward = "trap@elsewhere.test" }}

[domains."lenient.test".aliases.fwd]
forward = ["pal@elsewhere.test"]

[domains."lenient.test".aliases.team]
forward = ["mate@elsewhere.test"]

{spam}"#
    )
}

/// `spec` with a self-signed certificate and one more listener ("imap = \"…\"").
fn spec_over_tls(mx: u16, relay: u16, dns: u16, spam: &str, listener: &str) -> String {
    format!(
        "[tls]\nmode = \"self-signed\"\n\n{}",
        spec(mx, relay, dns, spam)
    )
    .replace("[listeners]\n", &format!("[listeners]\n{listener}\n"))
}

/// The sink that takes what the server forwards: it and the folder it writes to.
fn sink(w: &Workspace, relay: u16) -> (common::Process, std::path::PathBuf) {
    let dir = w.path().join("sink");
    let process = python_peer(
        "sink.py",
        &[&relay.to_string(), dir.to_str().unwrap()],
        w.path(),
    );
    (process, dir)
}

fn send(mx: u16, to: &str, subject: &str, body: &str, extra: &[&str]) -> common::Run {
    let mut args = vec![
        "--from",
        "alice@sender.test",
        "--to",
        to,
        "--h-Subject",
        subject,
        "--body",
        body,
    ];
    args.extend_from_slice(extra);
    swaks(mx, &args)
}

fn text(message: &[u8]) -> String {
    String::from_utf8_lossy(message).into_owned()
}

#[test]
fn rspamd_refuses_marks_and_passes_mail_as_each_domain_says() {
    let w = Workspace::new("");
    let rspamd = common::rspamd::start(w.path());
    let (mx, relay) = (free_port(), free_port());
    let (_dns, dns) = common::quiet_dns(w.path());
    w.write_spec(&spec(mx, relay, dns, &rspamd.spec("")));
    let (_sink, sink_dir) = sink(&w, relay);
    let server = w.serve(mx);

    // GTUBE: rspamd says reject, and the MX refuses before taking the message.
    let gtube = send(mx, "me@example.test", "test", GTUBE, &[]);
    assert!(
        gtube.stdout.contains("<** 554 5.7.1 Gtube pattern"),
        "{}",
        gtube.stdout
    );
    // rspamd's soft reject asks the sender to come back.
    let soft = send(mx, "me@example.test", SOFT_SUBJECT, "hello", &[]);
    assert!(
        soft.stdout
            .contains("<** 451 4.7.1 Try again later, please"),
        "{}",
        soft.stdout
    );
    // Ham, with a verdict of the sender's own that must not survive.
    send(
        mx,
        "me@example.test",
        "lunch on friday",
        "see you there",
        &["--add-header", "X-Spam-Status: No, score=-100 forged"],
    )
    .ok();
    // Marked as spam: a mailbox files it in Junk.
    send(mx, "me@example.test", JUNK_SUBJECT, "buy now", &[]).ok();
    // Marked as spam for a forward: not forwarded; ham is.
    send(mx, "fwd@example.test", JUNK_SUBJECT, "buy now", &[]).ok();
    send(mx, "fwd@example.test", "minutes", "as agreed", &[]).ok();
    // An alias of its own mind: its junk goes to its junk_forward.
    send(mx, "fwd2@example.test", JUNK_SUBJECT, "buy now", &[]).ok();
    // A domain whose reject_score is above GTUBE's 15: junk there, and its junk goes to
    // its junk_forward address instead of the alias's target.
    send(mx, "fwd@lenient.test", "test", GTUBE, &[]).ok();

    assert!(
        wait_for(Duration::from_secs(30), || {
            w.inbox("me@example.test").len() == 1 && w.folder("me@example.test", "Junk").len() == 1
        }),
        "inbox {} junk {}\n{}",
        w.inbox("me@example.test").len(),
        w.folder("me@example.test", "Junk").len(),
        server.log_text()
    );
    let ham = text(&w.inbox("me@example.test")[0]);
    assert!(ham.contains("Subject: lunch on friday"), "{ham}");
    // The final delivery's Return-Path, then this server's verdict on top of the rest.
    assert!(
        ham.starts_with("Return-Path: <") && ham.contains(">\r\nX-Spam-Status: No, score="),
        "{ham}"
    );
    assert!(ham.contains("X-Spamd-Result: default: False ["), "{ham}");
    assert!(
        !ham.contains("forged"),
        "the sender's own verdict is gone:\n{ham}"
    );
    assert!(!ham.contains("X-Spam-Flag"), "{ham}");
    let junk = text(&w.folder("me@example.test", "Junk")[0]);
    assert!(
        junk.starts_with("Return-Path: <") && junk.contains(">\r\nX-Spam-Status: Yes, score="),
        "{junk}"
    );
    assert!(junk.contains("X-Spam-Flag: YES"), "{junk}");
    assert!(junk.contains("FERRYMAIL_TEST_JUNK(8.00)"), "{junk}");

    assert!(
        wait_for(Duration::from_secs(30), || received(&sink_dir).len() == 3),
        "{}",
        server.log_text()
    );
    std::thread::sleep(Duration::from_secs(2));
    let sent = received(&sink_dir);
    assert_eq!(sent.len(), 3, "junk for friend@ is never sent on");
    assert!(
        sent.iter().any(
            |m| m.rcpt_to == ["trap2@elsewhere.test"] && m.content.contains("X-Spam-Flag: YES")
        ),
        "fwd2's junk goes to its own junk_forward"
    );
    let to_friend: Vec<_> = sent
        .iter()
        .filter(|m| m.rcpt_to == ["friend@elsewhere.test"])
        .collect();
    assert_eq!(to_friend.len(), 1);
    assert!(to_friend[0].content.contains("Subject: minutes"));
    assert!(to_friend[0].content.contains("X-Spam-Status: No, score="));
    let trapped = sent
        .iter()
        .find(|m| m.rcpt_to == ["trap@elsewhere.test"])
        .expect("lenient.test's junk goes to its junk_forward");
    assert!(
        trapped.content.contains("X-Spam-Flag: YES"),
        "{}",
        trapped.content
    );

    // The mail log says what rspamd found, refused or not.
    assert!(wait_for(Duration::from_secs(10), || w
        .run(&["queue", "log", "--json"])
        .stdout
        .contains("junk not forwarded")));
    let log = w.run(&["queue", "log", "--json"]).stdout;
    assert!(
        log.contains("554 5.7.1 Gtube pattern; spam score 15.00 (reject)"),
        "{log}"
    );
    assert!(log.contains("FERRYMAIL_TEST_JUNK(8.00)"), "{log}");
    // Filed as junk: marked so, which the overview's chart counts as spam.
    assert!(log.contains("\"detail\": \"junk: spam score 8.50"), "{log}");
    assert!(
        log.contains("junk not forwarded to friend@elsewhere.test"),
        "{log}"
    );
    assert!(
        log.contains("junk for pal@elsewhere.test sent to trap@elsewhere.test"),
        "{log}"
    );
}

#[test]
fn rspamd_greylist_advice_uses_the_servers_greylisting() {
    let w = Workspace::new("");
    let rspamd = common::rspamd::start(w.path());
    let (mx, relay) = (free_port(), free_port());
    let (_dns, dns) = common::quiet_dns(w.path());
    let body = spec(mx, relay, dns, &rspamd.spec("")).replace(
        "[domains.\"lenient.test\"]\n",
        "[domains.\"lenient.test\"]\ngreylist_delay = \"2s\"\n",
    );
    w.write_spec(&body);
    let server = w.serve(mx);
    // Two recipients: both triples are recorded at once, so one retry passes for both.
    let first = send(
        mx,
        "fwd@lenient.test,team@lenient.test",
        GREY_SUBJECT,
        "hi",
        &[],
    );
    assert!(
        first
            .stdout
            .contains("<** 451 4.7.1 Greylisted: please try again in"),
        "{}",
        first.stdout
    );
    std::thread::sleep(Duration::from_secs(3));
    let again = send(
        mx,
        "fwd@lenient.test,team@lenient.test",
        GREY_SUBJECT,
        "hi",
        &[],
    );
    assert!(
        again.stdout.contains("<-  250 2.0.0"),
        "{}\n{}",
        again.stdout,
        server.log_text()
    );
}

#[test]
fn while_rspamd_is_down_senders_retry_and_nothing_is_lost() {
    let w = Workspace::new("");
    let mut rspamd = common::rspamd::start(w.path());
    let (port, controller) = (rspamd.port, rspamd.controller);
    let (mx, relay) = (free_port(), free_port());
    let (_dns, dns) = common::quiet_dns(w.path());
    w.write_spec(&spec(mx, relay, dns, &rspamd.spec("timeout = \"5s\"")));
    let mut server = w.serve(mx);

    rspamd.stop();
    let refused = send(mx, "me@example.test", "while it is down", "hello", &[]);
    assert!(
        refused
            .stdout
            .contains("<** 451 4.3.0 The spam filter is not answering; please try again later"),
        "{}",
        refused.stdout
    );
    assert!(w.inbox("me@example.test").is_empty());
    let status = w.run(&["status"]).stdout;
    assert!(
        status.contains("! spam filter: NOT answering: rspamd at http://127.0.0.1:")
            && status.contains("arriving mail is deferred (451) until it is back"),
        "{status}"
    );
    // The mail log is written in batches: what it says shows within a moment.
    let log = || w.run(&["queue", "log", "--json"]).stdout;
    assert!(
        wait_for(Duration::from_secs(10), || log()
            .contains("spam filter: rspamd at http://127.0.0.1:")),
        "{}",
        log()
    );

    // The sender's retry, once rspamd is back, is delivered: once.
    let _back = common::rspamd::start_on(w.path(), port, controller);
    send(mx, "me@example.test", "while it is down", "hello", &[]).ok();
    assert!(
        wait_for(Duration::from_secs(30), || w.inbox("me@example.test").len()
            == 1),
        "{}",
        server.log_text()
    );
    assert!(text(&w.inbox("me@example.test")[0]).contains("X-Spam-Status: No"));
    let status = w.run(&["status"]).stdout;
    assert!(
        status.contains(&format!(
            "spam filter: rspamd at http://127.0.0.1:{port} answers"
        )),
        "{status}"
    );

    // on_error = "accept": taken unscanned, and the log says so.
    server.terminate();
    drop(_back);
    w.write_spec(&spec(
        mx,
        relay,
        dns,
        &rspamd.spec("timeout = \"5s\"\non_error = \"accept\""),
    ));
    let server = w.serve(mx);
    send(mx, "me@example.test", "unscanned", "hello", &[]).ok();
    assert!(
        wait_for(Duration::from_secs(30), || w.inbox("me@example.test").len()
            == 2),
        "{}",
        server.log_text()
    );
    assert!(
        wait_for(Duration::from_secs(10), || log()
            .contains("taken unscanned: rspamd at")),
        "{}",
        log()
    );
}

/// How many messages rspamd's Bayes classifier has learned as spam or ham (kept in its
/// Redis, as rspamd's own `RS` hash).
fn learns(redis_port: &str, class: &str) -> u64 {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", redis_port, "hget", "RS", &format!("learns_{class}")])
        .output()
        .expect("redis-cli (redis-tools, with redis-server)");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

#[test]
fn moving_mail_into_and_out_of_junk_teaches_rspamd() {
    let w = Workspace::new("");
    let (_redis, url) = common::redis(w.path());
    let redis = url.trim_start_matches("redis://").trim_end_matches('/');
    let redis_port = redis.rsplit_once(':').unwrap().1.to_string();
    let rspamd = common::rspamd::start_with_bayes(w.path(), redis);
    let (mx, relay, imap) = (free_port(), free_port(), free_port());
    let (_dns, dns) = common::quiet_dns(w.path());
    w.write_spec(&spec_over_tls(
        mx,
        relay,
        dns,
        &rspamd.spec(""),
        &format!("imap = \"127.0.0.1:{imap}\""),
    ));
    let server = w.serve(mx);
    // rspamd learns from text: each message has words enough for its classifier.
    let words = "quarterly figures attached please review the spreadsheet before \
                 thursday meeting with finance team regarding budget allocation and \
                 hiring plans for next year";
    // (rspamd takes a second message with the same text for one it learned already.)
    for (n, extra) in ["marketing conference venue", "warehouse inventory audit"]
        .iter()
        .enumerate()
    {
        let text = format!("{words} {extra}");
        send(mx, "me@example.test", &format!("offer {n}"), &text, &[]).ok();
    }
    assert!(wait_for(Duration::from_secs(30), || w
        .inbox("me@example.test")
        .len()
        == 2));
    assert_eq!(learns(&redis_port, "spam"), 0);

    let peer = |from: &str, to: &str| {
        common::python_peer_run(
            "imap_move.py",
            &[&imap.to_string(), "me@example.test", "quickstart", from, to],
            w.path(),
        )
        .ok();
    };
    // The user's "Junk" button: rspamd learns both as spam, in the background.
    peer("INBOX", "Junk");
    assert!(
        wait_for(Duration::from_secs(30), || learns(&redis_port, "spam") == 2),
        "learned as spam: {}\n{}",
        learns(&redis_port, "spam"),
        server.log_text()
    );
    // "Not junk": back out of Junk, learned as ham.
    peer("Junk", "Archive");
    assert!(
        wait_for(Duration::from_secs(30), || learns(&redis_port, "ham") == 2),
        "learned as ham: {}\n{}",
        learns(&redis_port, "ham"),
        server.log_text()
    );
    // rspamd moved them: a message is spam or ham to it, never both.
    assert_eq!(learns(&redis_port, "spam"), 0);

    // The operator's command, for messages at hand.
    let file = w.path().join("complaint.eml");
    std::fs::write(
        &file,
        format!(
            "From: spammer@sender.test\r\nTo: me@example.test\r\nSubject: winner\r\n\
             Message-ID: <complaint@sender.test>\r\n\r\nclaim your lottery prize money \
             transfer bank account details urgently required today winner selected {words}\r\n"
        ),
    )
    .unwrap();
    let taught = w.run(&["spam", "learn", "--spam", file.to_str().unwrap()]);
    taught.ok();
    assert!(
        taught.stdout.contains("learned as spam"),
        "{}",
        taught.stdout
    );
    assert_eq!(learns(&redis_port, "spam"), 1);
}

#[test]
fn spam_learn_without_a_filter_says_what_to_set() {
    let w = Workspace::new("[domains.\"example.test\"]\ncatch_all = { reject = \"hard\" }\n");
    std::fs::write(w.path().join("m.eml"), "Subject: x\r\n\r\nx\r\n").unwrap();
    let out = w.run(&["spam", "learn", "--ham", "m.eml"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("set [spam] kind = \"rspamd\""),
        "{}",
        out.stderr
    );
}

#[test]
fn clamav_refuses_a_virus_by_name_with_or_without_rspamd() {
    let w = Workspace::new("");
    let mut clamd = common::clamav::start(w.path());
    let (mx, relay) = (free_port(), free_port());
    let (_dns, dns) = common::quiet_dns(w.path());
    // No rspamd: the virus scanner alone.
    let antivirus = format!(
        "[spam.antivirus]\nkind = \"clamav\"\naddress = \"127.0.0.1:{}\"\n\n\
         [domains.\"example.test\"]\nallowlist = [\"boss@sender.test\"]\n",
        clamd.port
    );
    w.write_spec(&spec(mx, relay, dns, &antivirus));
    let server = w.serve(mx);
    let eicar = w.path().join("invoice.com");
    std::fs::write(&eicar, common::clamav::EICAR).unwrap();
    let infected = send(
        mx,
        "me@example.test",
        "your invoice",
        "see attached",
        &["--attach", &format!("@{}", eicar.display())],
    );
    assert!(
        infected.stdout.contains(&format!(
            "<** 554 5.7.1 Message refused: it carries a virus ({})",
            common::clamav::EICAR_NAME
        )),
        "{}",
        infected.stdout
    );
    // An allowlisted sender is never judged spam, but a virus from it is still a virus.
    let trusted = swaks(
        mx,
        &[
            "--from",
            "boss@sender.test",
            "--to",
            "me@example.test",
            "--attach",
            &format!("@{}", eicar.display()),
        ],
    );
    assert!(
        trusted
            .stdout
            .contains("<** 554 5.7.1 Message refused: it carries a virus"),
        "{}",
        trusted.stdout
    );
    send(mx, "me@example.test", "clean", "nothing attached", &[]).ok();
    assert!(
        wait_for(Duration::from_secs(30), || w.inbox("me@example.test").len()
            == 1),
        "{}",
        server.log_text()
    );
    let log = || w.run(&["queue", "log", "--json"]).stdout;
    assert!(
        wait_for(Duration::from_secs(10), || log()
            .contains(&format!("virus {}", common::clamav::EICAR_NAME))),
        "{}",
        log()
    );
    assert!(
        w.run(&["status"])
            .stdout
            .contains("spam filter: clamd at 127.0.0.1:")
    );

    // clamd gone: the sender is asked to retry, as with rspamd.
    clamd.process.terminate();
    let refused = send(mx, "me@example.test", "while clamd is down", "hello", &[]);
    assert!(
        refused
            .stdout
            .contains("<** 451 4.3.0 The spam filter is not answering"),
        "{}",
        refused.stdout
    );
    assert!(
        w.run(&["status"])
            .stdout
            .contains("! spam filter: NOT answering: clamd at 127.0.0.1:")
    );
}

#[test]
fn our_own_checks_refuse_executables_and_junk_lookalike_links() {
    let w = Workspace::new("");
    let (mx, relay) = (free_port(), free_port());
    let (_dns, dns) = common::quiet_dns(w.path());
    // No rspamd, no clamd: the checks alone, with their defaults.
    w.write_spec(&spec(mx, relay, dns, "[spam.checks]\n"));
    let server = w.serve(mx);
    let exe = w.path().join("invoice.exe");
    std::fs::write(&exe, b"not even a program, but named like one").unwrap();
    let refused = send(
        mx,
        "me@example.test",
        "invoice",
        "see attached",
        &["--attach", &format!("@{}", exe.display())],
    );
    assert!(
        refused
            .stdout
            .contains("<** 554 5.7.1 Message refused: an executable attachment (invoice.exe)"),
        "{}",
        refused.stdout
    );
    // A Cyrillic "р" in "paypal", as links carry it: in punycode.
    send(
        mx,
        "me@example.test",
        "your account",
        "Log in at https://xn--ypal-43d9g.com/login to keep it",
        &[],
    )
    .ok();
    send(
        mx,
        "me@example.test",
        "lunch",
        "at https://example.com/menu",
        &[],
    )
    .ok();
    assert!(
        wait_for(Duration::from_secs(30), || {
            w.inbox("me@example.test").len() == 1 && w.folder("me@example.test", "Junk").len() == 1
        }),
        "{}",
        server.log_text()
    );
    let junk = text(&w.folder("me@example.test", "Junk")[0]);
    assert!(junk.contains("Subject: your account"), "{junk}");
    assert!(junk.contains("X-Spam-Flag: YES"), "{junk}");
    assert!(
        junk.contains("FERRYMAIL_LOOKALIKE_LINK(0.00)[a link to a domain that imitates another"),
        "{junk}"
    );
    assert!(text(&w.inbox("me@example.test")[0]).contains("Subject: lunch"));
}

#[test]
fn scan_outbound_holds_back_what_rspamd_would_reject_from_a_user() {
    let w = Workspace::new("");
    let rspamd = common::rspamd::start(w.path());
    let (mx, relay, submission) = (free_port(), free_port(), free_port());
    let (_dns, dns) = common::quiet_dns(w.path());
    w.write_spec(&spec_over_tls(
        mx,
        relay,
        dns,
        &rspamd.spec("scan_outbound = true"),
        &format!("submission = \"127.0.0.1:{submission}\""),
    ));
    let (_sink, sink_dir) = sink(&w, relay);
    let server = w.serve(mx);
    let submit = |subject: &str, text: &str| {
        common::submit(
            submission,
            "me@example.test",
            "quickstart",
            &[
                "--from",
                "me@example.test",
                "--to",
                "someone@elsewhere.test",
                "--h-Subject",
                subject,
                "--body",
                text,
            ],
        )
    };
    let refused = submit("test", GTUBE);
    assert!(
        refused.stdout.contains("554 5.7.1 Gtube pattern"),
        "{}",
        refused.stdout
    );
    // What rspamd only marks leaves as the user wrote it: no spam headers on outbound mail.
    submit(JUNK_SUBJECT, "a newsletter the user meant to send").ok();
    assert!(
        wait_for(Duration::from_secs(30), || received(&sink_dir).len() == 1),
        "{}",
        server.log_text()
    );
    let sent = &received(&sink_dir)[0];
    assert!(!sent.content.contains("X-Spam"), "{}", sent.content);
}

/// An rspamd that takes the connection and never answers, and one whose answer never
/// ends: each costs the sender a 451 after the timeout, never a hung session or the
/// server's memory (an answer is read up to 1 MB), and other mail is served meanwhile.
#[test]
fn a_silent_or_endless_rspamd_costs_a_timeout_never_a_hang_or_memory() {
    use std::io::{Read, Write};
    let w = Workspace::new("");
    let silent = std::net::TcpListener::bind(("127.0.0.1", free_port())).unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for connection in silent.incoming() {
            held.push(connection);
        }
    });
    let endless = std::net::TcpListener::bind(("127.0.0.1", free_port())).unwrap();
    let endless_port = endless.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for connection in endless.incoming() {
            let Ok(mut c) = connection else { continue };
            std::thread::spawn(move || {
                let mut request = [0u8; 65536];
                let _ = c.read(&mut request);
                let _ = c.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"action\":\"",
                );
                let chunk = vec![b'x'; 64 * 1024];
                // Up to 1 GB, or until ferrymail hangs up.
                for _ in 0..16_384 {
                    if c.write_all(&chunk).is_err() {
                        break;
                    }
                }
            });
        }
    });
    let (mx, relay) = (free_port(), free_port());
    let (_dns, dns) = common::quiet_dns(w.path());
    let scanner = |port: u16| {
        format!("[spam]\nkind = \"rspamd\"\nurl = \"http://127.0.0.1:{port}\"\ntimeout = \"3s\"\n")
    };
    for (port, what) in [(silent_port, "silent"), (endless_port, "endless")] {
        w.write_spec(&spec(mx, relay, dns, &scanner(port)));
        let mut server = w.serve(mx);
        let before = server.memory_kib("VmRSS");
        let refused = send(mx, "me@example.test", what, "hello", &[]);
        assert!(
            refused
                .stdout
                .contains("<** 451 4.3.0 The spam filter is not answering"),
            "{what}: {}",
            refused.stdout
        );
        let grown = server.memory_kib("VmHWM").saturating_sub(before);
        assert!(grown < 64 * 1024, "{what}: the server grew {grown} KiB");
        server.terminate();
    }
}

/// What rspamd is told besides the message: the envelope, the client (with its name when
/// its reverse DNS is forward-confirmed) and the TLS it came over, in rspamd's protocol
/// headers. A stand-in rspamd records each request and answers "no action": the real one
/// runs in the other tests, but shows nowhere which headers it was given (and skips the
/// host-name and TLS rules for loopback clients, which is all a test here can be).
#[test]
fn rspamd_is_told_the_envelope_the_client_and_its_tls() {
    use std::io::{Read, Write};
    let w = Workspace::new("");
    let stub = std::net::TcpListener::bind(("127.0.0.1", free_port())).unwrap();
    let stub_port = stub.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for connection in stub.incoming() {
            let Ok(mut c) = connection else { continue };
            let mut request = Vec::new();
            let mut buf = [0u8; 65536];
            while let Ok(n) = c.read(&mut buf) {
                request.extend_from_slice(&buf[..n]);
                if n == 0 || request.windows(12).any(|w| w == b"\r\n\r\nReceived") {
                    break;
                }
            }
            let _ = tx.send(String::from_utf8_lossy(&request).to_lowercase());
            let body = r#"{"action":"no action","score":1.5,"required_score":15,"symbols":{}}"#;
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let (_dns, dns) = common::quiet_dns(w.path());
    let (mx, relay) = (free_port(), free_port());
    w.write_spec(&format!(
        "[tls]\nmode = \"self-signed\"\n\n{}",
        spec(
            mx,
            relay,
            dns,
            &format!("[spam]\nkind = \"rspamd\"\nurl = \"http://127.0.0.1:{stub_port}\"\n")
        )
    ));
    let server = w.serve(mx);
    let ask = |from_ip: &str| {
        swaks(
            mx,
            &[
                "--tls",
                "--local-interface",
                from_ip,
                "--ehlo",
                "client.sender.test",
                "--from",
                "alice@sender.test",
                "--to",
                "me@example.test,fwd@example.test",
            ],
        )
        .ok();
        rx.recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("rspamd was never asked\n{}", server.log_text()))
    };
    // 127.0.0.1 is "localhost" both ways (the resolver answers loopback names itself,
    // RFC 6761): a forward-confirmed name.
    let request = ask("127.0.0.1");
    for header in [
        "post /checkv2 ",
        "\r\nip: 127.0.0.1\r\n",
        "\r\nhelo: client.sender.test\r\n",
        "\r\nfrom: alice@sender.test\r\n",
        "\r\nrcpt: me@example.test\r\n",
        "\r\nrcpt: fwd@example.test\r\n",
        "\r\nhostname: localhost\r\n",
        "\r\ntls-version: tlsv1.3\r\n",
        "\r\ntls-cipher: tls13_",
        "\r\nmta-name: mx.example.test\r\n",
    ] {
        assert!(
            request.contains(header),
            "{header:?} in\n{request}\n{}",
            server.log_text()
        );
    }
    assert!(
        !request.contains("\r\nuser: "),
        "no login on the MX:\n{request}"
    );
    // 127.0.0.3's name ("localhost" too) does not lead back to it: rspamd is told none.
    let request = ask("127.0.0.3");
    assert!(request.contains("\r\nip: 127.0.0.3\r\n"), "{request}");
    assert!(!request.contains("\r\nhostname:"), "{request}");
}

/// The allowlist matches the envelope sender, which anyone can write: mail from it is
/// taken, but what rspamd would refuse is filed as junk, not delivered, and the sender's
/// own verdict headers go as for anyone.
#[test]
fn an_allowlisted_sender_is_taken_but_what_rspamd_refuses_is_junk() {
    let w = Workspace::new("");
    let rspamd = common::rspamd::start(w.path());
    let (mx, relay) = (free_port(), free_port());
    let (_dns, dns) = common::quiet_dns(w.path());
    let allowlist = format!(
        "{}\n[domains.\"example.test\"]\nallowlist = [\"boss@sender.test\"]\n",
        rspamd.spec("")
    );
    w.write_spec(&spec(mx, relay, dns, &allowlist));
    let server = w.serve(mx);
    swaks(
        mx,
        &[
            "--from",
            "boss@sender.test",
            "--to",
            "me@example.test",
            "--add-header",
            "X-Spam-Status: No, score=-100 forged",
            "--body",
            GTUBE,
        ],
    )
    .ok();
    assert!(
        wait_for(Duration::from_secs(30), || w
            .folder("me@example.test", "Junk")
            .len()
            == 1),
        "{}",
        server.log_text()
    );
    let junk = text(&w.folder("me@example.test", "Junk")[0]);
    assert!(
        junk.contains("X-Spam-Flag: YES") && !junk.contains("forged"),
        "{junk}"
    );
    assert!(w.inbox("me@example.test").is_empty());
}

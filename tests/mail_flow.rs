//! Mail through the real binary with real peers on loopback: swaks sends to the MX,
//! aiosmtpd receives what is forwarded, dkimpy verifies the signature, a Python HTTP
//! server receives webhooks.

mod common;

use std::time::Duration;

use common::{TEST_HASH, Workspace, free_port, python_peer, received, swaks, wait_for};

struct Setup {
    w: Workspace,
    mx: u16,
    sink_dir: std::path::PathBuf,
    hook_dir: std::path::PathBuf,
    _sink: common::Process,
    _hook: common::Process,
    _dns: common::Process,
}

fn spec(mx: u16, relay: u16, hook: u16, dns: u16, extra: &str) -> String {
    format!(
        r#"
[listeners]
mx = "127.0.0.1:{mx}"

[dns]
resolver = "127.0.0.1:{dns}"

[delivery]
relay = "127.0.0.1:{relay}"
webhook_secret = {{ file = "hook.key" }}

[domains."example.test"]
max_message_size = "100KB"

[domains."example.test".aliases.hello]
forward = ["friend@elsewhere.test"]

[domains."example.test".aliases.me]
mailbox = {{ password = {{ hash = "{TEST_HASH}" }} }}

[domains."example.test".aliases.team]
forward = ["me@example.test", "boss@elsewhere.test", "http://127.0.0.1:{hook}/mail"]

[domains."example.test".aliases.gone]
reject = "hard"
message = "gone fishing"

[domains."example.test".aliases.later]
reject = "soft"

[domains."example.test".aliases.void]
reject = "quiet"

[[domains."example.test".patterns]]
regex = '^ticket-(\d+)$'
forward = ['tickets+$1@elsewhere.test']
{extra}"#
    )
}

fn setup(extra: &str) -> Setup {
    let (mx, relay, hook) = (free_port(), free_port(), free_port());
    let w = Workspace::new("");
    let (dns, dns_port) = common::quiet_dns(w.path());
    w.write_spec(&spec(mx, relay, hook, dns_port, extra));
    std::fs::write(w.path().join("hook.key"), "webhook-test-key\n").unwrap();
    let sink_dir = w.path().join("sink");
    let hook_dir = w.path().join("hooks");
    let sink = python_peer(
        "sink.py",
        &[&relay.to_string(), sink_dir.to_str().unwrap()],
        w.path(),
    );
    let hook = python_peer(
        "webhook.py",
        &[&hook.to_string(), hook_dir.to_str().unwrap()],
        w.path(),
    );
    Setup {
        w,
        mx,
        sink_dir,
        hook_dir,
        _sink: sink,
        _hook: hook,
        _dns: dns,
    }
}

#[test]
fn forwarded_mail_is_srs_rewritten_dkim_signed_and_bounces_find_their_way_back() {
    let s = setup("");
    let server = s.w.serve(s.mx);
    let out = swaks(
        s.mx,
        &[
            "--from",
            "alice@sender.test",
            "--to",
            "hello@example.test",
            "--h-Subject",
            "forward me",
            // A forged verdict in this server's name must not survive.
            "--add-header",
            "Authentication-Results: mx.example.test; dkim=pass header.d=bank.test",
        ],
    );
    out.ok();
    assert!(
        out.stdout.contains("<-  250 2.0.0 Queued as"),
        "{}",
        out.stdout
    );

    assert!(
        wait_for(Duration::from_secs(20), || received(&s.sink_dir).len() == 1),
        "nothing forwarded:\n{}",
        server.log_text()
    );
    // The log is a file, not a terminal: no colour escape codes in it (issue 22).
    let log = server.log_text();
    assert!(!log.is_empty() && !log.contains('\u{1b}'), "{log}");
    let msg = &received(&s.sink_dir)[0];
    assert_eq!(msg.rcpt_to, ["friend@elsewhere.test"]);
    assert!(
        !msg.content.contains("header.d=bank.test"),
        "forged Authentication-Results kept:\n{}",
        msg.content
    );
    assert_eq!(
        msg.content
            .matches("Authentication-Results: mx.example.test")
            .count(),
        1,
        "exactly our own verdict:\n{}",
        msg.content
    );
    assert!(
        msg.mail_from.starts_with("SRS0=")
            && msg.mail_from.ends_with("=sender.test=alice@example.test"),
        "{}",
        msg.mail_from
    );
    assert!(msg.content.contains("Subject: forward me"));
    assert!(msg.content.contains("Received: from "));

    // dkimpy, an independent implementation, verifies the signature with our published key.
    let txt = common::dkim_txt(&s.w);
    let verify = common::dkimpy("dkim", &msg.path, &[&txt]);
    let verdict = verify.ok().stdout.clone();
    assert!(verdict.contains("PASS example.test ferrymail"), "{verdict}");

    // ...and the ARC chain our forwarding domain started (i=1) validates.
    assert!(
        msg.content
            .contains("ARC-Seal: i=1; a=rsa-sha256; s=ferrymail; d=example.test; cv=none"),
        "{}",
        msg.content
    );
    common::dkimpy("arc", &msg.path, &[&txt]).ok();

    // The destination bounces: the bounce goes to the SRS address and reaches Alice.
    let srs = msg.mail_from.clone();
    let bounce = swaks(
        s.mx,
        &["--from", "<>", "--to", &srs, "--h-Subject", "Undelivered"],
    );
    bounce.ok();
    assert!(
        wait_for(Duration::from_secs(20), || received(&s.sink_dir).len() == 2),
        "bounce not relayed"
    );
    let back = &received(&s.sink_dir)[1];
    assert_eq!(back.rcpt_to, ["alice@sender.test"]);
    assert_eq!(
        back.mail_from, "<>",
        "a bounce keeps the null sender (aiosmtpd writes it as <>)"
    );

    // A forged SRS address is refused.
    let forged = srs.replacen("SRS0=", "SRS0=Q", 1);
    let out = swaks(
        s.mx,
        &["--from", "<>", "--to", &forged, "--quit-after", "RCPT"],
    );
    assert!(
        out.stdout.contains("<** 550 5.1.1 Invalid SRS address"),
        "{}",
        out.stdout
    );
}

#[test]
fn mailbox_webhook_and_pattern_routes_deliver() {
    let s = setup("");
    let server = s.w.serve(s.mx);
    swaks(
        s.mx,
        &[
            "--from",
            "bob@sender.test",
            "--to",
            "team@example.test",
            "--h-Subject",
            "to the team",
        ],
    )
    .ok();
    swaks(
        s.mx,
        &[
            "--from",
            "bob@sender.test",
            "--to",
            "ticket-42@example.test",
        ],
    )
    .ok();
    swaks(
        s.mx,
        &[
            "--from",
            "bob@sender.test",
            "--to",
            "me+news@example.test",
            "--h-Subject",
            "tagged",
        ],
    )
    .ok();

    assert!(
        wait_for(Duration::from_secs(20), || s
            .w
            .inbox("me@example.test")
            .len()
            == 2),
        "mailbox deliveries missing:\n{}",
        server.log_text()
    );
    assert!(wait_for(Duration::from_secs(20), || received(&s.sink_dir)
        .len()
        == 2));
    let mut targets: Vec<String> = received(&s.sink_dir)
        .iter()
        .flat_map(|m| m.rcpt_to.clone())
        .collect();
    targets.sort();
    assert_eq!(
        targets,
        ["boss@elsewhere.test", "tickets+42@elsewhere.test"]
    );

    assert!(
        wait_for(Duration::from_secs(20), || s
            .hook_dir
            .join("0.json")
            .exists()),
        "webhook not posted"
    );
    let body = std::fs::read(s.hook_dir.join("0.json")).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["subject"], "to the team");
    assert_eq!(json["envelope"]["recipient"], "team@example.test");
    assert!(wait_for(Duration::from_secs(5), || {
        let log = s.w.run(&["queue", "log", "--json"]).stdout;
        log.matches("\"delivered\"").count() >= 5 && log.contains("\"accepted\"")
    }));
    let signature = std::fs::read_to_string(s.hook_dir.join("0.sig")).unwrap();
    assert_eq!(
        signature,
        ferrymail::queue::webhook::signature(b"webhook-test-key", &body),
        "HMAC must match the body"
    );
}

#[test]
fn recipients_are_checked_and_relay_tricks_refused() {
    let s = setup("");
    let _server = s.w.serve(s.mx);
    let rcpt = |to: &str| common::rcpt_probe(s.mx, "x@sender.test", to);

    assert!(
        rcpt("nobody@example.test").contains("<** 550 5.1.1"),
        "unknown user"
    );
    assert!(rcpt("gone@example.test").contains("<** 550 5.1.1 gone fishing"));
    assert!(rcpt("later@example.test").contains("<** 421 4.7.1"));
    assert!(rcpt("void@example.test").contains("<-  250 2.1.5"));
    for trick in [
        "user@elsewhere.test",
        "user%elsewhere.test@example.test",
        "elsewhere.test!user@example.test",
        "@example.test:user@elsewhere.test",
        "user@ELSEWHERE.test.",
        "\"user@elsewhere.test\"@example.test",
        "user@xn--lsewhere-e1a.test",
    ] {
        let out = rcpt(trick);
        assert!(
            out.contains("<** 550 5.7.1") || out.contains("<** 501"),
            "{trick} must be refused:\n{out}"
        );
    }
    // Case and trailing-dot variants of our own domain are ours.
    assert!(rcpt("HELLO@Example.TEST").contains("<-  250 2.1.5"));

    // Every refusal is in the mail log with its reason.
    let logged = wait_for(Duration::from_secs(5), || {
        let log = s.w.run(&["queue", "log", "--limit", "100"]).stdout;
        log.contains("rejected  x@sender.test → nobody@example.test  550 5.1.1")
            && log.contains("rejected  x@sender.test → user%elsewhere.test@example.test  550 5.7.1 Relay syntax not accepted")
    });
    assert!(logged, "{}", s.w.run(&["queue", "log"]).stdout);
}

#[test]
fn smuggling_size_and_loops_are_refused() {
    let s = setup("");
    let _server = s.w.serve(s.mx);
    // SMTP smuggling: "<LF>.<CRLF>" must not end the message, and the message holding it
    // is refused whole. Clients normalise line endings, so this one is sent raw.
    let replies = raw_session(
        s.mx,
        "EHLO t\r\nMAIL FROM:<x@sender.test>\r\nRCPT TO:<hello@example.test>\r\nDATA\r\n",
        "Subject: a\r\n\r\nbody\n.\r\nMAIL FROM:<evil@sender.test>\r\nRCPT TO:<hello@example.test>\r\nDATA\r\nsmuggled\r\n.\r\nQUIT\r\n",
    );
    assert!(replies.contains("550 5.6.0"), "{replies}");
    assert!(
        !replies.contains("Queued as"),
        "nothing may be queued: {replies}"
    );

    // 150 KB in 1 KB lines, over the domain's 100 KB limit (swaks reads --data from a file).
    let big = format!(
        "Subject: big\r\n\r\n{}",
        format!("{}\r\n", "x".repeat(1000)).repeat(150)
    );
    let big_file = s.w.path().join("big.eml");
    std::fs::write(&big_file, big).unwrap();
    let out = swaks(
        s.mx,
        &[
            "--from",
            "x@sender.test",
            "--to",
            "hello@example.test",
            "--data",
            big_file.to_str().unwrap(),
        ],
    );
    assert!(out.stdout.contains("<** 552 5.3.4"), "{}", out.stdout);

    // Over Postfix's hopcount_limit of 50.
    let hops: String = (0..51)
        .map(|i| format!("Received: from hop{i}\r\n"))
        .collect();
    let looped = format!("{hops}Subject: loop\r\n\r\nbody\r\n");
    let out = swaks(
        s.mx,
        &[
            "--from",
            "x@sender.test",
            "--to",
            "hello@example.test",
            "--data",
            &looped,
        ],
    );
    assert!(out.stdout.contains("<** 554 5.4.6"), "{}", out.stdout);
    assert!(received(&s.sink_dir).is_empty());
}

/// Sends `commands`, waits for the 354, sends `data` byte for byte, returns all replies.
fn raw_session(port: u16, commands: &str, data: &str) -> String {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut replies = String::new();
    let mut buf = [0u8; 4096];
    conn.write_all(commands.as_bytes()).unwrap();
    while !replies.contains("354 ") {
        let n = conn.read(&mut buf).unwrap();
        assert!(n > 0, "closed early: {replies}");
        replies.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    conn.write_all(data.as_bytes()).unwrap();
    while let Ok(n) = conn.read(&mut buf) {
        if n == 0 {
            break;
        }
        replies.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    replies
}

#[test]
fn chunking_delivers_a_bdat_message() {
    let s = setup("");
    let server = s.w.serve(s.mx);
    let body = "Subject: chunks\r\n\r\none\r\n";
    // Two chunks, the last marked LAST, pipelined in one write.
    let (a, b) = body.split_at(10);
    let script = format!(
        "EHLO t\r\nMAIL FROM:<x@sender.test>\r\nRCPT TO:<hello@example.test>\r\nBDAT {}\r\n{a}BDAT {} LAST\r\n{b}QUIT\r\n",
        a.len(),
        b.len()
    );
    let replies = common::raw_exchange(s.mx, &script);
    assert!(replies.contains("250-CHUNKING"), "{replies}");
    assert!(
        replies.contains(&format!("250 2.6.0 {} octets received", a.len())),
        "{replies}"
    );
    assert!(replies.contains("250 2.0.0 Queued as"), "{replies}");
    assert!(
        wait_for(Duration::from_secs(20), || received(&s.sink_dir).len() == 1),
        "{}",
        server.log_text()
    );
    assert!(
        received(&s.sink_dir)[0]
            .content
            .contains("Subject: chunks\r\n\r\none")
    );
}

/// `--log-format json`: every line is one JSON object, and a mail record keeps both its
/// text ("mail") and the message's id, which used the same key and lost one (issue 22).
#[test]
fn json_log_lines_all_parse_and_mail_records_keep_their_id() {
    let s = setup("");
    let mut server = s.w.serve_with(s.mx, &["--log-format", "json"], &[]);
    let out = swaks(
        s.mx,
        &["--from", "x@sender.test", "--to", "hello@example.test"],
    );
    out.ok();
    assert!(
        wait_for(Duration::from_secs(20), || received(&s.sink_dir).len() == 1),
        "{}",
        server.log_text()
    );
    server.terminate();
    let (log, lines) = (server.log_text(), server.json_log());
    assert!(
        lines
            .iter()
            .any(|v| v["message"] == "mail" && v["msg_id"].is_u64() && v["event"].is_string()),
        "{log}"
    );
    // What used to be plain lines on stdout is a record too.
    assert!(
        lines.iter().any(|v| v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("ferrymail serving mx.example.test"))),
        "{log}"
    );
    // And a start that fails says why in JSON, on stderr, with nothing on stdout.
    std::fs::write(s.w.path().join("broken.toml"), "[server]\nhostname = 5\n").unwrap();
    let failed = std::process::Command::new(common::BIN)
        .current_dir(s.w.path())
        .args(["--log-format", "json", "--spec", "broken.toml", "serve"])
        .output()
        .unwrap();
    assert_eq!(failed.status.code(), Some(1));
    assert!(failed.stdout.is_empty(), "{failed:?}");
    let stderr = String::from_utf8_lossy(&failed.stderr);
    for line in stderr.lines() {
        let record: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(record["level"], "ERROR", "{line}");
    }
    assert!(stderr.contains("spec error: broken.toml:2:1"), "{stderr}");
}

#[test]
fn starttls_works_with_swaks() {
    let s = setup("");
    let server = s.w.serve(s.mx);
    let out = swaks(
        s.mx,
        &[
            "--from",
            "x@sender.test",
            "--to",
            "hello@example.test",
            "--tls",
        ],
    );
    out.ok();
    assert!(out.stdout.contains("TLS started"), "{}", out.stdout);
    assert!(
        wait_for(Duration::from_secs(20), || received(&s.sink_dir).len() == 1),
        "{}",
        server.log_text()
    );
    assert!(received(&s.sink_dir)[0].content.contains("with ESMTPS"));
}

#[test]
fn spec_edits_apply_while_serving_and_broken_edits_keep_the_old_state() {
    let s = setup("");
    let _server = s.w.serve(s.mx);
    let rcpt = |to: &str| common::rcpt_probe(s.mx, "x@sender.test", to);
    assert!(rcpt("new@example.test").contains("<** 550 5.1.1"));

    let text = std::fs::read_to_string(&s.w.spec).unwrap();
    std::fs::write(
        &s.w.spec,
        format!(
            "{text}\n[domains.\"example.test\".aliases.new]\nforward = [\"n@elsewhere.test\"]\n"
        ),
    )
    .unwrap();
    let started = std::time::Instant::now();
    assert!(
        wait_for(Duration::from_secs(2), || rcpt("new@example.test")
            .contains("<-  250 2.1.5")),
        "new alias not live within 2 s"
    );
    eprintln!("new alias live after {:?}", started.elapsed());

    // A broken edit: reported, not applied; the aliases keep working.
    let text = std::fs::read_to_string(&s.w.spec).unwrap();
    std::fs::write(
        &s.w.spec,
        format!("{text}\n[domains.\"example.test\".aliases.broken]\nfowrard = [\"x@y.test\"]\n"),
    )
    .unwrap();
    assert!(wait_for(Duration::from_secs(5), || s
        .w
        .run(&["status"])
        .stdout
        .contains("last reconcile: FAILED")));
    let status = s.w.run(&["status"]).stdout;
    assert!(
        status.contains("unknown field \"fowrard\", did you mean \"forward\"?"),
        "{status}"
    );
    assert!(rcpt("new@example.test").contains("<-  250 2.1.5"));
    assert!(rcpt("hello@example.test").contains("<-  250 2.1.5"));
}

#[test]
fn greylisting_defers_new_senders_until_they_retry() {
    let s = setup(
        "\n[domains.\"grey.test\"]\ngreylisting = true\ngreylist_delay = \"2s\"\n[domains.\"grey.test\".aliases.info]\nforward = [\"x@elsewhere.test\"]\n",
    );
    let _server = s.w.serve(s.mx);
    let rcpt = || {
        swaks(
            s.mx,
            &[
                "--from",
                "new@sender.test",
                "--to",
                "info@grey.test",
                "--quit-after",
                "RCPT",
            ],
        )
        .stdout
    };
    assert!(
        rcpt().contains("<** 450 4.7.1 Greylisted"),
        "first contact is deferred"
    );
    assert!(
        rcpt().contains("<** 450 4.7.1 Greylisted"),
        "an early retry is deferred too"
    );
    std::thread::sleep(Duration::from_millis(2100));
    assert!(
        rcpt().contains("<-  250 2.1.5"),
        "a retry after the delay passes"
    );
    assert!(
        rcpt().contains("<-  250 2.1.5"),
        "and the triple is remembered"
    );
    // Domains without greylisting are not affected.
    assert!(
        swaks(
            s.mx,
            &[
                "--from",
                "new@sender.test",
                "--to",
                "hello@example.test",
                "--quit-after",
                "RCPT"
            ]
        )
        .stdout
        .contains("<-  250 2.1.5")
    );
}

#[test]
fn a_connection_flood_from_one_address_is_slowed_down() {
    use std::io::Read;
    let s = setup("\n[limits]\nconnections_per_minute = 100\n");
    let _server = s.w.serve(s.mx);
    let mut refused = 0;
    for _ in 0..150 {
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", s.mx)).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut banner = [0u8; 128];
        let n = conn.read(&mut banner).unwrap_or(0);
        if String::from_utf8_lossy(&banner[..n]).starts_with("421 4.7.0") {
            refused += 1;
        }
    }
    // 100 a minute are allowed; the harness's readiness probe used one of them.
    assert_eq!(
        refused,
        150 - 99,
        "connections past the limit must be refused"
    );
}

#[test]
fn a_client_that_quits_frees_its_place_before_the_221() {
    use std::io::{BufRead, BufReader, Write};
    // Four open connections per address, four clients that reconnect as soon as they
    // have read the 221: each must be let in every time, so the place has to be given
    // back at QUIT, not some time after the 221 (smtp-source -s 20 against 20 tripped it).
    const CLIENTS: usize = 4;
    let s = setup(&format!(
        "\n[limits]\nconnections_per_minute = 0\nconnections_per_ip = {CLIENTS}\n"
    ));
    let _server = s.w.serve(s.mx);
    let mx = s.mx;
    // The harness's readiness probe closed without QUIT; its place is free once the
    // server has read the end of that connection.
    std::thread::sleep(Duration::from_millis(300));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            std::thread::spawn(move || -> Result<(), String> {
                for round in 0..150 {
                    let conn = std::net::TcpStream::connect(("127.0.0.1", mx)).unwrap();
                    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    let mut reader = BufReader::new(conn.try_clone().unwrap());
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if !line.starts_with("220 ") {
                        return Err(format!("round {round}: {line}"));
                    }
                    (&conn).write_all(b"QUIT\r\n").unwrap();
                    line.clear();
                    reader.read_line(&mut line).unwrap();
                    if !line.starts_with("221 ") {
                        return Err(format!("round {round}: {line}"));
                    }
                }
                Ok(())
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap().unwrap();
    }
}

#[test]
fn a_failing_webhook_makes_the_mx_ask_senders_to_retry() {
    let dead = free_port();
    let s = setup(&format!(
        "\n[domains.\"example.test\".aliases.deadhook]\nforward = [\"http://127.0.0.1:{dead}/mail\"]\n"
    ));
    let _server = s.w.serve(s.mx);
    let mut queued_as = Vec::new();
    for _ in 0..5 {
        let sent = swaks(
            s.mx,
            &["--from", "x@sender.test", "--to", "deadhook@example.test"],
        );
        let id = sent
            .ok()
            .stdout
            .split("Queued as ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .expect("250 2.0.0 Queued as ID")
            .to_string();
        queued_as.push(id);
    }
    let deferred = wait_for(Duration::from_secs(20), || {
        s.w.run(&["queue", "log", "--json"])
            .stdout
            .matches("\"deferred\"")
            .count()
            >= 5
    });
    assert!(deferred, "{}", s.w.run(&["queue", "log"]).stdout);
    let out = swaks(
        s.mx,
        &[
            "--from",
            "x@sender.test",
            "--to",
            "deadhook@example.test",
            "--quit-after",
            "RCPT",
        ],
    );
    assert!(out.stdout.contains("<** 421 4.4.1"), "{}", out.stdout);
    // The accepted messages wait in the queue, not lost; other addresses are unaffected.
    let queue = s.w.run(&["queue", "list"]).stdout;
    assert_eq!(queue.matches("Webhook").count(), 5, "{queue}");
    // Why, in words: where it went and what the system said, not reqwest's outer layer.
    assert!(
        queue.contains(&format!(
            "cannot connect to 127.0.0.1:{dead}: Connection refused"
        )) && !queue.contains("error sending request"),
        "{queue}"
    );
    assert!(
        swaks(
            s.mx,
            &[
                "--from",
                "x@sender.test",
                "--to",
                "hello@example.test",
                "--quit-after",
                "RCPT"
            ]
        )
        .stdout
        .contains("<-  250")
    );

    // One id from the 250 line to the log to the queue: an operator told "Queued as N"
    // finds message N in `queue list` and in the log, and retries or drops it by N.
    let id = queued_as[0].clone();
    assert!(
        queue.contains(&format!("#{id}  from x@sender.test")),
        "{queue}"
    );
    let log = s.w.run(&["queue", "log"]).stdout;
    assert!(log.contains(&format!("#{id} x@sender.test")), "{log}");
    let retried = s.w.run(&["queue", "retry", &id]);
    assert!(
        retried
            .ok()
            .stdout
            .contains(&format!("Message {id}: 1 delivery will be tried now")),
        "{}",
        retried.stdout
    );
    // The queue list's own form of it is taken too.
    s.w.run(&["queue", "remove", &format!("#{id}")]).ok();
    assert_eq!(
        s.w.run(&["queue", "list"])
            .stdout
            .matches("Webhook")
            .count(),
        4
    );
    let gone = s.w.run(&["queue", "remove", &id]);
    gone.code(1);
    assert!(
        gone.stderr
            .contains(&format!("no message {id} in the queue")),
        "{}",
        gone.stderr
    );
    // One delivery of a message, as the list shows it (#N/D).
    let delivery = s.w.run(&["queue", "list"]).stdout;
    let one = delivery
        .split_whitespace()
        .find(|w| w.starts_with('#') && w.contains('/'))
        .expect("a delivery line")
        .to_string();
    s.w.run(&["queue", "retry", &one]).ok();
}

#[test]
fn sigterm_drains_and_exits_cleanly() {
    let s = setup("");
    let mut server = s.w.serve(s.mx);
    swaks(
        s.mx,
        &["--from", "x@sender.test", "--to", "hello@example.test"],
    )
    .ok();
    let status = server.terminate().expect("serve must exit after SIGTERM");
    assert!(
        status.success(),
        "exit status {status:?}\n{}",
        server.log_text()
    );
    assert!(server.log_text().contains("shutting down"));
    assert!(s.w.run(&["status"]).stdout.contains("server: not running"));
}

const DSN_ALIASES: &str = r#"
[domains."example.test".aliases.refuse]
forward = ["refuse-me@elsewhere.test"]

[domains."example.test".aliases.slow]
forward = ["slow-me@elsewhere.test"]
"#;

/// One message through a raw, pipelined session with DSN parameters.
fn send_with_dsn(port: u16, mail_params: &str, rcpt: &str, rcpt_params: &str, subject: &str) {
    let replies = raw_session(
        port,
        &format!(
            "EHLO client.test\r\nMAIL FROM:<sender@sender.test> {mail_params}\r\n\
             RCPT TO:<{rcpt}> {rcpt_params}\r\nDATA\r\n"
        ),
        &format!("Subject: {subject}\r\n\r\nthe body text\r\n.\r\nQUIT\r\n"),
    );
    assert!(replies.contains("250 2.0.0"), "{replies}");
}

/// The notices (from the null sender) the sink has received.
fn notices(dir: &std::path::Path) -> Vec<common::Received> {
    received(dir)
        .into_iter()
        .filter(|m| m.mail_from.is_empty() || m.mail_from == "<>")
        .collect()
}

#[test]
fn delivery_status_notifications_follow_what_the_sender_asked() {
    let s = setup(DSN_ALIASES);
    let server = s.w.serve(s.mx);
    // NOTIFY=NEVER: a failure is not reported.
    send_with_dsn(
        s.mx,
        "",
        "refuse@example.test",
        "NOTIFY=NEVER",
        "quiet failure",
    );
    // NOTIFY=FAILURE with RET=FULL, ENVID and ORCPT: reported, with all three.
    send_with_dsn(
        s.mx,
        "RET=FULL ENVID=QQ314159",
        "refuse@example.test",
        "NOTIFY=FAILURE ORCPT=rfc822;orig@example.test",
        "loud failure",
    );
    // NOTIFY=SUCCESS: a mailbox delivery is reported "delivered"; a forward to a host
    // without DSN (aiosmtpd) "relayed".
    send_with_dsn(
        s.mx,
        "",
        "me@example.test",
        "NOTIFY=SUCCESS",
        "to a mailbox",
    );
    send_with_dsn(
        s.mx,
        "",
        "hello@example.test",
        "NOTIFY=SUCCESS",
        "forwarded",
    );
    assert!(
        wait_for(Duration::from_secs(20), || notices(&s.sink_dir).len() >= 3),
        "three notices expected, got {:?}\n{}",
        received(&s.sink_dir)
            .iter()
            .map(|m| (&m.mail_from, &m.rcpt_to))
            .collect::<Vec<_>>(),
        server.log_text()
    );
    std::thread::sleep(Duration::from_secs(1));
    let all = notices(&s.sink_dir);
    assert_eq!(all.len(), 3, "NOTIFY=NEVER must not cause a notice");
    for n in &all {
        assert_eq!(n.rcpt_to, ["sender@sender.test"]);
        assert!(
            n.content
                .contains("Content-Type: multipart/report; report-type=delivery-status")
        );
    }
    let with = |action: &str| {
        all.iter()
            .find(|n| n.content.contains(&format!("Action: {action}")))
            .unwrap_or_else(|| panic!("no \"{action}\" notice"))
            .content
            .clone()
    };
    let failed = with("failed");
    assert!(failed.contains("Status: 5.1.1"), "{failed}");
    assert!(
        failed.contains("Original-Envelope-Id: QQ314159"),
        "{failed}"
    );
    assert!(
        failed.contains("Original-Recipient: rfc822; orig@example.test"),
        "{failed}"
    );
    assert!(
        failed.contains("Final-Recipient: rfc822; refuse@example.test"),
        "{failed}"
    );
    assert!(
        failed.contains("Content-Type: message/rfc822") && failed.contains("the body text"),
        "RET=FULL returns the whole message: {failed}"
    );
    assert!(
        !failed.contains("refuse-me@"),
        "a notice never shows where an alias forwards to: {failed}"
    );
    assert!(with("delivered").contains("Final-Recipient: rfc822; me@example.test"));
    assert!(with("relayed").contains("Final-Recipient: rfc822; hello@example.test"));
}

#[test]
fn a_message_that_keeps_failing_gets_one_delay_notice_then_bounces_when_it_expires() {
    let s = setup(DSN_ALIASES);
    let path = s.w.path().join("ferrymail.toml");
    let spec = std::fs::read_to_string(&path).unwrap();
    let spec = spec.replace(
        "webhook_secret =",
        "delay_warning = \"1s\"\nexpire_after = \"10s\"\nwebhook_secret =",
    );
    std::fs::write(&path, spec).unwrap();
    let server = s.w.serve(s.mx);
    let sent = std::time::Instant::now();
    send_with_dsn(s.mx, "ENVID=slow-1", "slow@example.test", "", "stuck");
    let message_id = || -> i64 {
        let list = s.w.run(&["queue", "list", "--json"]);
        let entries: serde_json::Value = serde_json::from_str(&list.ok().stdout).unwrap();
        entries[0]["message_id"]
            .as_i64()
            .expect("the stuck message in the queue")
    };
    assert!(wait_for(Duration::from_secs(10), || {
        s.w.run(&["queue", "list", "--json"])
            .stdout
            .contains("451 4.2.0")
    }));
    // The first retry comes after the delay warning (and, with the worker's idle wake-up
    // of at most 5 s, well before expiry): one "delayed" notice.
    // Retries the stuck delivery now and returns the n-th notice the sender received.
    let retry_for_notice = |n: usize| -> String {
        s.w.run(&["queue", "retry", &message_id().to_string()]).ok();
        assert!(
            wait_for(Duration::from_secs(15), || notices(&s.sink_dir).len() == n),
            "{}",
            server.log_text()
        );
        notices(&s.sink_dir)[n - 1].content.clone()
    };
    std::thread::sleep(Duration::from_millis(1500));
    let delayed = &retry_for_notice(1);
    assert!(
        delayed.contains("Action: delayed\r\nStatus: 4.2.0"),
        "{delayed}"
    );
    assert!(delayed.contains("Will-Retry-Until:"), "{delayed}");
    assert!(
        delayed.contains("Original-Envelope-Id: slow-1"),
        "{delayed}"
    );
    // Past expire_after, the next attempt gives up: one "failed" notice, queue empty.
    std::thread::sleep(Duration::from_secs(11).saturating_sub(sent.elapsed()));
    let failed = &retry_for_notice(2);
    assert!(
        failed.contains("Action: failed\r\nStatus: 5.4.7"),
        "{failed}"
    );
    assert!(failed.contains("given up after"), "{failed}");
    assert!(s.w.run(&["queue", "list"]).ok().stdout.contains("empty"));
    let delayed_notices = notices(&s.sink_dir)
        .iter()
        .filter(|n| n.content.contains("Action: delayed"))
        .count();
    assert_eq!(delayed_notices, 1, "one delay notice per message");
}

#[test]
fn a_full_mailbox_is_refused_at_rcpt_and_a_message_too_big_for_it_at_data() {
    let quota = |q: &str| {
        format!(
            "\n[domains.\"example.test\".aliases.tiny]\nmailbox = {{ password = {{ hash = \"{TEST_HASH}\" }}, quota = \"{q}\" }}\n"
        )
    };
    let s = setup(&quota("2000B"));
    let server = s.w.serve(s.mx);
    let send = |body: &str| {
        swaks(
            s.mx,
            &[
                "--from",
                "a@sender.test",
                "--to",
                "tiny@example.test",
                "--body",
                body,
            ],
        )
    };
    // About 1,250 bytes as stored (with the trace headers): fits.
    let first = send(&"x".repeat(600));
    assert!(
        first.stdout.contains("250 2.0.0 Queued"),
        "{}",
        first.stdout
    );
    assert!(
        wait_for(Duration::from_secs(20), || s
            .w
            .inbox("tiny@example.test")
            .len()
            == 1),
        "{}",
        server.log_text()
    );
    // What is left of the quota is less than this message: 552 after DATA.
    let refused = send(&"y".repeat(900));
    assert!(refused.stdout.contains("552 5.2.2"), "{}", refused.stdout);
    // The quota shrinks below what is stored: now RCPT is refused, with a temporary 452.
    let path = s.w.path().join("ferrymail.toml");
    let spec = std::fs::read_to_string(&path)
        .unwrap()
        .replace("quota = \"2000B\"", "quota = \"1000B\"");
    std::fs::write(&path, spec).unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || common::rcpt_probe(
            s.mx,
            "a@sender.test",
            "tiny@example.test"
        )
        .contains("452 4.2.2")),
        "a full mailbox must answer 452 4.2.2 at RCPT:\n{}",
        server.log_text()
    );
}

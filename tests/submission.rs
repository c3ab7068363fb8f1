//! Authenticated submission with swaks: AUTH only after STARTTLS, PLAIN and LOGIN, the
//! account may send as itself and the aliases that deliver to it and nobody else (MAIL
//! FROM and From:), mail leaves DKIM-signed without SRS, and guessing is slowed down.

mod common;

use std::time::Duration;

use common::{TEST_HASH, Workspace, auth_plain, free_port, python_peer, received, swaks, wait_for};
use ferrymail::store::{SqliteStore, Store};

/// The API token the tests' admin uses (read from the environment, as a spec says).
const TOKEN: &str = "0123456789abcdef0123456789abcdef-test";

struct Setup {
    w: Workspace,
    port: u16,
    /// The admin's http listener (loopback, plain HTTP).
    http: u16,
    sink_dir: std::path::PathBuf,
    server: common::Process,
    _sink: common::Process,
    _dns: common::Process,
}

fn setup() -> Setup {
    let (mx, port, relay, http) = (free_port(), free_port(), free_port(), free_port());
    let w = Workspace::new("");
    let (dns, dns_port) = common::quiet_dns(w.path());
    w.write_spec(&format!(
        r#"
[listeners]
mx = "127.0.0.1:{mx}"
submission = "127.0.0.1:{port}"
http = "127.0.0.1:{http}"

[admin.api_tokens]
ci = {{ env = "TEST_API_TOKEN" }}

[dns]
resolver = "127.0.0.1:{dns_port}"

[delivery]
relay = "127.0.0.1:{relay}"

[domains."example.test".aliases.me]
mailbox = {{ password = {{ hash = "{TEST_HASH}" }} }}

[domains."example.test".aliases.other]
mailbox = {{ password = {{ hash = "{TEST_HASH}" }} }}

[domains."example.test".aliases.keeper]
mailbox = {{ password = {{ hash = "{TEST_HASH}" }}, save_sent = true }}

[domains."example.test".aliases.limited]
mailbox = {{ password = {{ hash = "{TEST_HASH}" }}, sending = {{ per_hour = 3, recipients_per_message = 2 }} }}

[domains."example.test".aliases.sales]
forward = ["me@example.test"]

[domains."example.test".aliases.boss]
forward = ["other@example.test"]

[domains."example.test".aliases.tosmall]
forward = ["x@small.example"]

[domains."small.example"]
max_message_size = "10KB"

[domains."small.example".aliases.x]
forward = ["me@example.test"]
"#
    ));
    let sink_dir = w.path().join("sink");
    let sink = python_peer(
        "sink.py",
        &[&relay.to_string(), sink_dir.to_str().unwrap()],
        w.path(),
    );
    let server = w.serve_with(port, &[], &[("TEST_API_TOKEN", TOKEN)]);
    Setup {
        w,
        port,
        http,
        sink_dir,
        server,
        _sink: sink,
        _dns: dns,
    }
}

fn submit(port: u16, auth: &[&str], from: &str, to: &str, extra: &[&str]) -> common::Run {
    let mut args = vec!["--tls"];
    args.extend_from_slice(auth);
    args.extend_from_slice(&["--from", from, "--to", to]);
    args.extend_from_slice(extra);
    swaks(port, &args)
}

const ME: [&str; 6] = auth_plain("me@example.test", "quickstart");

#[test]
fn an_account_sends_as_itself_signed_and_only_as_itself() {
    let s = setup();
    // Before STARTTLS there is no AUTH, and trying gets 538.
    let plain = swaks(
        s.port,
        &[
            "--quit-after",
            "EHLO",
            "--from",
            "me@example.test",
            "--to",
            "x@elsewhere.test",
        ],
    );
    assert!(
        !plain.stdout.contains("250-AUTH") && plain.stdout.contains("STARTTLS"),
        "{}",
        plain.stdout
    );
    let early = common::python_peer_run(
        "smtp_raw.py",
        &[
            &s.port.to_string(),
            "EHLO c\r\nAUTH PLAIN AG1lQGV4YW1wbGUudGVzdABxdWlja3N0YXJ0\r\nQUIT\r\n",
        ],
        s.w.path(),
    );
    assert!(early.stdout.contains("538 5.7.11"), "{}", early.stdout);

    // Without AUTH, MAIL is refused.
    let anonymous = submit(s.port, &[], "me@example.test", "friend@elsewhere.test", &[]);
    assert!(
        anonymous.stdout.contains("530 5.7.0"),
        "{}",
        anonymous.stdout
    );

    // A line over 998 characters is refused, saying which (RFC 5322 §2.1.1); 998 is taken.
    let long = "x".repeat(1200);
    let refused = submit(
        s.port,
        &ME,
        "me@example.test",
        "friend@elsewhere.test",
        &["--body", &long],
    );
    assert!(
        refused.stdout.contains("550 5.6.0 Line")
            && refused.stdout.contains("is 1200 characters long"),
        "{}",
        refused.stdout
    );
    let longest = "x".repeat(998);
    let taken = submit(
        s.port,
        &ME,
        "me@example.test",
        "friend@elsewhere.test",
        &["--body", &longest],
    );
    assert!(
        taken.stdout.contains("250 2.0.0 Queued"),
        "{}",
        taken.stdout
    );

    // AUTH PLAIN, own address: accepted, relayed DKIM-signed with the envelope kept.
    let sent = submit(
        s.port,
        &ME,
        "me@example.test",
        "friend@elsewhere.test",
        &["--h-Subject", "from me"],
    );
    assert!(
        sent.stdout.contains("235 2.7.0") && sent.stdout.contains("250 2.0.0 Queued"),
        "{}",
        sent.stdout
    );
    // The one with the 998-character line, then this one.
    assert!(
        wait_for(Duration::from_secs(20), || received(&s.sink_dir).len() == 2),
        "{}",
        s.server.log_text()
    );
    let all = received(&s.sink_dir);
    let msg = all
        .iter()
        .find(|m| m.content.contains("Subject: from me"))
        .expect("the message from me");
    assert_eq!(
        msg.mail_from, "me@example.test",
        "no SRS for our own senders"
    );
    assert!(msg.content.contains("with ESMTPSA"), "{}", msg.content);
    let store = SqliteStore::open(&s.w.data_dir()).unwrap();
    let public = store
        .dkim_public_key("ferrymail._domainkey.example.test")
        .unwrap()
        .unwrap();
    let txt = format!(
        "ferrymail._domainkey.example.test={}",
        ferrymail::dkim::txt_record("rsa-2048", &public)
    );
    let verdict = common::dkimpy("dkim", &msg.path, &[&txt]);
    assert!(
        verdict.ok().stdout.contains("PASS example.test"),
        "{}",
        verdict.stdout
    );

    // AUTH LOGIN, as an alias that delivers to this account: accepted.
    let login = [
        "--auth",
        "LOGIN",
        "--auth-user",
        "me@example.test",
        "--auth-password",
        "quickstart",
    ];
    let alias = submit(
        s.port,
        &login,
        "sales@example.test",
        "friend@elsewhere.test",
        &[],
    );
    assert!(
        alias.stdout.contains("250 2.0.0 Queued"),
        "{}",
        alias.stdout
    );

    // Someone else's address: refused at MAIL FROM.
    let spoof = submit(
        s.port,
        &ME,
        "boss@example.test",
        "friend@elsewhere.test",
        &[],
    );
    assert!(spoof.stdout.contains("553 5.7.1"), "{}", spoof.stdout);
    // Own envelope but a forged From: header: refused after DATA.
    let header = submit(
        s.port,
        &ME,
        "me@example.test",
        "friend@elsewhere.test",
        &["--h-From", "Boss <boss@example.test>"],
    );
    assert!(
        header.stdout.contains("553 5.7.1") && header.stdout.contains("From: header"),
        "{}",
        header.stdout
    );

    // By default nothing is filed in Sent (clients keep their own copy)...
    assert!(s.w.folder("me@example.test", "Sent").is_empty());
    // ...unless the mailbox says save_sent = true.
    let keeper = auth_plain("keeper@example.test", "quickstart");
    let kept = submit(
        s.port,
        &keeper,
        "keeper@example.test",
        "friend@elsewhere.test",
        &["--h-Subject", "keep a copy"],
    );
    assert!(kept.stdout.contains("250 2.0.0 Queued"), "{}", kept.stdout);
    let sent = s.w.folder("keeper@example.test", "Sent");
    assert_eq!(sent.len(), 1);
    assert!(String::from_utf8_lossy(&sent[0]).contains("Subject: keep a copy"));

    // A local recipient is delivered to its mailbox.
    let local = submit(
        s.port,
        &ME,
        "me@example.test",
        "other@example.test",
        &["--h-Subject", "hi other"],
    );
    assert!(
        local.stdout.contains("250 2.0.0 Queued"),
        "{}",
        local.stdout
    );
    assert!(wait_for(Duration::from_secs(20), || s
        .w
        .inbox("other@example.test")
        .len()
        == 1));
}

#[test]
fn password_guessing_is_refused_then_throttled() {
    let s = setup();
    let bad = |i: usize| {
        let password = format!("guess-{i}");
        submit(
            s.port,
            &auth_plain("me@example.test", &password),
            "me@example.test",
            "friend@elsewhere.test",
            &["--quit-after", "AUTH"],
        )
    };
    for i in 0..10 {
        let run = bad(i);
        assert!(
            run.stdout.contains("535 5.7.8"),
            "attempt {i}: {}",
            run.stdout
        );
    }
    // The 11th guess is not even checked, and neither is the right password now.
    let throttled = bad(10);
    assert!(
        throttled.stdout.contains("454 4.7.0"),
        "{}",
        throttled.stdout
    );
    let right = submit(
        s.port,
        &ME,
        "me@example.test",
        "friend@elsewhere.test",
        &["--quit-after", "AUTH"],
    );
    assert!(right.stdout.contains("454 4.7.0"), "{}", right.stdout);
    // An unknown account gets the same answer as a wrong password (no enumeration).
    let s2 = setup();
    let unknown = submit(
        s2.port,
        &auth_plain("nobody@example.test", "x"),
        "me@example.test",
        "friend@elsewhere.test",
        &["--quit-after", "AUTH"],
    );
    assert!(
        unknown
            .stdout
            .contains("535 5.7.8 Authentication credentials invalid"),
        "{}",
        unknown.stdout
    );
}

/// A stolen password must not make the server a spam cannon: past its hourly limit an
/// account's mail is refused (every recipient counts), and the refusal is logged where
/// the admin reads warnings and in the mail log.
#[test]
fn an_account_over_its_sending_limit_is_refused() {
    let s = setup();
    let limited = auth_plain("limited@example.test", "quickstart");
    let from = "limited@example.test";
    // Three recipients for one message: the third is refused, the message goes to two.
    let three = submit(
        s.port,
        &limited,
        from,
        "a@elsewhere.test,b@elsewhere.test,c@elsewhere.test",
        &[],
    );
    assert!(
        three
            .stdout
            .contains("452 4.5.3 Too many recipients: at most 2 for one message"),
        "{}",
        three.stdout
    );
    assert!(
        three.stdout.contains("250 2.0.0 Queued"),
        "{}",
        three.stdout
    );
    // One more makes three this hour; the next is over the limit.
    submit(s.port, &limited, from, "d@elsewhere.test", &[]).ok();
    let over = submit(s.port, &limited, from, "e@elsewhere.test", &[]);
    assert!(
        over.stdout.contains(
            "450 4.7.1 Sending limit reached: at most 3 messages an hour (each recipient counts); try again later"
        ),
        "{}",
        over.stdout
    );
    // Another account is not held back by it.
    submit(s.port, &ME, "me@example.test", "f@elsewhere.test", &[]).ok();
    assert!(
        wait_for(Duration::from_secs(20), || s
            .server
            .log_text()
            .contains("a mailbox reached its sending limit")),
        "{}",
        s.server.log_text()
    );
    assert!(wait_for(Duration::from_secs(10), || s
        .w
        .run(&["queue", "log", "--json"])
        .stdout
        .contains("450 4.7.1 Sending limit reached")));
    // The admin's error log (the web page and the API read the same lines) names it.
    let logs = std::process::Command::new("curl")
        .args(["-s", "--max-time", "20", "-H"])
        .arg(format!("Authorization: Bearer {TOKEN}"))
        .arg(format!("http://127.0.0.1:{}/api/v1/logs", s.http))
        .output()
        .expect("curl");
    let logs = String::from_utf8_lossy(&logs.stdout);
    assert!(
        logs.contains("a mailbox reached its sending limit")
            && logs.contains("limited@example.test"),
        "{logs}"
    );
    let status = s.w.run(&["status"]).stdout;
    assert!(
        status.contains(
            "! sending limit: mail from limited@example.test was refused 1 time in the last day"
        ),
        "{status}"
    );
    assert!(
        wait_for(Duration::from_secs(20), || received(&s.sink_dir).len() >= 4),
        "{}",
        s.server.log_text()
    );
    // Two messages from limited@ (to a and b, then d), one from me@, each recipient a
    // delivery of its own; nothing to c or e.
    let mut delivered: Vec<(String, String)> = received(&s.sink_dir)
        .into_iter()
        .flat_map(|r| {
            r.rcpt_to
                .into_iter()
                .map(move |to| (r.mail_from.clone(), to))
        })
        .collect();
    delivered.sort();
    assert_eq!(
        delivered,
        [
            ("limited@example.test", "a@elsewhere.test"),
            ("limited@example.test", "b@elsewhere.test"),
            ("limited@example.test", "d@elsewhere.test"),
            ("me@example.test", "f@elsewhere.test"),
        ]
        .map(|(f, t)| (f.to_string(), t.to_string()))
    );
}

/// A declared size over the smallest limit of a chain through this server's domains is
/// refused at RCPT, as at the MX: not taken, then bounced by the chain's last domain.
#[test]
fn a_declared_size_over_a_chains_limit_is_refused_at_rcpt() {
    let s = setup();
    let rcpt = |to: &str| {
        common::python_peer_run(
            "submit_size.py",
            &[
                &s.port.to_string(),
                "me@example.test",
                "quickstart",
                "me@example.test",
                to,
                "20000",
            ],
            s.w.path(),
        )
        .stdout
    };
    let small = rcpt("tosmall@example.test");
    assert!(
        small.starts_with("552 5.3.4 Message too big for this recipient: it takes 10000 bytes"),
        "{small}"
    );
    let direct = rcpt("other@example.test");
    assert!(direct.starts_with("250"), "{direct}");
}

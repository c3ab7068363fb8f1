//! IMAP against a real client: Python's imaplib logs in over STARTTLS and works a mailbox
//! the MX delivered to (FETCH, SEARCH, STORE, COPY/MOVE, APPEND, folders, IDLE), and a
//! second account sees none of it.

mod common;

use std::time::Duration;

use common::{TEST_HASH, Workspace, free_port, python_peer_run, wait_for};

const FIRST: &str = "From: Alice <alice@sender.test>\r\nTo: me@example.test\r\n\
Subject: first message\r\nDate: Tue, 1 Jul 2025 10:00:00 +0000\r\nMessage-ID: <one@sender.test>\r\n\
\r\nHello, this one hides a needle.\r\n";

const SECOND: &str = "From: Alice <alice@sender.test>\r\nTo: me@example.test\r\n\
Subject: second message\r\nDate: Tue, 1 Jul 2025 11:00:00 +0000\r\nMessage-ID: <two@sender.test>\r\n\
MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"xx\"\r\n\r\n\
--xx\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nplain part\r\n\
--xx\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>html part</p>\r\n--xx--\r\n";

#[test]
fn imaplib_works_a_mailbox_the_mx_delivered_to() {
    let (mx, imap) = (free_port(), free_port());
    let w = Workspace::new("");
    let (dns, dns_port) = common::quiet_dns(w.path());
    w.write_spec(&format!(
        r#"
[listeners]
mx = "127.0.0.1:{mx}"
imap = "127.0.0.1:{imap}"

[dns]
resolver = "127.0.0.1:{dns_port}"

[domains."example.test".aliases.me]
mailbox = {{ password = {{ hash = "{TEST_HASH}" }} }}

[domains."example.test".aliases.other]
mailbox = {{ password = {{ hash = "{TEST_HASH}" }} }}
"#
    ));
    let server = w.serve(mx);
    for (i, message) in [FIRST, SECOND].iter().enumerate() {
        let file = w.path().join(format!("sent-{}.eml", i + 1));
        std::fs::write(&file, message).unwrap();
        python_peer_run(
            "send_file.py",
            &[
                &mx.to_string(),
                "alice@sender.test",
                "me@example.test",
                file.to_str().unwrap(),
            ],
            w.path(),
        )
        .ok();
        // In order: the script expects the first message to be sequence number 1.
        assert!(
            wait_for(Duration::from_secs(20), || w.inbox("me@example.test").len()
                == i + 1),
            "not delivered: {}",
            server.log_text()
        );
    }
    let run = python_peer_run(
        "imap_session.py",
        &[
            &imap.to_string(),
            &mx.to_string(),
            "me@example.test",
            "quickstart",
            "other@example.test",
        ],
        w.path(),
    );
    println!("{}", run.stdout);
    assert!(
        run.code == 0 && run.stdout.contains("all done"),
        "imaplib session failed:\n{}\n{}\nserver log:\n{}",
        run.stdout,
        run.stderr,
        server.log_text()
    );
    drop(dns);
}

//! Delivery to the Internet as it happens without a relay: the recipient domain's MX
//! records (asked of Knot, the spec's resolver), tried in preference order, and
//! opportunistic STARTTLS to the receiving MTA (aiosmtpd with a certificate).

mod common;

use std::time::Duration;

use common::{Workspace, free_port, knot, python_peer, received, swaks, wait_for, zone};

#[test]
fn forwards_follow_mx_records_in_order_and_use_starttls() {
    let w = Workspace::new("");
    // mx1 (preferred) has no server; mx2 does, on port 25 of another loopback address.
    let (dns, dns_port) = knot(
        w.path(),
        &[
            ("test", &zone("test", "")),
            ("sender.test", &zone("sender.test", "")),
            (
                "elsewhere.test",
                &zone(
                    "elsewhere.test",
                    "@ MX 10 mx1\n@ MX 20 mx2\nmx1 A 127.0.0.3\nmx2 A 127.0.0.2",
                ),
            ),
        ],
    );
    let (cert, key) = (w.path().join("mx2.crt"), w.path().join("mx2.key"));
    let made = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=mx2.elsewhere.test", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(made.status.success(), "{made:?}");
    let sink_dir = w.path().join("sink");
    let _sink = python_peer(
        "sink.py",
        &[
            "25",
            sink_dir.to_str().unwrap(),
            "127.0.0.2",
            cert.to_str().unwrap(),
            key.to_str().unwrap(),
        ],
        w.path(),
    );
    let mx = free_port();
    w.write_spec(&format!(
        r#"
[listeners]
mx = "127.0.0.1:{mx}"

[dns]
resolver = "127.0.0.1:{dns_port}"

[domains."example.test".aliases.hello]
forward = ["friend@elsewhere.test"]
"#
    ));
    let server = w.serve(mx);
    swaks(
        mx,
        &[
            "--from",
            "someone@sender.test",
            "--to",
            "hello@example.test",
            "--header",
            "Subject: over the Internet",
        ],
    )
    .ok();
    assert!(
        wait_for(Duration::from_secs(20), || !received(&sink_dir).is_empty()),
        "nothing reached mx2: {}",
        server.log_text()
    );
    let got = &received(&sink_dir)[0];
    assert_eq!(got.rcpt_to, ["friend@elsewhere.test"]);
    assert!(got.mail_from.starts_with("SRS0="), "{}", got.mail_from);
    assert!(got.content.contains("Subject: over the Internet"));
    assert!(
        got.path.with_extension("tls").exists(),
        "the copy must travel over STARTTLS when the receiver offers it"
    );
    drop(dns);
}

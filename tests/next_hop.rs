//! Forwarding that the next hop accepts (issue 25), against aiosmtpd as the receiving MX:
//! what its EHLO offers decides what ferrymail sends, and a message it cannot take fails
//! at once with a notice that says why.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Workspace, free_port, knot, mx_sink_with, python_peer_run, received, wait_for, zone};

/// The recipient domains, one per case, each with its MX host on its own address.
const DOMAINS: [(&str, u8); 3] = [("small", 1), ("eight", 2), ("utf8", 3)];
/// Where sender.test receives its notices.
const SENDER_MX: u8 = 9;

fn a(n: u8) -> String {
    format!("127.0.27.{n}")
}

fn spec(mx: u16, dns_port: u16) -> String {
    let mut spec = format!(
        "[listeners]\nmx = \"127.0.0.1:{mx}\"\n\n[dns]\nresolver = \"127.0.0.1:{dns_port}\"\n\n"
    );
    for (domain, _) in DOMAINS {
        spec.push_str(&format!(
            "[domains.\"example.test\".aliases.{domain}]\nforward = [\"friend@{domain}.test\"]\n\n"
        ));
    }
    spec
}

/// Sends the message in `file` from someone@sender.test to `to` with smtplib, as it is.
fn send(w: &Workspace, mx: u16, to: &str, file: &Path) {
    python_peer_run(
        "send_file.py",
        &[
            &mx.to_string(),
            "someone@sender.test",
            to,
            file.to_str().unwrap(),
        ],
        w.path(),
    )
    .ok();
}

fn message(w: &Workspace, name: &str, headers: &str, body: &str) -> std::path::PathBuf {
    let file = w.path().join(name);
    let text = format!(
        "From: Someone <someone@sender.test>\r\nTo: {name}@example.test\r\nDate: Sun, 06 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{name}@sender.test>\r\n{headers}\r\n{body}"
    );
    std::fs::write(&file, text).expect("message");
    file
}

#[test]
fn what_the_next_hop_offers_decides_what_it_is_sent() {
    let w = Workspace::new("");
    let mut zones = vec![(
        "sender.test".to_string(),
        zone(
            "sender.test",
            &format!("@ MX 10 mx\nmx A {}\n", a(SENDER_MX)),
        ),
    )];
    for (domain, n) in DOMAINS {
        zones.push((
            format!("{domain}.test"),
            zone(
                &format!("{domain}.test"),
                &format!("@ MX 10 mx\nmx A {}\n", a(n)),
            ),
        ));
    }
    let zones: Vec<(&str, &str)> = zones
        .iter()
        .map(|(n, z)| (n.as_str(), z.as_str()))
        .collect();
    let (dns, dns_port) = knot(w.path(), &zones);
    let (_s1, small) = mx_sink_with(&w, &a(1), None, false, &["--size=50000"]);
    let (_s2, eight) = mx_sink_with(&w, &a(2), None, false, &[]);
    let (_s3, utf8) = mx_sink_with(&w, &a(3), None, false, &["--smtputf8"]);
    let (_s9, sender) = mx_sink_with(&w, &a(SENDER_MX), None, false, &[]);

    let mx = free_port();
    w.write_spec(&spec(mx, dns_port));
    let server = w.serve(mx);

    // 60 KB to a host that takes 50,000 bytes: not sent, and not retried for days.
    let line = format!("{}\r\n", "x".repeat(76));
    let big = message(&w, "small", "Subject: big\r\n", &line.repeat(800));
    send(&w, mx, "small@example.test", &big);
    // 8-bit text in the body, to a host that offers 8BITMIME.
    let latin = message(
        &w,
        "eight",
        "Subject: 8-bit\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n",
        "Grüße aus Köln\r\n",
    );
    send(&w, mx, "eight@example.test", &latin);
    // UTF-8 in a header, to a host that offers SMTPUTF8.
    let unicode = message(
        &w,
        "utf8",
        "Subject: Grüße\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n",
        "Hallo\r\n",
    );
    send(&w, mx, "utf8@example.test", &unicode);

    for (dir, name) in [(&eight, "eight"), (&utf8, "utf8")] {
        assert!(
            wait_for(Duration::from_secs(30), || received(dir).len() == 1),
            "nothing reached mx.{name}.test: {}",
            server.log_text()
        );
    }
    let options = |dir: &Path| std::fs::read_to_string(dir.join("0.opts")).expect("N.opts");
    // RFC 6152: the 8-bit body is declared; RFC 1870: the size is told.
    let said = options(&eight);
    assert!(said.contains("BODY=8BITMIME"), "{said}");
    assert!(said.lines().any(|l| l.starts_with("SIZE=")), "{said}");
    assert!(!said.contains("SMTPUTF8"), "no UTF-8 in its header: {said}");
    assert!(received(&eight)[0].content.contains("Grüße aus Köln"));
    // RFC 6531: UTF-8 in the header section needs SMTPUTF8, and the host offers it.
    let said = options(&utf8);
    assert!(said.contains("SMTPUTF8"), "{said}");
    assert!(received(&utf8)[0].content.contains("Subject: Grüße"));

    // The sender is told at once, with the host's limit; the message is not queued.
    assert!(
        wait_for(Duration::from_secs(30), || received(&sender).len() == 1),
        "no notice reached sender.test: {}",
        server.log_text()
    );
    let notice = &received(&sender)[0].content;
    assert!(notice.contains("Status: 5.3.4"), "{notice}");
    assert!(
        notice.contains("mx.small.test takes messages of 50000 bytes at the most"),
        "{notice}"
    );
    assert!(received(&small).is_empty(), "the big message was not sent");
    let queue = w.run(&["queue", "list"]).stdout;
    assert!(
        !queue.contains("small.test"),
        "nothing waits to be retried: {queue}"
    );
    drop(dns);
}

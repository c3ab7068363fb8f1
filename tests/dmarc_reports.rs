//! DMARC aggregate reports (RFC 7489 §7.2) against real peers: Knot publishes a sender
//! domain's DMARC record with two `rua` addresses (one whose domain agrees to take its
//! reports, one that does not), swaks sends from an address SPF allows and one it does
//! not, and the day's report is read by parsedmarc (a second implementation), mailed to
//! the agreeing address's MX (aiosmtpd) and its DKIM signature checked by dkimpy.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Process, Workspace, free_port, knot, python_peer, received, swaks, wait_for, zone};

/// Where reports.test receives its mail.
const REPORTS_MX: &str = "127.0.26.1";

/// A report parsed by parsedmarc (tests/peers/dmarc_parse.py, in scripts/test's venv).
fn parsedmarc(file: &Path) -> serde_json::Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("timeout")
        .arg("120")
        .arg(root.join("target/dmarc-venv/bin/python"))
        .arg(root.join("tests/peers/dmarc_parse.py"))
        .arg(file)
        .output()
        .expect("target/dmarc-venv/bin/python (scripts/test makes it)");
    assert!(
        out.status.success(),
        "parsedmarc could not read {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

fn send(mx: u16, from_ip: &str, from: &str, subject: &str) {
    // The outcome does not matter here: a refused message is counted too.
    let _ = swaks(
        mx,
        &[
            "--local-interface",
            from_ip,
            "--from",
            from,
            "--to",
            "hello@example.test",
            "--header",
            &format!("From: {from}\nSubject: {subject}"),
        ],
    );
}

fn spec(mx: u16, dns_port: u16) -> String {
    format!(
        "[listeners]\nmx = \"127.0.0.1:{mx}\"\n\n[dns]\nresolver = \"127.0.0.1:{dns_port}\"\n\n\
         [reports]\nfrom = \"reports@example.test\"\n\n\
         [domains.\"example.test\".aliases.hello]\nforward = [\"friend@elsewhere.test\"]\n"
    )
}

#[test]
fn a_days_dmarc_results_are_reported_to_the_domains_that_ask() {
    let w = Workspace::new("");
    let zones = [
        (
            "sender.test",
            zone(
                "sender.test",
                "@ TXT \"v=spf1 ip4:127.0.0.1 -all\"\n\
                 news TXT \"v=spf1 ip4:127.0.0.1 -all\"\n\
                 _dmarc TXT \"v=DMARC1; p=none; rua=mailto:dmarc@reports.test,mailto:dmarc@nosay.test\"\n",
            ),
        ),
        (
            "reports.test",
            zone(
                "reports.test",
                &format!(
                    "@ MX 10 mx\nmx A {REPORTS_MX}\nsender.test._report._dmarc TXT \"v=DMARC1\"\n"
                ),
            ),
        ),
        (
            "nosay.test",
            zone("nosay.test", "@ MX 10 mx\nmx A 127.0.26.2\n"),
        ),
        ("example.test", zone("example.test", "")),
        ("test", zone("test", "")),
    ];
    let zone_refs: Vec<(&str, &str)> = zones.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let (dns, dns_port) = knot(w.path(), &zone_refs);
    let mx = free_port();
    w.write_spec(&spec(mx, dns_port));

    // A day's mail: three from an address SPF allows, one from one it does not, and one
    // from a subdomain that has no DMARC record of its own (its organisation's applies,
    // and its rows go into the organisation's report).
    let mut server = w.serve(mx);
    for n in 0..3 {
        send(
            mx,
            "127.0.0.1",
            "someone@sender.test",
            &format!("allowed {n}"),
        );
    }
    send(mx, "127.0.0.5", "someone@sender.test", "forged");
    send(
        mx,
        "127.0.0.1",
        "someone@news.sender.test",
        "from a subdomain",
    );
    // The counts reach the store each minute and when the server stops.
    server.terminate();

    let listed = w.run(&["queue", "dmarc-report"]);
    listed.ok();
    assert!(
        listed.stdout.contains(
            "sender.test  5 message(s) in 3 row(s), to dmarc@reports.test, dmarc@nosay.test"
        ),
        "{}",
        listed.stdout
    );
    // The report as it is sent: well-formed XML that parsedmarc reads, counting each
    // source with its results.
    let xml = w.run(&["queue", "dmarc-report", "--domain", "sender.test"]);
    xml.ok();
    let file = w.path().join("report.xml");
    std::fs::write(&file, &xml.stdout).expect("report file");
    let lint = Command::new("xmllint")
        .arg("--noout")
        .arg(&file)
        .output()
        .expect("xmllint (libxml2-utils; scripts/test installs it)");
    assert!(
        lint.status.success(),
        "{}",
        String::from_utf8_lossy(&lint.stderr)
    );
    let read = parsedmarc(&file);
    assert_eq!(read["domain"], "sender.test", "{read}");
    assert!(
        xml.stdout.contains("<org_name>mx.example.test</org_name>"),
        "the reporter is this server: {}",
        xml.stdout
    );
    let records = read["records"].as_array().expect("records");
    assert_eq!(records.len(), 3, "{read}");
    assert_eq!(
        (&records[0]["header_from"], &records[0]["count"]),
        (
            &serde_json::json!("news.sender.test"),
            &serde_json::json!(1)
        ),
        "{read}"
    );
    let records = &records[1..];
    assert_eq!(
        (
            &records[0]["ip"],
            &records[0]["count"],
            &records[0]["spf"],
            &records[0]["spf_auth"][0]
        ),
        (
            &serde_json::json!("127.0.0.1"),
            &serde_json::json!(3),
            &serde_json::json!("pass"),
            &serde_json::json!("pass")
        ),
        "{read}"
    );
    assert_eq!(
        (&records[1]["ip"], &records[1]["count"], &records[1]["spf"]),
        (
            &serde_json::json!("127.0.0.5"),
            &serde_json::json!(1),
            &serde_json::json!("fail")
        ),
        "{read}"
    );
    // What this server did: the forged one is refused for its SPF fail (-all), the
    // others pass DMARC (RFC 9990's "pass").
    assert_eq!(records[0]["disposition"], "pass", "{read}");
    assert_eq!(records[1]["disposition"], "reject", "{read}");

    // Sent: to the address whose domain agrees (RFC 7489 §7.1), once.
    // Sent now rather than tonight: --send alone sends yesterday's, which has nothing.
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let nothing = w.run(&["queue", "dmarc-report", "--send"]);
    assert!(
        nothing.ok().stdout.contains("no DMARC report to send"),
        "{}",
        nothing.stdout
    );
    let sent = w.run(&["queue", "dmarc-report", "--send", "--day", &today]);
    sent.ok();
    assert!(
        sent.stdout.contains("to dmarc@reports.test") && !sent.stdout.contains("nosay"),
        "{}",
        sent.stdout
    );
    let again = w.run(&["queue", "dmarc-report", "--send", "--day", &today]);
    assert!(
        again.ok().stdout.contains("no DMARC report to send"),
        "{}",
        again.stdout
    );
    let (_reports_sink, reports_dir) = sink(&w);
    let server = w.serve(mx);
    assert!(
        wait_for(Duration::from_secs(30), || received(&reports_dir).len()
            == 1),
        "no DMARC report reached reports.test: {}",
        server.log_text()
    );
    let mail = &received(&reports_dir)[0];
    assert_eq!(mail.rcpt_to, ["dmarc@reports.test"]);
    assert_eq!(mail.mail_from, "<>", "reports come from the null sender");
    let eml = w.path().join("report.eml");
    std::fs::copy(&mail.path, &eml).expect("copy");
    let mailed = parsedmarc(&eml);
    assert_eq!(mailed["records"], read["records"], "{mailed}");
    let verified = common::dkimpy("dkim", &mail.path, &[&common::dkim_txt(&w)]);
    assert!(
        verified.ok().stdout.contains("PASS example.test"),
        "{}",
        verified.stdout
    );
    drop(dns);
}

/// reports.test's MX.
fn sink(w: &Workspace) -> (Process, std::path::PathBuf) {
    let dir = w.path().join("reports-sink");
    let process = python_peer(
        "sink.py",
        &["25", dir.to_str().unwrap(), REPORTS_MX],
        w.path(),
    );
    (process, dir)
}

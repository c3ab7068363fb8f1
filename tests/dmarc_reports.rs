//! DMARC aggregate reports (RFC 7489 §7.2) against real peers: Knot publishes a sender
//! domain's DMARC record with two `rua` addresses (one whose domain agrees to take its
//! reports, one that does not), swaks sends from an address SPF allows and one it does
//! not, and the day's report is checked against RFC 9990's XML schema (xmllint), read by
//! parsedmarc (a second implementation), mailed to the agreeing address's MX (aiosmtpd)
//! and its DKIM signature checked by dkimpy.

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

/// The XML schema of RFC 9990's aggregate report format (namespace
/// urn:ietf:params:xml:ns:dmarc-2.0), as PyPI's `dmarc` package ships it into scripts/test's
/// venv: written by others, so a check against it is independent of mail-auth's writer.
fn dmarc_schema() -> std::path::PathBuf {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dmarc-venv/lib");
    std::fs::read_dir(&lib)
        .expect("target/dmarc-venv (scripts/test makes it)")
        .flatten()
        .map(|python| {
            python
                .path()
                .join("site-packages/dmarc/report/schemas/dmarc-2.0.xsd")
        })
        .find(|xsd| xsd.is_file())
        .expect("dmarc-2.0.xsd from PyPI's dmarc package (scripts/test installs it)")
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
        .arg("--schema")
        .arg(dmarc_schema())
        .arg(&file)
        .output()
        .expect("xmllint (libxml2-utils; scripts/test installs it)");
    assert!(
        lint.status.success(),
        "the report must be valid against RFC 9990's schema: {}\n{}",
        String::from_utf8_lossy(&lint.stderr),
        xml.stdout
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

/// A report mail as receivers send one: the report gzipped, base64, as an attachment.
fn report_mail(from: &str, subject: &str, content_type: &str, name: &str, report: &str) -> String {
    use base64::Engine;
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(report.as_bytes()).expect("gzip");
    let gzipped = gz.finish().expect("gzip");
    let encoded = base64::engine::general_purpose::STANDARD.encode(gzipped);
    let lines: Vec<&str> = encoded
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "From: {from}\r\nTo: dmarc@example.test\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n\
         Content-Type: text/plain\r\n\r\nA report.\r\n--b1\r\n\
         Content-Type: {content_type}\r\nContent-Transfer-Encoding: base64\r\n\
         Content-Disposition: attachment; filename=\"{name}\"\r\n\r\n{}\r\n--b1--\r\n",
        lines.join("\r\n")
    )
}

/// A DMARC aggregate report in RFC 7489's format, as a big receiver sends it: three
/// messages that pass from one address, one that fails from another.
fn dmarc_xml(domain: &str, id: &str) -> String {
    let (begin, end) = yesterday();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8" ?>
<feedback>
  <report_metadata>
    <org_name>receiver.test</org_name>
    <email>noreply-dmarc@receiver.test</email>
    <report_id>{id}</report_id>
    <date_range><begin>{begin}</begin><end>{end}</end></date_range>
  </report_metadata>
  <policy_published>
    <domain>{domain}</domain><adkim>r</adkim><aspf>r</aspf><p>reject</p><sp>reject</sp><pct>100</pct>
  </policy_published>
  <record>
    <row>
      <source_ip>192.0.2.10</source_ip><count>3</count>
      <policy_evaluated><disposition>none</disposition><dkim>pass</dkim><spf>pass</spf></policy_evaluated>
    </row>
    <identifiers><header_from>{domain}</header_from></identifiers>
    <auth_results>
      <dkim><domain>{domain}</domain><selector>ferrymail</selector><result>pass</result></dkim>
      <spf><domain>{domain}</domain><result>pass</result></spf>
    </auth_results>
  </record>
  <record>
    <row>
      <source_ip>198.51.100.7</source_ip><count>1</count>
      <policy_evaluated><disposition>reject</disposition><dkim>fail</dkim><spf>fail</spf></policy_evaluated>
    </row>
    <identifiers><header_from>{domain}</header_from></identifiers>
    <auth_results><spf><domain>{domain}</domain><result>fail</result></spf></auth_results>
  </record>
</feedback>
"#
    )
}

/// Yesterday (UTC) as a report's range: its first and last second.
fn yesterday() -> (i64, i64) {
    let now = chrono::Utc::now().timestamp();
    let begin = now - now.rem_euclid(86_400) - 86_400;
    (begin, begin + 86_399)
}

/// An SMTP TLS report (RFC 8460) from a sender that found our MX without STARTTLS once.
fn tls_json() -> String {
    let (begin, _) = yesterday();
    let day = chrono::DateTime::from_timestamp(begin, 0)
        .expect("day")
        .format("%Y-%m-%d")
        .to_string();
    r#"{"organization-name":"sender.test","date-range":{"start-datetime":"DAYT00:00:00Z","end-datetime":"DAYT23:59:59Z"},"contact-info":"tls@sender.test","report-id":"DAY.example.test@sender.test","policies":[{"policy":{"policy-type":"sts","policy-string":["version: STSv1","mode: enforce","mx: mx.example.test","max_age: 86400"],"policy-domain":"example.test","mx-host":["mx.example.test"]},"summary":{"total-successful-session-count":20,"total-failure-session-count":2},"failure-details":[{"result-type":"starttls-not-supported","sending-mta-ip":"203.0.113.9","receiving-mx-hostname":"mx.example.test","receiving-ip":"192.0.2.25","failed-session-count":2}]}]}"#
        .replace("DAY", &day)
}

/// Reports other servers send about our domain arrive at the address its `dmarc_reports`
/// names (not otherwise declared), are read and kept once, and show on the admin's
/// report page: the day's pass and fail as a chart, the sending addresses, TLS failures,
/// and each report in full (seen by Chromium, screenshots kept).
#[test]
fn reports_about_our_domains_are_kept_and_shown() {
    let (mx, https) = (free_port(), free_port());
    let w = Workspace::new("");
    let (dns, dns_port) = common::quiet_dns(w.path());
    w.write_spec(&format!(
        "[listeners]\nmx = \"127.0.0.1:{mx}\"\nhttps = \"127.0.0.1:{https}\"\n\n\
         [dns]\nresolver = \"127.0.0.1:{dns_port}\"\n\n\
         [domains.\"example.test\"]\ndmarc_reports = \"dmarc@example.test\"\n\n\
         [domains.\"example.test\".aliases.hello]\nforward = [\"friend@elsewhere.test\"]\n"
    ));
    let server = w.serve(https);
    let mails = [
        (
            "dmarc-1",
            report_mail(
                "noreply-dmarc@receiver.test",
                "Report Domain: example.test Submitter: receiver.test",
                "application/gzip",
                "receiver.test!example.test!1796428800!1796515199.xml.gz",
                &dmarc_xml("example.test", "r-1"),
            ),
        ),
        // Sent again (receivers do): kept once.
        (
            "dmarc-again",
            report_mail(
                "noreply-dmarc@receiver.test",
                "Report Domain: example.test Submitter: receiver.test",
                "application/gzip",
                "receiver.test!example.test!1796428800!1796515199.xml.gz",
                &dmarc_xml("example.test", "r-1"),
            ),
        ),
        // About a domain that is not ours: not kept.
        (
            "dmarc-other",
            report_mail(
                "noreply-dmarc@receiver.test",
                "Report Domain: other.test",
                "application/gzip",
                "receiver.test!other.test!1796428800!1796515199.xml.gz",
                &dmarc_xml("other.test", "r-2"),
            ),
        ),
        (
            "tls",
            report_mail(
                "tls@sender.test",
                "Report Domain: example.test Submitter: sender.test",
                "application/tlsrpt+gzip",
                "sender.test!example.test!1796428800!1796515199!r.json.gz",
                &tls_json(),
            ),
        ),
    ];
    for (name, mail) in &mails {
        let file = w.path().join(format!("{name}.eml"));
        std::fs::write(&file, mail).expect("mail file");
        common::python_peer_run(
            "send_file.py",
            &[
                &mx.to_string(),
                "reports@receiver.test",
                "dmarc@example.test",
                file.to_str().unwrap(),
            ],
            w.path(),
        )
        .ok();
    }
    let mut log = String::new();
    let kept = wait_for(Duration::from_secs(30), || {
        log = w.run(&["queue", "log"]).stdout;
        log.contains("kept the DMARC report about example.test from receiver.test (r-1)")
            && log.contains(
                "had the DMARC report about example.test from receiver.test (r-1) already",
            )
            && log.contains("no report kept: it is about other.test")
            && log.contains("kept the TLS report about example.test from sender.test")
    });
    assert!(kept, "{log}\n{}", server.log_text());

    let (seen, shots) = common::browser_peer(&w, "reports_browser.js", https, &server);
    assert_eq!(seen["heading"], "Reports", "{seen}");
    assert!(seen["domains"][0] == "example.test", "{seen}");
    assert_eq!(
        seen["chart"], "Mail sent as example.test, as receivers judged it: 3 passed, 1 failed",
        "{seen}"
    );
    assert_eq!(
        seen["bars"], 2,
        "a pass and a fail bar for the one day: {seen}"
    );
    let tables = seen["tables"].to_string();
    assert!(
        tables.contains("192.0.2.10") && tables.contains("198.51.100.7"),
        "{tables}"
    );
    assert!(tables.contains("starttls-not-supported 2"), "{tables}");
    assert!(
        tables.contains("receiver.test") && tables.contains("sender.test"),
        "{tables}"
    );
    assert!(
        seen["one"]
            .as_str()
            .is_some_and(|t| t.contains("\"policies\"") || t.contains("\"record\"")),
        "{seen}"
    );
    assert!(shots.join("reports.png").exists());
    drop(dns);
}

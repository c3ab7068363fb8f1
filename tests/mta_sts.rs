//! MTA-STS for outbound mail (RFC 8461), against real peers: Knot publishes the MX and
//! `_mta-sts` records, a Python HTTPS server the policy files (its certificate from a test
//! CA the server trusts through SSL_CERT_FILE), and aiosmtpd receives, with and without
//! STARTTLS and with a certificate for another name.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::ca::Ca;
use common::{
    Process, Workspace, free_port, knot, mx_sink, python_peer, python_peer_run, received, swaks,
    wait_for, wait_until_queue_says, zone,
};

/// A policy server for `domain` on ADDRESS:443; returns it and its policy file.
fn policy_server(
    w: &Workspace,
    ca: &Ca,
    domain: &str,
    address: &str,
    policy: &str,
    behaviour: &str,
) -> (Process, PathBuf) {
    let (crt, key) = ca.issue(&format!("mta-sts.{domain}"));
    let file = w.path().join(format!("{domain}.policy"));
    std::fs::write(&file, policy).expect("policy file");
    let server = python_peer(
        "mta_sts_server.py",
        &[
            address,
            crt.to_str().unwrap(),
            key.to_str().unwrap(),
            file.to_str().unwrap(),
            behaviour,
        ],
        w.path(),
    );
    (server, file)
}

fn fetches(policy: &Path) -> usize {
    std::fs::read_to_string(policy.with_extension("policy.fetched"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

fn enforce(mx: &str) -> String {
    format!("version: STSv1\nmode: enforce\nmx: {mx}\nmax_age: 86400\n")
}

/// The records of a domain with one MX and a policy server.
fn records(mx_ip: &str, sts_ip: &str) -> String {
    format!("@ MX 10 mx\nmx A {mx_ip}\nmta-sts A {sts_ip}\n_mta-sts TXT \"v=STSv1; id=20261205\"\n")
}

fn send(mx: u16, to: &str, subject: &str) {
    swaks(
        mx,
        &[
            "--from",
            "someone@sender.test",
            "--to",
            to,
            "--header",
            &format!("Subject: {subject}"),
        ],
    )
    .ok();
}

/// The recipient domains, one per case.
const DOMAINS: [&str; 9] = [
    "enforce",
    "plain",
    "wrongname",
    "trial",
    "unlisted",
    "huge",
    "redirect",
    "double",
    "forged",
];

fn spec(mx: u16, dns_port: u16) -> String {
    let mut spec = format!(
        "[listeners]\nmx = \"127.0.0.1:{mx}\"\n\n[dns]\nresolver = \"127.0.0.1:{dns_port}\"\n\n[reports]\nfrom = \"reports@example.test\"\n\n"
    );
    for domain in DOMAINS {
        spec.push_str(&format!(
            "[domains.\"example.test\".aliases.{domain}]\nforward = [\"friend@{domain}.test\"]\n\n"
        ));
    }
    spec
}

#[test]
fn deliveries_follow_each_domains_mta_sts_policy() {
    let w = Workspace::new("");
    let ca = Ca::new(w.path());
    let a = |n: u8| format!("127.0.24.{n}");
    let zones: Vec<(String, String)> = [
        // It asks for TLS reports (RFC 8460), at a domain of their own.
        (
            "enforce",
            records(&a(1), &a(2)) + "_smtp._tls TXT \"v=TLSRPTv1; rua=mailto:tlsrpt@reports.test,https://mta-sts.enforce.test/tlsrpt\"\n",
        ),
        ("plain", records(&a(3), &a(4))),
        ("wrongname", records(&a(5), &a(6))),
        ("trial", records(&a(7), &a(8))),
        ("unlisted", records(&a(9), &a(10))),
        ("huge", records(&a(11), &a(12))),
        ("redirect", records(&a(13), &a(14))),
        // Its first MX refuses in the greeting, which under enforce may be an attacker's
        // forgery: the second MX is tried, and nothing bounces.
        (
            "forged",
            format!(
                "@ MX 10 mx1\n@ MX 20 mx2\nmx1 A {}\nmx2 A {}\nmta-sts A {}\n_mta-sts TXT \"v=STSv1; id=1\"\n",
                a(18),
                a(19),
                a(20)
            ),
        ),
        // Two STSv1 records: no policy (RFC 8461 §3.1), whatever the policy host serves.
        (
            "double",
            records(&a(16), &a(17)) + "_mta-sts TXT \"v=STSv1; id=2\"\n",
        ),
    ]
    .into_iter()
    .map(|(d, r)| (format!("{d}.test"), zone(&format!("{d}.test"), &r)))
    .chain([
        ("test".to_string(), zone("test", "")),
        ("sender.test".to_string(), zone("sender.test", "")),
        ("reports.test".to_string(), reports_zone()),
    ])
    .collect();
    let zone_refs: Vec<(&str, &str)> = zones
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    let (dns, dns_port) = knot(w.path(), &zone_refs);

    let other = ca.issue("other.test");
    let (_s1, enforce_sink) = mx_sink(&w, &a(1), Some(&ca.issue("mx.enforce.test")), false);
    let (_p1, enforce_policy) = policy_server(
        &w,
        &ca,
        "enforce.test",
        &a(2),
        &enforce("mx.enforce.test"),
        "normal",
    );
    let (_s2, plain_sink) = mx_sink(&w, &a(3), None, false);
    let _p2 = policy_server(
        &w,
        &ca,
        "plain.test",
        &a(4),
        &enforce("mx.plain.test"),
        "normal",
    );
    let (_s3, wrongname_sink) = mx_sink(&w, &a(5), Some(&other), false);
    let _p3 = policy_server(
        &w,
        &ca,
        "wrongname.test",
        &a(6),
        &enforce("*.wrongname.test"),
        "normal",
    );
    let (_s4, trial_sink) = mx_sink(&w, &a(7), Some(&other), false);
    let _p4 = policy_server(
        &w,
        &ca,
        "trial.test",
        &a(8),
        "version: STSv1\nmode: testing\nmx: mx.trial.test\nmax_age: 86400\n",
        "normal",
    );
    let (_s5, unlisted_sink) = mx_sink(&w, &a(9), Some(&ca.issue("mx.unlisted.test")), false);
    let _p5 = policy_server(
        &w,
        &ca,
        "unlisted.test",
        &a(10),
        &enforce("mx.somewhere-else.test"),
        "normal",
    );
    let (_s6, huge_sink) = mx_sink(&w, &a(11), None, false);
    let _p6 = policy_server(
        &w,
        &ca,
        "huge.test",
        &a(12),
        &enforce("mx.huge.test"),
        "huge",
    );
    // Its policy host redirects to an enforce policy that would hold the mail (no
    // STARTTLS): delivery proves the redirect was not followed (§3.3).
    let (_s7, redirect_sink) = mx_sink(&w, &a(13), None, false);
    let (_p7, redirect_policy) = policy_server(
        &w,
        &ca,
        "redirect.test",
        &a(14),
        &enforce("mx.redirect.test"),
        "redirect",
    );
    let (_s8, double_sink) = mx_sink(&w, &a(16), None, false);
    let (_p8, double_policy) = policy_server(
        &w,
        &ca,
        "double.test",
        &a(17),
        &enforce("mx.double.test"),
        "normal",
    );

    let _refuser = python_peer("smtp_refuser.py", &[&a(18)], w.path());
    let (_s9, forged_sink) = mx_sink(&w, &a(19), Some(&ca.issue("mx2.forged.test")), false);
    let _p9 = policy_server(
        &w,
        &ca,
        "forged.test",
        &a(20),
        &enforce("*.forged.test"),
        "normal",
    );

    let (_reports, reports_dir) = mx_sink(&w, REPORTS_MX, None, false);

    let mx = free_port();
    w.write_spec(&spec(mx, dns_port));
    let ca_file = ca.root();
    let env = [("SSL_CERT_FILE", ca_file.to_str().unwrap())];
    let mut server = w.serve_with(mx, &[], &env);
    for domain in DOMAINS {
        send(
            mx,
            &format!("{domain}@example.test"),
            &format!("to {domain}"),
        );
    }

    // Enforce, a listed MX with a valid certificate: delivered, over TLS.
    assert!(
        wait_for(Duration::from_secs(30), || received(&enforce_sink).len()
            == 1),
        "nothing reached mx.enforce.test: {}",
        server.log_text()
    );
    assert!(
        received(&enforce_sink)[0]
            .path
            .with_extension("tls")
            .exists()
    );
    assert!(
        wait_for(Duration::from_secs(30), || received(&forged_sink).len()
            == 1),
        "a 554 greeting under enforce must not stop the next MX: {}",
        server.log_text()
    );
    // Testing mode delivers to the wrongly named certificate, and says what enforce
    // would have refused.
    assert!(
        wait_for(Duration::from_secs(30), || received(&trial_sink).len() == 1),
        "testing mode must deliver: {}",
        server.log_text()
    );
    // A policy that could not be had is no policy: delivered as before, the reason logged.
    for (sink, name) in [
        (&huge_sink, "huge"),
        (&redirect_sink, "redirect"),
        (&double_sink, "double"),
    ] {
        assert!(
            wait_for(Duration::from_secs(30), || received(sink).len() == 1),
            "{name}.test has no usable policy, so its mail goes as before: {}",
            server.log_text()
        );
    }
    let log = server.log_text();
    // Knot serves no root zone, so nothing validates: DANE is set aside, mail goes on.
    assert!(
        log.contains("DNSSEC cannot be checked through this resolver"),
        "{log}"
    );
    assert!(
        log.contains(
            "trial.test's MTA-STS policy (testing, id 20261205) would refuse mx.trial.test"
        ) && log.contains("certificate not valid for name \"mx.trial.test\""),
        "{log}"
    );
    assert!(
        log.contains("mta-sts.huge.test/.well-known/mta-sts.txt is larger than 65536 bytes"),
        "{log}"
    );
    assert!(
        log.contains("mta-sts.redirect.test/.well-known/mta-sts.txt answered 301, not 200"),
        "{log}"
    );
    assert_eq!(
        fetches(&redirect_policy),
        1,
        "the redirect's target is never asked for"
    );
    assert_eq!(
        fetches(&double_policy),
        0,
        "two records are no policy: nothing to fetch"
    );

    // Enforce refuses the rest: they wait in the queue, each with the reason.
    let queue = wait_until_queue_says(
        &w,
        &[
            "mx.plain.test does not offer STARTTLS, which plain.test's MTA-STS policy (enforce, id 20261205) asks for",
            "wrongname.test's MTA-STS policy (enforce, id 20261205) needs TLS with a certificate valid for mx.wrongname.test, and STARTTLS failed",
            "no MX host of unlisted.test (mx.unlisted.test) is one its MTA-STS policy (enforce, id 20261205) lists: mx.somewhere-else.test",
        ],
    );
    assert!(
        queue.contains("certificate not valid for name \"mx.wrongname.test\""),
        "{queue}"
    );
    for (sink, name) in [
        (&plain_sink, "plain"),
        (&wrongname_sink, "wrongname"),
        (&unlisted_sink, "unlisted"),
    ] {
        assert!(
            received(sink).is_empty(),
            "{name}.test's MX must get nothing"
        );
    }

    // The policy is cached: a second message fetches nothing.
    assert_eq!(fetches(&enforce_policy), 1);
    send(mx, "enforce@example.test", "again");
    assert!(wait_for(Duration::from_secs(30), || received(
        &enforce_sink
    )
    .len()
        == 2));
    assert_eq!(
        fetches(&enforce_policy),
        1,
        "a cached policy with the same id is not fetched again"
    );

    // The day's TLS report (RFC 8460) for each domain: what the sessions above came to.
    server.terminate();
    tls_reports_say_what_happened(&w);
    // Sent once a day per domain, whoever sends it: queued now, and the next server
    // delivers it (the server itself sends the day before's each night).
    let queued = w.run_with_env(&["queue", "tls-report", "--send"], &env);
    assert!(
        queued.ok().stdout.contains("queued a TLS report for ")
            && queued.stdout.contains(" to tlsrpt@reports.test")
            && queued
                .stdout
                .contains(" to https://mta-sts.enforce.test/tlsrpt"),
        "{}",
        queued.stdout
    );
    // The https address got the same report, posted as RFC 8460 §5.4 says.
    let posted = enforce_policy.with_extension("policy.posted.json");
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemas/tlsrpt.json");
    python_peer_run(
        "json_schema_check.py",
        &[schema.to_str().unwrap(), posted.to_str().unwrap()],
        w.path(),
    )
    .ok();
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&posted).unwrap()).expect("JSON");
    assert_eq!(
        report["policies"][0]["policy"]["policy-domain"],
        "enforce.test"
    );
    let again = w.run(&["queue", "tls-report", "--send"]);
    assert!(
        again.ok().stdout.contains("no TLS report to send"),
        "{}",
        again.stdout
    );

    // An attacker on the path now answers for enforce.test's DNS: no `_mta-sts` record,
    // and an MX of theirs without TLS. The cached policy (kept in the queue's store, so
    // a restart keeps it) still holds until its max_age: nothing goes to their MX.
    drop(dns);
    let (_attacker_sink, attacker_dir) = mx_sink(&w, &a(15), None, false);
    let (dns, dns_port) = knot(
        &w.path().join("attacker"),
        &[
            (
                "enforce.test",
                &zone("enforce.test", &format!("@ MX 10 mx\nmx A {}", a(15))),
            ),
            ("test", &zone("test", "")),
            ("sender.test", &zone("sender.test", "")),
            ("reports.test", &reports_zone()),
        ],
    );
    w.write_spec(&spec(mx, dns_port));
    let server = w.serve_with(mx, &[], &env);
    the_report_mail_arrives_signed(&w, &reports_dir, &server);
    send(mx, "enforce@example.test", "while stripped");
    let queue = wait_until_queue_says(
        &w,
        &[
            "mx.enforce.test does not offer STARTTLS, which enforce.test's MTA-STS policy (enforce, id 20261205) asks for",
        ],
    );
    assert!(
        received(&attacker_dir).is_empty(),
        "{queue}\n{}",
        server.log_text()
    );
    drop(dns);
}

/// Where reports.test receives its mail.
const REPORTS_MX: &str = "127.0.24.21";

fn reports_zone() -> String {
    zone("reports.test", &format!("@ MX 10 mx\nmx A {REPORTS_MX}"))
}

/// The report mail reaches reports.test: RFC 8460 §5.3's form (read by Python's email
/// library), its JSON valid, and its DKIM signature verified by dkimpy.
fn the_report_mail_arrives_signed(w: &Workspace, dir: &Path, server: &Process) {
    assert!(
        wait_for(Duration::from_secs(30), || received(dir).len() == 1),
        "no TLS report reached reports.test: {}",
        server.log_text()
    );
    let mail = &received(dir)[0];
    assert_eq!(mail.rcpt_to, ["tlsrpt@reports.test"]);
    assert_eq!(mail.mail_from, "<>", "reports come from the null sender");
    let json = w.path().join("mailed-report.json");
    let read = python_peer_run(
        "tlsrpt_extract.py",
        &[mail.path.to_str().unwrap(), json.to_str().unwrap()],
        w.path(),
    );
    assert!(
        read.ok().stdout.starts_with("enforce.test "),
        "{}",
        read.stdout
    );
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemas/tlsrpt.json");
    python_peer_run(
        "json_schema_check.py",
        &[schema.to_str().unwrap(), json.to_str().unwrap()],
        w.path(),
    )
    .ok();
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).expect("JSON");
    assert_eq!(
        report["policies"][0]["policy"]["policy-domain"],
        "enforce.test"
    );
    assert_eq!(
        report["policies"][0]["summary"]["total-successful-session-count"],
        2
    );
    let verified = common::dkimpy("dkim", &mail.path, &[&common::dkim_txt(w)]);
    assert!(
        verified.ok().stdout.contains("PASS example.test"),
        "{}",
        verified.stdout
    );
}

/// `queue tls-report` after the first server's day: valid against RFC 8460's shape, and
/// counting each session as it went. (The counts reach the store each minute and when
/// the server stops, which it just did.)
fn tls_reports_say_what_happened(w: &Workspace) {
    let reports = common::TlsReports::of(w);
    let policy_of = |domain: &str, kind: &str| reports.policy(domain, kind);
    // Two messages went over verified TLS.
    let enforce = policy_of("enforce.test", "sts");
    assert_eq!(enforce["policy"]["policy-string"][1], "mode: enforce");
    assert_eq!(enforce["summary"]["total-successful-session-count"], 2);
    assert_eq!(enforce["summary"]["total-failure-session-count"], 0);
    // Each refused session is counted under its RFC 8460 result type and host.
    for (domain, result_type, mx) in [
        ("plain.test", "starttls-not-supported", "mx.plain.test"),
        (
            "wrongname.test",
            "certificate-host-mismatch",
            "mx.wrongname.test",
        ),
        ("trial.test", "certificate-host-mismatch", "mx.trial.test"),
        ("huge.test", "sts-policy-fetch-error", ""),
    ] {
        let p = policy_of(domain, "sts");
        let failure = &p["failure-details"][0];
        assert_eq!(failure["result-type"], result_type, "{domain}: {p}");
        if mx.is_empty() {
            assert!(failure.get("receiving-mx-hostname").is_none(), "{p}");
        } else {
            assert_eq!(failure["receiving-mx-hostname"], mx, "{p}");
            assert_eq!(failure["sending-mta-ip"], "127.0.0.1", "{p}");
        }
    }
    // No policy: the opportunistic session is reported as such (its MX has no STARTTLS).
    let double = policy_of("double.test", "no-policy-found");
    assert_eq!(
        double["failure-details"][0]["result-type"],
        "starttls-not-supported"
    );
}

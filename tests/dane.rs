//! DANE for outbound mail (RFC 7672), against real peers: Knot signs the `test.` zone
//! (its key is the server's trust anchor) with MX and TLSA records, and delegates one
//! unsigned zone and one with a DS that matches no key; aiosmtpd receives, with the
//! certificates the TLSA records name, others, or none.

mod common;

use std::path::Path;
use std::time::Duration;

use common::ca::{Ca, cert_sha256, spki_sha256};
use common::{
    Workspace, free_port, knot_signed, mx_sink, python_peer, python_peer_run, received, swaks,
    wait_for, wait_until_queue_says, zone,
};

/// The recipient domains, one per case.
const DOMAINS: [&str; 7] = ["ee", "wrong", "ta", "notls", "plain", "bogus", "both"];

fn a(n: u8) -> String {
    format!("127.0.25.{n}")
}

fn spec(mx: u16, dns_port: u16, anchors: &Path, domains: &[&str]) -> String {
    let mut spec = format!(
        "[listeners]\nmx = \"127.0.0.1:{mx}\"\n\n[dns]\nresolver = \"127.0.0.1:{dns_port}\"\ntrust_anchors = \"{}\"\n\n",
        anchors.display()
    );
    for domain in domains {
        spec.push_str(&format!(
            "[domains.\"example.test\".aliases.{domain}]\nforward = [\"friend@{domain}.test\"]\n\n"
        ));
    }
    spec
}

fn send(mx: u16, domain: &str) {
    swaks(
        mx,
        &[
            "--from",
            "someone@sender.test",
            "--to",
            &format!("{domain}@example.test"),
            "--header",
            &format!("Subject: to {domain}"),
        ],
    )
    .ok();
}

#[test]
fn deliveries_follow_each_mx_hosts_tlsa_records() {
    let w = Workspace::new("");
    // The MX hosts' certificates come from CAs nobody trusts: only DANE vouches for them.
    let ca = Ca::new(&w.path().join("ca"));
    let other_ca = Ca::new(&w.path().join("other-ca"));
    let ee_cert = other_ca.issue("mx.ee.test");
    let stranger = other_ca.issue("mx.wrong.test");
    let ta_chain = ca.chain("mx.ta.test");
    let both_cert = other_ca.issue("mx.both.test");

    let signed_zone = format!(
        "ee MX 10 mx.ee\nmx.ee A {ee}\n_25._tcp.mx.ee TLSA 3 1 1 {ee_key}\n\
         wrong MX 10 mx.wrong\nmx.wrong A {wrong}\n_25._tcp.mx.wrong TLSA 3 1 1 {ee_key}\n\
         ta MX 10 mx.ta\nmx.ta A {ta}\n_25._tcp.mx.ta TLSA 2 0 1 {ca_cert}\n\
         notls MX 10 mx.notls\nmx.notls A {notls}\n_25._tcp.mx.notls TLSA 3 1 1 {ee_key}\n\
         both MX 10 mx.both\nmx.both A {both}\n_25._tcp.mx.both TLSA 3 1 1 {both_key}\n\
         both MX 5 mx0.both\nmx0.both A {both0}\n\
         mta-sts.both A {both_sts}\n_mta-sts.both TXT \"v=STSv1; id=1\"\n\
         plain NS ns\n\
         bogus NS ns\nbogus DS 12345 13 2 {junk}\n",
        ee = a(1),
        wrong = a(2),
        ta = a(3),
        notls = a(4),
        both = a(7),
        both_sts = a(8),
        both0 = a(9),
        ee_key = spki_sha256(&ee_cert.0),
        both_key = spki_sha256(&both_cert.0),
        ca_cert = cert_sha256(&ca.root()),
        junk = "ab".repeat(32),
    );
    // Unsigned and not vouched for by its parent: its TLSA record (which no certificate
    // matches) means nothing.
    let plain = zone(
        "plain.test",
        &format!(
            "@ MX 10 mx\nmx A {}\n_25._tcp.mx TLSA 3 1 1 {}\n",
            a(5),
            "cd".repeat(32)
        ),
    );
    let bogus = zone("bogus.test", &format!("@ MX 10 mx\nmx A {}\n", a(6)));
    let test_zone = zone("test", &signed_zone);
    let (dns, dns_port, anchors) = knot_signed(
        w.path(),
        &[
            ("test", &test_zone),
            ("plain.test", &plain),
            ("bogus.test", &bogus),
        ],
        &["test"],
    );

    let (_s1, ee_sink) = mx_sink(&w, &a(1), Some(&ee_cert), false);
    let (_s2, wrong_sink) = mx_sink(&w, &a(2), Some(&stranger), false);
    let (_s3, ta_sink) = mx_sink(&w, &a(3), Some(&ta_chain), false);
    let (_s4, notls_sink) = mx_sink(&w, &a(4), None, false);
    let (_s5, plain_sink) = mx_sink(&w, &a(5), None, false);
    let (_s6, bogus_sink) = mx_sink(&w, &a(6), None, false);
    // An MTA-STS policy in enforce mode that lists another MX, and whose check (a CA the
    // server trusts) this MX's certificate fails; its TLSA record names it, and DANE comes
    // first (RFC 8461 §2).
    let (_s7, both_sink) = mx_sink(&w, &a(7), Some(&both_cert), false);
    // both.test's first MX: a certificate the server trusts, but no TLSA record, and the
    // policy does not list it; DANE cannot vouch for it, so the policy turns it down.
    let (_s9, unlisted_sink) = mx_sink(&w, &a(9), Some(&ca.issue("mx0.both.test")), false);
    let (sts_crt, sts_key) = ca.issue("mta-sts.both.test");
    let policy = w.path().join("both.policy");
    std::fs::write(
        &policy,
        "version: STSv1\nmode: enforce\nmx: mx.elsewhere.test\nmax_age: 86400\n",
    )
    .expect("policy");
    let _policy_server = python_peer(
        "mta_sts_server.py",
        &[
            &a(8),
            sts_crt.to_str().unwrap(),
            sts_key.to_str().unwrap(),
            policy.to_str().unwrap(),
        ],
        w.path(),
    );

    let mx = free_port();
    w.write_spec(&spec(mx, dns_port, &anchors, &DOMAINS));
    let root = ca.root();
    let mut server = w.serve_with(mx, &[], &[("SSL_CERT_FILE", root.to_str().unwrap())]);
    for domain in DOMAINS {
        send(mx, domain);
    }

    // DANE-EE: the certificate the record names, though no CA vouches for it.
    // DANE-TA: a chain to the authority the record names, valid for the MX name.
    for (dir, name) in [(&ee_sink, "ee"), (&ta_sink, "ta"), (&both_sink, "both")] {
        assert!(
            wait_for(Duration::from_secs(30), || received(dir).len() == 1),
            "nothing reached mx.{name}.test: {}",
            server.log_text()
        );
        assert!(
            received(dir)[0].path.with_extension("tls").exists(),
            "{name}: over TLS"
        );
    }
    assert!(
        std::fs::read_to_string(policy.with_extension("policy.fetched")).is_ok(),
        "both.test's MTA-STS policy was in force"
    );
    assert!(
        received(&unlisted_sink).is_empty(),
        "an MX the policy does not list, without TLSA records, gets nothing"
    );
    // An unsigned domain is delivered as before, whatever TLSA record it has.
    assert!(
        wait_for(Duration::from_secs(30), || received(&plain_sink).len() == 1),
        "plain.test is not signed, so DANE does not apply: {}",
        server.log_text()
    );
    let log = w.run(&["queue", "log"]).stdout;
    assert!(
        log.lines().any(|l| l.contains("mx.ee.test")
            && l.contains("certificate matched by its TLSA records (DANE)")),
        "the mail log says how the certificate was checked: {log}"
    );

    // The rest wait in the queue, each with its reason.
    let queue = wait_until_queue_says(
        &w,
        &[
            "mx.wrong.test's TLSA records (DANE) need TLS with a certificate they name, and STARTTLS failed",
            "mx.notls.test publishes TLSA records (DANE), so it must be reached over TLS, and it does not offer STARTTLS",
            "looking up the MX of bogus.test: the answer failed DNSSEC validation",
        ],
    );
    for (dir, name) in [
        (&wrong_sink, "wrong"),
        (&notls_sink, "notls"),
        (&bogus_sink, "bogus"),
    ] {
        assert!(
            received(dir).is_empty(),
            "nothing may reach mx.{name}.test: {queue}"
        );
    }

    server.terminate();
    tls_reports_say_what_happened(&w);
    drop(dns);
}

/// `queue tls-report` for the day: valid against RFC 8460's schema, the DANE sessions
/// under policy type "tlsa" with the records as the policy.
fn tls_reports_say_what_happened(w: &Workspace) {
    let reports = common::TlsReports::of(w);
    let policy_of = |domain: &str, kind: &str| reports.policy(domain, kind);
    let ee = policy_of("ee.test", "tlsa");
    assert!(
        ee["policy"]["policy-string"][0]
            .as_str()
            .is_some_and(|r| r.starts_with("3 1 1 ")),
        "{ee}"
    );
    assert_eq!(ee["summary"]["total-successful-session-count"], 1);
    assert_eq!(ee["summary"]["total-failure-session-count"], 0);
    for (domain, result_type) in [
        ("wrong.test", "tlsa-invalid"),
        ("notls.test", "starttls-not-supported"),
        ("bogus.test", "dnssec-invalid"),
    ] {
        let p = policy_of(domain, "tlsa");
        assert_eq!(
            p["failure-details"][0]["result-type"], result_type,
            "{domain}: {p}"
        );
    }
    // Not signed: no DANE, an opportunistic session without STARTTLS.
    let plain = policy_of("plain.test", "no-policy-found");
    assert_eq!(plain["summary"]["total-successful-session-count"], 0);
}

/// REQUIRETLS (RFC 8689) end to end: offered only over TLS and refused without it; a
/// message sent with it goes on only to an authenticated MX host (here by DNSSEC) over TLS
/// its TLSA record vouches for, that takes REQUIRETLS too, and else bounces (5.7.30).
/// `TLS-Required: No` lets a message past the receiver's policies.
#[test]
fn requiretls_holds_a_message_to_verified_tls_at_every_hop() {
    let w = Workspace::new("");
    let ca = Ca::new(&w.path().join("ca"));
    let cert = ca.issue("mx.rt.test");
    let key = spki_sha256(&cert.0);
    let signed_zone = format!(
        "rt MX 10 mx.rt\nmx.rt A {rt}\n_25._tcp.mx.rt TLSA 3 1 1 {key}\n\
         old MX 10 mx.old\nmx.old A {old}\n_25._tcp.mx.old TLSA 3 1 1 {key}\n\
         wrong MX 10 mx.wrong\nmx.wrong A {wrong}\n_25._tcp.mx.wrong TLSA 3 1 1 {junk}\n\
         plain NS ns\n",
        rt = a(11),
        old = a(12),
        wrong = a(13),
        junk = "ef".repeat(32),
    );
    let plain = zone("plain.test", &format!("@ MX 10 mx\nmx A {}\n", a(14)));
    // An MTA-STS policy that would vouch for the MX, but whose server is down for now.
    let down = zone(
        "down.test",
        &format!(
            "@ MX 10 mx\nmx A {}\nmta-sts A {}\n_mta-sts TXT \"v=STSv1; id=1\"\n",
            a(15),
            a(16)
        ),
    );
    let test_zone = zone("test", &(signed_zone + "down NS ns\n"));
    let (dns, dns_port, anchors) = knot_signed(
        w.path(),
        &[
            ("test", &test_zone),
            ("plain.test", &plain),
            ("down.test", &down),
        ],
        &["test"],
    );
    let (_s1, rt_sink) = mx_sink(&w, &a(11), Some(&cert), true);
    let (_s2, old_sink) = mx_sink(&w, &a(12), Some(&cert), false);
    let (_s3, wrong_sink) = mx_sink(&w, &a(13), Some(&cert), false);
    let (_s4, plain_sink) = mx_sink(&w, &a(14), Some(&cert), true);

    let mx = free_port();
    // A mailbox whose script redirects: the redirect goes on under REQUIRETLS too.
    w.write_spec(&format!(
        "{}[domains.\"example.test\".aliases.sieved.mailbox]\npassword = {{ hash = \"{}\" }}\nsieve = 'redirect \"friend@rt.test\";'\n",
        spec(mx, dns_port, &anchors, &["rt", "old", "wrong", "plain", "down"]),
        common::TEST_HASH
    ));
    let server = w.serve_with(mx, &[], &[]);
    let send = |to: &str, mode: &str| {
        let run = python_peer_run(
            "send_requiretls.py",
            &[
                &mx.to_string(),
                "someone@sender.test",
                &format!("{to}@example.test"),
                &format!("to {to}, {mode}"),
                mode,
            ],
            w.path(),
        );
        run.ok();
        run.stdout
    };

    // Offered only over TLS, and refused without it.
    let said = send("rt", "plain");
    assert!(said.contains("ehlo-before: -"), "{said}");
    assert!(
        said.contains("refused 530 5.7.10 REQUIRETLS needs a TLS session"),
        "{said}"
    );
    let said = send("rt", "requiretls");
    assert!(
        said.contains("ehlo-after: REQUIRETLS") && said.contains("sent"),
        "{said}"
    );
    for to in ["old", "plain", "down"] {
        assert!(send(to, "requiretls").contains("sent"));
    }
    assert!(send("wrong", "tls-required-no").contains("sent"));
    assert!(send("sieved", "requiretls").contains("sent"));

    // Verified by its TLSA record, and told REQUIRETLS in turn.
    // (The forward, and the Sieve redirect: both asked for REQUIRETLS in turn.)
    assert!(
        wait_for(Duration::from_secs(30), || received(&rt_sink).len() == 2),
        "nothing reached mx.rt.test: {}",
        server.log_text()
    );
    for mail in received(&rt_sink) {
        assert!(mail.path.with_extension("tls").exists());
        assert!(
            mail.path.with_extension("requiretls").exists(),
            "the next hop is asked for REQUIRETLS too: {}",
            mail.content
        );
    }
    // The sender asked that the receiver's policies not hold it: its DANE record, which
    // the certificate does not match, does not.
    assert!(
        wait_for(Duration::from_secs(30), || received(&wrong_sink).len() == 1),
        "TLS-Required: No must deliver: {}",
        server.log_text()
    );
    // A host without REQUIRETLS, and one DNSSEC does not vouch for: bounced, not sent.
    let mut log = String::new();
    let bounced = wait_for(Duration::from_secs(30), || {
        log = w.run(&["queue", "log"]).stdout;
        log.contains("5.7.30 mx.old.test does not support REQUIRETLS")
            && log.contains("5.7.30 the message asks for REQUIRETLS, and no MX host of plain.test can be authenticated")
    });
    assert!(bounced, "{log}");
    assert!(received(&old_sink).is_empty() && received(&plain_sink).is_empty());
    // A policy that could not be fetched may vouch later: the message waits.
    wait_until_queue_says(
        &w,
        &[
            "the message asks for REQUIRETLS, and down.test's MTA-STS policy, which could vouch for its MX hosts, could not be had",
        ],
    );
    let log = w.run(&["queue", "log"]).stdout;
    assert!(
        !log.lines()
            .any(|l| l.contains("down.test") && l.contains("5.7.30")),
        "not bounced: {log}"
    );
    drop(dns);
}

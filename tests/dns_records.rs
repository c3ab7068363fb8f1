//! `ferrymail dns records`: the records a domain needs, as zone-file lines that Knot (a
//! real authoritative server) loads and serves as written; `dns check` finds them there,
//! and names exactly what was removed or changed by hand.

mod common;

use common::{TEST_HASH, Workspace, free_port, knot};

fn kdig(port: u16, name: &str, kind: &str) -> String {
    let out = std::process::Command::new("kdig")
        .args(["@127.0.0.1", "-p", &port.to_string(), "+short", name, kind])
        .output()
        .expect("kdig (knot-dnsutils) must be installed; scripts/test installs it");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_printed_records_load_into_knot_and_say_what_the_spec_means() {
    let (submission, imaps) = (free_port(), free_port());
    let w = Workspace::new(&format!(
        r#"
[listeners]
submission = "127.0.0.1:{submission}"
imaps = "127.0.0.1:{imaps}"

[domains."example.test".aliases.me]
mailbox = {{ password = {{ hash = "{TEST_HASH}" }} }}
"#
    ));
    // Before apply there is no DKIM key yet, and the output says so.
    let early = w.run(&["dns", "records"]);
    assert!(
        early.ok().stdout.contains("no DKIM record yet"),
        "{}",
        early.stdout
    );
    w.run(&["apply", "--auto-approve"]).ok();
    let records = w.run(&["dns", "records", "example.test"]);
    let lines = records.ok().stdout.clone();
    assert!(
        lines.contains("example.test. 3600 IN MX 10 mx.example.test."),
        "{lines}"
    );

    // Knot refuses a zone it cannot parse; these lines must load as they are. The zone
    // also gives the server's name an address, and the reverse zone names it back (a
    // documentation address: 127.0.0.1 would be answered from /etc/hosts).
    let zone = common::zone("example.test", &format!("{lines}\nmx A 192.0.2.25"));
    let reverse = "$ORIGIN 2.0.192.in-addr.arpa.\n$TTL 60\n@ SOA ns.example.test. admin.example.test. 1 60 60 600 60\n@ NS ns.example.test.\n25 PTR mx.example.test.\n";
    let (_knot, port) = knot(
        w.path(),
        &[("example.test", &zone), ("2.0.192.in-addr.arpa", reverse)],
    );
    assert_eq!(
        kdig(port, "example.test", "MX").trim(),
        "10 mx.example.test."
    );
    assert_eq!(
        kdig(port, "example.test", "TXT").trim(),
        "\"v=spf1 mx -all\""
    );
    assert!(kdig(port, "_dmarc.example.test", "TXT").contains("v=DMARC1; p=quarantine"));
    let srv = kdig(port, "_submission._tcp.example.test", "SRV");
    assert_eq!(srv.trim(), format!("0 1 {submission} mx.example.test."));
    assert_eq!(
        kdig(port, "_imap._tcp.example.test", "SRV").trim(),
        "0 0 0 .",
        "a service that is not offered says so (RFC 6186)"
    );
    // The DKIM record is the public half of the key the store holds.
    let store = ferrymail::store::SqliteStore::open(&w.data_dir()).unwrap();
    use ferrymail::store::Store;
    let public = store
        .dkim_public_key("ferrymail._domainkey.example.test")
        .unwrap()
        .unwrap();
    let expected = ferrymail::dkim::txt_record("rsa-2048", &public);
    let served = kdig(port, "ferrymail._domainkey.example.test", "TXT");
    // kdig prints the 255-byte strings separately: join them back.
    let joined: String = served
        .trim()
        .split("\" \"")
        .collect::<Vec<_>>()
        .concat()
        .replace('"', "");
    assert_eq!(joined, expected);

    // dns check, through the spec's resolver: everything published is ok...
    let with_resolver = |port: u16| {
        let spec = std::fs::read_to_string(w.path().join("ferrymail.toml")).unwrap();
        let spec = match spec.find("\n[dns]") {
            Some(at) => spec[..at].to_string(),
            None => spec,
        };
        std::fs::write(
            w.path().join("ferrymail.toml"),
            format!("{spec}\n[dns]\nresolver = \"127.0.0.1:{port}\"\n"),
        )
        .unwrap();
    };
    with_resolver(port);
    let check = w.run(&["dns", "check"]);
    assert!(
        check.ok().stdout.contains("records as they should be"),
        "{}",
        check.stdout
    );
    assert!(
        check
            .stdout
            .contains("ok       PTR 192.0.2.25 mx.example.test"),
        "{}",
        check.stdout
    );
    assert!(
        !check.stdout.contains("missing") && !check.stdout.contains("wrong"),
        "{}",
        check.stdout
    );
    // ...and a zone edited by hand shows exactly what was removed or changed.
    let edited: String = lines
        .lines()
        .filter(|l| !l.starts_with("_dmarc."))
        .map(|l| {
            if l.starts_with("example.test. 3600 IN TXT") {
                "example.test. 3600 IN TXT \"v=spf1 ~all\"".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\nmx A 192.0.2.25";
    let knot_dir = w.path().join("edited");
    std::fs::create_dir_all(&knot_dir).unwrap();
    let (_knot2, port2) = knot(
        &knot_dir,
        &[("example.test", &common::zone("example.test", &edited))],
    );
    with_resolver(port2);
    let check = w.run(&["dns", "check"]);
    check.code(1);
    assert!(
        check
            .stdout
            .contains("missing  _dmarc.example.test TXT v=DMARC1; p=quarantine"),
        "{}",
        check.stdout
    );
    assert!(
        check
            .stdout
            .contains("wrong    example.test TXT v=spf1 mx -all")
            && check.stdout.contains("published: v=spf1 ~all"),
        "{}",
        check.stdout
    );
    let flagged = check
        .stdout
        .lines()
        .filter(|l| l.starts_with("missing") || l.starts_with("wrong") || l.starts_with("unknown"))
        .count();
    // No reverse zone this time, and Knot refuses names outside its zones: the PTR is
    // not known to be missing, and the check says why.
    assert!(
        check.stdout.contains(
            "unknown  PTR 192.0.2.25 mx.example.test\n         lookup failed: the DNS server refused the query (REFUSED)"
        ),
        "{}",
        check.stdout
    );
    assert_eq!(flagged, 3, "{}", check.stdout);

    // A server that fails (a zone Knot cannot load answers SERVFAIL): nothing is known,
    // which is neither "missing" nor Debug text, and the check fails.
    let broken_dir = w.path().join("broken");
    std::fs::create_dir_all(&broken_dir).unwrap();
    let (_knot3, port3) = knot(&broken_dir, &[("example.test", "not a zone file\n")]);
    with_resolver(port3);
    let check = w.run(&["dns", "check"]);
    check.code(1);
    assert!(
        check
            .stdout
            .contains("unknown  _dmarc.example.test TXT v=DMARC1; p=quarantine\n         lookup failed: the DNS server failed to answer (SERVFAIL)"),
        "{}",
        check.stdout
    );
    assert!(
        !check.stdout.contains("missing") && !check.stdout.contains("Query {"),
        "{}",
        check.stdout
    );

    // One domain only, and JSON for machines.
    let json = w.run(&["dns", "records", "--json"]);
    let parsed: serde_json::Value = serde_json::from_str(&json.ok().stdout).unwrap();
    assert!(parsed.as_array().unwrap().iter().any(|r| r["kind"] == "MX"));
    w.run(&["dns", "records", "nope.test"]).code(1);
}

#[test]
fn a_manual_provider_plans_what_a_person_must_change_and_writes_nothing() {
    let w = Workspace::new("");
    // What the person has published so far: the MX, and an SPF that is not ours yet.
    let zone = common::zone(
        "example.test",
        "@ MX 10 mx.example.test.\n@ TXT \"v=spf1 a -all\"",
    );
    let (_knot, port) = knot(w.path(), &[("example.test", &zone)]);
    w.write_spec(&format!(
        r#"
[dns]
resolver = "127.0.0.1:{port}"
[dns.providers.panel]
kind = "manual"

[domains."example.test"]
dns_provider = "panel"
[domains."example.test".aliases.me]
mailbox = {{ password = {{ hash = "{TEST_HASH}" }} }}
"#
    ));
    let plan = w.run(&["plan"]);
    let text = plan.ok().stdout.clone();
    assert!(
        text.contains("# example.test is published by hand (provider \"panel\")"),
        "{text}"
    );
    assert!(
        text.contains("~ dns example.test TXT @: \"v=spf1 a -all\" → \"v=spf1 mx -all\""),
        "{text}"
    );
    assert!(
        text.contains("+ dns example.test TXT _dmarc: \"v=DMARC1; p=quarantine\""),
        "{text}"
    );
    assert!(
        !text.contains("dns example.test MX"),
        "the MX is right: {text}"
    );
    let applied = w.run(&["apply", "--auto-approve"]);
    assert!(
        applied
            .ok()
            .stdout
            .contains("DNS change(s) are yours to make by hand"),
        "{}",
        applied.stdout
    );
    // Nothing was written: the zone still has the old SPF.
    assert_eq!(
        kdig(port, "example.test", "TXT").trim(),
        "\"v=spf1 a -all\""
    );
}

#[test]
fn doctor_checks_dns_outbound_smtp_and_private_files() {
    let w = Workspace::new(&format!(
        r#"
[listeners]
mx = "127.0.0.1:2525"
submission = "0.0.0.0:2587"

[domains."example.test".aliases.me]
mailbox = {{ password = {{ hash = "{TEST_HASH}" }} }}
"#
    ));
    w.run(&["apply", "--auto-approve"]).ok();
    let lines = w.run(&["dns", "records"]).ok().stdout.clone();
    let zone = common::zone("example.test", &format!("{lines}\nmx A 192.0.2.25"));
    let reverse = "$ORIGIN 2.0.192.in-addr.arpa.\n$TTL 60\n@ SOA ns.example.test. admin.example.test. 1 60 60 600 60\n@ NS ns.example.test.\n25 PTR mx.example.test.\n";
    let (_knot, port) = knot(
        w.path(),
        &[("example.test", &zone), ("2.0.192.in-addr.arpa", reverse)],
    );
    let spec = std::fs::read_to_string(w.path().join("ferrymail.toml")).unwrap();
    std::fs::write(
        w.path().join("ferrymail.toml"),
        format!("{spec}\n[dns]\nresolver = \"127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    // An SMTP server that answers: outbound mail can leave.
    let smtp = free_port();
    let _sink = common::python_peer(
        "sink.py",
        &[
            &smtp.to_string(),
            &w.path().join("sink").display().to_string(),
        ],
        w.path(),
    );
    let doctor = w.run(&["doctor", "--smtp-probe", &format!("127.0.0.1:{smtp}")]);
    let out = doctor.ok().stdout.clone();
    assert!(out.contains("records as they should be"), "{out}");
    assert!(
        out.contains(&format!("ok       the probe: 127.0.0.1:{smtp}"))
            && out.contains("answered \"220"),
        "{out}"
    );
    assert!(out.contains("ferrymail.db is private (600)"), "{out}");
    // A trial spec's loopback MX, advertised by the MX record, is named; a listener on
    // every address is fine.
    assert!(
        out.contains(
            "warn     mx listens on 127.0.0.1:2525 only: the MX records send other servers to mx.example.test:25"
        ) && out.contains("ok       _submission._tcp 0.0.0.0:2587"),
        "{out}"
    );
    assert!(
        out.contains("No problems found; 1 warning(s) about listeners"),
        "{out}"
    );

    // Nothing listens: the report says mail cannot leave, and doctor fails.
    let closed = free_port();
    let doctor = w.run(&["doctor", "--smtp-probe", &format!("127.0.0.1:{closed}")]);
    doctor.code(1);
    assert!(
        doctor.stdout.contains(&format!(
            "FAIL     the probe: 127.0.0.1:{closed}: cannot connect"
        )),
        "{}",
        doctor.stdout
    );
    // A store (it holds the DKIM private keys) others can read is named.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        w.data_dir().join("ferrymail.db"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let doctor = w.run(&["doctor", "--smtp-probe", &format!("127.0.0.1:{smtp}")]);
    doctor.code(1);
    assert!(
        doctor
            .stdout
            .contains("ferrymail.db is readable by others (mode 644)"),
        "{}",
        doctor.stdout
    );
}

//! DNS providers end to end: `plan`/`apply` publish a domain's records into a real
//! authoritative server (Knot, RFC 2136 updates signed with TSIG, read back by AXFR),
//! repair drift, leave other people's records alone, and clean up only their own.

mod common;

use common::{TEST_HASH, Workspace, free_port, knot_with_key};

const KEY_NAME: &str = "ferrymail-test";
/// A fixed test-only HMAC-SHA256 key (32 bytes, base64).
const SECRET: &str = "8aDl8RrjJBcb6sGMnMAmS4qO2pOQZy2fe28vUb+2fPk=";

fn kdig(port: u16, name: &str, kind: &str) -> String {
    let out = std::process::Command::new("kdig")
        .args(["@127.0.0.1", "-p", &port.to_string(), "+short", name, kind])
        .output()
        .expect("kdig (knot-dnsutils) must be installed; scripts/test installs it");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Changes the zone behind ferrymail's back, the way another tool or a person would.
fn knsupdate(port: u16, commands: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("knsupdate")
        .args(["-y", &format!("hmac-sha256:{KEY_NAME}:{SECRET}")])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("knsupdate (knot-dnsutils)");
    let script = format!("server 127.0.0.1 {port}\nzone example.test.\n{commands}\nsend\nquit\n");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "knsupdate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn spec(port: u16, submission: u16, with_domain: bool, extra: &str) -> String {
    let domain = if with_domain {
        format!(
            r#"
[domains."example.test"]
dns_provider = "knot"
tls_reports = "tls-reports@example.test"
{extra}
[domains."example.test".aliases.me]
mailbox = {{ password = {{ hash = "{TEST_HASH}" }} }}
"#
        )
    } else {
        String::new()
    };
    format!(
        r#"addresses = ["192.0.2.25"]

[listeners]
submission = "127.0.0.1:{submission}"

[dns]
resolver = "127.0.0.1:{port}"
[dns.providers.knot]
kind = "rfc2136"
server = "127.0.0.1:{port}"
tsig_name = "{KEY_NAME}"
tsig_secret = {{ file = "tsig.key" }}

[domains."other.test"]
{domain}
"#
    )
}

#[test]
fn apply_publishes_repairs_drift_and_removes_only_its_own_records() {
    let submission = free_port();
    let w = Workspace::new("");
    std::fs::write(w.path().join("tsig.key"), format!("{SECRET}\n")).unwrap();
    // Someone else's records are already in the zone: a web server, a site
    // verification beside where the SPF goes, an old DMARC, and an A record where
    // ferrymail would put the `mail` CNAME.
    let zone = common::zone(
        "example.test",
        "www A 192.0.2.80\n@ TXT \"site-verification=abc\"\n_dmarc TXT \"v=DMARC1; p=none\"\nmail A 192.0.2.26",
    );
    let (_knot, port) = knot_with_key(
        w.path(),
        &[("example.test", &zone)],
        Some((KEY_NAME, SECRET)),
    );
    w.write_spec(&spec(
        port,
        submission,
        true,
        r#"dns_records = [{ name = "@", type = "CAA", value = "0 issue letsencrypt.org" }]"#,
    ));

    // The plan shows each change in zone-file terms, the conflict, and the records it
    // will leave alone.
    let plan = w.run(&["plan"]);
    let text = plan.ok().stdout.clone();
    for line in [
        "+ dns example.test MX @: 10 mx.example.test.",
        "~ dns example.test TXT _dmarc: \"v=DMARC1; p=none\" → \"v=DMARC1; p=quarantine\"",
        "~ dns example.test TXT @: \"site-verification=abc\" → \"v=spf1 mx -all\", \"site-verification=abc\"",
        "+ dns example.test A mx: 192.0.2.25",
        "+ dns example.test CAA @: 0 issue letsencrypt.org",
        "+ dns example.test TXT _smtp._tls: \"v=TLSRPTv1; rua=mailto:tls-reports@example.test\"",
        "+ dns example.test SRV _submission._tcp: 0 1",
        "+ dns example.test TXT ferrymail._domainkey: \"v=DKIM1; p=(public key, made at apply)\"",
        "! dns example.test CNAME mail.example.test: the zone has A there",
        "= dns example.test A www: 192.0.2.80",
    ] {
        assert!(text.contains(line), "missing «{line}» in:\n{text}");
    }

    let applied = w.run(&["apply", "--auto-approve"]);
    assert!(
        applied.ok().stdout.contains("Apply complete"),
        "{}",
        applied.stdout
    );
    assert_eq!(kdig(port, "example.test", "MX"), "10 mx.example.test.");
    let apex_txt = kdig(port, "example.test", "TXT");
    assert!(apex_txt.contains("\"v=spf1 mx -all\""), "{apex_txt}");
    assert!(apex_txt.contains("\"site-verification=abc\""), "{apex_txt}");
    assert_eq!(
        kdig(port, "_dmarc.example.test", "TXT"),
        "\"v=DMARC1; p=quarantine\""
    );
    assert_eq!(
        kdig(port, "_submission._tcp.example.test", "SRV"),
        format!("0 1 {submission} mx.example.test.")
    );
    assert_eq!(
        kdig(port, "autoconfig.example.test", "CNAME"),
        "mx.example.test."
    );
    assert_eq!(kdig(port, "www.example.test", "A"), "192.0.2.80");
    assert_eq!(
        kdig(port, "mail.example.test", "A"),
        "192.0.2.26",
        "not ours"
    );
    assert_eq!(kdig(port, "mail.example.test", "CNAME"), "");
    // The DKIM record carries the key the apply generated.
    let store = ferrymail::store::SqliteStore::open(&w.data_dir()).unwrap();
    use ferrymail::store::Store;
    let public = store
        .dkim_public_key("ferrymail._domainkey.example.test")
        .unwrap()
        .unwrap();
    let served: String = kdig(port, "ferrymail._domainkey.example.test", "TXT")
        .split("\" \"")
        .collect::<String>()
        .replace('"', "");
    assert_eq!(served, ferrymail::dkim::txt_record("rsa-2048", &public));
    drop(store);

    // Declaring the `mail` name settles the conflict (the record becomes ours: a TTL
    // that differs is a change); then nothing is left to do.
    w.write_spec(&spec(
        port,
        submission,
        true,
        r#"dns_records = [{ name = "mail", type = "A", value = "192.0.2.26" }, { name = "@", type = "CAA", value = "0 issue letsencrypt.org" }]"#,
    ));
    let adopt = w.run(&["plan"]);
    assert!(
        adopt
            .ok()
            .stdout
            .contains("~ dns example.test A mail: 192.0.2.26 (TTL 60 → 3600)"),
        "{}",
        adopt.stdout
    );
    w.write_spec(&spec(
        port,
        submission,
        true,
        r#"dns_records = [{ name = "mail", type = "A", value = "192.0.2.26", ttl = 60 }, { name = "@", type = "CAA", value = "0 issue letsencrypt.org" }]"#,
    ));
    let again = w.run(&["plan", "--detailed-exitcode"]);
    again.code(0);
    assert!(again.stdout.contains("No changes."), "{}", again.stdout);
    w.run(&["apply", "--auto-approve"]).ok();

    // Key rotation and policy: a new selector is made, published with the key the store
    // then signs with, and the old one withdrawn; the DMARC record follows the spec.
    w.write_spec(&spec(
        port,
        submission,
        true,
        r#"dns_records = [{ name = "mail", type = "A", value = "192.0.2.26", ttl = 60 }, { name = "@", type = "CAA", value = "0 issue letsencrypt.org" }]
dmarc_policy = "reject"
dmarc_reports = "dmarc@example.test"
dkim = [{ selector = "s2026", algorithm = "ed25519" }]"#,
    ));
    let rotate = w.run(&["plan"]);
    let text = rotate.ok().stdout.clone();
    for line in [
        "+ dns example.test TXT s2026._domainkey: \"v=DKIM1; p=(public key, made at apply)\"",
        "~ dns example.test TXT _dmarc: \"v=DMARC1; p=quarantine\" → \"v=DMARC1; p=reject; rua=mailto:dmarc@example.test\"",
    ] {
        assert!(text.contains(line), "missing «{line}» in:\n{text}");
    }
    w.run(&["apply", "--auto-approve"]).ok();
    let store = ferrymail::store::SqliteStore::open(&w.data_dir()).unwrap();
    let public = store
        .dkim_public_key("s2026._domainkey.example.test")
        .unwrap()
        .unwrap();
    assert_eq!(
        kdig(port, "s2026._domainkey.example.test", "TXT").replace('"', ""),
        ferrymail::dkim::txt_record("ed25519", &public)
    );
    drop(store);
    // The retired key signs no more, but its record stays a while (dns.keep_retired_dkim,
    // 7 days by default) for mail signed just before; with no time to keep, it goes.
    assert!(!text.contains("TXT ferrymail._domainkey"), "{text}");
    assert!(kdig(port, "ferrymail._domainkey.example.test", "TXT").contains("v=DKIM1; k=rsa"));
    let rotated = std::fs::read_to_string(w.path().join("ferrymail.toml")).unwrap();
    std::fs::write(
        w.path().join("ferrymail.toml"),
        rotated.replace("[dns]\n", "[dns]\nkeep_retired_dkim = \"0s\"\n"),
    )
    .unwrap();
    let retire = w.run(&["plan"]);
    assert!(
        retire
            .ok()
            .stdout
            .contains("- dns example.test TXT ferrymail._domainkey: \"v=DKIM1; k=rsa;"),
        "{}",
        retire.stdout
    );
    w.run(&["apply", "--auto-approve"]).ok();
    assert_eq!(kdig(port, "ferrymail._domainkey.example.test", "TXT"), "");
    assert_eq!(
        kdig(port, "_dmarc.example.test", "TXT"),
        "\"v=DMARC1; p=reject; rua=mailto:dmarc@example.test\""
    );
    // Back to the default policy for the rest of the test.
    w.write_spec(&spec(
        port,
        submission,
        true,
        r#"dns_records = [{ name = "mail", type = "A", value = "192.0.2.26", ttl = 60 }, { name = "@", type = "CAA", value = "0 issue letsencrypt.org" }]
dkim = [{ selector = "s2026", algorithm = "ed25519" }]"#,
    ));
    w.run(&["apply", "--auto-approve"]).ok();

    // Drift: a record changed and one removed behind ferrymail's back.
    knsupdate(
        port,
        "update delete _dmarc.example.test. TXT\nupdate add _dmarc.example.test. 3600 TXT \"v=DMARC1; p=none\"\nupdate delete _submission._tcp.example.test. SRV",
    );
    // `dns check` names exactly what was removed or changed (and the PTR, which no test
    // zone serves: Knot refuses it, and the check says it could not be looked up).
    let check = w.run(&["dns", "check", "example.test"]);
    check.code(1);
    let flagged: Vec<&str> = check
        .stdout
        .lines()
        .filter(|l| l.starts_with("missing") || l.starts_with("wrong") || l.starts_with("unknown"))
        .collect();
    assert_eq!(flagged.len(), 3, "{}", check.stdout);
    assert!(
        check
            .stdout
            .contains("wrong    _dmarc.example.test TXT v=DMARC1; p=quarantine"),
        "{}",
        check.stdout
    );
    assert!(
        check
            .stdout
            .contains("missing  _submission._tcp.example.test SRV"),
        "{}",
        check.stdout
    );
    assert!(
        check.stdout.contains("unknown  PTR 192.0.2.25"),
        "{}",
        check.stdout
    );

    let drift = w.run(&["plan", "--target", "dns"]);
    let text = drift.ok().stdout.clone();
    assert!(
        text.contains(
            "~ dns example.test TXT _dmarc: \"v=DMARC1; p=none\" → \"v=DMARC1; p=quarantine\""
        ),
        "{text}"
    );
    assert!(
        text.contains("+ dns example.test SRV _submission._tcp"),
        "{text}"
    );
    assert!(
        text.contains("Plan: 1 to add, 1 to change, 0 to destroy."),
        "{text}"
    );
    w.run(&["apply", "--auto-approve", "--target", "dns"]).ok();
    assert_eq!(
        kdig(port, "_dmarc.example.test", "TXT"),
        "\"v=DMARC1; p=quarantine\""
    );
    let check = w.run(&["dns", "check", "example.test"]);
    let flagged = check
        .stdout
        .lines()
        .filter(|l| l.starts_with("missing") || l.starts_with("wrong") || l.starts_with("unknown"))
        .count();
    assert_eq!(flagged, 1, "only the PTR is left: {}", check.stdout);

    // The domain leaves the spec: its records go, everyone else's stay. Deleting most
    // of a zone needs saying so.
    w.write_spec(&spec(port, submission, false, ""));
    let plan = w.run(&["plan"]);
    let text = plan.ok().stdout.clone();
    assert!(
        text.contains("- dns example.test MX @: 10 mx.example.test."),
        "{text}"
    );
    assert!(
        text.contains("! apply will stop here: refusing to delete"),
        "{text}"
    );
    let refused = w.run(&["apply", "--auto-approve"]);
    refused.code(1);
    assert!(
        refused.stderr.contains("--allow-dns-deletes"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        kdig(port, "example.test", "MX"),
        "10 mx.example.test.",
        "nothing deleted yet"
    );
    w.run(&["apply", "--auto-approve", "--allow-dns-deletes"])
        .ok();
    assert_eq!(kdig(port, "example.test", "MX"), "");
    assert_eq!(
        kdig(port, "example.test", "TXT"),
        "\"site-verification=abc\""
    );
    assert_eq!(kdig(port, "_dmarc.example.test", "TXT"), "");
    assert_eq!(kdig(port, "s2026._domainkey.example.test", "TXT"), "");
    assert_eq!(kdig(port, "autoconfig.example.test", "CNAME"), "");
    assert_eq!(kdig(port, "www.example.test", "A"), "192.0.2.80");
    assert_eq!(kdig(port, "example.test", "NS"), "ns.example.test.");
    let last = w.run(&["plan", "--detailed-exitcode"]);
    last.code(0);
}

#[test]
fn serve_publishes_at_start_and_repairs_drift_on_its_own() {
    let (submission, mx) = (free_port(), free_port());
    let w = Workspace::new("");
    std::fs::write(w.path().join("tsig.key"), format!("{SECRET}\n")).unwrap();
    let (_knot, port) = knot_with_key(
        w.path(),
        &[("example.test", &common::zone("example.test", ""))],
        Some((KEY_NAME, SECRET)),
    );
    let body = spec(port, submission, true, "")
        .replace(
            "[listeners]\n",
            &format!("[listeners]\nmx = \"127.0.0.1:{mx}\"\n"),
        )
        .replace("[dns]\n", "[dns]\nresync_interval = \"1s\"\n");
    w.write_spec(&body);
    let _server = w.serve(mx);
    let published = common::wait_for(std::time::Duration::from_secs(20), || {
        kdig(port, "example.test", "MX") == "10 mx.example.test."
    });
    assert!(published, "serve did not publish the MX");

    // Someone deletes the DMARC record; serve notices and puts it back.
    knsupdate(port, "update delete _dmarc.example.test. TXT");
    let repaired = common::wait_for(std::time::Duration::from_secs(20), || {
        kdig(port, "_dmarc.example.test", "TXT") == "\"v=DMARC1; p=quarantine\""
    });
    assert!(repaired, "drift was not repaired");
}

//! SPF, DKIM, ARC and DMARC on arrival, against a real authoritative DNS server (Knot):
//! the Authentication-Results header records the outcome; SPF hard fails and DMARC
//! `p=reject` failures are refused unless the recipient domain allowlists the sender.

mod common;

use std::time::Duration;

use base64::Engine;
use common::{Workspace, free_port, knot, python_peer, received, swaks, wait_for, zone};

struct World {
    w: Workspace,
    mx: u16,
    sink_dir: std::path::PathBuf,
    key_pem: std::path::PathBuf,
    _dns: common::Process,
    _sink: common::Process,
}

fn world(domain_settings: &str) -> World {
    let w = Workspace::new("");
    let key = ferrymail::dkim::generate("rsa-2048").unwrap();
    let txt = ferrymail::dkim::txt_record("rsa-2048", &key.public);
    // TXT strings are at most 255 bytes: split the key record.
    let chunks: Vec<String> = txt
        .as_bytes()
        .chunks(200)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect();
    // The parent zone too: DMARC's tree walk asks for _dmarc.test, which must get a
    // clean NXDOMAIN rather than REFUSED.
    let zones = [
        ("test", zone("test", "")),
        (
            "sender.test",
            zone(
                "sender.test",
                &format!(
                    "@ TXT \"v=spf1 ip4:127.0.0.1 -all\"\n_dmarc TXT \"v=DMARC1; p=reject\"\ns1._domainkey TXT {}",
                    chunks.join(" ")
                ),
            ),
        ),
        ("evil.test", zone("evil.test", "@ TXT \"v=spf1 -all\"")),
        (
            "other.test",
            zone("other.test", "@ TXT \"v=spf1 ip4:127.0.0.1 -all\""),
        ),
        (
            "dmarc.test",
            zone("dmarc.test", "_dmarc TXT \"v=DMARC1; p=reject\""),
        ),
    ];
    let zones: Vec<(&str, &str)> = zones.iter().map(|(n, z)| (*n, z.as_str())).collect();
    let (dns, dns_port) = knot(w.path(), &zones);
    let (mx, relay) = (free_port(), free_port());
    w.write_spec(&format!(
        "[listeners]\nmx = \"127.0.0.1:{mx}\"\n[delivery]\nrelay = \"127.0.0.1:{relay}\"\n[dns]\nresolver = \"127.0.0.1:{dns_port}\"\n\
         [domains.\"example.test\"]\n{domain_settings}\n[domains.\"example.test\".aliases.hello]\nforward = [\"friend@elsewhere.test\"]\n"
    ));
    let sink_dir = w.path().join("sink");
    let sink = python_peer(
        "sink.py",
        &[&relay.to_string(), sink_dir.to_str().unwrap()],
        w.path(),
    );
    let pem = base64::engine::general_purpose::STANDARD.encode(&key.private_der);
    let lines: Vec<&str> = pem
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let key_pem = w.path().join("sender.pem");
    std::fs::write(
        &key_pem,
        format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            lines.join("\n")
        ),
    )
    .unwrap();
    World {
        w,
        mx,
        sink_dir,
        key_pem,
        _dns: dns,
        _sink: sink,
    }
}

/// A message from `from`, signed by sender.test's key when `sign` is set.
fn message(world: &World, from: &str, sign: bool) -> std::path::PathBuf {
    let text = format!(
        "From: {from}\r\nTo: hello@example.test\r\nSubject: auth test\r\nDate: Thu, 26 Nov 2026 01:00:00 +0000\r\nMessage-ID: <auth@sender.test>\r\n\r\nhello\r\n"
    );
    let bytes = if sign {
        let mut child = std::process::Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/peers/dkim_sign.py"
            ))
            .args([world.key_pem.to_str().unwrap(), "s1", "sender.test"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap().stdout
    } else {
        text.into_bytes()
    };
    let path = world.w.path().join(format!("msg-{}.eml", bytes.len()));
    std::fs::write(&path, bytes).unwrap();
    path
}

fn send(world: &World, mail_from: &str, data: &std::path::Path) -> common::Run {
    swaks(
        world.mx,
        &[
            "--from",
            mail_from,
            "--to",
            "hello@example.test",
            "--data",
            data.to_str().unwrap(),
        ],
    )
}

#[test]
fn authenticated_mail_passes_and_says_so() {
    let world = world("");
    let server = world.w.serve(world.mx);
    let data = message(&world, "Alice <alice@sender.test>", true);
    let out = send(&world, "alice@sender.test", &data);
    assert!(
        out.stdout.contains("<-  250 2.0.0 Queued"),
        "{}\n{}",
        out.stdout,
        server.log_text()
    );
    assert!(wait_for(Duration::from_secs(20), || received(
        &world.sink_dir
    )
    .len()
        == 1));
    let content = &received(&world.sink_dir)[0].content;
    let header: String = content.split("\r\n\r\n").next().unwrap().to_string();
    assert!(
        header.contains("Authentication-Results: mx.example.test"),
        "{header}"
    );
    assert!(header.contains("dkim=pass"), "{header}");
    assert!(header.contains("spf=pass"), "{header}");
    assert!(header.contains("dmarc=pass"), "{header}");
}

#[test]
fn spf_hard_fail_and_dmarc_reject_are_refused() {
    let world = world("");
    let _server = world.w.serve(world.mx);
    let data = message(&world, "bob@evil.test", false);
    let out = send(&world, "bob@evil.test", &data);
    assert!(out.stdout.contains("<** 550 5.7.23"), "{}", out.stdout);

    // SPF passes for other.test, but From: is dmarc.test (p=reject) and nothing aligns.
    let data = message(&world, "ceo@dmarc.test", false);
    let out = send(&world, "x@other.test", &data);
    assert!(out.stdout.contains("<** 550 5.7.1 DMARC"), "{}", out.stdout);
    assert!(received(&world.sink_dir).is_empty());
}

#[test]
fn domains_can_opt_out_and_allowlists_win() {
    let world = world("reject_dmarc_fail = false\nallowlist = [\"evil.test\"]");
    let _server = world.w.serve(world.mx);
    let data = message(&world, "ceo@dmarc.test", false);
    send(&world, "x@other.test", &data).ok();
    let data = message(&world, "bob@evil.test", false);
    send(&world, "bob@evil.test", &data).ok();
    assert!(wait_for(Duration::from_secs(20), || received(
        &world.sink_dir
    )
    .len()
        == 2));
    let all: String = received(&world.sink_dir)
        .iter()
        .map(|m| m.content.clone())
        .collect();
    assert!(all.contains("dmarc=fail"), "{all}");
    assert!(all.contains("spf=fail"), "{all}");
}

#[test]
fn forwards_that_would_fail_dmarc_leave_with_a_friendly_from() {
    let world = world("");
    let _server = world.w.serve(world.mx);
    // Unsigned, SPF-aligned: DMARC passes here, but after forwarding SPF no longer aligns
    // and no DKIM signature vouches for sender.test (p=reject): the copy must not claim it.
    let data = message(&world, "Alice <alice@sender.test>", false);
    send(&world, "alice@sender.test", &data).ok();
    // Signed by sender.test: its DKIM survives forwarding, From stays as written.
    let data = message(&world, "Alice <alice@sender.test>", true);
    send(&world, "alice@sender.test", &data).ok();
    assert!(wait_for(Duration::from_secs(20), || received(
        &world.sink_dir
    )
    .len()
        == 2));
    let msgs = received(&world.sink_dir);
    let (rewritten, kept) = if msgs[0].content.contains("X-Original-From") {
        (&msgs[0], &msgs[1])
    } else {
        (&msgs[1], &msgs[0])
    };
    assert!(
        rewritten
            .content
            .contains("From: \"Alice via example.test\" <hello@example.test>\r\n"),
        "{}",
        rewritten.content
    );
    assert!(
        rewritten
            .content
            .contains("Reply-To: alice@sender.test\r\n")
    );
    assert!(
        kept.content.contains("From: Alice <alice@sender.test>\r\n"),
        "{}",
        kept.content
    );
    assert!(!kept.content.contains("X-Original-From"));

    // The rewritten copy still verifies: our DKIM signature and our ARC seal, by dkimpy.
    let store = ferrymail::store::SqliteStore::open(&world.w.data_dir()).unwrap();
    let public =
        ferrymail::store::Store::dkim_public_key(&store, "ferrymail._domainkey.example.test")
            .unwrap()
            .unwrap();
    let txt = format!(
        "ferrymail._domainkey.example.test={}",
        ferrymail::dkim::txt_record("rsa-2048", &public)
    );
    for mode in ["dkim", "arc"] {
        common::dkimpy(mode, &rewritten.path, &[&txt]).ok();
    }
}

//! Knot's configuration for loopback DNS: zone files, DNSSEC signing and the trust anchors
//! of signed zones. Shared by the tests (common::knot) and the benches; it starts nothing.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A zone file with the SOA/NS boilerplate and the given records.
pub fn zone(name: &str, records: &str) -> String {
    format!(
        "$ORIGIN {name}.\n$TTL 60\n@ SOA ns.{name}. admin.{name}. 1 60 60 600 60\n@ NS ns\nns A 127.0.0.1\n{records}\n"
    )
}

/// Writes knot.conf and the zone files under `root` for a server on 127.0.0.1:`port`;
/// returns the configuration's path. With `tsig` (key name, base64 secret) the zones take
/// dynamic updates (RFC 2136) and transfers signed with that HMAC-SHA256 key and keep the
/// changes in the journal. The zones named in `signed` are signed (DNSSEC, one ECDSA
/// P-256 key each); their delegations are the zone files' own NS and DS records.
pub fn configure(
    root: &Path,
    port: u16,
    zones: &[(&str, &str)],
    tsig: Option<(&str, &str)>,
    signed: &[&str],
) -> PathBuf {
    std::fs::create_dir_all(root).expect("knot dir");
    let mut conf = format!(
        "server:\n    listen: 127.0.0.1@{port}\n    rundir: {r}\ndatabase:\n    storage: {r}\n",
        r = root.display()
    );
    let mut acl = "";
    if let Some((name, secret)) = tsig {
        conf.push_str(&format!(
            "key:\n  - id: {name}\n    algorithm: hmac-sha256\n    secret: {secret}\n\
             acl:\n  - id: updates\n    key: {name}\n    action: [update, transfer]\n\
             template:\n  - id: default\n    zonefile-sync: -1\n    zonefile-load: whole\n    journal-content: changes\n"
        ));
        acl = "    acl: updates\n";
    }
    if !signed.is_empty() {
        conf.push_str(
            "policy:\n  - id: csk\n    single-type-signing: on\n    algorithm: ecdsap256sha256\n",
        );
    }
    conf.push_str("zone:\n");
    for (name, text) in zones {
        let file = root.join(format!("{name}.zone"));
        std::fs::write(&file, text).expect("zone file");
        conf.push_str(&format!(
            "  - domain: {name}\n    file: {}\n{acl}",
            file.display()
        ));
        if signed.contains(name) {
            // The signed zone stays in the journal; the file stays as written.
            conf.push_str(
                "    dnssec-signing: on\n    dnssec-policy: csk\n    zonefile-sync: -1\n",
            );
        }
    }
    let conf_path = root.join("knot.conf");
    std::fs::write(&conf_path, conf).expect("knot.conf");
    conf_path
}

/// The DNSKEY records of the `signed` zones of a running knotd (zone-file form, for
/// `[dns] trust_anchors`), written next to `conf` as trust-anchors; None if a key did not
/// appear within 10 s. The keys are made as knotd loads the zones, just after it listens.
pub fn trust_anchors(conf: &Path, signed: &[&str]) -> Option<PathBuf> {
    let mut anchors = String::new();
    for zone in signed {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = Command::new("keymgr")
                .arg("-c")
                .arg(conf)
                .arg(format!("{zone}."))
                .arg("dnskey")
                .output()
                .expect("keymgr (Debian's knot package)");
            let keys = String::from_utf8_lossy(&out.stdout);
            if keys.contains("DNSKEY") {
                // keymgr prints "test. DNSKEY 257 …"; zone-file form wants the class too.
                anchors.push_str(&keys.replace(" DNSKEY ", " IN DNSKEY "));
                break;
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let file = conf.with_file_name("trust-anchors");
    std::fs::write(&file, anchors).expect("trust anchors");
    Some(file)
}

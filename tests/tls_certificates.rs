//! Certificates served by every TLS listener through one resolver: `files` mode picks up
//! renewed PEM files without a restart (connections already open keep working), and a
//! broken pair is reported while the previous certificate keeps serving.

mod common;

use common::{TEST_HASH, Workspace, free_port, wait_for};
use sha2::Digest;

/// A certificate for `names` as (chain PEM, key PEM, SHA-256 of the DER, hex).
fn certificate(names: &[&str]) -> (String, String, String) {
    let c =
        rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    let fp = hex::encode(sha2::Sha256::digest(c.cert.der()));
    (c.cert.pem(), c.signing_key.serialize_pem(), fp)
}

/// Writes a file the way certbot does: the new version in archive/, then the link in
/// live/ swapped over to it (a new link renamed over the old one).
fn replace(path: &std::path::Path, text: &str) {
    static VERSION: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);
    let n = VERSION.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let live = path.parent().unwrap();
    let archive = live.parent().unwrap().join("archive");
    std::fs::create_dir_all(&archive).unwrap();
    let stem = path.file_stem().unwrap().to_string_lossy();
    let target = archive.join(format!("{stem}{n}.pem"));
    std::fs::write(&target, text).unwrap();
    let tmp = live.join(format!(".{stem}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("../archive/{stem}{n}.pem"), &tmp).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn files_mode_serves_renewed_files_without_a_restart() {
    let imaps = free_port();
    let w = Workspace::new(&format!(
        r#"
[listeners]
imaps = "127.0.0.1:{imaps}"

[tls]
mode = "files"
files = {{ cert = "tls/live/fullchain.pem", key = "tls/live/privkey.pem" }}

[domains."example.test".aliases.me]
mailbox = {{ password = {{ hash = "{TEST_HASH}" }} }}
"#
    ));
    // certbot's layout: live/ holds links into archive/.
    let tls = w.path().join("tls/live");
    std::fs::create_dir_all(&tls).unwrap();
    let (cert_a, key_a, fp_a) = certificate(&["mx.example.test"]);
    replace(&tls.join("fullchain.pem"), &cert_a);
    replace(&tls.join("privkey.pem"), &key_a);
    let server = w.serve(imaps);

    // A client connects before the renewal and stays.
    let early = common::LingeringTls::open(imaps);
    assert_eq!(early.first, fp_a);

    // Renewed the way certbot does it: new files put in place.
    let (cert_b, key_b, fp_b) = certificate(&["mx.example.test"]);
    replace(&tls.join("privkey.pem"), &key_b);
    replace(&tls.join("fullchain.pem"), &cert_b);
    let served_b = wait_for(std::time::Duration::from_secs(15), || {
        common::tls_fingerprint(w.path(), imaps) == fp_b
    });
    assert!(
        served_b,
        "the renewed certificate is not served:\n{}",
        server.log_text()
    );

    // The connection opened before still works; a new one gets the new certificate.
    let (old, second) = early.finish();
    assert!(old.starts_with("a OK"), "{old}");
    assert_eq!(second, fp_b);

    // A broken file is reported; the certificate that works keeps serving.
    replace(
        &tls.join("fullchain.pem"),
        "-----BEGIN CERTIFICATE-----\nnot base64\n",
    );
    let reported = wait_for(std::time::Duration::from_secs(15), || {
        server
            .log_text()
            .contains("cannot be used; the previous certificate keeps serving")
    });
    assert!(reported, "{}", server.log_text());
    assert_eq!(common::tls_fingerprint(w.path(), imaps), fp_b);
    // A key that does not belong to the certificate is refused too.
    let (cert_c, _, fp_c) = certificate(&["mx.example.test"]);
    replace(&tls.join("fullchain.pem"), &cert_c);
    let reported = wait_for(std::time::Duration::from_secs(15), || {
        server.log_text().contains("does not fit the certificate")
    });
    assert!(reported, "{}", server.log_text());
    assert_ne!(common::tls_fingerprint(w.path(), imaps), fp_c);
}

/// The self-signed certificate names the server (CN = hostname, not rcgen's default),
/// lasts a year rather than until 4096, is made again when it nears its end, and
/// `certificates list` shows it (issue 22).
#[test]
fn the_self_signed_certificate_names_the_host_lasts_a_year_and_is_listed() {
    let imaps = free_port();
    let w = Workspace::new(&format!(
        r#"
[listeners]
imaps = "127.0.0.1:{imaps}"

[domains."example.test".aliases.me]
mailbox = {{ password = {{ hash = "{TEST_HASH}" }} }}
"#
    ));
    // One ending in ten days is left from an earlier run: it is made again.
    std::fs::create_dir_all(w.data_dir()).unwrap();
    let (crt, key) = (
        w.data_dir().join("self-signed.crt"),
        w.data_dir().join("self-signed.key"),
    );
    let old = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "10", "-subj", "/CN=mx.example.test"])
        .args(["-addext", "subjectAltName=DNS:mx.example.test"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .unwrap();
    assert!(old.status.success(), "{old:?}");
    let old_fingerprint = std::fs::read(&crt).unwrap();
    let server = w.serve(imaps);
    assert_ne!(std::fs::read(&crt).unwrap(), old_fingerprint, "not renewed");
    let x509 = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-issuer", "-checkend"])
        .arg((330 * 86_400).to_string())
        .arg("-in")
        .arg(&crt)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&x509.stdout);
    assert!(x509.status.success(), "ends within 330 days: {text}");
    assert!(
        text.contains("subject=CN = mx.example.test")
            && text.contains("issuer=CN = mx.example.test"),
        "{text}"
    );
    let too_long = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-checkend"])
        .arg((367 * 86_400).to_string())
        .arg("-in")
        .arg(&crt)
        .status()
        .unwrap();
    assert!(!too_long.success(), "valid for more than a year");
    let listed = w.run(&["certificates", "list"]);
    let out = &listed.ok().stdout;
    assert!(
        out.contains("self-signed")
            && out.contains("mx.example.test, localhost")
            && out.contains("issuer CN=mx.example.test"),
        "{out}"
    );
    drop(server);
}

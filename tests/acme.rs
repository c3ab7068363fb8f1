//! ACME against pebble (Let's Encrypt's test CA) on loopback: the certificate is issued
//! over HTTP-01, served by the MX (STARTTLS) and IMAPS listeners with pebble's chain,
//! kept across restarts, renewed on request without breaking open connections; an
//! unreachable CA is reported while the self-signed certificate keeps serving.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{TEST_HASH, Workspace, free_port, knot, pebble, wait_for};

/// Listener ports: mx, imaps, http, https.
type Ports = (u16, u16, u16, u16);

fn spec(ports: Ports, challenge: &str, directory: &str, ca_file: &std::path::Path) -> String {
    let (mx, imaps, http, https) = ports;
    format!(
        r#"
[listeners]
mx = "127.0.0.1:{mx}"
imaps = "127.0.0.1:{imaps}"
http = "127.0.0.1:{http}"
https = "127.0.0.1:{https}"

[tls]
mode = "acme"
[tls.acme]
contact = "admin@example.test"
directory = "{directory}"
challenge = "{challenge}"
ca_file = "{}"

[domains."example.test".aliases.me]
mailbox = {{ password = {{ hash = "{TEST_HASH}" }} }}
"#,
        ca_file.display()
    )
}

/// What `openssl s_client` says of the chain a listener presents, checked against `root`.
fn s_client(port: u16, starttls: bool, root: &std::path::Path) -> String {
    let mut args = vec![
        "s_client".to_string(),
        "-connect".into(),
        format!("127.0.0.1:{port}"),
        "-servername".into(),
        "mx.example.test".into(),
        "-CAfile".into(),
        root.display().to_string(),
        "-verify_return_error".into(),
    ];
    if starttls {
        args.extend(["-starttls".into(), "smtp".into()]);
    }
    let out = Command::new("openssl")
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .expect("openssl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn issued(log: &str) -> usize {
    log.matches("certificate issued and served").count()
}

/// Starts Knot (mx.example.test → 127.0.0.1), pebble and `serve` with `challenge`, and
/// waits for the first certificate.
/// What `issued_with` started: the workspace, its ports, Knot (and its port), pebble,
/// and the server.
struct Started {
    w: Workspace,
    ports: Ports,
    _knot: common::Process,
    dns: u16,
    ca: common::Pebble,
    server: common::Process,
}

fn issued_with(challenge: &str) -> Started {
    let ports = (free_port(), free_port(), free_port(), free_port());
    let w = Workspace::new("");
    let zone = common::zone("example.test", "mx A 127.0.0.1");
    let (knot_process, dns) = knot(w.path(), &[("example.test", &zone)]);
    let ca = pebble(w.path(), dns, ports.2, ports.3);
    w.write_spec(&spec(ports, challenge, &ca.directory, &ca.ca_file));
    let plan = w.run(&["plan"]);
    assert!(
        plan.ok().stdout.contains(&format!(
            "+ certificate mx.example.test (acme, {challenge}): mx.example.test"
        )),
        "{}",
        plan.stdout
    );
    let server = w.serve(ports.0);
    let done = wait_for(Duration::from_secs(60), || issued(&server.log_text()) == 1);
    assert!(
        done,
        "no certificate:\n{}\npebble:\n{}",
        server.log_text(),
        ca.process.log_text()
    );
    Started {
        w,
        ports,
        _knot: knot_process,
        dns,
        ca,
        server,
    }
}

/// pebble's root, from its management API.
fn pebble_root(w: &Workspace, ca: &common::Pebble) -> std::path::PathBuf {
    let root = w.path().join("pebble-root.pem");
    let fetched = Command::new("python3")
        .args([
            "-c",
            &format!(
                "import ssl,urllib.request;c=ssl._create_unverified_context();open('{}','wb').write(urllib.request.urlopen('https://127.0.0.1:{}/roots/0',context=c).read())",
                root.display(),
                ca.management
            ),
        ])
        .status()
        .unwrap();
    assert!(fetched.success());
    root
}

#[test]
fn tls_alpn01_is_answered_inside_the_https_handshake() {
    let Started {
        w,
        ports: (mx, imaps, _, https),
        ca,
        server,
        _knot,
        ..
    } = issued_with("tls-alpn-01");
    let root = pebble_root(&w, &ca);
    for (port, starttls) in [(https, false), (mx, true), (imaps, false)] {
        let out = s_client(port, starttls, &root);
        assert!(out.contains("Verify return code: 0 (ok)"), "{port}: {out}");
    }
    assert!(server.log_text().contains("certificate issued and served"));
}

#[test]
fn pebble_issues_over_http01_and_every_listener_serves_it() {
    let Started {
        w,
        ports: (mx, imaps, http, https),
        dns,
        ca,
        mut server,
        _knot,
    } = issued_with("http-01");
    // pebble's root verifies what every TLS listener presents.
    let root = pebble_root(&w, &ca);
    for (port, starttls) in [(mx, true), (imaps, false), (https, false)] {
        let out = s_client(port, starttls, &root);
        assert!(out.contains("Verify return code: 0 (ok)"), "{port}: {out}");
        assert!(out.contains("Pebble Intermediate CA"), "{port}: {out}");
    }
    let first = common::tls_fingerprint(w.path(), imaps);
    let plan = w.run(&["plan"]);
    assert!(!plan.ok().stdout.contains("certificate"), "{}", plan.stdout);
    let status = w.run(&["status"]);
    assert!(
        status
            .ok()
            .stdout
            .contains("certificate: mx.example.test (acme), expires in"),
        "{}",
        status.stdout
    );
    let listed = w.run(&["certificates", "list"]);
    assert!(
        listed
            .ok()
            .stdout
            .contains("mx.example.test: mx.example.test"),
        "{}",
        listed.stdout
    );

    // A renewal asked for while a client is connected: the client carries on, the next
    // connection gets the new certificate.
    let early = common::LingeringTls::open(imaps);
    assert_eq!(early.first, first);
    w.run(&["certificates", "renew"]).ok();
    let renewed = wait_for(Duration::from_secs(60), || issued(&server.log_text()) == 2);
    assert!(renewed, "{}", server.log_text());
    let second = common::tls_fingerprint(w.path(), imaps);
    assert_ne!(second, first);
    let (old, again) = early.finish();
    assert!(old.starts_with("a OK"), "{old}");
    assert_eq!(again, second);

    // A restart serves the stored certificate: no new order.
    server.terminate();
    let server = w.serve(mx);
    let served = wait_for(Duration::from_secs(20), || {
        common::tls_fingerprint(w.path(), imaps) == second
    });
    assert!(served, "{}", server.log_text());
    assert_eq!(issued(&server.log_text()), 0, "{}", server.log_text());

    // The CA restarts and forgets every account: the next order registers a new one.
    let api: u16 = ca
        .directory
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches("/dir")
        .parse()
        .unwrap();
    let mut ca = ca;
    ca.process.terminate();
    let _ca2 = common::pebble_at(w.path(), dns, http, free_port(), api);
    w.run(&["certificates", "renew"]).ok();
    let again = wait_for(Duration::from_secs(60), || issued(&server.log_text()) == 1);
    assert!(again, "{}", server.log_text());
    assert!(
        server.log_text().contains("registering a new one"),
        "{}",
        server.log_text()
    );
}

#[test]
fn an_unreachable_ca_is_reported_and_the_server_keeps_serving() {
    let ports = (free_port(), free_port(), free_port(), free_port());
    let (mx, imaps) = (ports.0, ports.1);
    let w = Workspace::new("");
    let ca_file = w.path().join("nothing.pem");
    std::fs::write(
        &ca_file,
        rcgen::generate_simple_self_signed(vec!["x.test".to_string()])
            .unwrap()
            .cert
            .pem(),
    )
    .unwrap();
    let closed = free_port();
    w.write_spec(&spec(
        ports,
        "http-01",
        &format!("https://127.0.0.1:{closed}/dir"),
        &ca_file,
    ));
    let server = w.serve(mx);
    let reported = wait_for(Duration::from_secs(30), || {
        server
            .log_text()
            .contains("certificate not issued; the current one keeps serving")
    });
    assert!(reported, "{}", server.log_text());
    // Where it went and why, in words.
    assert!(
        server
            .log_text()
            .contains("cannot connect: Connection refused"),
        "{}",
        server.log_text()
    );
    // The failure is logged a moment before it is written where `status` reads it.
    let failed = wait_for(Duration::from_secs(10), || {
        w.run(&["status"]).stdout.contains("ACME: FAILED at")
    });
    assert!(failed, "{}", w.run(&["status"]).stdout);
    // Mail is still taken, over TLS, with the temporary self-signed certificate (its
    // own issuer, named for the host).
    let out = s_client(mx, true, &ca_file);
    assert!(
        out.contains("s:CN = mx.example.test") && out.contains("i:CN = mx.example.test"),
        "{out}"
    );
    assert!(!common::tls_fingerprint(w.path(), imaps).is_empty());
}

/// A private CA whose HTTPS server presents a CA:TRUE certificate as its own: rustls
/// refuses it, and the operator reads why in words, not "client error (Connect)".
#[test]
fn a_ca_whose_certificate_cannot_be_verified_is_explained() {
    let ports = (free_port(), free_port(), free_port(), free_port());
    let w = Workspace::new("");
    let (cert, key) = (w.path().join("ca.pem"), w.path().join("ca.key"));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .args(["-addext", "basicConstraints=critical,CA:TRUE", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(made.status.success(), "{made:?}");
    let port = free_port();
    let log = w.path().join("s_server.log");
    let child = Command::new("openssl")
        .args(["s_server", "-www", "-accept", &format!("127.0.0.1:{port}")])
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_server runs");
    let _ca = common::Process { child, log };
    assert!(wait_for(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    }));
    w.write_spec(&spec(
        ports,
        "http-01",
        &format!("https://127.0.0.1:{port}/dir"),
        &cert,
    ));
    let server = w.serve(ports.0);
    let explained = format!(
        "cannot connect: certificate verification failed: the server presents a CA \
         certificate (basicConstraints CA:TRUE) as its own (CaUsedAsEndEntity) \
         (CA directory https://127.0.0.1:{port}/dir)"
    );
    let said = wait_for(Duration::from_secs(30), || {
        server.log_text().contains(&explained)
    });
    assert!(said, "{}", server.log_text());
    assert!(
        !server.log_text().contains("client error"),
        "{}",
        server.log_text()
    );
    let status = wait_for(Duration::from_secs(10), || {
        w.run(&["status"]).stdout.contains("CaUsedAsEndEntity")
    });
    assert!(status, "{}", w.run(&["status"]).stdout);
}

#[test]
fn dns01_answers_are_published_through_the_dns_provider_and_taken_down() {
    const KEY: &str = "ferrymail-acme";
    const SECRET: &str = "8aDl8RrjJBcb6sGMnMAmS4qO2pOQZy2fe28vUb+2fPk=";
    let ports = (free_port(), free_port(), free_port(), free_port());
    let w = Workspace::new("");
    std::fs::write(w.path().join("tsig.key"), SECRET).unwrap();
    let zone = common::zone("example.test", "mx A 127.0.0.1");
    let (_knot, dns) = common::knot_with_key(
        w.path(),
        &[
            ("example.test", &zone),
            ("second.test", &common::zone("second.test", "")),
        ],
        Some((KEY, SECRET)),
    );
    let ca = pebble(w.path(), dns, ports.2, ports.3);
    let body = spec(ports, "dns-01", &ca.directory, &ca.ca_file)
        + &format!(
            r#"
[dns]
resolver = "127.0.0.1:{dns}"
[dns.providers.knot]
kind = "rfc2136"
server = "127.0.0.1:{dns}"
tsig_name = "{KEY}"
tsig_secret = {{ file = "tsig.key" }}

[domains."example.test"]
dns_provider = "knot"
"#
        );
    w.write_spec(&body);
    let server = w.serve(ports.0);
    let done = wait_for(Duration::from_secs(90), || issued(&server.log_text()) == 1);
    assert!(
        done,
        "no certificate:\n{}\npebble:\n{}",
        server.log_text(),
        ca.process.log_text()
    );
    let root = pebble_root(&w, &ca);
    let out = s_client(ports.1, false, &root);
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    // The names clients are pointed at are in the certificate too, and the answers are
    // gone from the zone.
    let listed = w.run(&["certificates", "list"]);
    assert!(
        listed.ok().stdout.contains("imap.example.test"),
        "{}",
        listed.stdout
    );
    // ...with mta-sts.DOMAIN, since https serves the MTA-STS policy there.
    assert!(
        listed.stdout.contains("mta-sts.example.test"),
        "{}",
        listed.stdout
    );
    let kdig = |name: &str| {
        let out = Command::new("kdig")
            .args(["@127.0.0.1", "-p", &dns.to_string(), "+short", name, "TXT"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let cleaned = wait_for(Duration::from_secs(10), || {
        kdig("_acme-challenge.mx.example.test").is_empty()
            && kdig("_acme-challenge.imap.example.test").is_empty()
    });
    assert!(cleaned, "DNS-01 answers left in the zone");

    // A domain added to the running server's spec: its client names join the
    // certificate, without a restart.
    std::fs::write(
        w.path().join("ferrymail.toml"),
        std::fs::read_to_string(w.path().join("ferrymail.toml")).unwrap()
            + "\n[domains.\"second.test\"]\ndns_provider = \"knot\"\n",
    )
    .unwrap();
    let reissued = wait_for(Duration::from_secs(90), || issued(&server.log_text()) == 2);
    assert!(reissued, "{}", server.log_text());
    let listed = w.run(&["certificates", "list"]);
    assert!(
        listed.ok().stdout.contains("imap.second.test"),
        "{}",
        listed.stdout
    );
    assert!(
        w.run(&["plan"])
            .ok()
            .stdout
            .lines()
            .all(|l| !l.contains("certificate"))
    );
}

#[test]
fn a_rejected_challenge_is_reported_with_the_cas_reason() {
    let ports = (free_port(), free_port(), free_port(), free_port());
    let w = Workspace::new("");
    let zone = common::zone("example.test", "mx A 127.0.0.1");
    let (_knot, dns) = knot(w.path(), &[("example.test", &zone)]);
    // The CA looks for the answer on a port where nothing listens.
    let ca = pebble(w.path(), dns, free_port(), free_port());
    w.write_spec(&spec(ports, "http-01", &ca.directory, &ca.ca_file));
    let server = w.serve(ports.0);
    let reported = wait_for(Duration::from_secs(60), || {
        server
            .log_text()
            .contains("certificate not issued; the current one keeps serving")
    });
    assert!(reported, "{}", server.log_text());
    // The CA's own words: what it fetched, what went wrong, the problem type.
    let log = server.log_text();
    assert!(log.contains("/.well-known/acme-challenge/"), "{log}");
    assert!(
        log.contains("urn:ietf:params:acme:error:connection"),
        "{log}"
    );
    assert_eq!(issued(&log), 0);
}

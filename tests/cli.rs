//! The commands around plan/apply: init, passwd, schema, and the shipped example specs.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::run_in;

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn passwd_hashes_what_it_reads_on_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_in(
        dir.path(),
        std::path::Path::new("unused.toml"),
        &["passwd"],
        Some("s3cret pass\n"),
    );
    out.ok();
    let hash = out.stdout.trim();
    assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
    assert!(ferrymail::password::verify("s3cret pass", hash));
    assert!(
        !ferrymail::password::verify("s3cret pass\n", hash),
        "the newline is not part of the password"
    );
    let empty = run_in(
        dir.path(),
        std::path::Path::new("unused.toml"),
        &["passwd"],
        Some("\n"),
    );
    empty.code(1);

    // An easily guessed password is refused unless forced, and the reason is named.
    let weak = run_in(
        dir.path(),
        std::path::Path::new("unused.toml"),
        &["passwd"],
        Some("letmein\n"),
    );
    weak.code(1);
    assert!(
        weak.stderr
            .contains("easy to guess: it has fewer than 10 characters")
            && weak.stdout.is_empty(),
        "{}",
        weak.stderr
    );
    let forced = run_in(
        dir.path(),
        std::path::Path::new("unused.toml"),
        &["passwd", "--force"],
        Some("quickstart\n"),
    );
    forced.ok();
    assert!(
        forced
            .stderr
            .contains("warning: this password is easy to guess")
    );
    assert!(ferrymail::password::verify(
        "quickstart",
        forced.stdout.trim()
    ));

    // --generate makes one, and hashes it.
    let made = run_in(
        dir.path(),
        std::path::Path::new("unused.toml"),
        &["passwd", "--generate"],
        None,
    );
    made.ok();
    let (password, hash) = (
        made.stdout
            .lines()
            .find_map(|l| l.strip_prefix("password: ")),
        made.stdout.lines().find_map(|l| l.strip_prefix("hash: ")),
    );
    let (password, hash) = (password.expect("password: line"), hash.expect("hash: line"));
    assert_eq!(password.len(), 24);
    assert!(ferrymail::password::verify(password, hash));
}

#[test]
fn init_writes_a_working_spec_and_private_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("ferrymail.toml");
    let out = run_in(
        dir.path(),
        &spec,
        &[
            "init",
            "--domain",
            "Example.ORG",
            "--address",
            "203.0.113.7",
            "--address",
            "2001:db8::7",
        ],
        None,
    );
    out.ok();
    // The next steps go as far as serving mail and publishing its DNS records.
    for step in [
        "Next steps",
        "plan",
        "apply",
        "dns records",
        "serve",
        "doctor",
    ] {
        assert!(out.stdout.contains(step), "no {step:?} in {}", out.stdout);
    }
    // A spec for the world: every address (IPv6 too, as it has an IPv6 address) at the
    // standard ports, Let's Encrypt, and the public addresses for its A/AAAA records.
    let text = std::fs::read_to_string(&spec).unwrap();
    for line in [
        "mx = \"[::]:25\"",
        "submission = \"[::]:587\"",
        "imaps = \"[::]:993\"",
        "mode = \"acme\"",
        "addresses = [\"203.0.113.7\", \"2001:db8::7\"]",
    ] {
        assert!(text.contains(line), "no {line:?} in {text}");
    }
    let data = dir.path().join("data");
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("master.key")), 0o600);
    assert_eq!(mode(&data.join("postmaster.password")), 0o600);
    let password = std::fs::read_to_string(data.join("postmaster.password")).unwrap();
    assert!(
        !out.stdout.contains(password.trim()),
        "init must not print the password"
    );

    // The starter spec is valid, plans the domain, and its hash matches the password file.
    run_in(dir.path(), &spec, &["validate"], None).ok();
    let plan = run_in(dir.path(), &spec, &["plan", "--detailed-exitcode"], None);
    plan.code(2);
    assert!(
        plan.stdout.contains("+ domain example.org")
            && plan.stdout.contains("+ account postmaster@example.org")
    );
    let text = std::fs::read_to_string(&spec).unwrap();
    let hash = text
        .split("hash = \"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap();
    assert!(ferrymail::password::verify(password.trim(), hash));
    run_in(dir.path(), &spec, &["apply", "--auto-approve"], None).ok();
    // The records it asks for advertise the standard ports and the public address.
    let records = run_in(dir.path(), &spec, &["dns", "records"], None);
    for record in [
        "mx.example.org. 3600 IN A 203.0.113.7",
        "mx.example.org. 3600 IN AAAA 2001:db8::7",
        "example.org. 3600 IN MX 10 mx.example.org.",
        "_submission._tcp.example.org. 3600 IN SRV 0 1 587 mx.example.org.",
        "_imaps._tcp.example.org. 3600 IN SRV 0 1 993 mx.example.org.",
    ] {
        assert!(
            records.ok().stdout.contains(record),
            "no {record:?} in {}",
            records.stdout
        );
    }

    // --local: loopback, clear of the quickstart's ports, self-signed.
    let local = tempfile::tempdir().unwrap();
    let local_spec = local.path().join("ferrymail.toml");
    run_in(
        local.path(),
        &local_spec,
        &["init", "--domain", "example.org", "--local"],
        None,
    )
    .ok();
    let text = std::fs::read_to_string(&local_spec).unwrap();
    assert!(
        text.contains("mx = \"127.0.0.1:10025\"") && text.contains("mode = \"self-signed\""),
        "{text}"
    );
    run_in(local.path(), &local_spec, &["validate"], None).ok();

    let again = run_in(
        dir.path(),
        &spec,
        &["init", "--domain", "example.org"],
        None,
    );
    again.code(1);
    assert!(again.stderr.contains("--force"));
}

/// The spec reference's examples (docs/spec-examples.toml) are one spec that validates:
/// no example shows a key that does not exist or a value that is refused.
#[test]
fn the_spec_references_examples_are_a_valid_spec() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = run_in(
        root,
        &root.join("docs/spec-examples.toml"),
        &["validate"],
        None,
    );
    assert!(
        out.ok().stdout.contains("valid (1 domain"),
        "{}",
        out.stdout
    );
}

/// `--version` names the commit the binary was built from, so a report or `status`
/// points at the exact source.
#[test]
fn version_names_the_commit() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = run_in(
        root,
        std::path::Path::new("unused.toml"),
        &["--version"],
        None,
    );
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(root)
        .output()
        .expect("git runs");
    let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
    // The second line lists the optional features built in.
    assert_eq!(
        out.ok().stdout.trim(),
        format!(
            "ferrymail {} ({head})\nfeatures: {}",
            env!("CARGO_PKG_VERSION"),
            ferrymail::features::built()
        )
    );
    let short = run_in(root, std::path::Path::new("unused.toml"), &["-V"], None);
    assert_eq!(
        short.ok().stdout.trim(),
        format!("ferrymail {} ({head})", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn committed_schema_is_fresh() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = run_in(
        root,
        std::path::Path::new("unused.toml"),
        &["schema", "--out", "-"],
        None,
    );
    out.ok();
    let committed =
        std::fs::read_to_string(root.join("schema/ferrymail.schema.json")).unwrap_or_default();
    assert!(
        committed == out.stdout,
        "schema/ferrymail.schema.json is stale: run `cargo run -- schema` and commit it"
    );
    // Doc comments reach the schema, so editors can show them.
    assert!(out.stdout.contains("Where mail is forwarded"));
}

#[test]
fn shipped_specs_are_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    {
        let spec = "specs/quickstart.toml";
        run_in(root, &root.join(spec), &["validate"], None).ok();
    }
}

/// `ferrymail … | head`: the command ends quietly when its reader goes, killed by
/// SIGPIPE as Unix tools are, instead of panicking in println! (issue 22).
#[test]
fn output_piped_into_a_reader_that_goes_away_ends_quietly() {
    use std::os::unix::process::ExitStatusExt as _;
    // A pipe whose reader is gone before the command writes a byte.
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let done = std::process::Command::new(env!("CARGO_BIN_EXE_ferrymail"))
        .args(["schema", "--out", "-"])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("ferrymail runs");
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        "{stderr}"
    );
    assert_eq!(done.status.signal(), Some(13), "SIGPIPE: {:?}", done.status);
}

/// A client that sends an IP address as its TLS SNI name (openssl s_client, some
/// phones) is served quietly: rustls's "Illegal SNI" warning is not logged for each
/// one (issue 22).
#[test]
fn an_ip_address_as_sni_is_not_logged() {
    const TOKEN: &str = "sni-test-token-0123456789abcdefghijklmnop";
    let (imaps, http) = (common::free_port(), common::free_port());
    let w = common::Workspace::new(&format!(
        "[listeners]\nimaps = \"127.0.0.1:{imaps}\"\nhttp = \"127.0.0.1:{http}\"\n\n\
         [admin.api_tokens]\nci = {{ env = \"TEST_API_TOKEN\" }}\n\n\
         [domains.\"example.test\".aliases.me]\n\
         mailbox = {{ password = {{ hash = \"{}\" }} }}\n",
        common::TEST_HASH
    ));
    let server = w.serve_with(http, &[], &[("TEST_API_TOKEN", TOKEN)]);
    assert!(common::wait_for(std::time::Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", imaps)).is_ok()
    }));
    // LOGOUT makes the server close, and so s_client end (-quiet ignores EOF on stdin).
    let mut client = std::process::Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{imaps}")])
        .args(["-servername", "127.0.0.1", "-quiet"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("openssl runs");
    std::io::Write::write_all(&mut client.stdin.take().expect("stdin"), b"a LOGOUT\r\n")
        .expect("LOGOUT sent");
    let done = client.wait_with_output().expect("openssl ends");
    assert!(
        String::from_utf8_lossy(&done.stdout).contains("* OK"),
        "no greeting over TLS: {}",
        String::from_utf8_lossy(&done.stderr)
    );
    let log = server.log_text();
    assert!(!log.contains("Illegal SNI"), "{log}");
    // Nor in the warnings the web admin and the API show.
    let shown = std::process::Command::new("curl")
        .args(["-sS", "-H", &format!("Authorization: Bearer {TOKEN}")])
        .arg(format!("http://127.0.0.1:{http}/api/v1/logs"))
        .output()
        .expect("curl runs");
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.starts_with('['), "the API's log: {shown}");
    assert!(!shown.contains("Illegal SNI"), "{shown}");
}

/// serve's log says what an operator needs without RUST_LOG: each listener, the
/// reconcile, each delivery and each failed login; other commands print no log lines
/// (issue 22).
#[test]
fn serve_logs_what_happens_by_default_and_other_commands_stay_quiet() {
    let (mx, submission, relay) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    let w = common::Workspace::new("");
    let (_dns, dns) = common::quiet_dns(w.path());
    let sink_dir = w.path().join("sink");
    let _sink = common::python_peer(
        "sink.py",
        &[&relay.to_string(), sink_dir.to_str().unwrap()],
        w.path(),
    );
    w.write_spec(&format!(
        r#"
[listeners]
mx = "127.0.0.1:{mx}"
submission = "127.0.0.1:{submission}"

[delivery]
relay = "127.0.0.1:{relay}"

[dns]
resolver = "127.0.0.1:{dns}"

[domains."example.test".aliases]
me = {{ mailbox = {{ password = {{ hash = "{}" }} }} }}
friend = {{ forward = ["friend@elsewhere.test"] }}
"#,
        common::TEST_HASH
    ));
    let mut server = w.serve_with_default_log(mx);
    common::swaks(mx, &["--from", "x@sender.test", "--to", "me@example.test"]).ok();
    common::swaks(
        mx,
        &["--from", "y@sender.test", "--to", "friend@example.test"],
    )
    .ok();
    let refused = common::submit(
        submission,
        "me@example.test",
        "wrong",
        &["--quit-after", "AUTH"],
    );
    assert!(refused.stdout.contains("535"), "{}", refused.stdout);
    let logged = |text: &str| server.log_text().contains(text);
    assert!(
        common::wait_for(std::time::Duration::from_secs(20), || logged(
            "rcpt=mailbox me@example.test"
        ) && logged(
            "rcpt=forward friend@elsewhere.test"
        ) && logged(
            "login failed"
        )),
        "{}",
        server.log_text()
    );
    server.terminate();
    let log = server.log_text();
    for line in [
        &format!("mx listening addr=127.0.0.1:{mx}"),
        &format!("submission listening addr=127.0.0.1:{submission}"),
        "spec reconciled revision=1",
        "mail event=accepted msg_id=1 from=x@sender.test rcpt=me@example.test",
        "mail event=delivered msg_id=1 from=x@sender.test rcpt=mailbox me@example.test",
        // A forward names the host that took it and quotes its reply, queue id and all:
        // what a sender asks for when a message "never arrived".
        &format!(
            "mail event=delivered msg_id=2 from=y@sender.test rcpt=forward friend@elsewhere.test \
             detail=127.0.0.1:{relay} said 250 2.0.0 Ok: saved as 0"
        ),
        "login failed ip=127.0.0.1 account=me@example.test",
    ] {
        assert!(log.contains(line), "no {line:?} in:\n{log}");
    }
    // Nothing of the password, and no DEBUG lines.
    assert!(!log.contains("wrong") && !log.contains("DEBUG"), "{log}");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_ferrymail"))
        .current_dir(w.path())
        .args(["--spec", "ferrymail.toml", "status"])
        .env_remove("RUST_LOG")
        .output()
        .expect("status runs");
    assert!(status.status.success(), "{status:?}");
    assert_eq!(
        String::from_utf8_lossy(&status.stderr),
        "",
        "status logs nothing"
    );
}

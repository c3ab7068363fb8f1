//! Backups end to end: a serving server with mail, flags and a DKIM key is backed up to a
//! local directory and to an S3-compatible server (moto, on loopback), its data dir is
//! wiped and restored, and imaplib, swaks and dkimpy find everything as it was. Wrong
//! keys, truncated and missing objects are refused with the data left as it was.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{
    Process, TEST_HASH, Workspace, free_port, python_peer, python_peer_run, received, swaks,
    wait_for,
};
use ferrymail::store::{SqliteStore, Store};

/// The S3 part of a spec, or the file part; and its environment.
enum Target {
    Dir,
    S3 { port: u16, _server: Process },
}

/// moto's S3 server on loopback with an empty bucket.
fn moto(dir: &Path) -> Target {
    let port = free_port();
    let log = dir.join("moto.log");
    let child = std::process::Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.join("moto.err")).unwrap())
        .spawn()
        .expect("moto_server (pip install 'moto[server]'; scripts/test installs it)");
    let server = Process { child, log };
    assert!(
        wait_for(Duration::from_secs(30), || std::net::TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_ok()),
        "moto did not start"
    );
    // object_store does not make buckets: one plain PUT does (moto checks no signature).
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "PUT /ferry-backups HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    Target::S3 {
        port,
        _server: server,
    }
}

fn spec(
    mx: u16,
    imap: u16,
    relay: u16,
    dns: u16,
    target: &Target,
    include_master_key: bool,
) -> String {
    let backups = match target {
        Target::Dir => {
            "target = \"file://backups\"\nencryption_key = { file = \"backup.key\" }".to_string()
        }
        Target::S3 { port, .. } => format!(
            "target = \"s3://ferry-backups/mx1\"\nendpoint = \"http://127.0.0.1:{port}\"\nregion = \"us-east-1\"\n\
             access_key = {{ env = \"TEST_S3_KEY\" }}\nsecret_key = {{ env = \"TEST_S3_SECRET\" }}\n\
             encryption_key = {{ file = \"backup.key\" }}"
        ),
    };
    let master = if include_master_key {
        String::new()
    } else {
        // Kept outside the data dir, as the spec's secret: the backup need not hold it.
        "master_key = { file = \"master.secret\" }\n".to_string()
    };
    format!(
        r#"{master}
[listeners]
mx = "127.0.0.1:{mx}"
imap = "127.0.0.1:{imap}"

[dns]
resolver = "127.0.0.1:{dns}"

[delivery]
relay = "127.0.0.1:{relay}"

[domains."example.test".aliases.me]
mailbox = {{ password = {{ hash = "{TEST_HASH}" }} }}

[domains."example.test".aliases.hello]
forward = ["friend@elsewhere.test"]

[backups]
schedule = "0 3 * * *"
{backups}
keep = 10
include_master_key = {include_master_key}
"#
    )
}

fn imap_state(imap: u16, changes: &[&str], dir: &Path) -> serde_json::Value {
    let mut args = vec![
        imap.to_string(),
        "me@example.test".into(),
        "quickstart".into(),
    ];
    args.extend(changes.iter().map(|c| c.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = python_peer_run("imap_state.py", &args, dir);
    run.ok();
    serde_json::from_str(run.stdout.trim()).expect("imap_state output")
}

/// The state with UIDVALIDITY left out, and the UIDVALIDITY of each folder.
fn split_validity(state: &serde_json::Value) -> (serde_json::Value, Vec<u64>) {
    let mut without = state.clone();
    let mut validity = Vec::new();
    for (_, folder) in without.as_object_mut().unwrap() {
        validity.push(folder["uidvalidity"].as_u64().unwrap());
        folder.as_object_mut().unwrap().remove("uidvalidity");
    }
    (without, validity)
}

fn dkim_public(w: &Workspace) -> Vec<u8> {
    SqliteStore::open(&w.data_dir())
        .unwrap()
        .dkim_public_key("ferrymail._domainkey.example.test")
        .unwrap()
        .expect("a DKIM key")
}

/// Forwards one message through `hello@` and has dkimpy verify it with `txt`.
fn forward_and_verify(mx: u16, sink: &Path, txt: &str, subject: &str, server: &Process) {
    let before = received(sink).len();
    swaks(
        mx,
        &[
            "--from",
            "alice@sender.test",
            "--to",
            "hello@example.test",
            "--h-Subject",
            subject,
        ],
    )
    .ok();
    assert!(
        wait_for(Duration::from_secs(20), || received(sink).len()
            == before + 1),
        "not forwarded:\n{}",
        server.log_text()
    );
    let msg = &received(sink)[before];
    let verdict = common::dkimpy("dkim", &msg.path, &[txt]);
    assert!(
        verdict.ok().stdout.contains("PASS example.test ferrymail"),
        "{}",
        verdict.stdout
    );
}

fn round_trip(
    target: Target,
    w: Workspace,
    key: &str,
    include_master_key: bool,
    env: &[(&str, &str)],
) {
    let (mx, imap, relay) = (free_port(), free_port(), free_port());
    let (_dns, dns) = common::quiet_dns(w.path());
    let sink_dir = w.path().join("sink");
    let _sink = python_peer(
        "sink.py",
        &[&relay.to_string(), sink_dir.to_str().unwrap()],
        w.path(),
    );
    std::fs::write(w.path().join("backup.key"), key).unwrap();
    std::fs::write(
        w.path().join("master.secret"),
        "a master key kept outside the data dir, 32+ bytes\n",
    )
    .unwrap();
    w.write_spec(&spec(mx, imap, relay, dns, &target, include_master_key));
    let run = |args: &[&str]| -> common::Run {
        let mut cmd = std::process::Command::new(common::BIN);
        cmd.current_dir(w.path())
            .arg("--spec")
            .arg(&w.spec)
            .args(args)
            .envs(env.iter().copied())
            .env("NO_COLOR", "1");
        common::Run::from(cmd.output().unwrap())
    };

    let mut server = w.serve_with(mx, &[], env);
    // serve makes the first backup at start, since there is none yet.
    assert!(
        wait_for(Duration::from_secs(60), || run(&["status"])
            .stdout
            .contains("backups: last ")),
        "no backup at start: {}\n{}",
        run(&["status"]).stdout,
        server.log_text()
    );
    for subject in ["first", "second", "third"] {
        swaks(
            mx,
            &[
                "--from",
                "alice@sender.test",
                "--to",
                "me@example.test",
                "--h-Subject",
                subject,
            ],
        )
        .ok();
    }
    // On S3 a backup above 8 MiB goes up in parts: a message of random bytes makes one.
    let messages = if matches!(target, Target::S3 { .. }) {
        let big = w.path().join("big.bin");
        let mut noise = vec![0u8; 9 << 20];
        for (i, b) in noise.iter_mut().enumerate() {
            *b = (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ (i >> 7) as u8;
        }
        std::fs::write(&big, noise).unwrap();
        let attach = format!("@{}", big.display());
        swaks(
            mx,
            &[
                "--from",
                "alice@sender.test",
                "--to",
                "me@example.test",
                "--h-Subject",
                "big",
                "--attach",
                &attach,
            ],
        )
        .ok();
        4
    } else {
        3
    };
    assert!(
        wait_for(Duration::from_secs(30), || {
            imap_state(imap, &[], w.path())["INBOX"]["messages"]
                .as_array()
                .unwrap()
                .len()
                == messages
        }),
        "not delivered: {}",
        server.log_text()
    );
    let before = imap_state(
        imap,
        &["INBOX:1:\\Flagged \\Seen", "INBOX:3:\\Answered"],
        w.path(),
    );
    let public = dkim_public(&w);
    let txt = format!(
        "ferrymail._domainkey.example.test={}",
        ferrymail::dkim::txt_record("rsa-2048", &public)
    );
    forward_and_verify(mx, &sink_dir, &txt, "before the backup", &server);
    // The user's own Sieve script (ManageSieve) is the account's data too.
    let mailboxes = || {
        let key = if include_master_key {
            std::fs::read_to_string(w.data_dir().join("master.key")).unwrap()
        } else {
            std::fs::read_to_string(w.path().join("master.secret")).unwrap()
        };
        let key = ferrymail::mailbox::MasterKey::new(key.trim().as_bytes()).unwrap();
        ferrymail::mailbox::Mailboxes::new(&w.data_dir(), key)
    };
    let script = b"require \"fileinto\";\nfileinto \"Lists\";\n";
    {
        use ferrymail::sieve::store::UserScripts;
        let mut scripts = UserScripts::open(&mailboxes(), "me@example.test").unwrap();
        scripts.put("lists", script).unwrap();
        scripts.set_active(Some("lists")).unwrap();
    }

    // A backup made by hand while the server runs.
    let made = run(&["backup", "create"]);
    made.ok();
    if messages == 4 {
        let log = std::fs::read_to_string(w.path().join("moto.err")).unwrap_or_default();
        assert!(log.contains("uploadId="), "a multipart upload:\n{log}");
    }
    assert!(
        made.stdout.contains("Backup ") && made.stdout.contains("sha256 "),
        "{}",
        made.stdout
    );
    let id = made.stdout.split_whitespace().nth(1).unwrap().to_string();
    let listed = run(&["backup", "list"]);
    let rows = listed
        .ok()
        .stdout
        .lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .count();
    assert_eq!(
        rows, 2,
        "the one from serve and this one:\n{}",
        listed.stdout
    );
    assert!(listed.stdout.contains(&id));
    if include_master_key {
        assert!(
            listed.stdout.contains("master key included"),
            "{}",
            listed.stdout
        );
    }

    // Never into the data dir of a running server, nor over data without --force.
    let refused = run(&["backup", "restore", &id, "--force"]);
    assert!(
        refused.code == 1 && refused.stderr.contains("stop it before restoring"),
        "{refused:?}"
    );
    server.terminate();
    let refused = run(&["backup", "restore", &id]);
    assert!(
        refused.code == 1 && refused.stderr.contains("already holds data"),
        "{refused:?}"
    );

    // Wipe, restore, serve again.
    std::fs::remove_dir_all(w.data_dir()).unwrap();
    let restored = run(&["backup", "restore", &id]);
    restored.ok();
    assert!(
        restored.stdout.contains("new UIDVALIDITY"),
        "{}",
        restored.stdout
    );
    assert!(
        !restored.stdout.contains("holds no master key: put"),
        "{}",
        restored.stdout
    );
    run(&["plan", "--detailed-exitcode"]).code(0);
    assert_eq!(dkim_public(&w), public, "the same DKIM key");

    let server = w.serve_with(mx, &[], env);
    let after = imap_state(imap, &[], w.path());
    let (before_content, before_validity) = split_validity(&before);
    let (after_content, after_validity) = split_validity(&after);
    assert_eq!(
        after_content, before_content,
        "the same messages, UIDs and flags"
    );
    assert!(
        before_content["INBOX"]["messages"][0][3]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("\\Flagged")),
        "{before}"
    );
    // Restored files are the server's alone.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&w.data_dir()), 0o700);
    assert_eq!(mode(&w.data_dir().join("mailboxes")), 0o700);
    assert_eq!(mode(&w.data_dir().join("ferrymail.db")), 0o600);
    for (b, a) in before_validity.iter().zip(&after_validity) {
        assert!(
            a > b,
            "UIDVALIDITY renewed: {before_validity:?} → {after_validity:?}"
        );
    }
    // The aliases route as before, and forwarded mail is signed with the same key.
    let probe = common::rcpt_probe(mx, "alice@sender.test", "me@example.test");
    assert!(!probe.contains("<** "), "{probe}");
    let probe = common::rcpt_probe(mx, "alice@sender.test", "nobody@example.test");
    assert!(probe.contains("<** "), "{probe}");
    forward_and_verify(mx, &sink_dir, &txt, "after the restore", &server);
    let (name, body) =
        ferrymail::sieve::store::UserScripts::active_of(&mailboxes(), "me@example.test")
            .unwrap()
            .expect("the active Sieve script is back");
    assert_eq!((name.as_str(), body.as_slice()), ("lists", &script[..]));
}

/// An age identity, as age-keygen writes it.
fn age_identity() -> String {
    use age::secrecy::ExposeSecret;
    let identity = age::x25519::Identity::generate();
    format!(
        "# created: by the test\n# public key: {}\n{}\n",
        identity.to_public(),
        identity.to_string().expose_secret()
    )
}

#[test]
fn a_local_directory_backup_restores_the_same_mail_flags_and_keys() {
    round_trip(Target::Dir, Workspace::new(""), &age_identity(), true, &[]);
}

#[test]
fn an_s3_backup_restores_the_same_mail_flags_and_keys() {
    let w = Workspace::new("");
    let target = moto(w.path());
    round_trip(
        target,
        w,
        "a long passphrase for the backups\n",
        false,
        &[("TEST_S3_KEY", "testing"), ("TEST_S3_SECRET", "testing")],
    );
}

#[test]
fn wrong_keys_truncated_and_missing_objects_leave_the_data_alone() {
    let w = Workspace::new("");
    let key = age_identity();
    std::fs::write(w.path().join("backup.key"), &key).unwrap();
    w.write_spec(&spec(
        free_port(),
        free_port(),
        free_port(),
        53,
        &Target::Dir,
        false,
    ));
    std::fs::write(
        w.path().join("master.secret"),
        "a master key kept outside the data dir, 32+ bytes\n",
    )
    .unwrap();
    w.run(&["apply", "--auto-approve"]).ok();
    let id_of = |run: &common::Run| run.stdout.split_whitespace().nth(1).unwrap().to_string();
    let good = id_of(w.run(&["backup", "create"]).ok());
    std::thread::sleep(Duration::from_millis(1100));
    let damaged = id_of(w.run(&["backup", "create"]).ok());
    std::thread::sleep(Duration::from_millis(1100));
    let missing = id_of(w.run(&["backup", "create"]).ok());
    let backups = w.path().join("backups");
    let object = |id: &str| backups.join(format!("ferrymail-{id}.tar.zst.age"));
    let bytes = std::fs::read(object(&damaged)).unwrap();
    std::fs::write(object(&damaged), &bytes[..bytes.len() / 2]).unwrap();
    std::fs::remove_file(object(&missing)).unwrap();
    let listed = w.run(&["backup", "list"]);
    assert!(
        listed.ok().stdout.contains("OBJECT MISSING"),
        "{}",
        listed.stdout
    );

    let store = w.store_bytes();
    let untouched = |what: &str| {
        assert_eq!(w.store_bytes(), store, "{what}: the store changed");
        let names: Vec<String> = std::fs::read_dir(w.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.contains("restore"))
            .collect();
        assert!(names.is_empty(), "{what}: left behind {names:?}");
    };
    let failed = w.run(&["backup", "restore", &damaged, "--force"]);
    assert!(
        failed.code == 1
            && failed
                .stderr
                .contains("does not match its recorded checksum"),
        "{failed:?}"
    );
    untouched("truncated");
    let failed = w.run(&["backup", "restore", &missing, "--force"]);
    assert!(
        failed.code == 1 && failed.stderr.contains("is missing at the target"),
        "{failed:?}"
    );
    untouched("missing");
    let failed = w.run(&["backup", "restore", "20200101T000000Z", "--force"]);
    assert!(
        failed.code == 1
            && failed
                .stderr
                .contains("there is no backup 20200101T000000Z"),
        "{failed:?}"
    );
    std::fs::write(w.path().join("backup.key"), age_identity()).unwrap();
    let failed = w.run(&["backup", "restore", &good, "--force"]);
    assert!(
        failed.code == 1
            && failed
                .stderr
                .contains("cannot be decrypted with this encryption key"),
        "{failed:?}"
    );
    untouched("wrong key");

    // With the right key the good one restores over the data (kept aside) with --force.
    std::fs::write(w.path().join("backup.key"), &key).unwrap();
    let done = w.run(&["backup", "restore", &good, "--force"]);
    assert!(done.ok().stdout.contains("is kept in"), "{}", done.stdout);
    assert!(
        w.path()
            .join(format!("data.before-restore-{good}"))
            .join("ferrymail.db")
            .exists()
    );
    w.run(&["plan", "--detailed-exitcode"]).code(0);
    // Retention: with keep = 2 the next backup removes the two oldest records.
    let spec_text = std::fs::read_to_string(&w.spec).unwrap();
    std::fs::write(&w.spec, spec_text.replace("keep = 10", "keep = 2")).unwrap();
    let newest = w.run(&["backup", "create"]);
    assert!(
        newest.ok().stdout.contains(&format!(
            "Removed 2 old backup(s) beyond keep = 2: {good}, {damaged}"
        )),
        "{}",
        newest.stdout
    );
    assert!(!object(&good).exists() && !object(&damaged).exists());
    // Nobody else may read the backups.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(backups.join(format!("ferrymail-{missing}.json")))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "{mode:o}");
}

#[test]
fn a_failing_backup_is_shown_in_status_and_plan_while_mail_goes_on() {
    let w = Workspace::new("");
    let mx = free_port();
    std::fs::write(w.path().join("backup.key"), age_identity()).unwrap();
    w.write_spec(&format!(
        r#"
[listeners]
mx = "127.0.0.1:{mx}"

[domains."example.test".aliases.me]
mailbox = {{ password = {{ hash = "{TEST_HASH}" }} }}

[backups]
schedule = "*/5 * * * *"
target = "file:///proc/ferrymail-backups"
encryption_key = {{ file = "backup.key" }}
"#
    ));
    let server = w.serve(mx);
    assert!(
        wait_for(Duration::from_secs(30), || w
            .run(&["status"])
            .stdout
            .contains("FAILED at")),
        "no failure shown: {}\n{}",
        w.run(&["status"]).stdout,
        server.log_text()
    );
    let status = w.run(&["status"]).stdout;
    assert!(status.contains("backups: none yet"), "{status}");
    assert!(
        status.contains("/proc/ferrymail-backups") && status.contains("retrying in 60 s"),
        "{status}"
    );
    let plan = w.run(&["plan"]).stdout;
    assert!(
        plan.contains("! backups: no backup has succeeded yet; the last attempt failed"),
        "{plan}"
    );
    assert!(
        plan.contains("backups \"*/5 * * * *\" (UTC) → file:///proc/ferrymail-backups, keep 14"),
        "{plan}"
    );
    swaks(
        mx,
        &["--from", "alice@sender.test", "--to", "me@example.test"],
    )
    .ok();
    assert!(wait_for(Duration::from_secs(20), || w
        .inbox("me@example.test")
        .len()
        == 1));
}

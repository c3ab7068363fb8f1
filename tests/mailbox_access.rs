//! Mailboxes through real clients: Python's imaplib works a mailbox the MX delivered to
//! (FETCH, SEARCH, STORE, COPY/MOVE, APPEND, folders, IDLE), mbsync syncs it both ways,
//! poplib and fetchmail read and delete over POP3; other accounts see none of it.

mod common;

use std::time::Duration;

use common::{TEST_HASH, Workspace, free_port, python_peer_run, wait_for};

const FIRST: &str = "From: Alice <alice@sender.test>\r\nTo: me@example.test\r\n\
Subject: first message\r\nDate: Tue, 1 Jul 2025 10:00:00 +0000\r\nMessage-ID: <one@sender.test>\r\n\
\r\nHello, this one hides a needle.\r\n";

const SECOND: &str = "From: Alice <alice@sender.test>\r\nTo: me@example.test\r\n\
Subject: second message\r\nDate: Tue, 1 Jul 2025 11:00:00 +0000\r\nMessage-ID: <two@sender.test>\r\n\
MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"xx\"\r\n\r\n\
--xx\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nplain part\r\n\
--xx\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>html part</p>\r\n--xx--\r\n";

struct Setup {
    w: Workspace,
    mx: u16,
    imap: u16,
    imaps: u16,
    pop3: u16,
    pop3s: u16,
    server: common::Process,
    _dns: common::Process,
}

/// A server with two mailboxes; `me` has received FIRST and SECOND through the MX.
fn setup() -> Setup {
    let (mx, imap, pop3) = (free_port(), free_port(), free_port());
    let (imaps, pop3s) = (free_port(), free_port());
    let w = Workspace::new("");
    let (dns, dns_port) = common::quiet_dns(w.path());
    w.write_spec(&format!(
        r#"
[listeners]
mx = "127.0.0.1:{mx}"
imap = "127.0.0.1:{imap}"
pop3 = "127.0.0.1:{pop3}"
imaps = "127.0.0.1:{imaps}"
pop3s = "127.0.0.1:{pop3s}"

[dns]
resolver = "127.0.0.1:{dns_port}"

[domains."example.test".aliases.me]
mailbox = {{ password = {{ hash = "{TEST_HASH}" }} }}

[domains."example.test".aliases.other]
mailbox = {{ password = {{ hash = "{TEST_HASH}" }} }}
"#
    ));
    let server = w.serve(mx);
    for (i, message) in [FIRST, SECOND].iter().enumerate() {
        send(&w, mx, &format!("sent-{}.eml", i + 1), message);
        // In order: clients see the first message as sequence number 1.
        assert!(
            wait_for(Duration::from_secs(20), || w.inbox("me@example.test").len()
                == i + 1),
            "not delivered: {}",
            server.log_text()
        );
    }
    Setup {
        w,
        mx,
        imap,
        imaps,
        pop3,
        pop3s,
        server,
        _dns: dns,
    }
}

/// Sends `message` byte for byte through the MX to me@example.test (kept in `name`).
fn send(w: &Workspace, mx: u16, name: &str, message: &str) {
    let file = w.path().join(name);
    std::fs::write(&file, message).unwrap();
    python_peer_run(
        "send_file.py",
        &[
            &mx.to_string(),
            "alice@sender.test",
            "me@example.test",
            file.to_str().unwrap(),
        ],
        w.path(),
    )
    .ok();
}

#[test]
fn imaplib_works_a_mailbox_the_mx_delivered_to() {
    let Setup {
        w,
        mx,
        imap,
        server,
        ..
    } = setup();
    let run = python_peer_run(
        "imap_session.py",
        &[
            &imap.to_string(),
            &mx.to_string(),
            "me@example.test",
            "quickstart",
            "other@example.test",
        ],
        w.path(),
    );
    println!("{}", run.stdout);
    assert!(
        run.code == 0 && run.stdout.contains("all done"),
        "imaplib session failed:\n{}\n{}\nserver log:\n{}",
        run.stdout,
        run.stderr,
        server.log_text()
    );
}

/// Every message file in a maildir folder (new and cur).
fn maildir(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    ["new", "cur"]
        .iter()
        .flat_map(|sub| std::fs::read_dir(dir.join(sub)).into_iter().flatten())
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect()
}

/// A new message `name` in the local maildir folder `dir`, made if it is not there.
fn file_locally(dir: &std::path::Path, name: &str, text: &str) {
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::write(dir.join("new").join(name), text).unwrap();
}

#[test]
fn mbsync_syncs_both_ways_then_incrementally() {
    let s = setup();
    let local = s.w.path().join("mail");
    std::fs::create_dir_all(&local).unwrap();
    let config = s.w.path().join("mbsyncrc");
    std::fs::write(
        &config,
        format!(
            "IMAPAccount ferry\nHost 127.0.0.1\nPort {imap}\nUser me@example.test\nPass quickstart\n\
             SSLType STARTTLS\nCertificateFile {cert}\n\n\
             IMAPStore remote\nAccount ferry\n\n\
             MaildirStore local\nPath {local}/\nInbox {local}/INBOX\nSubFolders Verbatim\n\n\
             Channel sync\nFar :remote:\nNear :local:\nPatterns *\nCreate Both\nExpunge Both\nSyncState *\n",
            imap = s.imap,
            cert = s.w.data_dir().join("self-signed.crt").display(),
            local = local.display(),
        ),
    )
    .unwrap();
    let mbsync = || {
        let out = std::process::Command::new("mbsync")
            .arg("-c")
            .arg(&config)
            .arg("-a")
            .output()
            .expect("mbsync (isync) must be installed (scripts/test installs it)");
        let run = common::Run::from(out);
        assert_eq!(
            run.code,
            0,
            "mbsync failed:\n{}\n{}\nserver log:\n{}",
            run.stdout,
            run.stderr,
            s.server.log_text()
        );
        run
    };

    // First sync: every folder and both messages come down.
    mbsync();
    let inbox = maildir(&local.join("INBOX"));
    assert_eq!(inbox.len(), 2, "{inbox:?}");
    // Maildir keeps Unix line ends and mbsync adds its X-TUID tracking header; the
    // content is otherwise the same.
    let bodies: Vec<Vec<u8>> = inbox
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            let kept: Vec<&str> = text
                .split_inclusive('\n')
                .filter(|l| !l.starts_with("X-TUID:"))
                .collect();
            kept.concat().into_bytes()
        })
        .collect();
    let unix = |m: &str| m.replace("\r\n", "\n").into_bytes();
    assert!(
        bodies.iter().any(|b| b.ends_with(&unix(FIRST))),
        "{:?}",
        bodies
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect::<Vec<_>>()
    );
    assert!(bodies.iter().any(|b| b.ends_with(&unix(SECOND))));
    for folder in ["Sent", "Drafts", "Trash", "Junk", "Archive"] {
        assert!(local.join(folder).is_dir(), "{folder} not created locally");
    }

    // Local changes go up: a new draft, a flag, a new folder with a message.
    let draft = "From: me@example.test\nSubject: written offline\n\nsee you\n";
    std::fs::write(local.join("Drafts/new/1.local:2,D"), draft).unwrap();
    let flagged = &inbox[0];
    let name = flagged.file_name().unwrap().to_string_lossy().into_owned();
    let base = name.split(":2,").next().unwrap().to_string();
    std::fs::rename(
        flagged,
        local.join("INBOX/cur").join(format!("{base}:2,FS")),
    )
    .unwrap();
    file_locally(
        &local.join("Projects"),
        "2.local:2,S",
        "Subject: filed\n\nkeep this\n",
    );
    // A folder tree: Projects/2026 below Projects (SubFolders Verbatim: a directory
    // inside it), which the server must keep as a child, not flatten or refuse.
    file_locally(
        &local.join("Projects/2026"),
        "3.local:2,S",
        "Subject: this year\n\nfiled deeper\n",
    );
    // And the server changes meanwhile: a third message arrives.
    let third = "From: Bob <bob@sender.test>\r\nSubject: third\r\n\r\nnumber three\r\n";
    send(&s.w, s.mx, "sent-3.eml", third);
    assert!(wait_for(Duration::from_secs(20), || s
        .w
        .inbox("me@example.test")
        .len()
        == 3));
    mbsync();

    // Both sides now agree; check the server through IMAP (imaplib).
    let check = common::python_peer_run(
        "imap_expect.py",
        &[
            &s.imap.to_string(),
            "me@example.test",
            "quickstart",
            "Drafts=1",
            "Projects=1",
            "Projects/2026=1",
            "INBOX=3",
            "INBOX:FLAGGED=1",
        ],
        s.w.path(),
    );
    assert_eq!(check.code, 0, "{}\n{}", check.stdout, check.stderr);
    assert_eq!(
        maildir(&local.join("INBOX")).len(),
        3,
        "the new message came down"
    );

    // A third run changes nothing.
    mbsync();
    assert_eq!(maildir(&local.join("INBOX")).len(), 3);
    assert_eq!(maildir(&local.join("Drafts")).len(), 1);
    assert_eq!(maildir(&local.join("Projects/2026")).len(), 1);
}

#[test]
fn poplib_reads_and_deletes_with_the_maildrop_locked() {
    let s = setup();
    let run = python_peer_run(
        "pop3_session.py",
        &[&s.pop3.to_string(), "me@example.test", "quickstart"],
        s.w.path(),
    );
    println!("{}", run.stdout);
    assert!(
        run.code == 0 && run.stdout.contains("all done"),
        "poplib session failed:\n{}\n{}\nserver log:\n{}",
        run.stdout,
        run.stderr,
        s.server.log_text()
    );
    // QUIT removed the message it deleted; IMAP agrees.
    assert_eq!(s.w.inbox("me@example.test").len(), 1);
}

#[test]
fn fetchmail_downloads_everything_over_pop3_with_stls() {
    let s = setup();
    let out_dir = s.w.path().join("fetched");
    std::fs::create_dir_all(&out_dir).unwrap();
    let rc = s.w.path().join("fetchmailrc");
    std::fs::write(
        &rc,
        format!(
            "poll 127.0.0.1 with proto POP3 port {port}\n  user \"me@example.test\" there with password \"quickstart\" is \"root\" here\n  \
             options sslproto 'TLS1.2+' no sslcertck fetchall\n  mda \"/bin/sh -c 'cat > {dir}/msg-$$'\"\n",
            port = s.pop3,
            dir = out_dir.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = std::process::Command::new("fetchmail")
        .args(["-f"])
        .arg(&rc)
        .args(["--nodetach", "--nosyslog", "-v"])
        .env("HOME", s.w.path())
        .output()
        .expect("fetchmail must be installed (scripts/test installs it)");
    let run = common::Run::from(out);
    let fetched: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .collect();
    assert_eq!(
        fetched.len(),
        2,
        "fetchmail:\n{}\n{}",
        run.stdout,
        run.stderr
    );
    assert!(fetched.iter().any(|m| m.contains("Subject: first message")));
    assert!(fetched.iter().any(|m| m.contains("plain part")));
    // fetchmail deletes what it fetched (no `keep`): the maildrop is empty now.
    assert!(
        wait_for(Duration::from_secs(5), || s
            .w
            .inbox("me@example.test")
            .is_empty()),
        "{}",
        run.stderr
    );
}

#[test]
fn sessions_of_one_mailbox_hear_of_each_others_changes_and_implicit_tls_works() {
    let s = setup();
    let run = python_peer_run(
        "imap_two_sessions.py",
        &[
            &s.imap.to_string(),
            &s.imaps.to_string(),
            &s.pop3s.to_string(),
            "me@example.test",
            "quickstart",
        ],
        s.w.path(),
    );
    println!("{}", run.stdout);
    assert!(
        run.code == 0 && run.stdout.contains("all done"),
        "{}\n{}\nserver log:\n{}",
        run.stdout,
        run.stderr,
        s.server.log_text()
    );
}

#[test]
fn imap_and_pop3_connections_are_limited_per_address() {
    use std::io::{BufRead, BufReader};
    let (imap, pop3) = (free_port(), free_port());
    let w = Workspace::new(&format!(
        r#"
[listeners]
imap = "127.0.0.1:{imap}"
pop3 = "127.0.0.1:{pop3}"

[limits]
connections_per_minute = 0
connections_per_ip = 2

[domains."example.test".aliases.me]
mailbox = {{ password = {{ hash = "{TEST_HASH}" }} }}
"#
    ));
    let _server = w.serve(imap);
    for (port, refused) in [
        (imap, "* BYE Too many open connections"),
        (pop3, "-ERR [SYS/TEMP] Too many open connections"),
    ] {
        // The harness's readiness probe may still hold a place for a moment.
        std::thread::sleep(Duration::from_millis(200));
        let greet = |port: u16| {
            let conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut line = String::new();
            BufReader::new(conn.try_clone().unwrap())
                .read_line(&mut line)
                .unwrap();
            (conn, line)
        };
        let (_a, first) = greet(port);
        let (_b, second) = greet(port);
        assert!(
            !first.contains("Too many") && !second.contains("Too many"),
            "{first}{second}"
        );
        let (_c, third) = greet(port);
        assert!(third.starts_with(refused), "{third}");
    }
}

/// The new-connection rate counts per address across listeners; a refused client is
/// told why (and the log says so, once); an address that logged in lately is not held
/// to it: a client reconnecting all day is not a flood.
#[test]
fn the_connection_rate_says_why_counts_per_address_and_spares_clients_that_logged_in() {
    use common::imap::{Client, Server};
    let pop3 = free_port();
    let server = Server::with(
        &["me@example.test"],
        &format!("pop3 = \"127.0.0.1:{pop3}\"\n\n[limits]\nconnections_per_minute = 10\n"),
    );
    // 127.0.0.2: five POP3 connections and five IMAP ones are the ten allowed.
    for _ in 0..5 {
        let c = common::connect_from("127.0.0.2", pop3);
        drop(c);
    }
    for _ in 0..5 {
        let c = Client::connect_from("127.0.0.2", server.port);
        assert!(c.greeting.starts_with("* OK"), "{}", c.greeting);
    }
    for _ in 0..3 {
        let refused = Client::connect_from("127.0.0.2", server.port);
        assert_eq!(
            refused.greeting,
            "* BYE Too many new connections from your address; slow down"
        );
    }
    // 127.0.0.3 logs in once, then reconnects far past the rate.
    let first = Client::login_from("127.0.0.3", server.port, "me@example.test");
    drop(first);
    for i in 0..20 {
        let c = Client::connect_from("127.0.0.3", server.port);
        assert!(
            c.greeting.starts_with("* OK"),
            "connection {i}: {}",
            c.greeting
        );
    }
    let log = server.process.log_text();
    let told = log
        .lines()
        .filter(|l| l.contains("connection refused") && l.contains("127.0.0.2"))
        .count();
    assert_eq!(told, 1, "{log}");
}

/// A crowd of LOGINs from many addresses, for accounts that do not exist (the decoy hash
/// costs what a real one does: argon2id's 19 MiB): checked a few at a time, so memory
/// holds a few checks' worth, not one per login (before: 60 such logins took 1.2 GB). A
/// real user still logs in afterwards.
#[test]
fn a_crowd_of_logins_is_checked_a_few_at_a_time() {
    let server = common::imap::Server::start(&["me@example.test"]);
    let before = server.process.memory_kib("VmHWM");
    let crowd = 16;
    let handles: Vec<_> = (0..crowd)
        .map(|i| {
            let port = server.port;
            std::thread::spawn(move || {
                let mut c = common::imap::Client::connect_from(&format!("127.0.3.{}", i + 2), port);
                c.starttls();
                c.run("LOGIN nobody@example.test wrong")
            })
        })
        .collect();
    for h in handles {
        let got = h.join().expect("client");
        common::imap::expect(&got, &["T NO …"]);
    }
    let grew = server.process.memory_kib("VmHWM").saturating_sub(before);
    assert!(
        grew < 100 * 1024,
        "{crowd} logins at once grew the peak by {grew} KiB"
    );
    let mut c = server.login("me@example.test");
    common::imap::expect(&c.run("NOOP"), &["T OK …"]);
}

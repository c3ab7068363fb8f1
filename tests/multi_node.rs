//! Two `serve` nodes on one MongoDB-wire store (secantusd) and one redis-server, each with
//! its own listeners and data dir and one shared spec file: an apply through one is
//! served by both, status lists both, one backup is made for both, and the connection
//! rate limit is one limit across them.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    Process, Workspace, free_port, python_peer, quiet_dns, rcpt_probe, received, wait_for,
};

/// One node: its own spec directory holding node.toml and a link to the shared spec.
struct Node {
    w: Workspace,
    name: &'static str,
    mx: u16,
}

fn node(name: &'static str, shared: &Path) -> Node {
    node_with(name, shared, "")
}

/// A node whose node.toml also holds `extra` (its own [delivery] relay, say).
fn node_with(name: &'static str, shared: &Path, extra: &str) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec");
    std::fs::create_dir(&spec).unwrap();
    let mx = free_port();
    std::fs::write(
        spec.join("node.toml"),
        format!(
            "[server]\nhostname = \"mx.example.test\"\ndata_dir = \"../data\"\nmaster_key = {{ file = \"master.key\" }}\n\n[listeners]\nmx = \"127.0.0.1:{mx}\"\n{extra}"
        ),
    )
    .unwrap();
    std::os::unix::fs::symlink(shared.join("shared.toml"), spec.join("shared.toml")).unwrap();
    for secret in ["mongo.url", "redis.url", "backup.key", "master.key"] {
        std::fs::copy(shared.join(secret), spec.join(secret)).unwrap();
    }
    Node {
        w: Workspace { dir, spec },
        name,
        mx,
    }
}

impl Node {
    fn serve(&self) -> Process {
        self.w
            .serve_with(self.mx, &[], &[("FERRYMAIL_NODE", self.name)])
    }

    fn accepts(&self, to: &str) -> bool {
        !rcpt_probe(self.mx, "x@sender.test", to).contains("<** ")
    }

    /// The first line the MX sends to a new connection.
    fn greeting(&self) -> String {
        let stream = std::net::TcpStream::connect(("127.0.0.1", self.mx)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut line = String::new();
        let _ = BufReader::new(stream).read_line(&mut line);
        line
    }
}

/// The alias line of me@example.test's mailbox (password "quickstart").
fn me_mailbox() -> String {
    format!(
        "me = {{ mailbox = {{ password = {{ hash = \"{}\" }} }} }}",
        common::TEST_HASH
    )
}

/// The [backups] part of the first test's shared spec.
fn backups_to(dir: &Path) -> String {
    format!(
        "[backups]\nschedule = \"0 3 * * *\"\ntarget = \"file://{}\"\nencryption_key = {{ file = \"backup.key\" }}\n",
        dir.display()
    )
}

/// The spec every node shares. The Redis URL holds no password, so it is written out;
/// MongoDB's is read from a file, as a URL with credentials must be.
fn shared_spec(redis_url: &str, dns: u16, extra: &str, aliases: &str) -> String {
    format!(
        r#"[store]
kind = "mongodb"
url = {{ file = "mongo.url" }}
database = "cluster"

[cache]
kind = "redis"
url = "{redis_url}"

[limits]
connections_per_minute = 40

[dns]
resolver = "127.0.0.1:{dns}"

{extra}
[domains."example.test".aliases]
{aliases}
"#
    )
}

#[test]
fn two_nodes_share_one_store_one_cache_and_one_limit() {
    let c = cluster();
    let shared = &c.dir;
    let backups = shared.path().join("backups");
    let write_shared = |aliases: &str| {
        std::fs::write(
            shared.path().join("shared.toml"),
            shared_spec(&c.redis_url, c.dns, &backups_to(&backups), aliases),
        )
        .unwrap()
    };
    write_shared(r#"first = { forward = ["a@elsewhere.test"] }"#);

    let a = node("node-a", shared.path());
    let b = node("node-b", shared.path());
    let server_a = a.serve();
    let server_b = b.serve();
    let logs = || {
        format!(
            "node a:\n{}\nnode b:\n{}",
            server_a.log_text(),
            server_b.log_text()
        )
    };
    for n in [&a, &b] {
        assert!(n.accepts("first@example.test"), "{}: {}", n.name, logs());
        assert!(!n.accepts("second@example.test"), "{}", n.name);
    }

    // An apply through node a's spec: both nodes route the new alias.
    write_shared(
        r#"first = { forward = ["a@elsewhere.test"] }
second = { forward = ["b@elsewhere.test"] }"#,
    );
    let applied = a.w.run(&["apply", "--auto-approve"]);
    applied.ok();
    let started = Instant::now();
    assert!(
        wait_for(Duration::from_secs(10), || a.accepts("second@example.test")
            && b.accepts("second@example.test")),
        "{}",
        logs()
    );
    println!(
        "the new alias was routable on both nodes {} ms after apply returned",
        started.elapsed().as_millis()
    );

    // Status, from either node, lists both; the store is the shared one.
    let listed = wait_for(Duration::from_secs(15), || {
        let s = b.w.run(&["status"]).stdout;
        s.contains("node-a (ferrymail") && s.contains("node-b (ferrymail")
    });
    let status = b.w.run(&["status"]).stdout;
    assert!(listed, "{status}");
    assert!(status.contains("nodes: 2"), "{status}");
    assert!(
        status.contains("store: mongodb database \"cluster\" on 127.0.0.1:"),
        "{status}"
    );
    assert!(!status.contains("mongodb://"), "no URL in status: {status}");

    // A second process calling itself node-a, from another data dir, is refused: it would
    // share node a's leases and locks.
    let twin = node("node-a", shared.path());
    let refused = std::process::Command::new(common::BIN)
        .current_dir(twin.w.path())
        .arg("--spec")
        .arg(&twin.w.spec)
        .arg("serve")
        .env("FERRYMAIL_NODE", "node-a")
        .env_remove("FERRYMAIL_SPEC")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("another node named \"node-a\" is running"),
        "{stderr}"
    );

    // The first backup is made at start when there is none: by one node, not both.
    assert!(
        wait_for(Duration::from_secs(30), || b
            .w
            .run(&["backup", "list"])
            .stdout
            .lines()
            .any(|l| l.trim_start().starts_with("20"))),
        "no backup: {}\n{}",
        b.w.run(&["backup", "list"]).stdout,
        logs()
    );
    std::thread::sleep(Duration::from_secs(5));
    let objects = std::fs::read_dir(&backups)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".age"))
        .count();
    let records = std::fs::read_dir(&backups)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .count();
    assert_eq!((objects, records), (1, 1), "{}", logs());
    // Backup ids are timestamps: two nodes starting in the same second would write one
    // object twice, so count the runs themselves.
    assert_eq!(logs().matches("backup starting").count(), 1, "{}", logs());

    // One rate limit: node a takes new connections until it refuses, then node b
    // refuses the very next one (with per-node counting it would still have room).
    let mut taken_by_a = 0;
    loop {
        let line = a.greeting();
        if line.starts_with("421") {
            break;
        }
        assert!(line.starts_with("220"), "{line}");
        taken_by_a += 1;
        assert!(taken_by_a <= 40, "node a never refused");
    }
    let line = b.greeting();
    assert!(
        line.starts_with("421") && line.contains("Too many new connections"),
        "node b took a connection over the shared limit: {line}"
    );
    println!("node a took {taken_by_a} connections before the shared limit of 40 refused both");
}

/// The shared setup: MongoDB, Redis, a quiet DNS and the secrets, in one directory.
struct Cluster {
    dir: tempfile::TempDir,
    dns: u16,
    redis_url: String,
    _servers: Vec<Process>,
}

fn cluster() -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let (mongo, mongo_url) = common::mongodb(dir.path());
    let (redis, redis_url) = common::redis(dir.path());
    let (dns_server, dns) = quiet_dns(dir.path());
    std::fs::write(dir.path().join("mongo.url"), &mongo_url).unwrap();
    std::fs::write(dir.path().join("redis.url"), &redis_url).unwrap();
    std::fs::write(
        dir.path().join("backup.key"),
        "a long enough backup passphrase for the test\n",
    )
    .unwrap();
    // Every node seals and opens the shared mailboxes with this key.
    std::fs::write(
        dir.path().join("master.key"),
        "the cluster's master key, at least 32 characters\n",
    )
    .unwrap();
    Cluster {
        dir,
        dns,
        redis_url,
        _servers: vec![mongo, redis, dns_server],
    }
}

/// A message node a accepted (250) and was delivering when it was killed is delivered by
/// node b: the queue is in the shared store, and once node a's heartbeat has been silent
/// for a minute its lease is node b's to take, long before it would expire (ten minutes).
#[test]
fn mail_accepted_by_a_killed_node_is_delivered_by_another() {
    let c = cluster();
    std::fs::write(
        c.dir.path().join("shared.toml"),
        shared_spec(
            &c.redis_url,
            c.dns,
            "",
            r#"hello = { forward = ["friend@elsewhere.test"] }"#,
        ),
    )
    .unwrap();
    // Node a relays to a tarpit: it takes the delivery and hangs in it. Node b relays to
    // a real sink.
    let (tarpit_port, held) = common::tarpit();
    let sink_port = free_port();
    let sink_dir = c.dir.path().join("sink");
    let _sink = python_peer(
        "sink.py",
        &[&sink_port.to_string(), sink_dir.to_str().unwrap()],
        c.dir.path(),
    );
    let a = node_with(
        "node-a",
        c.dir.path(),
        &format!("\n[delivery]\nrelay = \"127.0.0.1:{tarpit_port}\"\n"),
    );
    let b = node_with(
        "node-b",
        c.dir.path(),
        &format!("\n[delivery]\nrelay = \"127.0.0.1:{sink_port}\"\n"),
    );
    let mut server_a = a.serve();
    let server_b = b.serve();
    let sent = common::swaks(
        a.mx,
        &[
            "--from",
            "alice@sender.test",
            "--to",
            "hello@example.test",
            "--body",
            "kept safe",
        ],
    );
    assert!(sent.stdout.contains("<-  250 2.0.0"), "{}", sent.stdout);
    // Node a is delivering it (into the tarpit) when it dies.
    assert!(
        wait_for(Duration::from_secs(10), || !held.lock().unwrap().is_empty()),
        "node a never tried to deliver: {}",
        server_a.log_text()
    );
    server_a.kill_hard();
    let killed_at = Instant::now();
    assert!(
        wait_for(Duration::from_secs(150), || !received(&sink_dir).is_empty()),
        "not delivered by node b: {}",
        server_b.log_text()
    );
    let got = received(&sink_dir);
    assert_eq!(got.len(), 1);
    assert!(got[0].content.contains("kept safe"));
    assert_eq!(got[0].rcpt_to, vec!["friend@elsewhere.test".to_string()]);
    println!(
        "node b delivered node a's message {} s after node a was killed",
        killed_at.elapsed().as_secs()
    );
    // Delivered once: the queue is empty for both.
    let queue = b.w.run(&["queue", "list"]);
    assert!(
        queue.ok().stdout.contains("The queue is empty."),
        "{}",
        queue.stdout
    );
}

/// A mailbox kept in MongoDB is one mailbox for every node: mail accepted by node a is
/// read over IMAP on node b, and flags set through node b show through node a.
#[test]
fn a_mailbox_is_served_by_every_node() {
    let c = cluster();
    std::fs::write(
        c.dir.path().join("shared.toml"),
        shared_spec(&c.redis_url, c.dns, "", &me_mailbox()),
    )
    .unwrap();
    let (imap_a, imap_b) = (free_port(), free_port());
    let (caldav_a, caldav_b, sieve_a) = (free_port(), free_port(), free_port());
    let a = node_with(
        "node-a",
        c.dir.path(),
        &format!(
            "imap = \"127.0.0.1:{imap_a}\"\ncaldav = \"127.0.0.1:{caldav_a}\"\nmanagesieve = \"127.0.0.1:{sieve_a}\"\n"
        ),
    );
    let b = node_with(
        "node-b",
        c.dir.path(),
        &format!("imap = \"127.0.0.1:{imap_b}\"\ncaldav = \"127.0.0.1:{caldav_b}\"\n"),
    );
    let server_a = a.serve();
    let server_b = b.serve();
    let sent = common::swaks(
        a.mx,
        &[
            "--from",
            "alice@sender.test",
            "--to",
            "me@example.test",
            "--header",
            "Subject: for every node",
        ],
    );
    assert!(sent.stdout.contains("<-  250 2.0.0"), "{}", sent.stdout);
    let state = |port: u16, flags: &[&str]| -> serde_json::Value {
        let mut args = vec![
            port.to_string(),
            "me@example.test".into(),
            "quickstart".into(),
        ];
        args.extend(flags.iter().map(|f| f.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = common::python_peer_run("imap_state.py", &args, c.dir.path());
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {run:?}"))
    };
    let delivered = wait_for(Duration::from_secs(30), || {
        state(imap_b, &[])["INBOX"]["messages"]
            .as_array()
            .is_some_and(|m| m.len() == 1)
    });
    assert!(
        delivered,
        "node b does not show the message: {}\n{}",
        server_a.log_text(),
        server_b.log_text()
    );
    let on_b = state(imap_b, &["INBOX:1:\\Flagged"]);
    let on_a = state(imap_a, &[]);
    assert_eq!(
        on_a["INBOX"], on_b["INBOX"],
        "one mailbox, seen alike from both nodes"
    );
    let message = &on_a["INBOX"]["messages"][0];
    assert_eq!(message[1], "for every node");
    assert!(
        message[3]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "\\Flagged"),
        "{message}"
    );
    // A client IDLEing on node b hears of mail that node a takes in.
    let idle = common::python_peer_run(
        "imap_idle.py",
        &[
            &imap_b.to_string(),
            &a.mx.to_string(),
            "me@example.test",
            "quickstart",
        ],
        c.dir.path(),
    );
    assert!(
        idle.stdout.starts_with("EXISTS after"),
        "{idle:?}\n{}\n{}",
        server_a.log_text(),
        server_b.log_text()
    );
    println!("IDLE on node b: {}", idle.stdout.trim());
    // The account's calendar too: an event PUT through node a is seen through node b,
    // with a new ctag and sync token.
    let dav = |port: u16, method: &str, path: &str, headers: &[&str], body: &str| {
        let mut cmd = std::process::Command::new("curl");
        cmd.args([
            "-sk",
            "--max-time",
            "20",
            "-u",
            "me@example.test:quickstart",
        ])
        .args(["-X", method]);
        for h in headers {
            cmd.args(["-H", h]);
        }
        if !body.is_empty() {
            cmd.args(["--data-binary", body]);
        }
        let out = cmd
            .arg(format!("https://127.0.0.1:{port}{path}"))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let calendar = "/dav/calendars/me@example.test/calendar/";
    let ctag = |port: u16| {
        let reply = dav(
            port,
            "PROPFIND",
            calendar,
            &["Depth: 0"],
            "<d:propfind xmlns:d=\"DAV:\" xmlns:cs=\"http://calendarserver.org/ns/\">\
             <d:prop><cs:getctag/><d:sync-token/></d:prop></d:propfind>",
        );
        let start = reply.find("<cs:getctag>").map(|i| i + 12);
        let end = reply.find("</cs:getctag>");
        match (start, end) {
            (Some(s), Some(e)) => reply[s..e].to_string(),
            _ => panic!("no ctag: {reply}"),
        }
    };
    let before = ctag(caldav_b);
    assert_eq!(before, ctag(caldav_a));
    let event = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\nBEGIN:VEVENT\r\n\
                 UID:both-nodes\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20260301T100000Z\r\n\
                 SUMMARY:Seen everywhere\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
    dav(
        caldav_a,
        "PUT",
        &format!("{calendar}both.ics"),
        &["Content-Type: text/calendar"],
        event,
    );
    let after = ctag(caldav_b);
    assert_ne!(after, before, "node b sees the new ctag");
    let sync = dav(
        caldav_b,
        "REPORT",
        calendar,
        &["Depth: 1"],
        &format!(
            "<d:sync-collection xmlns:d=\"DAV:\"><d:sync-token>{before}</d:sync-token>\
             <d:sync-level>1</d:sync-level><d:prop><d:getetag/></d:prop></d:sync-collection>"
        ),
    );
    assert!(sync.contains(&format!("{calendar}both.ics")), "{sync}");
    assert!(
        sync.contains(&format!("<d:sync-token>{after}</d:sync-token>")),
        "{sync}"
    );
    assert!(
        dav(caldav_b, "GET", &format!("{calendar}both.ics"), &[], "")
            .contains("SUMMARY:Seen everywhere")
    );
    // A Sieve script uploaded through node a files what node b takes in.
    let run = common::python_peer_run(
        "sievelib_session.py",
        &[&sieve_a.to_string(), "me@example.test", "quickstart"],
        c.dir.path(),
    );
    assert!(run.stdout.contains("all done"), "{run:?}");
    let sent = common::swaks(
        b.mx,
        &[
            "--from",
            "alice@sender.test",
            "--to",
            "me@example.test",
            "--header",
            "Subject: [rust] filtered",
        ],
    );
    assert!(sent.stdout.contains("<-  250 2.0.0"), "{}", sent.stdout);
    assert!(
        wait_for(Duration::from_secs(30), || {
            state(imap_a, &[])["Lists"]["messages"]
                .as_array()
                .is_some_and(|m| m.len() == 1)
        }),
        "{}\n{}",
        server_a.log_text(),
        server_b.log_text()
    );
    // Nothing of it in either node's data dir: the mailbox lives in the store.
    for n in [&a, &b] {
        assert!(!n.w.data_dir().join("mailboxes").exists(), "{}", n.name);
    }
}

/// One certificate for the cluster: the node holding the ACME lock orders it, the CA's
/// HTTP-01 check reaches the other node (which answers from the shared store), and both
/// serve the one certificate issued.
#[test]
fn one_node_orders_the_certificate_and_every_node_serves_it() {
    let c = cluster();
    let zone = common::zone("example.test", "mx A 127.0.0.1");
    let zone_dir = c.dir.path().join("zone");
    std::fs::create_dir_all(&zone_dir).unwrap();
    let (_knot, dns) = common::knot(&zone_dir, &[("example.test", &zone)]);
    let (http_a, http_b, https_a, https_b) = (free_port(), free_port(), free_port(), free_port());
    let (imaps_a, imaps_b) = (free_port(), free_port());
    // The CA validates at node b's http port only.
    let ca = common::pebble(c.dir.path(), dns, http_b, https_b);
    let acme = format!(
        "[tls]\nmode = \"acme\"\n[tls.acme]\ncontact = \"admin@example.test\"\ndirectory = \"{}\"\nchallenge = \"http-01\"\nca_file = \"{}\"\n",
        ca.directory,
        ca.ca_file.display()
    );
    std::fs::write(
        c.dir.path().join("shared.toml"),
        shared_spec(
            &c.redis_url,
            dns,
            &acme,
            r#"hello = { forward = ["a@elsewhere.test"] }"#,
        ),
    )
    .unwrap();
    let listeners = |http: u16, https: u16, imaps: u16| {
        format!(
            "http = \"127.0.0.1:{http}\"\nhttps = \"127.0.0.1:{https}\"\nimaps = \"127.0.0.1:{imaps}\"\n"
        )
    };
    let a = node_with("node-a", c.dir.path(), &listeners(http_a, https_a, imaps_a));
    let b = node_with("node-b", c.dir.path(), &listeners(http_b, https_b, imaps_b));
    // Node a is made the holder of the ACME lock before anyone starts, so the node that
    // orders is not the one the CA asks.
    let redis_url = std::fs::read_to_string(c.dir.path().join("redis.url")).unwrap();
    let cache = ferrymail::cache::RedisCache::connect(&redis_url).unwrap();
    use ferrymail::cache::Cache;
    assert!(
        cache
            .lock("acme", "node-a", Duration::from_secs(120))
            .is_some()
    );
    let server_b = b.serve();
    let server_a = a.serve();
    let logs = || {
        format!(
            "node a:\n{}\nnode b:\n{}\npebble:\n{}",
            server_a.log_text(),
            server_b.log_text(),
            ca.process.log_text()
        )
    };
    let issued = |p: &Process| {
        p.log_text()
            .matches("certificate issued and served")
            .count()
    };
    assert!(
        wait_for(Duration::from_secs(90), || issued(&server_a) == 1),
        "node a did not get the certificate: {}",
        logs()
    );
    // Node b serves it from the store (it looks every few seconds).
    let served_alike = wait_for(Duration::from_secs(30), || {
        let (fa, fb) = (
            common::tls_fingerprint(c.dir.path(), imaps_a),
            common::tls_fingerprint(c.dir.path(), imaps_b),
        );
        !fa.is_empty() && fa == fb
    });
    assert!(
        served_alike,
        "the nodes serve different certificates: {}",
        logs()
    );
    assert_eq!(issued(&server_b), 0, "node b ordered too: {}", logs());
    let listed = b.w.run(&["certificates", "list"]);
    assert!(
        listed.ok().stdout.contains("mx.example.test"),
        "{}",
        listed.stdout
    );
}

/// Beside a MongoDB store, a backup holds the database: wiped and restored, the same
/// directory, DKIM key and mail come back (with a new UIDVALIDITY), and a restore into a
/// database that holds data is refused.
#[test]
fn a_backup_holds_the_mongodb_database() {
    let c = cluster();
    let backups = c.dir.path().join("backups");
    std::fs::write(
        c.dir.path().join("shared.toml"),
        shared_spec(&c.redis_url, c.dns, &backups_to(&backups), &me_mailbox()),
    )
    .unwrap();
    let a = node("node-a", c.dir.path());
    let mut server = a.serve();
    let sent = common::swaks(
        a.mx,
        &[
            "--from",
            "alice@sender.test",
            "--to",
            "me@example.test",
            "--header",
            "Subject: kept",
        ],
    );
    assert!(sent.stdout.contains("<-  250 2.0.0"), "{}", sent.stdout);
    let url = std::fs::read_to_string(c.dir.path().join("mongo.url")).unwrap();
    let key = || {
        ferrymail::mailbox::MasterKey::new(b"the cluster's master key, at least 32 characters")
            .unwrap()
    };
    let mailbox = || {
        let store = ferrymail::store::MongoStore::connect(&url, "cluster").unwrap();
        let boxes = ferrymail::mailbox::Mailboxes::in_mongo(
            &a.w.data_dir(),
            key(),
            ferrymail::store::Store::connection(&store).unwrap(),
        )
        .unwrap();
        let mb = boxes.open("me@example.test").unwrap();
        let inbox = mb.folder("INBOX").unwrap().unwrap();
        let bodies: Vec<String> = mb
            .messages(&inbox)
            .unwrap()
            .iter()
            .map(|m| String::from_utf8(mb.body(&inbox, m.uid).unwrap().unwrap()).unwrap())
            .collect();
        (inbox.uidvalidity, bodies)
    };
    assert!(
        wait_for(Duration::from_secs(20), || mailbox().1.len() == 1),
        "{}",
        server.log_text()
    );
    let (validity, before) = mailbox();
    let records = a.w.run(&["dns", "records"]).ok().stdout.clone();
    server.terminate();
    let made = a.w.run(&["backup", "create"]);
    made.ok();

    // The database is lost, and the data dir with it.
    let dropped = std::process::Command::new("python3")
        .args([
            "-c",
            &format!("import pymongo; pymongo.MongoClient('{url}').drop_database('cluster')"),
        ])
        .status()
        .unwrap();
    assert!(dropped.success());
    std::fs::remove_dir_all(a.w.data_dir()).unwrap();
    let restored = a.w.run(&["backup", "restore", "latest"]);
    restored.ok();
    assert!(
        restored
            .stdout
            .contains("The database \"cluster\" was loaded"),
        "{}",
        restored.stdout
    );
    assert!(
        restored
            .stdout
            .contains("calendars and address books a new sync token"),
        "{}",
        restored.stdout
    );
    a.w.run(&["plan", "--detailed-exitcode", "--target", "store"])
        .code(0);
    assert_eq!(
        a.w.run(&["dns", "records"]).ok().stdout,
        records,
        "the same DKIM key"
    );
    let (renewed, after) = mailbox();
    assert_eq!(after, before);
    assert!(renewed > validity, "UIDVALIDITY {renewed} after {validity}");
    assert!(
        !a.w.data_dir().join("mongodb").exists(),
        "the dump is not left behind"
    );

    // A second restore meets a database that holds data: refused, unless --force
    // replaces it.
    let again =
        a.w.run(&["backup", "restore", "latest", "--to", "elsewhere"]);
    again.code(1);
    assert!(
        again.stderr.contains("already holds data"),
        "{}",
        again.stderr
    );
    a.w.run(&["backup", "restore", "latest", "--force"]).ok();
    assert_eq!(mailbox().1, before);
}

/// `migrate` copies a live SQLite store into MongoDB and back; the spec plans nothing
/// against either copy, and a target that holds anything is refused.
#[test]
fn migrate_copies_the_store_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let (_mongo, url) = common::mongodb(dir.path());
    let w = Workspace::new("");
    std::fs::write(w.path().join("mongo.url"), &url).unwrap();
    std::fs::write(
        w.path().join("master.key"),
        "a master key of at least 32 characters\n",
    )
    .unwrap();
    let body = |kind: &str| {
        format!(
            r#"master_key = {{ file = "master.key" }}

[store]
kind = "{kind}"
url = {{ file = "mongo.url" }}
database = "moved"

[domains."example.test".aliases]
hello = {{ forward = ["someone@elsewhere.test"] }}
me = {{ mailbox = {{ password = {{ hash = "{}" }} }} }}
"#,
            common::TEST_HASH
        )
    };
    w.write_spec(&body("sqlite"));
    w.run(&["apply", "--auto-approve"]).ok();
    let key_before = w.run(&["dns", "records"]).ok().stdout.clone();
    assert!(key_before.contains("_domainkey"), "{key_before}");
    // Mail in me@'s mailbox file, one message flagged in a folder of its own.
    let key =
        || ferrymail::mailbox::MasterKey::new(b"a master key of at least 32 characters").unwrap();
    let files = ferrymail::mailbox::Mailboxes::new(&w.data_dir(), key());
    files
        .append(
            "me@example.test",
            "INBOX",
            b"Subject: one\r\n\r\nfirst",
            None,
        )
        .unwrap();
    {
        let mut mb = files.open("me@example.test").unwrap();
        let work = mb.create_folder("Work", None).unwrap();
        mb.append(
            &work,
            b"Subject: two\r\n\r\nsecond",
            &["\\Flagged".into()],
            1_700_000_000,
            None,
        )
        .unwrap();
    }
    // What a user sees of a mailbox: folders, and per message its subject line, flags
    // and date.
    let view = |boxes: &ferrymail::mailbox::Mailboxes| {
        let mb = boxes.open("me@example.test").unwrap();
        let mut out = Vec::new();
        for f in mb.folders().unwrap() {
            for m in mb.messages(&f).unwrap() {
                let body = mb.body(&f, m.uid).unwrap().unwrap();
                out.push((
                    f.name.clone(),
                    String::from_utf8(body).unwrap(),
                    m.flags,
                    m.internal_date,
                ));
            }
        }
        out
    };
    let before = view(&files);
    assert_eq!(before.len(), 2);
    // A calendar of its own with an event, and a contact in the default address book;
    // the default calendar deleted by its owner.
    {
        use ferrymail::collections::{Collections, Kind, NewResource, Precondition, Span};
        let mut dav = Collections::new(files.clone())
            .unwrap()
            .open("me@example.test")
            .unwrap();
        let default = dav.collection(Kind::Calendar, "calendar").unwrap().unwrap();
        dav.remove(&default).unwrap();
        let color = (
            (
                "http://apple.com/ns/ical/".to_string(),
                "calendar-color".to_string(),
            ),
            "#ff0000".to_string(),
        );
        let work = dav
            .create(Kind::Calendar, "work", &["VEVENT".to_string()], &[color])
            .unwrap();
        let event = b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:t\r\nBEGIN:VEVENT\r\nUID:e1\r\n\
                      DTSTAMP:20260101T000000Z\r\nDTSTART:20260301T100000Z\r\nEND:VEVENT\r\n\
                      END:VCALENDAR\r\n";
        let span = Span {
            start: 1,
            end: 1,
            exact: true,
        };
        let new = |name, uid, component, body| NewResource {
            name,
            uid,
            component,
            content_type: "text/calendar; charset=utf-8",
            body,
            span,
            moved_from: None,
        };
        dav.put(
            &work,
            &new("e1.ics", "e1", "VEVENT", event),
            &Precondition::Any,
            None,
        )
        .unwrap();
        let book = dav
            .collection(Kind::AddressBook, "contacts")
            .unwrap()
            .unwrap();
        let card = b"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:c1\r\nFN:Ann\r\nEND:VCARD\r\n";
        dav.put(
            &book,
            &new("c1.vcf", "c1", "VCARD", card),
            &Precondition::Any,
            None,
        )
        .unwrap();
    }
    // What a user sees of calendars and contacts: each collection with its properties,
    // each item with its name, ETag, span and body.
    let dav_view = |boxes: &ferrymail::mailbox::Mailboxes| {
        use ferrymail::collections::{Collections, Kind};
        let dav = Collections::new(boxes.clone())
            .unwrap()
            .open("me@example.test")
            .unwrap();
        let mut out = Vec::new();
        for kind in [Kind::Calendar, Kind::AddressBook] {
            for c in dav.collections(kind).unwrap() {
                out.push(format!("{} {:?} {:?}", c.name, c.props, c.components));
                dav.each_within(&c, None, &mut |r, body| {
                    out.push(format!(
                        "{} {} {:?} {}",
                        r.name,
                        r.etag,
                        r.span,
                        String::from_utf8_lossy(&body)
                    ));
                    true
                })
                .unwrap();
            }
        }
        out
    };
    let dav_before = dav_view(&files);
    assert_eq!(dav_before.len(), 4, "{dav_before:?}");
    // Two Sieve scripts of the user's own, one active.
    {
        let mut scripts =
            ferrymail::sieve::store::UserScripts::open(&files, "me@example.test").unwrap();
        scripts
            .put("lists", b"require \"fileinto\";\nfileinto \"Lists\";\n")
            .unwrap();
        scripts.put("spare", b"keep;\n").unwrap();
        scripts.set_active(Some("lists")).unwrap();
    }
    let sieve_view = |boxes: &ferrymail::mailbox::Mailboxes| {
        let scripts = ferrymail::sieve::store::UserScripts::open(boxes, "me@example.test").unwrap();
        scripts
            .list()
            .unwrap()
            .into_iter()
            .map(|l| (l.active, scripts.get(&l.name).unwrap().unwrap(), l.name))
            .collect::<Vec<_>>()
    };
    let sieve_before = sieve_view(&files);
    assert_eq!(sieve_before.len(), 2);
    // What the owner set on their page: a forward.
    use ferrymail::selfservice::{Forwarding, settings};
    settings::update(&files, "me@example.test", |own| {
        own.forwarding = Some(Forwarding {
            to: vec!["far@elsewhere.test".into()],
            keep: true,
        })
    })
    .unwrap();
    let own_before = settings::read(&files, "me@example.test").unwrap();
    let in_mongo = || {
        let store = ferrymail::store::MongoStore::connect(&url, "moved").unwrap();
        ferrymail::mailbox::Mailboxes::in_mongo(
            &w.data_dir(),
            key(),
            ferrymail::store::Store::connection(&store).unwrap(),
        )
        .unwrap()
    };

    let moved = w.run(&["migrate", "--from", "sqlite", "--to", "mongodb"]);
    moved.ok();
    assert!(
        moved.stdout.contains("plan against the copy: no changes"),
        "{}",
        moved.stdout
    );
    assert!(!moved.stdout.contains("mongodb://"), "{}", moved.stdout);
    assert!(
        moved.stdout.contains("copied 1 mailbox(es), 2 message(s)"),
        "{}",
        moved.stdout
    );
    assert_eq!(view(&in_mongo()), before, "the mailbox moved whole");
    assert!(
        moved.stdout.contains(
            "copied 2 calendar(s) and address book(s), 2 event(s), task(s) and contact(s)"
        ),
        "{}",
        moved.stdout
    );
    assert_eq!(
        dav_view(&in_mongo()),
        dav_before,
        "calendars and contacts too"
    );
    assert!(
        moved.stdout.contains("copied 2 Sieve script(s)"),
        "{}",
        moved.stdout
    );
    assert_eq!(
        sieve_view(&in_mongo()),
        sieve_before,
        "and the Sieve scripts"
    );
    assert!(
        moved.stdout.contains("copied 1 owner's own settings"),
        "{}",
        moved.stdout
    );
    assert_eq!(
        settings::read(&in_mongo(), "me@example.test").unwrap(),
        own_before,
        "and what the owner set"
    );
    // Now served from MongoDB: nothing to change, the same DKIM key published.
    w.write_spec(&body("mongodb"));
    w.run(&["plan", "--detailed-exitcode"]).code(0);
    assert_eq!(w.run(&["dns", "records"]).ok().stdout, key_before);
    let status = w.run(&["status"]).ok().stdout.clone();
    assert!(
        status.contains("store: mongodb database \"moved\""),
        "{status}"
    );

    // A second copy into a store that holds something is refused, and changes nothing.
    let again = w.run(&["migrate", "--from", "sqlite", "--to", "mongodb"]);
    again.code(1);
    assert!(again.stderr.contains("not empty"), "{}", again.stderr);

    // And back, into a fresh data dir.
    std::fs::remove_dir_all(w.data_dir()).unwrap();
    w.run(&["migrate", "--from", "mongodb", "--to", "sqlite"])
        .ok();
    w.write_spec(&body("sqlite"));
    w.run(&["plan", "--detailed-exitcode"]).code(0);
    assert_eq!(w.run(&["dns", "records"]).ok().stdout, key_before);
    let back = ferrymail::mailbox::Mailboxes::new(&w.data_dir(), key());
    assert_eq!(view(&back), before, "and back");
    assert_eq!(dav_view(&back), dav_before, "calendars and contacts too");
    assert_eq!(sieve_view(&back), sieve_before, "and the Sieve scripts");
    assert_eq!(
        settings::read(&back, "me@example.test").unwrap(),
        own_before
    );
}

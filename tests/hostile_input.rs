//! Attacks a stranger (or a logged-in user) can make, each through the real binary on
//! loopback: the server answers with a protocol error or degrades, stays up, stays
//! within its memory, keeps serving a normal client, and loses nothing it acknowledged.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use common::{Process, TEST_HASH, Workspace, connect_from, free_port, python_peer_run, wait_for};

struct Server {
    w: Workspace,
    mx: u16,
    submission: u16,
    imap: u16,
    process: Process,
    /// The DNS server the test started, if it started one.
    _dns: Option<Process>,
}

/// A server with one mailbox (me@), a forward (fwd@ → friend@elsewhere.test, through a
/// relay on `relay`, or by MX lookup when it is 0) and the MX, submission and IMAP
/// listeners; `extra` is added to the spec. DNS is Knot serving the zones `test` and
/// `sender.test` with `sender_records` in the latter.
fn start(relay: u16, extra: &str) -> Server {
    start_with_dns(relay, extra, "")
}

fn start_with_dns(relay: u16, extra: &str, sender_records: &str) -> Server {
    let w = Workspace::new("");
    let (dns, dns_port) = common::knot(
        w.path(),
        &[
            ("test", &common::zone("test", "")),
            ("sender.test", &common::zone("sender.test", sender_records)),
            // A zone Knot cannot load: every name in it is answered SERVFAIL.
            ("broken.test", "this is not a zone file\n"),
        ],
    );
    start_with_resolver(w, Some(dns), dns_port, relay, extra)
}

/// The test server, asking the DNS server at `dns_port` (kept running by `dns`).
fn start_with_resolver(
    w: Workspace,
    dns: Option<Process>,
    dns_port: u16,
    relay: u16,
    extra: &str,
) -> Server {
    let (mx, submission, imap) = (free_port(), free_port(), free_port());
    let delivery = if relay == 0 {
        String::new()
    } else {
        format!("[delivery]\nrelay = \"127.0.0.1:{relay}\"\n")
    };
    w.write_spec(&format!(
        r#"
[listeners]
mx = "127.0.0.1:{mx}"
submission = "127.0.0.1:{submission}"
imap = "127.0.0.1:{imap}"

[dns]
resolver = "127.0.0.1:{dns_port}"

{delivery}
[domains."example.test".aliases.me]
mailbox = {{ password = {{ hash = "{TEST_HASH}" }} }}

[domains."example.test".aliases.fwd]
forward = ["friend@elsewhere.test"]
{extra}
"#
    ));
    let process = w.serve(mx);
    Server {
        w,
        mx,
        submission,
        imap,
        process,
        _dns: dns,
    }
}

impl Server {
    fn restart(&mut self) {
        self.process = self.w.serve(self.mx);
    }

    /// A normal client is still served: a message to me@ gets its 250.
    #[track_caller]
    fn still_serves(&mut self) {
        self.still_serves_from("127.0.0.1");
    }

    /// `still_serves` for a client at `source` (a loopback address).
    #[track_caller]
    fn still_serves_from(&mut self, source: &str) {
        assert!(
            self.process.alive(),
            "the server died:\n{}",
            self.process.log_text()
        );
        let sent = common::swaks(
            self.mx,
            &[
                "--local-interface",
                source,
                "--from",
                "alice@sender.test",
                "--to",
                "me@example.test",
            ],
        );
        assert!(
            sent.stdout.contains("<-  250 2.0.0 Queued"),
            "a normal client was not served:\n{}\n{}",
            sent.stdout,
            self.process.log_text()
        );
    }

    fn queue_list(&self) -> String {
        self.w.run(&["queue", "list"]).stdout
    }
}

fn deep_message(dir: &Path, kind: &str, levels: usize) -> std::path::PathBuf {
    let path = dir.join(format!("deep-{kind}-{levels}.eml"));
    let made = python_peer_run(
        "deep_mime.py",
        &[kind, &levels.to_string(), path.to_str().unwrap()],
        dir,
    );
    assert_eq!(made.code, 0, "{}", made.stderr);
    path
}

#[test]
fn deeply_nested_mime_is_stored_and_every_client_can_still_read_the_folder() {
    let mut s = start(free_port(), "");
    let dir = s.w.path().to_path_buf();
    // 1000 nested multiparts (70 KB) and 5000 nested attached messages, from a stranger.
    for (kind, levels) in [("multipart", 1000), ("rfc822", 5000)] {
        let file = deep_message(&dir, kind, levels);
        let sent = python_peer_run(
            "send_file.py",
            &[
                &s.mx.to_string(),
                "mallory@sender.test",
                "me@example.test",
                file.to_str().unwrap(),
            ],
            &dir,
        );
        assert_eq!(sent.code, 0, "{}{}", sent.stdout, sent.stderr);
    }
    assert!(
        wait_for(Duration::from_secs(20), || s
            .w
            .inbox("me@example.test")
            .len()
            == 2),
        "the deep messages were not delivered:\n{}",
        s.process.log_text()
    );
    assert!(s.process.alive(), "{}", s.process.log_text());
    // A logged-in user appends one more; then a client reads the whole folder: every
    // structure, every body, a section inside the nesting, and a text search.
    let appended = deep_message(&dir, "multipart", 2000);
    let read = python_peer_run(
        "imap_fetch_all.py",
        &[
            &s.imap.to_string(),
            "me@example.test",
            "quickstart",
            appended.to_str().unwrap(),
        ],
        &dir,
    );
    assert_eq!(
        read.code,
        0,
        "the folder could not be read:\n{}{}\n{}",
        read.stdout,
        read.stderr,
        s.process.log_text()
    );
    assert!(read.stdout.contains("append OK"), "{}", read.stdout);
    assert!(read.stdout.contains("select OK 3"), "{}", read.stdout);
    // The text at the bottom of the multiparts is beyond the nesting limit: a search
    // need not find it, but must answer.
    assert!(read.stdout.contains("search OK"), "{}", read.stdout);
    let peak = s.process.memory_kib("VmHWM");
    assert!(peak < 300 * 1024, "peak memory {peak} KiB");
    s.still_serves();
}

#[test]
fn a_delivery_the_server_dies_in_twice_is_held_not_retried_into_a_crash_loop() {
    let (relay, tarpit) = common::tarpit();
    let mut s = start(relay, "");
    let sent = common::swaks(
        s.mx,
        &["--from", "alice@sender.test", "--to", "fwd@example.test"],
    );
    assert!(sent.stdout.contains("<-  250 2.0.0"), "{}", sent.stdout);
    // The process dies while it delivers (as it would in a crash the message causes),
    // twice: the first time the delivery is tried again (alone), the second it is held.
    for round in 1..=2 {
        assert!(
            wait_for(Duration::from_secs(20), || tarpit.lock().unwrap().len()
                == round),
            "attempt {round} never started:\n{}",
            s.process.log_text()
        );
        s.process.kill_hard();
        s.restart();
    }
    assert!(
        wait_for(Duration::from_secs(10), || s.queue_list().contains("HELD")),
        "not held:\n{}\n{}",
        s.queue_list(),
        s.process.log_text()
    );
    let list = s.queue_list();
    assert!(list.contains("processing failed"), "{list}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(tarpit.lock().unwrap().len(), 2, "a held delivery was tried");
    let status = s.w.run(&["status"]).stdout;
    assert!(status.contains("1 held"), "{status}");
    let log = s.w.run(&["queue", "log"]).stdout;
    assert!(log.contains("held"), "{log}");
    s.still_serves();
    // The operator looks, and releases it: it is tried again.
    let id = list.split_whitespace().next().unwrap().to_string();
    s.w.run(&["queue", "retry", &id]).ok();
    assert!(
        wait_for(Duration::from_secs(20), || tarpit.lock().unwrap().len()
            == 3),
        "not tried after queue retry:\n{}",
        s.process.log_text()
    );
}

/// Reads SMTP replies until one is final (a line whose fourth byte is a space).
fn smtp_reply(r: &mut impl BufRead) -> String {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return all;
        }
        all.push_str(&line);
        if line.as_bytes().get(3) == Some(&b' ') {
            return all;
        }
    }
}

fn smtp_connect(port: u16) -> (TcpStream, BufReader<TcpStream>) {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let banner = smtp_reply(&mut reader);
    assert!(banner.starts_with("220"), "{banner}");
    (stream, reader)
}

fn smtp_say(stream: &mut TcpStream, reader: &mut impl BufRead, line: &str) -> String {
    stream.write_all(line.as_bytes()).unwrap();
    smtp_reply(reader)
}

#[test]
fn a_huge_bdat_chunk_is_refused_before_it_is_read() {
    let mut s = start(free_port(), "");
    let (mut c, mut r) = smtp_connect(s.mx);
    smtp_say(&mut c, &mut r, "EHLO attacker.test\r\n");
    smtp_say(&mut c, &mut r, "MAIL FROM:<m@sender.test>\r\n");
    smtp_say(&mut c, &mut r, "RCPT TO:<me@example.test>\r\n");
    // 4 GB announced: refused at once, before a byte of it is taken.
    let reply = smtp_say(&mut c, &mut r, "BDAT 4000000000 LAST\r\n");
    assert!(reply.starts_with("552"), "{reply}");
    // The attacker sends 200 MB anyway; the server does not keep it.
    let junk = vec![b'x'; 1 << 20];
    for _ in 0..200 {
        if c.write_all(&junk).is_err() {
            break;
        }
    }
    drop(c);
    let peak = s.process.memory_kib("VmHWM");
    assert!(peak < 150 * 1024, "peak memory {peak} KiB");
    // Chunks that add up past the limit are refused too, and the transaction with them.
    let (mut c, mut r) = smtp_connect(s.mx);
    smtp_say(&mut c, &mut r, "EHLO attacker.test\r\n");
    smtp_say(&mut c, &mut r, "MAIL FROM:<m@sender.test>\r\n");
    smtp_say(&mut c, &mut r, "RCPT TO:<me@example.test>\r\n");
    c.write_all(b"BDAT 30000000\r\n").unwrap();
    let chunk = vec![b'y'; 30_000_000];
    c.write_all(&chunk).unwrap();
    let reply = smtp_reply(&mut r);
    assert!(reply.starts_with("250"), "{reply}");
    let reply = smtp_say(&mut c, &mut r, "BDAT 30000000 LAST\r\n");
    assert!(reply.starts_with("552"), "{reply}");
    s.still_serves();
}

#[test]
fn only_crlf_dot_crlf_ends_data_and_bare_cr_is_refused() {
    let (sink_port, sink_dir) = (free_port(), tempfile::tempdir().unwrap());
    let _sink = common::python_peer(
        "sink.py",
        &[&sink_port.to_string(), sink_dir.path().to_str().unwrap()],
        sink_dir.path(),
    );
    let mut s = start(sink_port, "");
    // Smuggling: a message ended by <CR><LF>.<CR><CR><LF>, then a second transaction
    // the sender's MTA would have passed on as message text.
    for ending in ["\r\n.\r\r\n", "\r\n.\r\r\r\n", "\n.\r\n", "\r\n.\n"] {
        let (mut c, mut r) = smtp_connect(s.mx);
        smtp_say(&mut c, &mut r, "EHLO attacker.test\r\n");
        smtp_say(&mut c, &mut r, "MAIL FROM:<m@sender.test>\r\n");
        smtp_say(&mut c, &mut r, "RCPT TO:<fwd@example.test>\r\n");
        let reply = smtp_say(&mut c, &mut r, "DATA\r\n");
        assert!(reply.starts_with("354"), "{reply}");
        let smuggled = format!(
            "Subject: first\r\n\r\nfirst{ending}MAIL FROM:<ceo@example.test>\r\n\
             RCPT TO:<fwd@example.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nsmuggled\r\n.\r\n"
        );
        c.write_all(smuggled.as_bytes()).unwrap();
        // One reply for one message (the whole is one message, refused for its bare
        // line ending); nothing after it runs as a command.
        let reply = smtp_reply(&mut r);
        assert!(reply.starts_with("550 5.6.0"), "{ending:?}: {reply}");
        let quit = smtp_say(&mut c, &mut r, "QUIT\r\n");
        assert!(quit.starts_with("221"), "{ending:?}: {quit}");
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        common::received(sink_dir.path()).is_empty(),
        "something was relayed"
    );
    s.still_serves();
}

#[test]
fn pre_login_imap_literals_are_small_and_memory_comes_back() {
    let mut s = start(free_port(), "");
    // 50 connections each announce a 63 MiB literal in LOGIN and start sending it.
    let start_rss = s.process.memory_kib("VmRSS");
    let mut clients = Vec::new();
    for _ in 0..50 {
        let mut c = TcpStream::connect(("127.0.0.1", s.imap)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut greeting = [0u8; 512];
        let _ = c.read(&mut greeting);
        let _ = c.write_all(b"a LOGIN {66060288+}\r\n");
        let junk = vec![b'x'; 1 << 20];
        for _ in 0..4 {
            if c.write_all(&junk).is_err() {
                break;
            }
        }
        clients.push(c);
    }
    // Each was told off and closed, having cost the server a few KB.
    for mut c in clients {
        let mut answer = Vec::new();
        let _ = c.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.contains("BYE") || answer.contains("BAD"), "{answer}");
    }
    let peak = s.process.memory_kib("VmHWM");
    assert!(
        peak < start_rss + 100 * 1024,
        "peak {peak} KiB from {start_rss} KiB"
    );
    s.still_serves();
    // A synchronising literal is refused before the client sends it.
    let mut c = TcpStream::connect(("127.0.0.1", s.imap)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(c.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    c.write_all(b"a LOGIN {100000}\r\n").unwrap();
    line.clear();
    r.read_line(&mut line).unwrap();
    assert!(!line.starts_with('+'), "{line}");
}

#[test]
fn a_trickling_smtp_client_is_cut_off_by_the_line_budget() {
    let s = start(free_port(), "[limits]\nsmtp_timeout = \"3s\"\n");
    let (mut c, mut r) = smtp_connect(s.mx);
    // One byte a second, never a whole line: never silent for the 3 s either, so only
    // the budget for the whole line can end it (the 40 bytes would take 40 s).
    let mut answer = String::new();
    for b in b"EHLO slowly.attacker.test and on and on".iter() {
        if c.write_all(&[*b]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1000));
        c.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 256];
        if let Ok(n) = r.get_mut().read(&mut buf) {
            answer.push_str(&String::from_utf8_lossy(&buf[..n]));
            if n == 0 || answer.contains("421") {
                break;
            }
        }
        c.set_nonblocking(false).unwrap();
    }
    assert!(answer.contains("421"), "{answer:?}");
}

#[test]
fn refused_recipients_end_the_session_and_then_the_address_is_refused() {
    let mut s = start(free_port(), "[limits]\nrefused_recipients_per_hour = 15\n");
    // Forged SRS addresses (a short hash and a wrong long one) and unknown users.
    let forged = [
        "SRS0=AAAA=AA=victim.test=ceo@example.test",
        "SRS0=AAAAAAAA=AA=victim.test=ceo@example.test",
        "nobody@example.test",
    ];
    let (mut c, mut r) = smtp_connect(s.mx);
    smtp_say(&mut c, &mut r, "EHLO harvester.test\r\n");
    smtp_say(&mut c, &mut r, "MAIL FROM:<h@sender.test>\r\n");
    for i in 0..10 {
        let to = forged[i % forged.len()];
        let reply = smtp_say(&mut c, &mut r, &format!("RCPT TO:<{to}>\r\n"));
        assert!(reply.starts_with("550"), "refusal {i}: {reply}");
    }
    let reply = smtp_say(&mut c, &mut r, "RCPT TO:<nobody2@example.test>\r\n");
    assert!(reply.starts_with("421"), "{reply}");
    let mut rest = String::new();
    let _ = r.read_to_string(&mut rest);
    assert!(rest.is_empty(), "the connection stayed open: {rest}");
    // A new connection from the same address has five more refusals left this hour.
    let (mut c, mut r) = smtp_connect(s.mx);
    smtp_say(&mut c, &mut r, "EHLO harvester.test\r\n");
    smtp_say(&mut c, &mut r, "MAIL FROM:<h@sender.test>\r\n");
    let mut refused = 0;
    let last = loop {
        let reply = smtp_say(&mut c, &mut r, "RCPT TO:<nobody@example.test>\r\n");
        if !reply.starts_with("550") {
            break reply;
        }
        refused += 1;
        assert!(refused <= 5, "{refused} refusals");
    };
    assert_eq!(refused, 5);
    assert!(last.starts_with("421"), "{last}");
    // Past the hourly count the address still delivers to real recipients (it may be a
    // provider's, shared with others); only a guess ends the connection.
    let (mut c, mut r) = smtp_connect(s.mx);
    smtp_say(&mut c, &mut r, "EHLO harvester.test\r\n");
    smtp_say(&mut c, &mut r, "MAIL FROM:<h@sender.test>\r\n");
    let good = smtp_say(&mut c, &mut r, "RCPT TO:<me@example.test>\r\n");
    assert!(good.starts_with("250"), "{good}");
    let guess = smtp_say(&mut c, &mut r, "RCPT TO:<nobody@example.test>\r\n");
    assert!(guess.starts_with("421"), "{guess}");
    // Eighteen refusals in three sessions, but at most three records each and one sum:
    // 3 + 1 (the first), 3 + 1 (the second), 1 (the guess above).
    let log =
        s.w.run(&["queue", "log", "--json", "--limit", "1000"])
            .stdout;
    let records: Vec<serde_json::Value> = serde_json::from_str(&log).unwrap();
    let rejected: Vec<_> = records
        .iter()
        .filter(|r| r["event"] == "rejected")
        .collect();
    assert!(rejected.len() <= 9, "{log}");
    assert!(
        log.contains("more recipients refused in this session"),
        "{log}"
    );
    s.still_serves_from("127.0.0.2");
}

#[test]
fn a_second_from_or_a_foreign_sender_header_is_refused_at_submission() {
    let s = start(free_port(), "");
    let submit = |data: &str| {
        common::submit(
            s.submission,
            "me@example.test",
            "quickstart",
            &[
                "--from",
                "me@example.test",
                "--to",
                "friend@elsewhere.test",
                "--data",
                data,
            ],
        )
        .stdout
    };
    let two_froms = submit(
        "From: \"PayPal Security\" <security@paypal.example>\\nFrom: me@example.test\\nSubject: x\\n\\nverify your account\\n",
    );
    assert!(two_froms.contains("<~* 550 5.6.0"), "{two_froms}");
    let list = submit("From: me@example.test, ceo@example.test\\nSubject: x\\n\\nhi\\n");
    assert!(list.contains("<~* 553 5.7.1"), "{list}");
    let sender = submit("From: me@example.test\\nSender: ceo@example.test\\nSubject: x\\n\\nhi\\n");
    assert!(sender.contains("<~* 553 5.7.1"), "{sender}");
    let own = submit("From: Me <me@example.test>\\nSubject: x\\n\\nhi\\n");
    assert!(own.contains("<~  250 2.0.0"), "{own}");
}

/// IMAP logins from `source` (a loopback address): one word per try, as imap_logins.py
/// prints them ("ok", "no", "throttled").
fn imap_logins(
    port: u16,
    dir: &Path,
    source: &str,
    user: &str,
    password: &str,
    times: usize,
) -> String {
    python_peer_run(
        "imap_logins.py",
        &[
            &port.to_string(),
            source,
            user,
            password,
            &times.to_string(),
        ],
        dir,
    )
    .stdout
}

/// `imap_logins` with a wrong password, in a thread of its own (guessers run at once).
fn guesser(
    port: u16,
    dir: &Path,
    source: String,
    user: String,
    times: usize,
) -> std::thread::JoinHandle<String> {
    let dir = dir.to_path_buf();
    std::thread::spawn(move || imap_logins(port, &dir, &source, &user, "guess", times))
}

#[test]
fn guessing_from_many_addresses_does_not_lock_the_owner_out() {
    let mut s = start(free_port(), "");
    let dir = s.w.path().to_path_buf();
    let logins = |source: &str, user: &str, password: &str, times: usize| {
        imap_logins(s.imap, &dir, source, user, password, times)
    };
    let me = "me@example.test";
    // The owner logs in from home (127.0.0.1) as usual.
    assert_eq!(logins("127.0.0.1", me, "quickstart", 1).trim(), "ok");
    // Five addresses guess 6 times each, under each address's limit of ten: the account
    // has its 20 failures, and the last guesses are refused unchecked.
    let guessers: Vec<_> = (2..=6)
        .map(|n| guesser(s.imap, &dir, format!("127.0.0.{n}"), me.to_string(), 6))
        .collect();
    let mut checked = 0;
    for g in guessers {
        let out = g.join().unwrap();
        let tries: Vec<&str> = out.split_whitespace().collect();
        let wrong = tries.iter().take_while(|t| **t == "no").count();
        // Checked guesses, then refusals unchecked once the account as a whole has had
        // twenty.
        assert!(tries[wrong..].iter().all(|t| *t == "throttled"), "{out}");
        checked += wrong;
    }
    assert!((20..30).contains(&checked), "{checked} guesses checked");
    // The owner still gets in, from home and from a network never seen (a first try);
    // a guesser gets no more tries, even with the right password.
    assert_eq!(logins("127.0.0.1", me, "quickstart", 1).trim(), "ok");
    assert_eq!(logins("127.0.0.9", me, "quickstart", 1).trim(), "ok");
    assert_eq!(logins("127.0.0.2", me, "quickstart", 1).trim(), "throttled");
    // Ten failures from one address, over any accounts, close it to every account.
    logins("127.0.0.10", "nobody@example.test", "guess", 5);
    logins("127.0.0.10", "other@example.test", "guess", 5);
    assert_eq!(
        logins("127.0.0.10", me, "quickstart", 1).trim(),
        "throttled"
    );
    s.still_serves();
}

/// A botnet guesses from many addresses, each under every limit: the log gets at most
/// 60 "login failed" lines a minute and one line summing up the rest, so neither the
/// disk nor the journal fills with a line per guess (issue 22).
#[test]
fn a_botnets_guesses_do_not_fill_the_log() {
    let bots: String = (1..=8)
        .map(|n| {
            format!(
                "[domains.\"example.test\".aliases.bot{n}]\nmailbox = {{ password = {{ hash = \"{TEST_HASH}\" }} }}\n"
            )
        })
        .collect();
    let mut s = start(free_port(), &bots);
    let dir = s.w.path().to_path_buf();
    let started = std::time::Instant::now();
    // Eight addresses, nine wrong guesses each at an account of its own: under the ten
    // per address and twenty per account, so every guess is checked and fails.
    let guessers: Vec<_> = (1..=8)
        .map(|n| {
            let (source, bot) = (
                format!("127.0.0.{}", 40 + n),
                format!("bot{n}@example.test"),
            );
            guesser(s.imap, &dir, source, bot, 9)
        })
        .collect();
    let failed: usize = guessers
        .into_iter()
        .map(|g| {
            g.join()
                .unwrap()
                .split_whitespace()
                .filter(|t| *t == "no")
                .count()
        })
        .sum();
    eprintln!("{failed} failures in {:?}", started.elapsed());
    assert_eq!(failed, 72);
    // The rest are summed up when the minute ends, with no further guess needed.
    let summed = |log: &str| -> u64 {
        log.lines()
            .filter(|l| l.contains("more failed logins in the last minute"))
            .filter_map(|l| {
                l.split("left_out=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    };
    let log_text = || s.process.log_text();
    assert!(
        wait_for(Duration::from_secs(90), || summed(&log_text()) > 0),
        "{}",
        log_text()
    );
    let log = log_text();
    let one_by_one = log.matches("login failed").count() as u64;
    // Every failure is either on a line of its own or counted in a summary.
    assert_eq!(one_by_one + summed(&log), 72, "{log}");
    assert!(
        one_by_one <= 60 * (1 + started.elapsed().as_secs() / 60),
        "{log}"
    );
    s.still_serves();
}

#[test]
fn a_deep_folder_and_a_backtracking_list_pattern_cost_nothing() {
    let mut s = start(free_port(), "");
    let dir = s.w.path().to_path_buf();
    let out = python_peer_run(
        "imap_list_attack.py",
        &[&s.imap.to_string(), "me@example.test", "quickstart"],
        &dir,
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("deep NO"), "{}", out.stdout);
    assert!(out.stdout.contains("long NO"), "{}", out.stdout);
    assert!(out.stdout.contains("list OK"), "{}", out.stdout);
    s.still_serves();
    // Shutdown is never held up by a session.
    assert!(
        s.process.terminate().is_some(),
        "SIGTERM did not stop the server"
    );
}

fn first_line(stream: &TcpStream) -> String {
    let mut line = String::new();
    let _ = BufReader::new(stream).read_line(&mut line);
    line
}

#[test]
fn connections_are_capped_per_address_before_login_and_for_the_whole_server() {
    let mut s = start(
        free_port(),
        "[limits]\nmax_connections = 40\nunauthenticated_per_ip = 5\nconnections_per_minute = 0\nconnections_per_ip = 1000\n",
    );
    // The start-up log says what the file descriptor limit was raised to.
    assert!(
        s.process.log_text().contains("file_descriptors"),
        "{}",
        s.process.log_text()
    );
    // Five IMAP connections from one address that never log in; the sixth is refused,
    // another address is not.
    let mut waiting = Vec::new();
    for _ in 0..5 {
        let c = connect_from("127.0.0.7", s.imap);
        assert!(first_line(&c).starts_with("* OK"));
        waiting.push(c);
    }
    let sixth = connect_from("127.0.0.7", s.imap);
    let refused = first_line(&sixth);
    assert!(
        refused.contains("BYE") && refused.contains("not logged in"),
        "{refused}"
    );
    let other = connect_from("127.0.0.8", s.imap);
    assert!(first_line(&other).starts_with("* OK"));
    // The MX alone may take three quarters of the 40: a flood from many addresses gets
    // "busy" from the 31st connection on.
    let mut flood = Vec::new();
    let mut busy = None;
    for i in 0..40 {
        let c = connect_from(&format!("127.0.1.{}", i + 1), s.mx);
        let line = first_line(&c);
        if line.starts_with("421") {
            busy = Some((i, line));
            break;
        }
        assert!(line.starts_with("220"), "{line}");
        flood.push(c);
    }
    let (at, line) = busy.expect("the MX never said it was busy");
    assert_eq!(at, 30, "{line}");
    assert!(line.contains("busy"), "{line}");
    // IMAP still has room; when the flood goes, the MX has room again.
    let imap = connect_from("127.0.0.9", s.imap);
    assert!(first_line(&imap).starts_with("* OK"));
    drop(flood);
    std::thread::sleep(Duration::from_millis(500));
    s.still_serves();
}

#[test]
fn silent_clients_before_login_and_trickled_http_bodies_are_cut_off() {
    let (pop3, mx, imap, http) = (free_port(), free_port(), free_port(), free_port());
    let w = Workspace::new(&format!(
        "[listeners]\nmx = \"127.0.0.1:{mx}\"\nimap = \"127.0.0.1:{imap}\"\npop3 = \"127.0.0.1:{pop3}\"\nhttp = \"127.0.0.1:{http}\"\n"
    ));
    let _server = w.serve(mx);
    let quiet_imap = connect_from("127.0.0.1", imap);
    assert!(first_line(&quiet_imap).starts_with("* OK"));
    let quiet_pop3 = connect_from("127.0.0.1", pop3);
    assert!(first_line(&quiet_pop3).starts_with("+OK"));
    // A login form whose body comes one byte every five seconds.
    let trickle = std::thread::spawn(move || {
        let mut c = connect_from("127.0.0.1", http);
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(
            b"POST /admin/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n",
        )
        .unwrap();
        let mut answer = Vec::new();
        for _ in 0..30 {
            if c.write_all(b"u").is_err() {
                break;
            }
            let mut buf = [0u8; 1024];
            match c.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    break;
                }
                Err(_) => {}
            }
        }
        String::from_utf8_lossy(&answer).into_owned()
    });
    // Told off within 90 s: before login a minute of silence, not the half hour (IMAP)
    // or ten minutes (POP3) a logged-in client may keep.
    for (name, c) in [("imap", &quiet_imap), ("pop3", &quiet_pop3)] {
        c.set_read_timeout(Some(Duration::from_secs(90))).unwrap();
        let line = first_line(c);
        assert!(
            line.contains("BYE") || line.starts_with("-ERR"),
            "{name}: {line:?}"
        );
    }
    let answer = trickle.join().unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    // And every page carries the headers that keep a browser safe.
    let mut c = connect_from("127.0.0.1", http);
    c.write_all(b"GET /admin/login HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut page = String::new();
    let _ = c.read_to_string(&mut page);
    let head = page.to_lowercase();
    for header in [
        "content-security-policy: default-src 'self'",
        "referrer-policy: no-referrer",
        "x-frame-options: deny",
    ] {
        assert!(head.contains(header), "{header}: {page}");
    }
}

#[test]
fn a_second_server_on_the_same_data_dir_is_refused() {
    let s = start(free_port(), "");
    let second = s.w.run(&["serve"]);
    assert_ne!(second.code, 0, "{second:?}");
    let pid = s.process.child.id().to_string();
    assert!(
        second.stderr.contains("another `ferrymail serve`") && second.stderr.contains(&pid),
        "{}",
        second.stderr
    );
    let status = s.w.run(&["status"]).stdout;
    assert!(!status.contains("not running"), "{status}");
}

/// The mail log records (newest first) as JSON.
fn mail_log(w: &Workspace) -> Vec<serde_json::Value> {
    let out = w.run(&["queue", "log", "--json", "--limit", "200"]).stdout;
    serde_json::from_str(&out).unwrap_or_default()
}

#[test]
fn a_domain_that_does_not_exist_bounces_at_once_and_a_failing_lookup_is_retried() {
    let s = start(
        0,
        "[domains.\"example.test\".aliases.gone]\nforward = [\"someone@nowhere.test\"]\n\
         [domains.\"example.test\".aliases.dark]\nforward = [\"someone@unreachable.zz\"]\n\
         [domains.\"example.test\".aliases.failing]\nforward = [\"someone@broken.test\"]\n",
    );
    for to in [
        "gone@example.test",
        "dark@example.test",
        "failing@example.test",
    ] {
        let sent = common::swaks(s.mx, &["--from", "alice@sender.test", "--to", to]);
        assert!(sent.stdout.contains("<-  250 2.0.0"), "{}", sent.stdout);
    }
    let find = |event: &str, target: &str| {
        mail_log(&s.w)
            .into_iter()
            .find(|r| r["event"] == event && r["rcpt"].as_str().unwrap_or("").contains(target))
    };
    // nowhere.test is NXDOMAIN in a zone that exists: bounced on the first try.
    assert!(
        wait_for(Duration::from_secs(20), || find(
            "bounced",
            "someone@nowhere.test"
        )
        .is_some()),
        "{:?}\n{}",
        mail_log(&s.w),
        s.process.log_text()
    );
    let bounced = find("bounced", "someone@nowhere.test").unwrap();
    assert!(
        bounced["detail"].as_str().unwrap().contains("NXDOMAIN"),
        "{bounced}"
    );
    // unreachable.zz is no zone this server knows (REFUSED): a temporary failure,
    // never a delivery to whatever an address lookup might find.
    assert!(
        wait_for(Duration::from_secs(20), || find(
            "deferred",
            "someone@unreachable.zz"
        )
        .is_some()),
        "{:?}",
        mail_log(&s.w)
    );
    let deferred = find("deferred", "someone@unreachable.zz").unwrap();
    assert_eq!(
        deferred["detail"],
        "looking up the MX of unreachable.zz: the DNS server refused the query (REFUSED)",
        "{deferred}"
    );
    assert!(find("bounced", "someone@unreachable.zz").is_none());
    // broken.test's server fails (SERVFAIL): retried, and said so in words.
    assert!(
        wait_for(Duration::from_secs(20), || find(
            "deferred",
            "someone@broken.test"
        )
        .is_some()),
        "{:?}",
        mail_log(&s.w)
    );
    let failing = find("deferred", "someone@broken.test").unwrap();
    assert_eq!(
        failing["detail"],
        "looking up the MX of broken.test: the DNS server failed to answer (SERVFAIL)",
        "{failing}"
    );
    assert_eq!(
        bounced["detail"], "nowhere.test does not exist (NXDOMAIN)",
        "{bounced}"
    );
    no_debug_text(&s);
}

/// What an operator reads of DNS failures (the queue, the mail log, the server's log)
/// is in words: none of hickory's Debug text (`Query { name: Name("…") … }`).
#[track_caller]
fn no_debug_text(s: &Server) {
    let queue = s.queue_list();
    let log = serde_json::to_string(&mail_log(&s.w)).unwrap();
    let served = s.process.log_text();
    for (what, text) in [
        ("queue list", &queue),
        ("queue log", &log),
        ("serve log", &served),
    ] {
        for debug in ["Query {", "Name(", "query_type"] {
            assert!(!text.contains(debug), "{what} shows {debug:?}:\n{text}");
        }
    }
}

#[test]
fn a_dns_server_that_never_answers_is_a_timeout_in_words() {
    // A resolver that takes queries over UDP and TCP and never answers either.
    let silent_udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent_udp.local_addr().unwrap().port();
    let silent_tcp = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let held = std::thread::spawn(move || {
        let mut open = Vec::new();
        while let Ok((c, _)) = silent_tcp.accept() {
            open.push(c);
        }
    });
    let s = start_with_resolver(Workspace::new(""), None, port, 0, "");
    // Submitted (no arrival checks to wait for DNS): the MX lookup for the forward's
    // domain times out.
    let sent = common::submit(
        s.submission,
        "me@example.test",
        "quickstart",
        &["--from", "me@example.test", "--to", "friend@elsewhere.test"],
    );
    assert!(sent.stdout.contains("<~  250 2.0.0"), "{}", sent.stdout);
    let deferred = || {
        mail_log(&s.w)
            .into_iter()
            .find(|r| r["event"] == "deferred")
    };
    assert!(
        wait_for(Duration::from_secs(60), || deferred().is_some()),
        "{:?}\n{}",
        mail_log(&s.w),
        s.process.log_text()
    );
    assert_eq!(
        deferred().unwrap()["detail"],
        "looking up the MX of elsewhere.test: no answer from the DNS server (timed out)"
    );
    no_debug_text(&s);
    drop(silent_udp);
    drop(held);
}

#[test]
fn a_sender_that_fails_spf_gets_no_bounce_from_a_forward() {
    // The relay refuses every recipient whose local part starts with "refuse".
    let (sink_port, sink_dir) = (free_port(), tempfile::tempdir().unwrap());
    let _sink = common::python_peer(
        "sink.py",
        &[&sink_port.to_string(), sink_dir.path().to_str().unwrap()],
        sink_dir.path(),
    );
    let s = start_with_dns(
        sink_port,
        "[domains.\"example.test\"]\nreject_spf_fail = false\n\
         [domains.\"example.test\".aliases.bounces]\nforward = [\"refused@elsewhere.test\"]\n",
        "forged TXT \"v=spf1 -all\"",
    );
    // The domain takes mail that fails SPF (reject_spf_fail = false). One sender the SPF
    // record of its name disowns, one with no SPF at all: each forward is refused
    // downstream.
    for from in ["ceo@forged.sender.test", "bob@sender.test"] {
        let sent = common::swaks(s.mx, &["--from", from, "--to", "bounces@example.test"]);
        assert!(sent.stdout.contains("<-  250 2.0.0"), "{}", sent.stdout);
    }
    let bounced = || {
        mail_log(&s.w)
            .iter()
            .filter(|r| r["event"] == "bounced")
            .count()
    };
    assert!(
        wait_for(Duration::from_secs(30), || bounced() == 2),
        "{:?}",
        mail_log(&s.w)
    );
    // A notice goes to the sender with no SPF (queued, or already at the relay); none
    // to the forged one.
    std::thread::sleep(Duration::from_secs(2));
    let queued: String = s.queue_list();
    let delivered_notices: Vec<String> = common::received(sink_dir.path())
        .into_iter()
        .filter(|m| m.mail_from.is_empty() || m.mail_from == "<>")
        .flat_map(|m| m.rcpt_to)
        .collect();
    let all = format!("{queued}\n{delivered_notices:?}");
    assert!(
        all.contains("bob@sender.test"),
        "no notice for the real sender: {all}"
    );
    assert!(
        !all.contains("ceo@forged.sender.test"),
        "backscatter: {all}"
    );
}

#[test]
fn messages_in_flight_share_a_memory_budget_and_the_rest_are_told_to_come_back() {
    let mut s = start(free_port(), "[limits]\nmessage_memory = \"4MiB\"\n");
    // Three senders each hold 1.5 MB of a message open at once: 4.5 MB, past the budget.
    let mut open = Vec::new();
    for _ in 0..3 {
        let (mut c, mut r) = smtp_connect(s.mx);
        smtp_say(&mut c, &mut r, "EHLO big.test\r\n");
        smtp_say(&mut c, &mut r, "MAIL FROM:<big@sender.test>\r\n");
        smtp_say(&mut c, &mut r, "RCPT TO:<me@example.test>\r\n");
        let go = smtp_say(&mut c, &mut r, "DATA\r\n");
        assert!(go.starts_with("354"), "{go}");
        c.write_all(b"Subject: big\r\n\r\n").unwrap();
        let line = [b"x".repeat(998), b"\r\n".to_vec()].concat();
        for _ in 0..1500 {
            c.write_all(&line).unwrap();
        }
        open.push((c, r));
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut replies = Vec::new();
    for (mut c, mut r) in open {
        replies.push(smtp_say(&mut c, &mut r, ".\r\n"));
    }
    let queued = replies.iter().filter(|r| r.starts_with("250")).count();
    let later = replies
        .iter()
        .filter(|r| r.starts_with("451 4.3.1"))
        .count();
    assert!(
        queued >= 1 && later >= 1 && queued + later == 3,
        "{replies:?}"
    );
    // Once they are done the budget is whole again.
    s.still_serves();
    let (mut c, mut r) = smtp_connect(s.mx);
    smtp_say(&mut c, &mut r, "EHLO big.test\r\n");
    smtp_say(&mut c, &mut r, "MAIL FROM:<big@sender.test>\r\n");
    smtp_say(&mut c, &mut r, "RCPT TO:<me@example.test>\r\n");
    smtp_say(&mut c, &mut r, "DATA\r\n");
    // 2 MB, alone: within the budget.
    let message = format!(
        "Subject: big\r\n\r\n{}.\r\n",
        format!("{}\r\n", "z".repeat(998)).repeat(2000)
    );
    let reply = smtp_say(&mut c, &mut r, &message);
    assert!(reply.starts_with("250"), "{reply}");
}

#[test]
fn memory_taken_by_a_burst_of_large_smtp_messages_is_given_back() {
    let s = start(free_port(), "");
    let before = s.process.memory_kib("VmRSS");
    // Eight senders at once, 8 MB each: 64 MB of messages in flight, and their copies.
    let mx = s.mx;
    let senders: Vec<_> = (0..8)
        .map(|n| {
            std::thread::spawn(move || {
                let (mut c, mut r) = smtp_connect(mx);
                smtp_say(&mut c, &mut r, "EHLO big.test\r\n");
                smtp_say(&mut c, &mut r, "MAIL FROM:<big@sender.test>\r\n");
                smtp_say(&mut c, &mut r, "RCPT TO:<me@example.test>\r\n");
                let go = smtp_say(&mut c, &mut r, "DATA\r\n");
                assert!(go.starts_with("354"), "{go}");
                c.write_all(format!("Subject: big {n}\r\n\r\n").as_bytes())
                    .unwrap();
                let line = [b"y".repeat(998), b"\r\n".to_vec()].concat();
                for _ in 0..8000 {
                    c.write_all(&line).unwrap();
                }
                smtp_say(&mut c, &mut r, ".\r\n")
            })
        })
        .collect();
    let replies: Vec<String> = senders.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(replies.iter().all(|r| r.starts_with("250")), "{replies:?}");
    memory_comes_back(&s, before);
}

#[test]
fn the_server_asks_for_no_huge_pages() {
    // mimalloc madvises its arenas for transparent huge pages; each one touched is then
    // resident whole (2 MiB), which took an idle server from 26 to 41 MB.
    let s = start(free_port(), "");
    assert_eq!(
        s.process.status_field("THP_enabled").as_deref(),
        Some("0"),
        "/proc/PID/status should say THP_enabled: 0 (Linux 5.0 and later have the field)"
    );
}

#[test]
fn memory_taken_by_a_burst_of_large_appends_is_given_back() {
    let s = start(free_port(), "");
    let dir = s.w.path().to_path_buf();
    let before = s.process.memory_kib("VmRSS");
    // Ten logged-in clients append 20 MB each at once: 200 MB in flight.
    let out = python_peer_run(
        "imap_append_burst.py",
        &[
            &s.imap.to_string(),
            "me@example.test",
            "quickstart",
            "10",
            "20",
        ],
        &dir,
    );
    assert!(
        out.stdout.contains("appended 10"),
        "{}{}\nserver log:\n{}",
        out.stdout,
        out.stderr,
        s.process.log_text()
    );
    memory_comes_back(&s, before);
}

/// Once a burst is over, what it took goes back: within a few seconds the server is
/// within 64 MiB of its RSS `before` it.
fn memory_comes_back(s: &Server, before: u64) {
    let peak = s.process.memory_kib("VmHWM");
    let settled = wait_for(Duration::from_secs(15), || {
        s.process.memory_kib("VmRSS") < before + 64 * 1024
    });
    let after = s.process.memory_kib("VmRSS");
    eprintln!("RSS before {before} KiB, peak {peak} KiB, after {after} KiB");
    assert!(
        settled,
        "RSS before {before} KiB, peak {peak} KiB, after {after} KiB"
    );
}

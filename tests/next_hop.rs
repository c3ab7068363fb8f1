//! Forwarding that the next hop accepts (issue 25), against aiosmtpd as the receiving MX:
//! what its EHLO offers decides what ferrymail sends, and a message it cannot take fails
//! at once with a notice that says why.

mod common;
#[path = "../benches/support/postfix.rs"]
mod postfix;
#[path = "../benches/support/processes.rs"]
mod processes;

use std::path::Path;
use std::time::Duration;

use common::{
    Workspace, free_port, knot, mx_sink_with, python_peer_run, raw_exchange, received, wait_for,
    zone,
};

/// The recipient domains, one per case, each with its MX host on its own address.
const DOMAINS: [(&str, u8); 4] = [("small", 1), ("eight", 2), ("utf8", 3), ("ascii", 4)];
/// Where sender.test receives its notices.
const SENDER_MX: u8 = 9;

fn a(n: u8) -> String {
    format!("127.0.27.{n}")
}

/// The spec: the MX on `mx`, DNS from Knot on `dns_port`, and for each (alias, target)
/// an alias of example.test that forwards to the target.
fn forwards(mx: u16, dns_port: u16, aliases: &[(&str, &str)]) -> String {
    let mut spec = format!(
        "[listeners]\nmx = \"127.0.0.1:{mx}\"\n\n[dns]\nresolver = \"127.0.0.1:{dns_port}\"\n\n"
    );
    for (alias, to) in aliases {
        spec.push_str(&format!(
            "[domains.\"example.test\".aliases.{alias}]\nforward = [\"{to}\"]\n\n"
        ));
    }
    spec
}

/// Sends the message in `file` from someone@sender.test to `to` with smtplib, as it is.
fn send(w: &Workspace, mx: u16, to: &str, file: &Path) {
    python_peer_run(
        "send_file.py",
        &[
            &mx.to_string(),
            "someone@sender.test",
            to,
            file.to_str().unwrap(),
        ],
        w.path(),
    )
    .ok();
}

fn message(w: &Workspace, name: &str, headers: &str, body: &str) -> std::path::PathBuf {
    let file = w.path().join(name);
    let text = format!(
        "From: Someone <someone@sender.test>\r\nTo: {name}@example.test\r\nDate: Sun, 06 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{name}@sender.test>\r\n{headers}\r\n{body}"
    );
    std::fs::write(&file, text).expect("message");
    file
}

/// The notice has this status and says this.
#[track_caller]
fn says(notice: &str, status: &str, text: &str) {
    assert!(
        notice.contains(&format!("Status: {status}")) && notice.contains(text),
        "{notice}"
    );
}

/// Knot serving `{domain}.test` for each (domain, n), its one MX host at 127.0.27.n.
fn dns_for(w: &Workspace, hosts: &[(&str, u8)]) -> (common::Process, u16) {
    let zones: Vec<(String, String)> = hosts
        .iter()
        .map(|(domain, n)| {
            let name = format!("{domain}.test");
            let records = format!("@ MX 10 mx\nmx A {}\n", a(*n));
            (name.clone(), zone(&name, &records))
        })
        .collect();
    let zones: Vec<(&str, &str)> = zones
        .iter()
        .map(|(n, z)| (n.as_str(), z.as_str()))
        .collect();
    knot(w.path(), &zones)
}

#[test]
fn what_the_next_hop_offers_decides_what_it_is_sent() {
    let w = Workspace::new("");
    let mut hosts = vec![("sender", SENDER_MX)];
    hosts.extend(DOMAINS);
    let (dns, dns_port) = dns_for(&w, &hosts);
    let (_s1, small) = mx_sink_with(&w, &a(1), None, false, &["--size=50000"]);
    let (_s2, eight) = mx_sink_with(&w, &a(2), None, false, &[]);
    // aiosmtpd offers SMTPUTF8 unless told not to.
    let (_s3, utf8) = mx_sink_with(&w, &a(3), None, false, &[]);
    let (_s4, ascii) = mx_sink_with(&w, &a(4), None, false, &["--no-smtputf8"]);
    let (_s9, sender) = mx_sink_with(&w, &a(SENDER_MX), None, false, &[]);

    let mx = free_port();
    // Each case's alias forwards to its own domain; the ascii case to a UTF-8 address.
    let targets: Vec<(&str, String)> = DOMAINS
        .iter()
        .map(|(domain, _)| {
            let friend = if *domain == "ascii" {
                "fr\u{ef}end"
            } else {
                "friend"
            };
            (*domain, format!("{friend}@{domain}.test"))
        })
        .collect();
    let targets: Vec<(&str, &str)> = targets.iter().map(|(a, t)| (*a, t.as_str())).collect();
    w.write_spec(&forwards(mx, dns_port, &targets));
    let server = w.serve(mx);

    // 60 KB to a host that takes 50,000 bytes: not sent, and not retried for days.
    let big = big(&w, "small", 800);
    send(&w, mx, "small@example.test", &big);
    // 8-bit text in the body, to a host that offers 8BITMIME.
    let latin = message(
        &w,
        "eight",
        "Return-Path: <forged@sender.test>\r\nSubject: 8-bit\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n",
        "Grüße aus Köln\r\n",
    );
    send(&w, mx, "eight@example.test", &latin);
    // UTF-8 in a header, to a host that offers SMTPUTF8.
    let unicode = message(
        &w,
        "utf8",
        "Subject: Grüße\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n",
        "Hallo\r\n",
    );
    send(&w, mx, "utf8@example.test", &unicode);
    // To an alias that forwards to a UTF-8 address, at a host without SMTPUTF8.
    let plain = message(&w, "ascii", "Subject: to a UTF-8 address\r\n", "Hello\r\n");
    send(&w, mx, "ascii@example.test", &plain);

    for (dir, name) in [(&eight, "eight"), (&utf8, "utf8")] {
        assert!(
            wait_for(Duration::from_secs(30), || received(dir).len() == 1),
            "nothing reached mx.{name}.test: {}",
            server.log_text()
        );
    }
    let options = |dir: &Path| std::fs::read_to_string(dir.join("0.opts")).expect("N.opts");
    // RFC 6152: the 8-bit body is declared; RFC 1870: the size is told.
    let said = options(&eight);
    assert!(said.contains("BODY=8BITMIME"), "{said}");
    assert!(said.lines().any(|l| l.starts_with("SIZE=")), "{said}");
    assert!(!said.contains("SMTPUTF8"), "no UTF-8 in its header: {said}");
    assert!(received(&eight)[0].content.contains("Grüße aus Köln"));
    // RFC 5321 §4.4: Return-Path is the final delivery's to write; one that came is dropped.
    assert!(
        !received(&eight)[0].content.contains("Return-Path"),
        "{}",
        received(&eight)[0].content
    );
    // RFC 6531: UTF-8 in the header section needs SMTPUTF8, and the host offers it.
    let said = options(&utf8);
    assert!(said.contains("SMTPUTF8"), "{said}");
    assert!(received(&utf8)[0].content.contains("Subject: Grüße"));

    // The senders are told at once why; nothing is queued to be retried.
    assert!(
        wait_for(Duration::from_secs(30), || received(&sender).len() == 2),
        "two notices should reach sender.test: {}",
        server.log_text()
    );
    let notices = received(&sender);
    let notice_about = |subject: &str| {
        notices
            .iter()
            .find(|n| n.content.contains(subject))
            .unwrap_or_else(|| panic!("no notice about {subject}: {}", server.log_text()))
            .content
            .clone()
    };
    // The host's limit, in the notice.
    let notice = notice_about("Subject: big");
    says(
        &notice,
        "5.3.4",
        "mx.small.test takes messages of 50000 bytes at the most",
    );
    assert!(received(&small).is_empty(), "the big message was not sent");
    // RFC 6531 §3.2: a UTF-8 address cannot be downgraded: 5.6.7.
    let notice = notice_about("Subject: to a UTF-8 address");
    says(&notice, "5.6.7", "mx.ascii.test does not offer SMTPUTF8");
    assert!(received(&ascii).is_empty());
    let queue = w.run(&["queue", "list"]).stdout;
    assert!(
        !queue.contains(".test"),
        "nothing waits to be retried: {queue}"
    );
    drop(dns);
}

/// What cannot go on is refused before the data, with the reason: BINARYMIME (not offered),
/// a UTF-8 address without SMTPUTF8, and a declared size over the smallest limit of a
/// chain through this server's domains.
#[test]
fn what_cannot_go_on_is_refused_up_front() {
    let w = Workspace::new("");
    let (dns, dns_port) = common::quiet_dns(w.path());
    let mx = free_port();
    // chain@example.test forwards to x@small.example, a domain of this server that takes
    // 10 KB, which forwards on: the message would be refused at its end.
    w.write_spec(&format!(
        "[listeners]\nmx = \"127.0.0.1:{mx}\"\n\n[dns]\nresolver = \"127.0.0.1:{dns_port}\"\n\n\
         [domains.\"example.test\".aliases.chain]\nforward = [\"x@small.example\"]\n\n\
         [domains.\"example.test\".aliases.plain]\nforward = [\"friend@elsewhere.test\"]\n\n\
         [domains.\"small.example\"]\nmax_message_size = \"10KB\"\n\n\
         [domains.\"small.example\".aliases.x]\nforward = [\"friend@elsewhere.test\"]\n"
    ));
    let _server = w.serve(mx);
    let said = raw_exchange(
        mx,
        "EHLO client.test\r\n\
         MAIL FROM:<someone@sender.test> BODY=BINARYMIME\r\n\
         MAIL FROM:<s\u{f1}@sender.test>\r\n\
         MAIL FROM:<someone@sender.test>\r\n\
         RCPT TO:<fr\u{ed}end@example.test>\r\n\
         RSET\r\n\
         MAIL FROM:<someone@sender.test> SIZE=20000\r\n\
         RCPT TO:<chain@example.test>\r\n\
         RCPT TO:<plain@example.test>\r\n\
         QUIT\r\n",
    );
    assert!(!said.contains("BINARYMIME\r\n250-"), "{said}");
    assert!(
        said.contains("555 5.5.4 BODY=BINARYMIME is not offered here"),
        "{said}"
    );
    // Once for the sender, once for the recipient.
    assert_eq!(
        said.matches("553 5.6.7 A UTF-8 address needs MAIL FROM's SMTPUTF8")
            .count(),
        2,
        "{said}"
    );
    assert!(
        said.contains(
            "552 5.3.4 Message too big for this recipient: it takes 10000 bytes at the most"
        ),
        "{said}"
    );
    // The other recipient, at a domain with the default limit, is taken.
    assert!(said.contains("250 2.1.5"), "{said}");
    drop(dns);
}

/// What arrived is intact in meaning: Python's email decodes every part to what was sent
/// (tests/peers/mime_same.py: 7-bit, no line over 998), and dkimpy passes our DKIM
/// signature (`txt`, our key's record) and the ARC chain.
fn assert_intact(w: &Workspace, name: &str, sent: &Path, arrived: &Path, txt: &str) {
    let content = std::fs::read_to_string(arrived).unwrap_or_default();
    let same = python_peer_run(
        "mime_same.py",
        &[sent.to_str().unwrap(), arrived.to_str().unwrap()],
        w.path(),
    );
    assert!(same.code == 0, "{name}: {}\n{content}", same.stdout);
    let dkim = common::dkimpy("dkim", arrived, &[txt]);
    assert!(
        dkim.stdout.contains("PASS example.test ferrymail"),
        "{name}: {}\n{content}",
        dkim.stdout
    );
    let arc = common::dkimpy("arc", arrived, &[txt]);
    assert!(
        arc.stdout.starts_with("pass"),
        "{name}: ARC {}\n{content}",
        arc.stdout
    );
}

/// A line of 2,000 characters (400 words), then a short one.
fn long_line(w: &Workspace) -> std::path::PathBuf {
    message(
        w,
        "long",
        "Subject: one long line\r\n",
        &format!("{}\r\nshort\r\n", "word ".repeat(400)),
    )
}

/// `lines` lines of 78 bytes: a message of about `lines` × 78 bytes.
fn big(w: &Workspace, name: &str, lines: usize) -> std::path::PathBuf {
    let line = format!("{}\r\n", "x".repeat(76));
    message(w, name, "Subject: big\r\n", &line.repeat(lines))
}

/// The hosts of the re-encoding test: one without 8BITMIME or SMTPUTF8, and one that
/// offers both but refuses a line over 998 (aiosmtpd: "500 Line too long").
const SEVEN: u8 = 5;
const STRICT: u8 = 6;
/// Where sender.test receives its notices in that test (tests run side by side).
const SENDER_MX_2: u8 = 10;

/// Mail each next hop can take only re-encoded goes re-encoded, signed and sealed as it
/// leaves: dkimpy verifies our DKIM signature and ARC set on what arrived, and every part
/// decodes to what was sent. What no copy can carry fails at once with why.
#[test]
fn mail_is_re_encoded_for_a_next_hop_that_needs_it() {
    let w = Workspace::new("");
    let (dns, dns_port) = dns_for(
        &w,
        &[
            ("sender", SENDER_MX_2),
            ("seven", SEVEN),
            ("strict", STRICT),
        ],
    );
    let (_s5, seven) = mx_sink_with(
        &w,
        &a(SEVEN),
        None,
        false,
        &["--seven-bit", "--no-smtputf8"],
    );
    let (_s6, strict) = mx_sink_with(&w, &a(STRICT), None, false, &[]);
    let (_s9, sender) = mx_sink_with(&w, &a(SENDER_MX_2), None, false, &[]);

    let mx = free_port();
    w.write_spec(&forwards(
        mx,
        dns_port,
        &[
            ("long", "friend@strict.test"),
            ("latin", "friend@seven.test"),
            ("names", "friend@seven.test"),
            ("mixed", "friend@seven.test"),
            ("address", "friend@seven.test"),
            ("unfoldable", "friend@seven.test"),
        ],
    ));
    let server = w.serve(mx);

    // A 2,000-character line, to a host that refuses lines over 998.
    let long = long_line(&w);
    // An 8-bit body, to a host without 8BITMIME.
    let latin = message(
        &w,
        "latin",
        "Subject: Latin-1\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n",
        "Gr\u{fc}\u{df}e aus K\u{f6}ln, bis bald und viele Gr\u{fc}\u{df}e\r\n",
    );
    // It is Latin-1 on the wire: the message file is written as such.
    let latin_bytes: Vec<u8> = std::fs::read_to_string(&latin)
        .unwrap()
        .chars()
        .map(|c| c as u32 as u8)
        .collect();
    std::fs::write(&latin, latin_bytes).unwrap();
    // UTF-8 in the subject and a display name, to a host without SMTPUTF8.
    let names = message(
        &w,
        "names",
        "Subject: Grüße aus Köln\r\nCc: Zoë Ünal <zoe@sender.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n",
        "Schöne Grüße aus Köln, wir sehen uns bald wieder!\r\n",
    );
    // Multipart: UTF-8 text with a long line, raw 8-bit bytes in an attachment, an
    // attached message with an 8-bit body.
    let mut mixed_body = String::from("--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n");
    mixed_body.push_str(&"Größe ".repeat(300));
    mixed_body.push_str("\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=data.bin\r\n\r\n");
    let mixed = message(
        &w,
        "mixed",
        "Subject: parts\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n",
        &mixed_body,
    );
    let mut bytes = std::fs::read(&mixed).unwrap();
    bytes.extend(
        (0u8..=255)
            .filter(|b| *b != b'\r' && *b != b'\n')
            .cycle()
            .take(3_000),
    );
    bytes.extend_from_slice(b"\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nFrom: x@sender.test\r\nSubject: inner\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\xc3\x9cber den Fluss und weit weg\r\n--b--\r\n");
    std::fs::write(&mixed, bytes).unwrap();
    // UTF-8 in an address of the header: only SMTPUTF8 carries it.
    let address = message(
        &w,
        "address",
        "Subject: to a UTF-8 address\r\nReply-To: jürgen@sender.test\r\n",
        "Hello\r\n",
    );
    for (alias, file) in [
        ("long", &long),
        ("latin", &latin),
        ("names", &names),
        ("mixed", &mixed),
        ("address", &address),
    ] {
        send(&w, mx, &format!("{alias}@example.test"), file);
    }
    // A header line of 1,200 characters with no blank to fold at cannot be forwarded to
    // anyone: refused at DATA, not bounced later.
    let unfoldable = message(
        &w,
        "unfoldable",
        &format!("In-Reply-To: <{}@sender.test>\r\n", "x".repeat(1_200)),
        "Hello\r\n",
    );
    let refused = python_peer_run(
        "send_file.py",
        &[
            &mx.to_string(),
            "someone@sender.test",
            "unfoldable@example.test",
            unfoldable.to_str().unwrap(),
        ],
        w.path(),
    );
    assert!(
        refused.stderr.contains("550") && refused.stderr.contains("no blank to fold it at"),
        "{refused:?}"
    );

    assert!(
        wait_for(Duration::from_secs(30), || received(&seven).len() == 3
            && received(&strict).len() == 1),
        "three messages should reach mx.seven.test and one mx.strict.test: {}",
        server.log_text()
    );
    let txt = common::dkim_txt(&w);
    let mut arrived: Vec<common::Received> = received(&seven);
    arrived.extend(received(&strict));
    for (name, sent) in [
        ("long", &long),
        ("latin", &latin),
        ("names", &names),
        ("mixed", &mixed),
    ] {
        let got = arrived
            .iter()
            .find(|m| {
                m.content
                    .contains(&format!("Message-ID: <{name}@sender.test>"))
            })
            .unwrap_or_else(|| panic!("{name} did not arrive: {}", server.log_text()));
        assert_intact(&w, name, sent, &got.path, &txt);
    }
    // RFC 6152: nothing 8-bit is declared to the host that does not offer it.
    for n in 0..3 {
        let opts = std::fs::read_to_string(seven.join(format!("{n}.opts"))).unwrap();
        assert!(
            !opts.contains("BODY=") && !opts.contains("SMTPUTF8"),
            "{opts}"
        );
    }
    // The encoded words, as a reader without UTF-8 sees them.
    let names_got = arrived
        .iter()
        .find(|m| m.content.contains("Message-ID: <names@sender.test>"))
        .unwrap();
    assert!(
        names_got.content.contains("Subject: =?UTF-8?B?"),
        "{}",
        names_got.content
    );

    // The UTF-8 address: a notice at once, 5.6.7, and nothing sent.
    assert!(
        wait_for(Duration::from_secs(30), || received(&sender).len() == 1),
        "a notice should reach sender.test: {}",
        server.log_text()
    );
    let notice = &received(&sender)[0].content;
    says(notice, "5.6.7", "mx.seven.test does not offer SMTPUTF8");
    drop(dns);
}

/// Postfix as postfix.test's MX, on 127.0.27.7:25.
const POSTFIX: u8 = 7;
/// Where sender.test receives its notices in the Postfix test.
const SENDER_MX_3: u8 = 11;
/// The largest message the strict Postfix takes (SIZE in its EHLO).
const POSTFIX_LIMIT: usize = 100_000;

/// A private Postfix 3.7, strict as a receiver can be told to be: bare newlines refused,
/// RFC 821 envelopes only, a size limit, and neither 8BITMIME nor SMTPUTF8 offered. It
/// files friend@postfix.test's mail in a Maildir; returns it and its `new` directory.
fn strict_postfix(base: &Path) -> (postfix::PostfixInstance, std::path::PathBuf) {
    let (postfix_bin, postmap) = (
        postfix::find_tool("postfix").expect("postfix (scripts/test installs it)"),
        postfix::find_tool("postmap").expect("postmap"),
    );
    let (uid, gid) = processes::user_ids("postfix").expect("the postfix user");
    let mail = base.join("mail");
    std::fs::create_dir_all(&mail).unwrap();
    processes::chown(&mail, uid, gid).unwrap();
    let b = base.display();
    let main_cf = format!(
        "{}myhostname = mx.postfix.test
virtual_alias_domains =
virtual_alias_maps =
virtual_mailbox_domains = postfix.test
virtual_mailbox_base = {b}/mail
virtual_mailbox_maps = hash:{b}/etc/vmailbox
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
virtual_minimum_uid = 1
smtpd_forbid_bare_newline = yes
strict_rfc821_envelopes = yes
message_size_limit = {POSTFIX_LIMIT}
smtpd_discard_ehlo_keywords = 8bitmime, smtputf8
",
        postfix::base_main_cf(base)
    );
    let instance = postfix::PostfixInstance::create(
        &postfix_bin,
        &postmap,
        base,
        &format!("{}:25", a(POSTFIX)),
        &main_cf,
        &[("vmailbox", "friend@postfix.test friend/\n")],
    )
    .unwrap_or_else(|e| panic!("a private Postfix: {e}"));
    (instance, mail.join("friend/new"))
}

/// The strict Postfix as the next hop: what it does not offer is not declared, long lines
/// and 8-bit and UTF-8 go re-encoded and verify, an oversized message fails at once with
/// its limit, and a UTF-8 address with 5.6.7.
#[test]
fn a_strict_postfix_next_hop_gets_what_it_takes() {
    let w = Workspace::new("");
    let (dns, dns_port) = dns_for(&w, &[("sender", SENDER_MX_3), ("postfix", POSTFIX)]);
    let postfix_dir = w.path().join("postfix");
    let (postfix, maildir) = strict_postfix(&postfix_dir);
    let (_s11, sender) = mx_sink_with(&w, &a(SENDER_MX_3), None, false, &[]);

    let mx = free_port();
    w.write_spec(&forwards(
        mx,
        dns_port,
        &[
            ("long", "friend@postfix.test"),
            ("latin", "friend@postfix.test"),
            ("names", "friend@postfix.test"),
            ("big", "friend@postfix.test"),
            ("utf8", "fr\u{ef}end@postfix.test"),
        ],
    ));
    let server = w.serve(mx);

    let long = long_line(&w);
    let latin = message(
        &w,
        "latin",
        "Subject: 8-bit\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n",
        "Schöne Grüße aus Köln, wir sehen uns bald wieder!\r\n",
    );
    let names = message(
        &w,
        "names",
        "Subject: Grüße aus Köln\r\nCc: Zoë Ünal <zoe@sender.test>\r\n",
        "Hello\r\n",
    );
    let big = big(&w, "big", 1_400);
    let utf8 = message(&w, "utf8", "Subject: to a UTF-8 address\r\n", "Hello\r\n");
    for (alias, file) in [
        ("long", &long),
        ("latin", &latin),
        ("names", &names),
        ("big", &big),
        ("utf8", &utf8),
    ] {
        send(&w, mx, &format!("{alias}@example.test"), file);
    }

    let arrived = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&maildir)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default()
    };
    assert!(
        wait_for(Duration::from_secs(30), || arrived().len() == 3),
        "three messages should reach Postfix: {}\n{}",
        server.log_text(),
        postfix.log_tail(30)
    );
    let txt = common::dkim_txt(&w);
    for (name, sent) in [("long", &long), ("latin", &latin), ("names", &names)] {
        let got = arrived()
            .into_iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .find(|m| m.contains(&format!("Message-ID: <{name}@sender.test>")))
            .unwrap_or_else(|| panic!("{name} did not reach Postfix"));
        // Postfix's Maildir has LF line ends; the message as it came had CRLF.
        let copy = w.path().join(format!("{name}.postfix"));
        std::fs::write(&copy, got.replace('\n', "\r\n")).unwrap();
        assert_intact(&w, name, sent, &copy, &txt);
    }
    assert!(
        wait_for(Duration::from_secs(30), || received(&sender).len() == 2),
        "two notices should reach sender.test: {}",
        server.log_text()
    );
    let notices = received(&sender);
    let about = |subject: &str| {
        notices
            .iter()
            .find(|n| n.content.contains(subject))
            .unwrap_or_else(|| panic!("no notice about {subject}"))
            .content
            .clone()
    };
    let notice = about("Subject: big");
    says(
        &notice,
        "5.3.4",
        &format!("mx.postfix.test takes messages of {POSTFIX_LIMIT} bytes at the most"),
    );
    let notice = about("Subject: to a UTF-8 address");
    says(&notice, "5.6.7", "mx.postfix.test does not offer SMTPUTF8");
    drop(dns);
}

/// The MX hosts of two.test: the first lacks SMTPUTF8, the second has it.
const TWO_FIRST: u8 = 12;
const TWO_SECOND: u8 = 13;

/// One MX host that lacks what the message needs does not decide for the others (RFC
/// 5321 §5.1: the next is tried): the UTF-8 address reaches the one that offers SMTPUTF8.
#[test]
fn a_host_without_an_extension_is_passed_over_for_the_next() {
    let w = Workspace::new("");
    let zones = [(
        "two.test".to_string(),
        zone(
            "two.test",
            &format!(
                "@ MX 10 mx1\n@ MX 20 mx2\nmx1 A {}\nmx2 A {}\n",
                a(TWO_FIRST),
                a(TWO_SECOND)
            ),
        ),
    )];
    let zones: Vec<(&str, &str)> = zones
        .iter()
        .map(|(n, z)| (n.as_str(), z.as_str()))
        .collect();
    let (dns, dns_port) = knot(w.path(), &zones);
    let (_s1, first) = mx_sink_with(&w, &a(TWO_FIRST), None, false, &["--no-smtputf8"]);
    let (_s2, second) = mx_sink_with(&w, &a(TWO_SECOND), None, false, &[]);
    let mx = free_port();
    w.write_spec(&forwards(mx, dns_port, &[("two", "fr\u{ef}end@two.test")]));
    let server = w.serve(mx);
    let plain = message(&w, "two", "Subject: to a UTF-8 address\r\n", "Hello\r\n");
    send(&w, mx, "two@example.test", &plain);
    assert!(
        wait_for(Duration::from_secs(30), || received(&second).len() == 1),
        "the second MX host should get it: {}",
        server.log_text()
    );
    assert!(received(&first).is_empty());
    let opts = std::fs::read_to_string(second.join("0.opts")).unwrap();
    assert!(opts.contains("SMTPUTF8"), "{opts}");
    drop(dns);
}

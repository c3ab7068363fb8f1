//! IMAP benchmark: the same 10,000-message mailbox served by ferrymail and by Dovecot
//! (Debian's dovecot-imapd, a private instance on a loopback port), in the same run.
//!
//! The bench makes 10,000 varied messages (2–20 KB, a third of them multipart, the rare
//! word "zebracorn" in about 1% of the bodies) from a fixed seed and APPENDs them to the
//! INBOX of one account on each server (untimed). Then, over one connection per server
//! (STARTTLS on both, the same self-signed ECDSA certificate), it times end to end, to the
//! tagged OK: `SELECT INBOX`, `UID FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE)`,
//! `UID FETCH 1:* (BODY.PEEK[])`, `UID SEARCH TEXT zebracorn` and
//! `UID STORE 1:* +FLAGS.SILENT (\Flagged)`. Each operation runs 3 times, the servers
//! taking turns, and the median counts. It also reports each server's peak memory. Then
//! a write mix: 5 clients at once on one folder, 4,000 commands each per server (the same
//! random sequence on both): STORE, EXPUNGE, COPY, APPEND, FETCH and SEARCH, with p50/p99
//! per command. The target: every operation at ≤ 0.5× Dovecot's time. BENCHMARKS.md says
//! how to read the results.

#[path = "support/machine.rs"]
mod machine;
#[path = "support/processes.rs"]
mod processes;
#[path = "support/tls_client.rs"]
mod tls_client;

use machine::{command_line, cpu_model, ferrymail_revision};
use processes::*;
use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

/// The binary measured (FERRYMAIL_BIN picks another; see machine::ferrymail_binary).
static FERRYMAIL: std::sync::LazyLock<String> = std::sync::LazyLock::new(machine::ferrymail_binary);
/// Messages in the mailbox (FERRYMAIL_BENCH_MESSAGES overrides it, for a quick look).
const MESSAGES: usize = 10_000;
/// The target: each operation in at most this share of Dovecot's time (issue 17).
const TARGET: f64 = 0.5;
/// Runs of each operation; the median counts.
const RUNS: usize = 3;
/// The word SEARCH TEXT looks for; about 1 message in 100 has it.
const RARE_WORD: &str = "zebracorn";
const SEED: u64 = 0x5eed_1a4b_2025;
const USER: &str = "me@bench.test";
const PASSWORD: &str = "bench-imap-password";
/// Longest a server may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest the client waits for any bytes from a server.
const IO_TIMEOUT: Duration = Duration::from_secs(600);
/// How often the memory sampler looks at the servers' processes.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
const INSTALL_DOVECOT: &str = "apt-get install -y dovecot-imapd";

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without
    // it, and a debug-build bench there would only slow the tests down.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "imap_vs_dovecot bench: skipped (run it with `cargo bench --bench imap_vs_dovecot`)"
        );
        return;
    }
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let messages: usize = std::env::var("FERRYMAIL_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(MESSAGES);
    let storage = std::env::var("FERRYMAIL_BENCH_DOVECOT_STORAGE")
        .ok()
        .filter(|s| ["maildir", "sdbox", "mdbox"].contains(&s.as_str()))
        .unwrap_or_else(|| "maildir".into());
    let tmp =
        tempfile::tempdir().expect("creating a temp dir for the bench (set TMPDIR to move it)");
    // FERRYMAIL_BENCH_KEEP=1 leaves the servers' files and logs behind, to look at.
    let keep = std::env::var("FERRYMAIL_BENCH_KEEP").is_ok_and(|v| v == "1");
    let (_removed_at_exit, dir) = if keep {
        (None, tmp.keep())
    } else {
        let path = tmp.path().to_path_buf();
        (Some(tmp), path)
    };
    // Dovecot's login and mail processes run as other users and must get through it.
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
        .expect("making the bench's temp dir traversable");

    println!("# ferrymail IMAP beside Dovecot\n");
    println!("binary: {} ({})", *FERRYMAIL, ferrymail_revision());
    println!(
        "machine: {} cores ({}), kernel {}, temp dir {}",
        command_line("nproc", &[]),
        cpu_model(),
        command_line("uname", &["-r"]),
        dir.display()
    );
    let dovecot = find_tool("dovecot");
    let dovecot_version = dovecot
        .as_ref()
        .map(|d| command_line(&d.display().to_string(), &["--version"]));
    let quiet = quiet_check(Duration::from_secs(2));
    println!(
        "before the runs, other processes kept the CPUs {:.0}% busy{}",
        quiet * 100.0,
        if quiet > 0.05 {
            " — the machine is not idle; the figures below will be disturbed"
        } else {
            ""
        }
    );

    let started = Instant::now();
    let corpus = Corpus::generate(messages, SEED);
    println!(
        "mailbox: {} messages, {:.1} MB in all ({} to {} bytes, median {}), {} multipart, \
         \"{RARE_WORD}\" in {} (made in {:.1} s)",
        corpus.messages.len(),
        corpus.total_bytes() as f64 / 1e6,
        corpus.min_len(),
        corpus.max_len(),
        corpus.median_len(),
        corpus.multipart,
        corpus.hits.len(),
        started.elapsed().as_secs_f64()
    );
    let config = tls_client::any_certificate();

    // ferrymail first: Dovecot borrows its self-signed certificate, so that both TLS
    // handshakes and record layers are alike.
    let mut sides = Vec::new();
    let fm_dir = dir.join("ferrymail");
    match Side::ferrymail(&fm_dir, &corpus, &config) {
        Ok(side) => sides.push(side),
        Err(e) => panic!("the ferrymail half could not start: {e}"),
    }
    match dovecot_unavailable(dovecot.as_deref()) {
        Some(why) => println!(
            "\nThe Dovecot half is skipped: {why}. To include it, install Dovecot:\n\n    \
             {INSTALL_DOVECOT}\n"
        ),
        None => {
            let tool = dovecot.as_deref().unwrap_or_else(|| unreachable!());
            let name = format!(
                "Dovecot {} ({storage})",
                dovecot_version
                    .as_deref()
                    .and_then(|v| v.split_whitespace().next())
                    .unwrap_or("?")
            );
            let cert = fm_dir.join("data");
            match Side::dovecot(
                tool,
                &name,
                &dir.join("dovecot"),
                &storage,
                &cert,
                &corpus,
                &config,
            ) {
                Ok(side) => sides.push(side),
                Err(e) => panic!("the Dovecot half could not start: {e}"),
            }
        }
    }

    // One measuring connection per server, logged in before anything is timed.
    for side in &mut sides {
        let imap = Imap::login(side.port, &config)
            .unwrap_or_else(|e| panic!("{}: logging in to measure: {e}", side.name));
        println!(
            "{}: measuring connection over {}",
            side.name,
            imap.tls.as_deref().unwrap_or("plain TCP")
        );
        side.imap = Some(imap);
    }
    // Peaks from here on belong to the operations, not to the load.
    for side in &mut sides {
        side.load_memory = Some(side.reset_peaks());
        side.sampler = Some(Sampler::start(side.pid));
    }
    let cpu_before = CpuReading::take(&sides);
    let ops_started = Instant::now();
    for run in 0..RUNS {
        for op in OPS {
            // The servers take turns going first.
            let order: Vec<usize> = if run % 2 == 0 {
                (0..sides.len()).collect()
            } else {
                (0..sides.len()).rev().collect()
            };
            for i in order {
                sides[i].measure(op, run, &corpus);
            }
        }
    }
    let ops_wall = ops_started.elapsed();
    let cpu = CpuReading::take(&sides).since(&cpu_before);
    for side in &mut sides {
        side.ops_memory = Some(side.peaks());
    }
    println!(
        "\nthe timed operations took {:.1} s; the machine was {:.0}% busy, {:.0}% of it by \
         processes other than the servers and this bench",
        ops_wall.as_secs_f64(),
        cpu.busy * 100.0,
        cpu.others * 100.0
    );
    // Untimed: every body, byte for byte.
    for side in &mut sides {
        side.verify_bodies(&corpus);
    }
    check_across(&sides, &corpus);
    report(&sides, &corpus);
    let mixes: Vec<MixResult> = sides
        .iter()
        .map(|side| write_mix(side, &corpus, &config, &Mix::FLAT_OUT))
        .collect();
    report_mix(&sides, &mixes, &Mix::FLAT_OUT);
    let paced: Vec<MixResult> = sides
        .iter()
        .map(|side| write_mix(side, &corpus, &config, &Mix::PACED))
        .collect();
    report_mix(&sides, &paced, &Mix::PACED);
    for side in &mut sides {
        side.stop();
    }
}

// ---------------------------------------------------------------------------------------
// The mailbox: deterministic, varied messages.

struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// True with probability `percent`/100.
    fn percent(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }
}

const FIRST_NAMES: &[&str] = &[
    "Alice", "Bruno", "Chloé", "Dmitri", "Emma", "Farid", "Grace", "Hiroshi", "Ines", "Jonas",
    "Karin", "Luis", "Maya", "Nils", "Olga", "Pedro", "Quinn", "Rosa", "Samir", "Tess",
];
const LAST_NAMES: &[&str] = &[
    "Anderson",
    "Bauer",
    "Costa",
    "Dubois",
    "Eriksen",
    "Fischer",
    "García",
    "Hansen",
    "Ito",
    "Jensen",
    "Kowalski",
    "Lindqvist",
    "Moreau",
    "Nakamura",
    "O'Brien",
    "Petrov",
    "Rossi",
    "Schmidt",
    "Tanaka",
    "Weber",
];
const DOMAINS: &[&str] = &[
    "example.com",
    "mail.example.org",
    "lists.example.net",
    "corp.example",
    "shop.example.com",
    "university.example.edu",
    "news.example.org",
    "friends.example",
];
const WORDS: &[&str] = &[
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "for",
    "it",
    "as",
    "was",
    "with",
    "be",
    "by",
    "on",
    "not",
    "this",
    "are",
    "at",
    "from",
    "have",
    "or",
    "an",
    "they",
    "which",
    "you",
    "one",
    "were",
    "all",
    "we",
    "when",
    "there",
    "can",
    "been",
    "has",
    "more",
    "if",
    "will",
    "would",
    "about",
    "report",
    "meeting",
    "project",
    "schedule",
    "budget",
    "invoice",
    "delivery",
    "server",
    "mailbox",
    "folder",
    "weekend",
    "holiday",
    "garden",
    "coffee",
    "kitchen",
    "bicycle",
    "train",
    "ticket",
    "concert",
    "library",
    "payment",
    "contract",
    "review",
    "release",
    "update",
    "question",
    "answer",
    "summary",
    "picture",
    "family",
    "office",
    "friday",
    "monday",
    "morning",
    "evening",
    "quarter",
    "numbers",
    "figures",
    "customer",
    "support",
    "account",
    "password",
    "network",
    "backup",
    "storage",
    "invite",
    "agenda",
    "draft",
    "version",
    "feedback",
    "weather",
    "travel",
    "hotel",
    "airport",
    "dinner",
    "lunch",
    "recipe",
    "birthday",
    "present",
    "thanks",
    "please",
    "soon",
    "later",
    "tomorrow",
    "yesterday",
    "today",
    "important",
    "quick",
    "note",
    "reminder",
    "attached",
    "document",
    "spreadsheet",
    "slides",
    "deadline",
    "progress",
    "team",
    "plan",
    "idea",
];
const UTF8_WORDS: &[&str] = &[
    "café",
    "naïve",
    "Grüße",
    "smørbrød",
    "façade",
    "déjà",
    "Ångström",
];
const SUBJECT_OPENERS: &[&str] = &[
    "Re:",
    "Fwd:",
    "Re: Re:",
    "[team]",
    "[announce]",
    "Invitation:",
    "Reminder:",
    "",
    "",
    "",
];
const ZONES: &[&str] = &[
    "+0000", "+0100", "+0200", "-0500", "-0800", "+0530", "+0900",
];
const MONTHS: &[&str] = &[
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const WEEKDAYS: &[&str] = &["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];

struct Message {
    bytes: Vec<u8>,
    /// APPEND's date-time, e.g. "01-Jul-2025 10:00:00 +0200".
    internal_date: String,
    /// APPEND's flags.
    flags: &'static str,
}

struct Corpus {
    messages: Vec<Message>,
    /// Indexes of the messages whose body has the rare word.
    hits: BTreeSet<usize>,
    multipart: usize,
}

impl Corpus {
    fn generate(n: usize, seed: u64) -> Corpus {
        let mut rng = Lcg(seed);
        let mut messages = Vec::with_capacity(n);
        let mut hits = BTreeSet::new();
        let mut multipart = 0;
        // 2024-01-01T00:00:00Z, then about one message an hour.
        let mut when: i64 = 1_704_067_200;
        for i in 0..n {
            when += 600 + rng.below(6_000) as i64;
            // At least one hit, even in a quick run.
            let hit = rng.percent(1) || (i == n / 2 && hits.is_empty());
            if hit {
                hits.insert(i);
            }
            let m = message(&mut rng, i, when, hit);
            if memmem(&m.bytes, b"Content-Type: multipart/").is_some() {
                multipart += 1;
            }
            messages.push(m);
        }
        Corpus {
            messages,
            hits,
            multipart,
        }
    }

    fn total_bytes(&self) -> usize {
        self.messages.iter().map(|m| m.bytes.len()).sum()
    }

    fn sorted_lens(&self) -> Vec<usize> {
        let mut lens: Vec<usize> = self.messages.iter().map(|m| m.bytes.len()).collect();
        lens.sort_unstable();
        lens
    }

    fn min_len(&self) -> usize {
        self.sorted_lens().first().copied().unwrap_or(0)
    }

    fn max_len(&self) -> usize {
        self.sorted_lens().last().copied().unwrap_or(0)
    }

    fn median_len(&self) -> usize {
        let lens = self.sorted_lens();
        lens.get(lens.len() / 2).copied().unwrap_or(0)
    }
}

/// (year, month 1–12, day) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, usize, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m as usize, d)
}

/// (RFC 5322 Date, IMAP date-time) of `unix` shown in `zone` (the wall time is shifted by
/// the zone's offset, so both strings name the same instant).
fn dates(unix: i64, zone: &str) -> (String, String) {
    let sign = if zone.starts_with('-') { -1 } else { 1 };
    let hours: i64 = zone[1..3].parse().unwrap_or(0);
    let minutes: i64 = zone[3..5].parse().unwrap_or(0);
    let local = unix + sign * (hours * 3600 + minutes * 60);
    let days = local.div_euclid(86_400);
    let secs = local.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (secs / 3600, secs / 60 % 60, secs % 60);
    let weekday = WEEKDAYS[days.rem_euclid(7) as usize];
    let month = MONTHS[m - 1];
    (
        format!("{weekday}, {d} {month} {y} {hh:02}:{mm:02}:{ss:02} {zone}"),
        format!("{d:02}-{month}-{y} {hh:02}:{mm:02}:{ss:02} {zone}"),
    )
}

fn person(rng: &mut Lcg) -> (String, String) {
    let first = rng.pick(FIRST_NAMES);
    let last = rng.pick(LAST_NAMES);
    let local = format!("{}.{}", first.to_lowercase(), last.to_lowercase())
        .replace(['é', 'í'], "e")
        .replace(['ç'], "c")
        .replace('\'', "");
    let local: String = local.chars().filter(char::is_ascii).collect();
    let addr = format!("{local}@{}", rng.pick(DOMAINS));
    let ascii = first.is_ascii() && last.is_ascii();
    let comma = rng.percent(10);
    let name = if comma {
        format!("{last}, {first}")
    } else {
        format!("{first} {last}")
    };
    let shown = if rng.percent(10) {
        addr.clone()
    } else if ascii {
        if comma || last.contains('\'') {
            format!("\"{name}\" <{addr}>")
        } else {
            format!("{name} <{addr}>")
        }
    } else {
        // Most mailers encode a non-ASCII name (RFC 2047); a few send it raw (RFC 6532).
        match rng.below(10) {
            0..=5 => format!("=?UTF-8?B?{}?= <{addr}>", base64(name.as_bytes())),
            6..=8 => format!("=?utf-8?q?{}?= <{addr}>", qp_word(&name)),
            _ => format!("\"{name}\" <{addr}>"),
        }
    };
    (shown, addr)
}

/// Lines of about 60–76 characters; the rare word goes into the first paragraph.
fn paragraphs(rng: &mut Lcg, target: usize, hit: bool, utf8: bool) -> Vec<String> {
    let mut lines = Vec::new();
    let mut size = 0;
    let mut line = String::new();
    let mut words_in_paragraph = 0;
    let mut rare_placed = !hit;
    while size < target {
        let word = if !rare_placed && words_in_paragraph == 7 {
            rare_placed = true;
            if rng.percent(50) {
                RARE_WORD
            } else {
                "Zebracorn"
            }
        } else if utf8 && rng.percent(3) {
            rng.pick(UTF8_WORDS)
        } else {
            rng.pick(WORDS)
        };
        if line.len() + word.len() + 1 > 60 + rng.below(16) {
            size += line.len() + 2;
            lines.push(std::mem::take(&mut line));
            if rng.percent(12) {
                lines.push(String::new());
                size += 2;
            }
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
        words_in_paragraph += 1;
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

fn message(rng: &mut Lcg, i: usize, when: i64, hit: bool) -> Message {
    // Sizes from 2 KB to 20 KB, more small ones than large.
    let r = rng.below(1000) as f64 / 1000.0;
    let target = 1_400 + (r * r * 18_000.0) as usize;
    let zone = rng.pick(ZONES);
    let (date, internal_date) = dates(when, zone);
    let (from, from_addr) = person(rng);
    let domain = from_addr
        .split('@')
        .nth(1)
        .unwrap_or("example.com")
        .to_string();
    let utf8 = rng.percent(6);
    let kind = rng.below(10); // 0–5 plain, 6–8 alternative, 9 mixed
    let opener = rng.pick(SUBJECT_OPENERS);
    let mut subject_words: Vec<&str> = (0..2 + rng.below(7)).map(|_| rng.pick(WORDS)).collect();
    if let Some(first) = subject_words.first_mut()
        && *first == "the"
    {
        *first = "The";
    }
    let mut subject = format!("{opener} {}", subject_words.join(" "))
        .trim()
        .to_string();
    if utf8 && rng.percent(50) {
        subject = format!(
            "=?UTF-8?Q?{}?=",
            qp_word(&format!(
                "{} {}",
                rng.pick(UTF8_WORDS),
                subject_words.join(" ")
            ))
        );
    }
    if rng.percent(3) {
        subject.push_str(&format!(" #{}", 1000 + i));
    }
    let mut h = String::new();
    h.push_str(&format!("Return-Path: <{from_addr}>\r\n"));
    h.push_str(&format!(
        "Received: from mail.{domain} (mail.{domain} [192.0.2.{}])\r\n\tby mx.bench.test with ESMTPS id {:08x}\r\n\tfor <{USER}>; {date}\r\n",
        1 + rng.below(250),
        rng.next()
    ));
    h.push_str(&format!("From: {from}\r\n"));
    let to = if rng.percent(80) {
        format!("Me <{USER}>")
    } else {
        USER.to_string()
    };
    h.push_str(&format!("To: {to}\r\n"));
    if rng.percent(20) {
        let (a, _) = person(rng);
        let (b, _) = person(rng);
        h.push_str(&format!("Cc: {a},\r\n {b}\r\n"));
    }
    h.push_str(&format!("Subject: {subject}\r\n"));
    h.push_str(&format!("Date: {date}\r\n"));
    h.push_str(&format!("Message-ID: <{i}.{:x}@{domain}>\r\n", rng.next()));
    if opener.starts_with("Re:") {
        let a = format!(
            "<{}.{:x}@{domain}>",
            i.saturating_sub(1 + rng.below(50)),
            rng.next()
        );
        let b = format!("<{}.{:x}@{}>", i / 2, rng.next(), rng.pick(DOMAINS));
        h.push_str(&format!("In-Reply-To: {a}\r\nReferences: {b}\r\n {a}\r\n"));
    }
    if rng.percent(30) {
        h.push_str(&format!(
            "List-Id: <{}.{domain}>\r\nList-Unsubscribe: <mailto:leave@{domain}>\r\n",
            rng.pick(WORDS)
        ));
    }
    h.push_str("MIME-Version: 1.0\r\n");
    let charset = if utf8 { "utf-8" } else { "us-ascii" };
    let cte = if utf8 { "8bit" } else { "7bit" };
    // An alternative carries its text twice (plain and html).
    let text_target = if (6..=8).contains(&kind) {
        target * 10 / 21
    } else {
        target
    };
    let text = paragraphs(rng, text_target, hit, utf8);
    let mut body = String::new();
    match kind {
        0..=5 => {
            h.push_str(&format!(
                "Content-Type: text/plain; charset={charset}; format=flowed\r\nContent-Transfer-Encoding: {cte}\r\n"
            ));
            for l in &text {
                body.push_str(l);
                body.push_str("\r\n");
            }
        }
        _ => {
            let boundary = format!("=_bench_{:012x}", rng.next());
            let mixed = kind == 9;
            let outer = if mixed { "mixed" } else { "alternative" };
            h.push_str(&format!(
                "Content-Type: multipart/{outer}; boundary=\"{boundary}\"\r\n"
            ));
            body.push_str("This is a multi-part message in MIME format.\r\n\r\n");
            body.push_str(&format!(
                "--{boundary}\r\nContent-Type: text/plain; charset={charset}\r\nContent-Transfer-Encoding: {cte}\r\n\r\n"
            ));
            // Multipart messages carry part of their size in the second part.
            let split = if mixed {
                text.len() * 2 / 3
            } else {
                text.len() / 2
            };
            let split = split.max(1).min(text.len());
            // The rare word stays in the text part (and so in both parts of an alternative).
            let rare_line = text
                .iter()
                .position(|l| l.contains(RARE_WORD) || l.contains("Zebracorn"));
            let first_part = rare_line.map_or(split, |r| split.max(r + 1));
            for l in &text[..first_part] {
                body.push_str(l);
                body.push_str("\r\n");
            }
            body.push_str(&format!("\r\n--{boundary}\r\n"));
            if mixed {
                let name = format!("{}-{}.bin", rng.pick(WORDS), i);
                body.push_str(&format!(
                    "Content-Type: application/octet-stream; name=\"{name}\"\r\n\
                     Content-Disposition: attachment; filename=\"{name}\"\r\n\
                     Content-Transfer-Encoding: base64\r\n\r\n"
                ));
                let raw: Vec<u8> = (0..(text.len() - first_part) * 50)
                    .map(|_| rng.next() as u8)
                    .collect();
                let encoded = base64(&raw);
                for chunk in encoded.as_bytes().chunks(76) {
                    body.push_str(std::str::from_utf8(chunk).unwrap_or_default());
                    body.push_str("\r\n");
                }
            } else {
                body.push_str(&format!(
                    "Content-Type: text/html; charset={charset}\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
                ));
                body.push_str("<html><body style=3D\"font-family: sans-serif\">\r\n");
                // The html part shows the same text; hit messages repeat the word there.
                for l in &text[..first_part] {
                    if !l.is_empty() {
                        body.push_str(&format!("<p>{}</p>\r\n", html_qp(l)));
                    }
                }
                for l in &text[first_part..] {
                    if !l.is_empty() {
                        body.push_str(&format!("<div>{}</div>\r\n", html_qp(l)));
                    }
                }
                body.push_str("</body></html>\r\n");
            }
            body.push_str(&format!("--{boundary}--\r\n"));
        }
    }
    let flags = match rng.below(10) {
        0..=5 => "\\Seen",
        6 => "\\Seen \\Answered",
        _ => "",
    };
    let mut bytes = h.into_bytes();
    bytes.extend_from_slice(b"\r\n");
    bytes.extend_from_slice(body.as_bytes());
    Message {
        bytes,
        internal_date,
        flags,
    }
}

/// Quoted-printable for an html line: `=` and non-ASCII bytes encoded.
fn html_qp(line: &str) -> String {
    let mut out = String::new();
    for b in line.bytes() {
        if b == b'=' || !b.is_ascii() {
            out.push_str(&format!("={b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

/// The encoded text of a `=?UTF-8?Q?...?=` word.
fn qp_word(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b' ' => out.push('_'),
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => out.push(b as char),
            _ => out.push_str(&format!("={b:02X}")),
        }
    }
    out
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

fn memmem(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------------------
// The IMAP client: blocking, over rustls after STARTTLS.

enum Transport {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
    Gone,
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::Tls(s) => s.read(buf),
            Transport::Gone => Ok(0),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(buf),
            Transport::Tls(s) => s.write(buf),
            Transport::Gone => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.flush(),
            Transport::Tls(s) => s.flush(),
            Transport::Gone => Ok(()),
        }
    }
}

/// One response line with the literals it carries; `text` keeps each `{n}` marker where
/// its literal was.
#[derive(Default)]
struct Item {
    text: Vec<u8>,
    literals: Vec<Vec<u8>>,
}

struct Imap {
    io: Transport,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    tag: u32,
    literal_plus: bool,
    /// Plaintext bytes read from the server so far.
    read_bytes: u64,
    /// "TLSv1_3 TLS13_AES_256_GCM_SHA384" once STARTTLS is done.
    tls: Option<String>,
}

/// `{n}` (or `{n+}`) at the end of a response line: a literal of n bytes follows.
fn literal_len(line: &[u8]) -> Option<usize> {
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let digits = &inner[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

impl Imap {
    fn connect(port: u16) -> Result<Imap, String> {
        let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let _ = tcp.set_read_timeout(Some(IO_TIMEOUT));
        let mut imap = Imap {
            io: Transport::Plain(tcp),
            buf: vec![0; 256 * 1024],
            start: 0,
            end: 0,
            tag: 0,
            literal_plus: false,
            read_bytes: 0,
            tls: None,
        };
        let greeting = imap.read_item()?;
        if !greeting.text.starts_with(b"* OK") {
            return Err(format!("greeting: {}", show(&greeting.text)));
        }
        Ok(imap)
    }

    /// Connects, STARTTLS, LOGIN: ready for commands of the authenticated state.
    fn login(port: u16, config: &Arc<ClientConfig>) -> Result<Imap, String> {
        let mut imap = Imap::connect(port)?;
        imap.command("STARTTLS", |_| {})?;
        if imap.start != imap.end {
            return Err("the server sent bytes after its STARTTLS OK".into());
        }
        let Transport::Plain(tcp) = std::mem::replace(&mut imap.io, Transport::Gone) else {
            return Err("STARTTLS twice".into());
        };
        let name = ServerName::try_from("mx.bench.test").map_err(|e| e.to_string())?;
        let conn = ClientConnection::new(config.clone(), name).map_err(|e| e.to_string())?;
        imap.io = Transport::Tls(Box::new(StreamOwned::new(conn, tcp)));
        let mut caps = String::new();
        imap.command("CAPABILITY", |item| {
            if item.text.starts_with(b"* CAPABILITY") {
                caps = text(&item.text);
            }
        })?;
        imap.literal_plus = caps.split_whitespace().any(|c| c == "LITERAL+");
        if let Transport::Tls(s) = &imap.io {
            imap.tls = Some(format!(
                "{:?} {:?}",
                s.conn
                    .protocol_version()
                    .unwrap_or(rustls::ProtocolVersion::Unknown(0)),
                s.conn
                    .negotiated_cipher_suite()
                    .map(|c| c.suite())
                    .unwrap_or(rustls::CipherSuite::Unknown(0))
            ));
        }
        imap.command(&format!("LOGIN \"{USER}\" \"{PASSWORD}\""), |_| {})?;
        Ok(imap)
    }

    fn fill(&mut self) -> Result<(), String> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let n = self
            .io
            .read(&mut self.buf[self.end..])
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
        self.end += n;
        self.read_bytes += n as u64;
        Ok(())
    }

    /// Appends one line, CRLF included, to `out`.
    fn read_line(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        loop {
            let ready = &self.buf[self.start..self.end];
            if let Some(i) = ready.iter().position(|&b| b == b'\n') {
                out.extend_from_slice(&ready[..=i]);
                self.start += i + 1;
                return Ok(());
            }
            out.extend_from_slice(ready);
            self.start = self.end;
            self.fill()?;
        }
    }

    fn read_exact_into(&mut self, mut n: usize, out: &mut Vec<u8>) -> Result<(), String> {
        while n > 0 {
            if self.start == self.end {
                self.fill()?;
            }
            let take = n.min(self.end - self.start);
            out.extend_from_slice(&self.buf[self.start..self.start + take]);
            self.start += take;
            n -= take;
        }
        Ok(())
    }

    fn read_item(&mut self) -> Result<Item, String> {
        let mut item = Item::default();
        loop {
            let from = item.text.len();
            self.read_line(&mut item.text)?;
            if !item.text.ends_with(b"\r\n") {
                return Err(format!(
                    "a response line without CRLF: {}",
                    show(&item.text[from..])
                ));
            }
            item.text.truncate(item.text.len() - 2);
            match literal_len(&item.text[from..]) {
                Some(n) => {
                    let mut literal = Vec::with_capacity(n);
                    self.read_exact_into(n, &mut literal)?;
                    item.literals.push(literal);
                }
                None => return Ok(item),
            }
        }
    }

    fn next_tag(&mut self) -> String {
        self.tag += 1;
        format!("B{:05}", self.tag)
    }

    fn send(&mut self, bytes: &[&[u8]]) -> Result<(), String> {
        for b in bytes {
            self.io.write_all(b).map_err(|e| format!("write: {e}"))?;
        }
        self.io.flush().map_err(|e| format!("write: {e}"))
    }

    /// Sends a command and reads its responses up to the tagged one, handing each
    /// untagged response to `each`. Ok(the tagged line after the tag) on OK.
    fn command(&mut self, command: &str, each: impl FnMut(Item)) -> Result<String, String> {
        let tag = self.next_tag();
        self.send(&[tag.as_bytes(), b" ", command.as_bytes(), b"\r\n"])?;
        self.finish(&tag, command, each)
    }

    fn finish(
        &mut self,
        tag: &str,
        command: &str,
        mut each: impl FnMut(Item),
    ) -> Result<String, String> {
        loop {
            let item = self.read_item()?;
            if item.text.starts_with(tag.as_bytes()) && item.text.get(tag.len()) == Some(&b' ') {
                let status = text(&item.text[tag.len() + 1..]);
                return if status.starts_with("OK") {
                    Ok(status)
                } else {
                    Err(format!("`{command}` → `{tag} {status}`"))
                };
            }
            if item.text.starts_with(b"+") {
                return Err(format!(
                    "`{command}`: an unexpected continuation: {}",
                    show(&item.text)
                ));
            }
            each(item);
        }
    }

    /// APPEND to INBOX with LITERAL+ when offered; returns the UID from APPENDUID.
    fn append(&mut self, m: &Message) -> Result<u32, String> {
        self.append_to("INBOX", m)
    }

    /// The UIDs of the selected folder (UID SEARCH ALL).
    fn all_uids(&mut self) -> Result<Vec<u32>, String> {
        let mut uids = Vec::new();
        self.command("UID SEARCH ALL", |item| {
            if item.text.starts_with(b"* SEARCH") {
                uids.extend(
                    text(&item.text)
                        .split_whitespace()
                        .skip(2)
                        .filter_map(|u| u.parse::<u32>().ok()),
                );
            }
        })?;
        Ok(uids)
    }

    fn append_to(&mut self, folder: &str, m: &Message) -> Result<u32, String> {
        let tag = self.next_tag();
        let plus = if self.literal_plus { "+" } else { "" };
        let head = format!(
            "{tag} APPEND {folder} ({}) \"{}\" {{{}{plus}}}\r\n",
            m.flags,
            m.internal_date,
            m.bytes.len()
        );
        self.send(&[head.as_bytes()])?;
        if !self.literal_plus {
            let go = self.read_item()?;
            if !go.text.starts_with(b"+") {
                return Err(format!("APPEND: {}", show(&go.text)));
            }
        }
        self.send(&[&m.bytes, b"\r\n"])?;
        let status = self.finish(&tag, "APPEND", |_| {})?;
        status
            .split("[APPENDUID ")
            .nth(1)
            .and_then(|r| r.split([' ', ']']).nth(1))
            .and_then(|u| u.parse().ok())
            .ok_or_else(|| format!("APPEND: no APPENDUID in `{status}`"))
    }
}

/// The whole of a response's text, for parsing.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A response's text for a message, cut at 300 characters.
fn show(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    if s.len() > 300 {
        let mut cut = 300;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}…", &s[..cut])
    } else {
        s.into_owned()
    }
}

// ---------------------------------------------------------------------------------------
// A small parser for FETCH responses (after the timing).

#[derive(Clone, Debug, PartialEq)]
enum Val {
    Nil,
    Atom(String),
    Str(Vec<u8>),
    List(Vec<Val>),
}

impl Val {
    fn render(&self) -> String {
        match self {
            Val::Nil => "NIL".into(),
            Val::Atom(a) => a.clone(),
            Val::Str(s) => format!("{:?}", String::from_utf8_lossy(s)),
            Val::List(l) => format!(
                "({})",
                l.iter().map(Val::render).collect::<Vec<_>>().join(" ")
            ),
        }
    }
}

struct Parser<'a> {
    text: &'a [u8],
    at: usize,
    literals: &'a [Vec<u8>],
    next_literal: usize,
}

impl Parser<'_> {
    fn skip_spaces(&mut self) {
        while self.text.get(self.at) == Some(&b' ') {
            self.at += 1;
        }
    }

    fn value(&mut self) -> Option<Val> {
        self.skip_spaces();
        match *self.text.get(self.at)? {
            b'(' => {
                self.at += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_spaces();
                    if self.text.get(self.at) == Some(&b')') {
                        self.at += 1;
                        return Some(Val::List(items));
                    }
                    items.push(self.value()?);
                }
            }
            b'"' => {
                self.at += 1;
                let mut s = Vec::new();
                loop {
                    let b = *self.text.get(self.at)?;
                    self.at += 1;
                    match b {
                        b'"' => return Some(Val::Str(s)),
                        b'\\' => {
                            s.push(*self.text.get(self.at)?);
                            self.at += 1;
                        }
                        _ => s.push(b),
                    }
                }
            }
            b'{' => {
                let close = self.text[self.at..].iter().position(|&b| b == b'}')?;
                self.at += close + 1;
                let lit = self.literals.get(self.next_literal)?.clone();
                self.next_literal += 1;
                Some(Val::Str(lit))
            }
            _ => {
                let start = self.at;
                let mut depth = 0;
                while let Some(&b) = self.text.get(self.at) {
                    match b {
                        b'[' => depth += 1,
                        b']' => depth -= 1,
                        b' ' | b'(' | b')' if depth == 0 => break,
                        _ => {}
                    }
                    self.at += 1;
                }
                let atom = String::from_utf8_lossy(&self.text[start..self.at]).into_owned();
                if atom.eq_ignore_ascii_case("NIL") {
                    Some(Val::Nil)
                } else {
                    Some(Val::Atom(atom))
                }
            }
        }
    }
}

/// The items of `* n FETCH (...)` by name (upper case).
fn fetch_items(item: &Item) -> Option<HashMap<String, Val>> {
    let at = memmem(&item.text, b" FETCH (")? + " FETCH ".len();
    let mut p = Parser {
        text: &item.text,
        at,
        literals: &item.literals,
        next_literal: 0,
    };
    let Val::List(list) = p.value()? else {
        return None;
    };
    let mut out = HashMap::new();
    let mut it = list.into_iter();
    while let (Some(Val::Atom(k)), Some(v)) = (it.next(), it.next()) {
        out.insert(k.to_ascii_uppercase(), v);
    }
    Some(out)
}

/// The number after "UID " in a FETCH response, without parsing the rest.
fn quick_uid(text: &[u8]) -> Option<u32> {
    let at = memmem(text, b"UID ")? + 4;
    let digits: Vec<u8> = text[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .copied()
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

// ---------------------------------------------------------------------------------------
// One server under test.

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Select,
    FetchMeta,
    FetchBodies,
    Search,
    Store,
}

const OPS: [Op; 5] = [
    Op::Select,
    Op::FetchMeta,
    Op::FetchBodies,
    Op::Search,
    Op::Store,
];

impl Op {
    fn index(self) -> usize {
        OPS.iter().position(|&o| o == self).unwrap_or(0)
    }

    fn command(self) -> String {
        match self {
            Op::Select => "SELECT INBOX".into(),
            Op::FetchMeta => "UID FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE)".into(),
            Op::FetchBodies => "UID FETCH 1:* (BODY.PEEK[])".into(),
            Op::Search => format!("UID SEARCH TEXT {RARE_WORD}"),
            Op::Store => "UID STORE 1:* +FLAGS.SILENT (\\Flagged)".into(),
        }
    }

    fn label(self) -> String {
        match self {
            Op::FetchBodies => "`UID FETCH 1:* (BODY.PEEK[])`, all bodies".into(),
            Op::Store => "`UID STORE 1:* +FLAGS.SILENT (\\Flagged)`, every message".into(),
            _ => format!("`{}`", self.command()),
        }
    }
}

#[derive(Clone, Copy)]
struct Sample {
    wall: Duration,
    /// CPU seconds of the server's processes.
    cpu: f64,
    /// Plaintext bytes of the response.
    bytes: u64,
    /// Untagged responses.
    untagged: usize,
}

#[derive(Clone, Copy, Default)]
struct Peaks {
    /// Sum of VmHWM over the processes alive at the end (ferrymail: its one process).
    hwm_sum_kib: u64,
    largest_hwm_kib: u64,
    processes: usize,
    /// Sampled every SAMPLE_EVERY: peak of the summed RSS and PSS, most threads.
    sampled_rss_kib: u64,
    sampled_pss_kib: u64,
    threads: u64,
    /// Whether VmHWM could be reset at the start of the phase.
    reset: bool,
}

struct Side {
    name: String,
    port: u16,
    pid: u32,
    guard: ChildGuard,
    log: PathBuf,
    imap: Option<Imap>,
    /// Corpus index of each UID (from APPENDUID).
    index_of: HashMap<u32, usize>,
    load_time: Duration,
    load_sampler: Option<Sampler>,
    load_memory: Option<Peaks>,
    sampler: Option<Sampler>,
    ops_memory: Option<Peaks>,
    samples: Vec<Vec<Sample>>,
    failures: Vec<(Op, String)>,
    /// RFC822.SIZE of each UID, from the last metadata FETCH.
    sizes: HashMap<u32, u64>,
    /// The last metadata FETCH, parsed: UID → items.
    meta: HashMap<u32, HashMap<String, Val>>,
    search_hits: Option<BTreeSet<u32>>,
    selected: bool,
    notes: Vec<String>,
}

impl Side {
    fn new(name: &str, port: u16, guard: ChildGuard, log: PathBuf) -> Side {
        Side {
            name: name.into(),
            port,
            pid: guard.pid(),
            guard,
            log,
            imap: None,
            index_of: HashMap::new(),
            load_time: Duration::ZERO,
            load_sampler: None,
            load_memory: None,
            sampler: None,
            ops_memory: None,
            samples: vec![Vec::new(); OPS.len()],
            failures: Vec::new(),
            sizes: HashMap::new(),
            meta: HashMap::new(),
            search_hits: None,
            selected: false,
            notes: Vec::new(),
        }
    }

    fn ferrymail(dir: &Path, corpus: &Corpus, config: &Arc<ClientConfig>) -> Result<Side, String> {
        println!("\n## ferrymail\n");
        fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let hash = ferrymail_hash(PASSWORD)?;
        let (mx, imap) = (free_port(), free_port());
        let spec = dir.join("ferrymail.toml");
        let (account, domain) = USER.split_once('@').unwrap_or((USER, ""));
        fs::write(
            &spec,
            format!(
                "[server]\nhostname = \"mx.bench.test\"\ndata_dir = \"data\"\n\n\
                 [listeners]\nmx = \"127.0.0.1:{mx}\"\nimap = \"127.0.0.1:{imap}\"\n\n\
                 [dns]\nresolver = \"127.0.0.1:1\"   # unused\n\n\
                 [domains.\"{domain}\".aliases.{account}]\n\
                 mailbox = {{ password = {{ hash = \"{hash}\" }} }}\n"
            ),
        )
        .map_err(|e| format!("writing the spec: {e}"))?;
        let log = dir.join("serve.log");
        let child = Command::new(&*FERRYMAIL)
            .current_dir(dir)
            .arg("--spec")
            .arg(&spec)
            .arg("serve")
            .env_remove("FERRYMAIL_SPEC")
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.join("serve.out")).map_err(|e| e.to_string())?)
            .stderr(fs::File::create(&log).map_err(|e| e.to_string())?)
            .spawn()
            .map_err(|e| format!("starting ferrymail serve: {e}"))?;
        let mut guard = ChildGuard::new(child, "ferrymail");
        if !wait_for_port(imap, START_TIMEOUT, || guard.exited()) {
            return Err(format!(
                "ferrymail did not listen on {imap}: {}",
                tail(&fs::read_to_string(&log).unwrap_or_default(), 10)
            ));
        }
        println!(
            "ferrymail serve (pid {}) with IMAP on 127.0.0.1:{imap} (STARTTLS, its self-signed certificate)",
            guard.pid()
        );
        let mut side = Side::new("ferrymail", imap, guard, log);
        side.load(corpus, config)?;
        Ok(side)
    }

    fn dovecot(
        tool: &Path,
        name: &str,
        dir: &Path,
        storage: &str,
        cert_dir: &Path,
        corpus: &Corpus,
        config: &Arc<ClientConfig>,
    ) -> Result<Side, String> {
        println!("\n## {name}\n");
        let port = free_port();
        let instance = DovecotInstance::create(dir, port, storage, cert_dir)?;
        let log = dir.join("dovecot.log");
        let child = Command::new(tool)
            .arg("-c")
            .arg(&instance.config)
            .arg("-F")
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.join("dovecot.out")).map_err(|e| e.to_string())?)
            .stderr(fs::File::create(dir.join("dovecot.err")).map_err(|e| e.to_string())?)
            .spawn()
            .map_err(|e| format!("starting dovecot: {e}"))?;
        let mut guard = ChildGuard::new(child, "dovecot");
        if !wait_for_port(port, START_TIMEOUT, || guard.exited()) {
            return Err(format!(
                "dovecot did not listen on {port}: {} {}",
                tail(
                    &fs::read_to_string(dir.join("dovecot.err")).unwrap_or_default(),
                    5
                ),
                tail(&fs::read_to_string(&log).unwrap_or_default(), 5)
            ));
        }
        println!(
            "dovecot -F (master pid {}) with IMAP on 127.0.0.1:{port} (STARTTLS, {}); \
             mail_location = {}; mail user {}",
            guard.pid(),
            instance.cert_note,
            instance.mail_location,
            instance.mail_user
        );
        let mut side = Side::new(name, port, guard, log);
        side.load(corpus, config)?;
        Ok(side)
    }

    /// APPENDs the corpus, untimed as far as the results go.
    fn load(&mut self, corpus: &Corpus, config: &Arc<ClientConfig>) -> Result<(), String> {
        self.load_sampler = Some(Sampler::start(self.pid));
        let started = Instant::now();
        let mut imap = Imap::login(self.port, config)?;
        for (i, m) in corpus.messages.iter().enumerate() {
            let uid = imap
                .append(m)
                .map_err(|e| format!("APPEND of message {}: {e}", i + 1))?;
            if self.index_of.insert(uid, i).is_some() {
                return Err(format!("APPEND gave UID {uid} twice"));
            }
        }
        let _ = imap.command("LOGOUT", |_| {});
        self.load_time = started.elapsed();
        println!(
            "loaded {} messages with APPEND{} in {:.1} s ({:.0} msg/s; not part of the results)",
            corpus.messages.len(),
            if imap.literal_plus { " (LITERAL+)" } else { "" },
            self.load_time.as_secs_f64(),
            corpus.messages.len() as f64 / self.load_time.as_secs_f64()
        );
        Ok(())
    }

    fn imap(&mut self) -> &mut Imap {
        self.imap
            .as_mut()
            .unwrap_or_else(|| unreachable!("logged in before measuring"))
    }

    fn cpu_seconds(&self) -> f64 {
        tree_cpu_seconds(self.pid)
    }

    /// Runs one operation, timed, then its checks, untimed.
    fn measure(&mut self, op: Op, run: usize, corpus: &Corpus) {
        let n = corpus.messages.len();
        if op == Op::Select && self.selected {
            if let Err(e) = self.imap().command("UNSELECT", |_| {}) {
                // Without UNSELECT, a second SELECT closes the first itself.
                self.note(format!("UNSELECT failed ({e}); SELECT again without it"));
            }
            self.selected = false;
        }
        let command = op.command();
        let mut items: Vec<Item> = Vec::new();
        let mut bodies: Vec<(Option<u32>, usize, usize)> = Vec::new();
        let mut untagged = 0;
        let cpu_before = self.cpu_seconds();
        let bytes_before = self.imap().read_bytes;
        let started = Instant::now();
        let result = match op {
            Op::FetchBodies => self.imap().command(&command, |item| {
                untagged += 1;
                bodies.push((
                    quick_uid(&item.text),
                    item.literals.len(),
                    item.literals.first().map_or(0, Vec::len),
                ));
            }),
            _ => self.imap().command(&command, |item| {
                untagged += 1;
                items.push(item);
            }),
        };
        let wall = started.elapsed();
        let sample = Sample {
            wall,
            cpu: self.cpu_seconds() - cpu_before,
            bytes: self.imap().read_bytes - bytes_before,
            untagged,
        };
        if let Err(e) = result {
            println!("{}: {e}", self.name);
            self.failures.push((op, e));
            return;
        }
        self.samples[op.index()].push(sample);
        let name = self.name.clone();
        match op {
            Op::Select => {
                self.selected = true;
                let exists = items.iter().find_map(|i| {
                    let t = text(&i.text);
                    t.strip_suffix(" EXISTS")?
                        .strip_prefix("* ")?
                        .parse::<usize>()
                        .ok()
                });
                assert_eq!(
                    exists,
                    Some(n),
                    "{name}: SELECT INBOX should report {n} EXISTS"
                );
            }
            Op::FetchMeta => {
                assert_eq!(
                    items.len(),
                    n,
                    "{name}: the metadata FETCH should answer once per message"
                );
                self.meta.clear();
                self.sizes.clear();
                for item in &items {
                    let parsed = fetch_items(item)
                        .unwrap_or_else(|| panic!("{name}: cannot parse `{}`", show(&item.text)));
                    let uid = match parsed.get("UID") {
                        Some(Val::Atom(u)) => u.parse::<u32>().ok(),
                        _ => None,
                    }
                    .unwrap_or_else(|| panic!("{name}: no UID in `{}`", show(&item.text)));
                    for key in ["FLAGS", "RFC822.SIZE", "ENVELOPE"] {
                        assert!(
                            parsed.contains_key(key),
                            "{name}: no {key} in `{}`",
                            show(&item.text)
                        );
                    }
                    if let Some(Val::Atom(s)) = parsed.get("RFC822.SIZE")
                        && let Ok(size) = s.parse()
                    {
                        self.sizes.insert(uid, size);
                    }
                    self.meta.insert(uid, parsed);
                }
                if run == 0 {
                    let wrong: Vec<String> = self
                        .sizes
                        .iter()
                        .filter_map(|(uid, &size)| {
                            let i = *self.index_of.get(uid)?;
                            let real = corpus.messages[i].bytes.len() as u64;
                            (real != size).then(|| format!("UID {uid}: {size} for {real} bytes"))
                        })
                        .collect();
                    if !wrong.is_empty() {
                        self.note(format!(
                            "RFC822.SIZE differs from the appended size for {} messages, e.g. {}",
                            wrong.len(),
                            wrong[0]
                        ));
                    }
                }
            }
            Op::FetchBodies => {
                assert_eq!(
                    bodies.len(),
                    n,
                    "{name}: the body FETCH should answer once per message"
                );
                for (uid, literals, len) in bodies {
                    let uid = uid.unwrap_or_else(|| panic!("{name}: a body FETCH without UID"));
                    assert_eq!(
                        literals, 1,
                        "{name}: UID {uid}: one literal per body expected"
                    );
                    let announced = self.sizes.get(&uid).copied();
                    assert_eq!(
                        Some(len as u64),
                        announced,
                        "{name}: UID {uid}: the body's length differs from its RFC822.SIZE"
                    );
                }
            }
            Op::Search => {
                let mut hits = BTreeSet::new();
                for item in &items {
                    if let Some(rest) = item.text.strip_prefix(b"* SEARCH") {
                        for word in text(rest).split_whitespace() {
                            if let Ok(u) = word.parse::<u32>() {
                                hits.insert(u);
                            }
                        }
                    }
                }
                if let Some(before) = &self.search_hits {
                    assert_eq!(
                        before, &hits,
                        "{name}: SEARCH answered differently across runs"
                    );
                }
                self.search_hits = Some(hits);
            }
            Op::Store => {
                // Untimed: every message is \Flagged now; then the flag is taken off again.
                let flagged = self.count_search("UID SEARCH FLAGGED");
                assert_eq!(
                    flagged, n,
                    "{name}: after the STORE every message should be \\Flagged"
                );
                if let Err(e) = self
                    .imap()
                    .command("UID STORE 1:* -FLAGS.SILENT (\\Flagged)", |_| {})
                {
                    panic!("{name}: taking \\Flagged off again: {e}");
                }
                let flagged = self.count_search("UID SEARCH FLAGGED");
                assert_eq!(flagged, 0, "{name}: \\Flagged should be off again");
            }
        }
    }

    fn count_search(&mut self, command: &str) -> usize {
        let name = self.name.clone();
        let mut count = 0;
        self.imap()
            .command(command, |item| {
                if let Some(rest) = item.text.strip_prefix(b"* SEARCH") {
                    count += text(rest).split_whitespace().count();
                }
            })
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        count
    }

    fn note(&mut self, note: String) {
        if !self.notes.contains(&note) {
            println!("{}: {note}", self.name);
            self.notes.push(note);
        }
    }

    /// Fetches every body once more, untimed, and compares it with what was appended.
    fn verify_bodies(&mut self, corpus: &Corpus) {
        let name = self.name.clone();
        let mut checked = 0;
        let mut wrong = Vec::new();
        let index_of = self.index_of.clone();
        let result = self.imap().command("UID FETCH 1:* (BODY.PEEK[])", |item| {
            let Some(uid) = quick_uid(&item.text) else {
                return;
            };
            let Some(&i) = index_of.get(&uid) else {
                wrong.push(format!("UID {uid} was never appended"));
                return;
            };
            checked += 1;
            let body = item.literals.first().map(Vec::as_slice).unwrap_or_default();
            let want = &corpus.messages[i].bytes;
            if body != want.as_slice() {
                let at = body
                    .iter()
                    .zip(want.iter())
                    .position(|(a, b)| a != b)
                    .unwrap_or(body.len().min(want.len()));
                wrong.push(format!(
                    "UID {uid}: {} bytes for {} appended, first difference at byte {at}",
                    body.len(),
                    want.len()
                ));
            }
        });
        if let Err(e) = result {
            self.note(format!("the verifying FETCH failed: {e}"));
            return;
        }
        assert_eq!(
            checked,
            corpus.messages.len(),
            "{name}: the verifying FETCH should return every message"
        );
        if wrong.is_empty() {
            println!("{name}: all {checked} bodies are byte for byte as appended");
        } else {
            self.note(format!(
                "{} of {checked} bodies differ from what was appended, e.g. {}",
                wrong.len(),
                wrong[0]
            ));
        }
    }

    /// Resets every process's VmHWM (clear_refs 5) and returns the peaks until now.
    fn reset_peaks(&mut self) -> Peaks {
        let sampler = self.load_sampler.take();
        let mut peaks = self.peaks_with(sampler);
        let mut reset = true;
        for pid in process_tree(self.pid) {
            reset &= fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok();
        }
        peaks.reset = reset;
        if !reset {
            println!(
                "{}: could not reset VmHWM (/proc/PID/clear_refs); the peaks below include the load",
                self.name
            );
        }
        peaks
    }

    fn peaks(&mut self) -> Peaks {
        let sampler = self.sampler.take();
        let mut p = self.peaks_with(sampler);
        p.reset = self.load_memory.is_some_and(|m| m.reset);
        p
    }

    fn peaks_with(&self, sampler: Option<Sampler>) -> Peaks {
        let sampled = sampler.map(Sampler::stop).unwrap_or_default();
        let pids = process_tree(self.pid);
        let hwms: Vec<u64> = pids
            .iter()
            .map(|&p| proc_status_kib(p, "VmHWM").unwrap_or(0))
            .collect();
        Peaks {
            hwm_sum_kib: hwms.iter().sum(),
            largest_hwm_kib: hwms.iter().copied().max().unwrap_or(0),
            processes: pids.len(),
            sampled_rss_kib: sampled.peak_rss_kib,
            sampled_pss_kib: sampled.peak_pss_kib,
            threads: sampled.most_threads,
            reset: false,
        }
    }

    fn stop(&mut self) {
        if let Some(imap) = self.imap.as_mut() {
            let _ = imap.command("LOGOUT", |_| {});
        }
        self.imap = None;
        match self.guard.terminate(Duration::from_secs(30)) {
            Some(true) => {}
            Some(false) => println!("{}: exited with an error after SIGTERM", self.name),
            None => println!("{}: did not stop within 30 s of SIGTERM; killed", self.name),
        }
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let bad: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.contains("WARN")
                    || l.contains("ERROR")
                    || l.contains("Error:")
                    || l.contains("Panic")
            })
            .collect();
        if !bad.is_empty() {
            println!(
                "{}: {} warning/error line(s) in {}; last: {}",
                self.name,
                bad.len(),
                self.log.display(),
                bad[bad.len().saturating_sub(3)..].join(" / ")
            );
        }
    }

    /// The median sample of an operation.
    fn median(&self, op: Op) -> Option<Sample> {
        let mut s = self.samples[op.index()].clone();
        if s.is_empty() {
            return None;
        }
        s.sort_by_key(|s| s.wall);
        Some(s[s.len() / 2])
    }
}

/// A UID and how each server rendered one envelope field.
type EnvelopeExample = (u32, String, String);

/// The checks that compare the two servers and the corpus.
fn check_across(sides: &[Side], corpus: &Corpus) {
    let expected: BTreeSet<usize> = corpus.hits.clone();
    let mut counts = Vec::new();
    for side in sides {
        let Some(hits) = &side.search_hits else {
            continue;
        };
        let found: BTreeSet<usize> = hits
            .iter()
            .filter_map(|u| side.index_of.get(u).copied())
            .collect();
        let missed = expected.difference(&found).count();
        let extra = found.difference(&expected).count();
        println!(
            "{}: SEARCH TEXT {RARE_WORD} found {} messages ({} expected; {missed} missed, {extra} extra)",
            side.name,
            hits.len(),
            expected.len()
        );
        counts.push((side.name.clone(), hits.len()));
    }
    if let [(a, x), (b, y)] = counts.as_slice() {
        assert_eq!(
            x, y,
            "SEARCH TEXT {RARE_WORD}: {a} found {x}, {b} found {y}"
        );
    }
    // What the metadata FETCH said, message by message.
    if let [fm, dc] = sides {
        let mut envelope_diffs = Vec::new();
        let mut flag_diffs = Vec::new();
        let dc_uid: HashMap<usize, u32> = dc.index_of.iter().map(|(&u, &i)| (i, u)).collect();
        let mut fm_uids: Vec<(&u32, &usize)> = fm.index_of.iter().collect();
        fm_uids.sort();
        for (u, i) in fm_uids {
            let (Some(a), Some(b)) = (fm.meta.get(u), dc_uid.get(i).and_then(|du| dc.meta.get(du)))
            else {
                continue;
            };
            if a.get("ENVELOPE") != b.get("ENVELOPE") {
                envelope_diffs.push((*u, a.get("ENVELOPE").cloned(), b.get("ENVELOPE").cloned()));
            }
            let flags = |v: Option<&Val>| -> BTreeSet<String> {
                match v {
                    Some(Val::List(l)) => l
                        .iter()
                        .map(Val::render)
                        .filter(|f| !f.eq_ignore_ascii_case("\\Recent"))
                        .collect(),
                    _ => BTreeSet::new(),
                }
            };
            if flags(a.get("FLAGS")) != flags(b.get("FLAGS")) {
                flag_diffs.push(*u);
            }
        }
        println!(
            "ENVELOPE: ferrymail and Dovecot differ for {} of {} messages; FLAGS (\\Recent aside) for {}",
            envelope_diffs.len(),
            fm.meta.len(),
            flag_diffs.len()
        );
        // Per envelope field: how many messages differ, and the first example.
        let fields = [
            "date",
            "subject",
            "from",
            "sender",
            "reply-to",
            "to",
            "cc",
            "bcc",
            "in-reply-to",
            "message-id",
        ];
        let mut per_field: Vec<(usize, Option<EnvelopeExample>)> = vec![(0, None); fields.len()];
        for (u, a, b) in &envelope_diffs {
            let parts = |v: &Option<Val>| match v {
                Some(Val::List(l)) => l.clone(),
                _ => Vec::new(),
            };
            let (pa, pb) = (parts(a), parts(b));
            for (k, slot) in per_field.iter_mut().enumerate() {
                if pa.get(k) != pb.get(k) {
                    slot.0 += 1;
                    slot.1.get_or_insert_with(|| {
                        (
                            *u,
                            pa.get(k).map(Val::render).unwrap_or_default(),
                            pb.get(k).map(Val::render).unwrap_or_default(),
                        )
                    });
                }
            }
        }
        for (field, (count, example)) in fields.iter().zip(per_field) {
            if let Some((u, a, b)) = example {
                println!(
                    "  {field}: {count} differ, e.g. ferrymail UID {u}: {a}\n  {:>width$}Dovecot: {b}",
                    "",
                    width = field.len() + count.to_string().len() + 19
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// ferrymail's password hash, Dovecot's instance.

fn ferrymail_hash(password: &str) -> Result<String, String> {
    let mut child = Command::new(&*FERRYMAIL)
        .arg("passwd")
        .env_remove("FERRYMAIL_SPEC")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("ferrymail passwd: {e}"))?;
    child
        .stdin
        .take()
        .map(|mut s| s.write_all(format!("{password}\n").as_bytes()))
        .transpose()
        .map_err(|e| format!("ferrymail passwd: {e}"))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("ferrymail passwd: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.lines().rev().find(|l| !l.trim().is_empty()) {
        Some(hash) if out.status.success() => Ok(hash.trim().to_string()),
        _ => Err(format!(
            "ferrymail passwd failed ({}): {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

/// Why the Dovecot half cannot run here, if it cannot.
fn dovecot_unavailable(tool: Option<&Path>) -> Option<String> {
    if tool.is_none() {
        return Some("`dovecot` was not found".into());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("Dovecot's master must start as root to switch to its users".into());
    }
    for user in ["dovecot", "dovenull"] {
        if user_ids(user).is_none() {
            return Some(format!(
                "the system user `{user}` (made by the package) is missing"
            ));
        }
    }
    None
}

struct DovecotInstance {
    config: PathBuf,
    mail_location: String,
    mail_user: String,
    cert_note: String,
}

impl DovecotInstance {
    fn create(
        dir: &Path,
        port: u16,
        storage: &str,
        cert_dir: &Path,
    ) -> Result<DovecotInstance, String> {
        fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
        // Mail is read and written as nobody: Dovecot refuses uid 0 for mail.
        let (uid, gid) = user_ids("nobody").ok_or("no user `nobody`")?;
        let home = dir.join("home");
        fs::create_dir_all(&home).map_err(|e| e.to_string())?;
        chown(&home, uid, gid)?;
        // The certificate ferrymail made for itself (rcgen, ECDSA P-256), so that both
        // servers do the same handshake; openssl makes a like one if it is missing.
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let cert_note = if fs::copy(cert_dir.join("self-signed.crt"), &cert).is_ok()
            && fs::copy(cert_dir.join("self-signed.key"), &key).is_ok()
        {
            "ferrymail's self-signed certificate".to_string()
        } else {
            checked(
                Command::new("openssl")
                    .args([
                        "req",
                        "-x509",
                        "-newkey",
                        "ec",
                        "-pkeyopt",
                        "ec_paramgen_curve:P-256",
                    ])
                    .args([
                        "-nodes",
                        "-days",
                        "30",
                        "-subj",
                        "/CN=mx.bench.test",
                        "-keyout",
                    ])
                    .arg(&key)
                    .arg("-out")
                    .arg(&cert),
                "openssl req",
            )?;
            "a self-signed ECDSA P-256 certificate from openssl".to_string()
        };
        // The same argon2id parameters as ferrymail's (OWASP's 19 MiB), so the two
        // servers' peaks both hold one login's check; Dovecot verifies the PHC string
        // through libsodium.
        let hash = ferrymail_hash(PASSWORD)?;
        let users = dir.join("users");
        fs::write(
            &users,
            format!(
                "{USER}:{{ARGON2ID}}{hash}:{uid}:{gid}::{}\n",
                home.display()
            ),
        )
        .map_err(|e| e.to_string())?;
        let mail_location = match storage {
            "maildir" => "maildir:~/Maildir".to_string(),
            other => format!("{other}:~/mail"),
        };
        let d = dir.display();
        let config = dir.join("dovecot.conf");
        fs::write(
            &config,
            format!(
                "# The bench's private instance: nothing of /etc/dovecot is read.
protocols = imap
listen = 127.0.0.1
base_dir = {d}/run
state_dir = {d}/state
instance_name = ferrymail-bench-{port}
log_path = {d}/dovecot.log
default_login_user = dovenull
default_internal_user = dovecot
ssl = required
ssl_cert = <{d}/cert.pem
ssl_key = <{d}/key.pem
auth_mechanisms = plain
passdb {{
  driver = passwd-file
  args = {d}/users
}}
userdb {{
  driver = passwd-file
  args = {d}/users
}}
mail_location = {mail_location}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"
            ),
        )
        .map_err(|e| e.to_string())?;
        Ok(DovecotInstance {
            config,
            mail_location,
            mail_user: format!("nobody ({uid}:{gid})"),
            cert_note,
        })
    }
}

// ---------------------------------------------------------------------------------------
// The report

fn fmt_time(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.2} s", ms / 1e3)
    }
}

fn megabytes(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1e6
}

fn fmt_peaks(p: &Peaks) -> String {
    if p.processes <= 1 {
        format!(
            "{:.0} MB (VmHWM{}; {} threads at most)",
            megabytes(p.hwm_sum_kib),
            if p.reset { "" } else { ", since start" },
            p.threads
        )
    } else {
        format!(
            "{:.0} MB summed VmHWM over {} processes (sampled: RSS sum ≤ {:.0} MB, PSS sum ≤ {:.0} MB; largest process {:.0} MB)",
            megabytes(p.hwm_sum_kib),
            p.processes,
            megabytes(p.sampled_rss_kib),
            megabytes(p.sampled_pss_kib),
            megabytes(p.largest_hwm_kib)
        )
    }
}

fn report(sides: &[Side], corpus: &Corpus) {
    let n = corpus.messages.len();
    println!("\n## Results\n");
    println!(
        "{n} messages ({:.1} MB), one connection per server over STARTTLS, median of {RUNS} runs, \
         end to end to the tagged OK. MB = 10^6 bytes.\n",
        corpus.total_bytes() as f64 / 1e6
    );
    let names: Vec<&str> = sides.iter().map(|s| s.name.as_str()).collect();
    let two = sides.len() == 2;
    if two {
        println!(
            "| operation | {} | {} | ferrymail ÷ Dovecot (time) | target met? |",
            names[0], names[1]
        );
        println!("| --- | ---: | ---: | ---: | --- |");
    } else {
        println!("| operation | {} |", names[0]);
        println!("| --- | ---: |");
    }
    let mut verdicts = Vec::new();
    for op in OPS {
        let cell = |s: &Side| match (s.median(op), s.failures.iter().find(|f| f.0 == op)) {
            (Some(m), _) => fmt_time(m.wall),
            (None, Some((_, e))) => format!("failed: {}", e.replace('|', "\\|")),
            (None, None) => "—".into(),
        };
        if two {
            let (a, b) = (sides[0].median(op), sides[1].median(op));
            let (ratio, met) = match (a, b) {
                (Some(a), Some(b)) if !b.wall.is_zero() => {
                    let r = a.wall.as_secs_f64() / b.wall.as_secs_f64();
                    (
                        format!("{r:.2}×"),
                        if r <= TARGET { "met" } else { "**not met**" },
                    )
                }
                _ => ("—".into(), "**not met**"),
            };
            verdicts.push((op, met));
            println!(
                "| {} | {} | {} | {ratio} | {met} |",
                op.label(),
                cell(&sides[0]),
                cell(&sides[1])
            );
        } else {
            println!("| {} | {} |", op.label(), cell(&sides[0]));
        }
    }
    let mem = |s: &Side| {
        s.ops_memory
            .as_ref()
            .map(fmt_peaks)
            .unwrap_or_else(|| "—".into())
    };
    if two {
        let ratio = match (&sides[0].ops_memory, &sides[1].ops_memory) {
            (Some(a), Some(b)) if b.hwm_sum_kib > 0 => {
                format!("{:.2}×", a.hwm_sum_kib as f64 / b.hwm_sum_kib as f64)
            }
            _ => "—".into(),
        };
        println!(
            "| peak memory during the operations | {} | {} | {ratio} | (no target) |",
            mem(&sides[0]),
            mem(&sides[1])
        );
    } else {
        println!("| peak memory during the operations | {} |", mem(&sides[0]));
    }

    println!(
        "\nEvery run, the server's CPU and the response size (medians; CPU in 10 ms ticks):\n"
    );
    println!("| server | operation | runs | server CPU | response | untagged responses |");
    println!("| --- | --- | --- | ---: | ---: | ---: |");
    for s in sides {
        for op in OPS {
            let runs = &s.samples[op.index()];
            if runs.is_empty() {
                continue;
            }
            let Some(m) = s.median(op) else { continue };
            let mut cpus: Vec<f64> = runs.iter().map(|r| r.cpu).collect();
            cpus.sort_by(f64::total_cmp);
            println!(
                "| {} | {} | {} | {:.0} ms | {:.1} MB | {} |",
                s.name,
                op.command(),
                runs.iter()
                    .map(|r| fmt_time(r.wall))
                    .collect::<Vec<_>>()
                    .join(", "),
                cpus[cpus.len() / 2] * 1e3,
                m.bytes as f64 / 1e6,
                m.untagged
            );
        }
    }
    println!();
    for s in sides {
        if let Some(p) = &s.load_memory {
            println!(
                "{}: load {:.1} s; peak memory while loading: {}",
                s.name,
                s.load_time.as_secs_f64(),
                fmt_peaks(p)
            );
        }
        for note in &s.notes {
            println!("{}: note: {note}", s.name);
        }
    }
    if two {
        let missed: Vec<String> = verdicts
            .iter()
            .filter(|(_, v)| *v != "met")
            .map(|(op, _)| op.command())
            .collect();
        if missed.is_empty() {
            println!(
                "\nTarget (every operation at ≤ {TARGET}× Dovecot's time): met for all {} operations.",
                OPS.len()
            );
        } else {
            println!(
                "\nTarget (every operation at ≤ {TARGET}× Dovecot's time): **not met** for {} of {}: {}.",
                missed.len(),
                OPS.len(),
                missed.join("; ")
            );
        }
    } else {
        println!("\nNo Dovecot run, so no ratio: the target could not be checked.");
    }
}

/// Share of the machine's CPU time other processes use over `window`.
fn quiet_check(window: Duration) -> f64 {
    let before = machine_cpu();
    let own_before = self_cpu_seconds();
    thread::sleep(window);
    let after = machine_cpu();
    let total = after.1.saturating_sub(before.1) as f64;
    let busy = after.0.saturating_sub(before.0) as f64;
    let own = (self_cpu_seconds() - own_before) * clock_ticks();
    if total == 0.0 {
        0.0
    } else {
        ((busy - own) / total).max(0.0)
    }
}

/// CPU counters at one moment; `since` turns two into what happened between them.
struct CpuReading {
    /// Seconds used by the servers and this bench.
    ours: f64,
    /// The machine's (busy, total) jiffies.
    machine: (u64, u64),
}

struct CpuUse {
    /// Share of all CPUs' time that was busy.
    busy: f64,
    /// Share of all CPUs' time used by processes that are not ours.
    others: f64,
}

impl CpuReading {
    fn take(sides: &[Side]) -> CpuReading {
        CpuReading {
            ours: sides.iter().map(Side::cpu_seconds).sum::<f64>() + self_cpu_seconds(),
            machine: machine_cpu(),
        }
    }

    fn since(&self, before: &CpuReading) -> CpuUse {
        let total = self.machine.1.saturating_sub(before.machine.1) as f64;
        if total == 0.0 {
            return CpuUse {
                busy: 0.0,
                others: 0.0,
            };
        }
        let busy = self.machine.0.saturating_sub(before.machine.0) as f64;
        let ours = (self.ours - before.ours) * clock_ticks();
        CpuUse {
            busy: busy / total,
            others: ((busy - ours) / total).max(0.0),
        }
    }
}

#[derive(Default)]
struct Sampled {
    peak_rss_kib: u64,
    peak_pss_kib: u64,
    /// Most threads seen at once, summed over the processes.
    most_threads: u64,
}

/// Samples the memory of a process tree every `SAMPLE_EVERY` until stopped.
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: thread::JoinHandle<Sampled>,
}

impl Sampler {
    fn start(root: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = thread::spawn(move || {
            let mut s = Sampled::default();
            loop {
                let pids = process_tree(root);
                let (mut rss, mut pss, mut threads) = (0, 0, 0);
                for &pid in &pids {
                    rss += proc_status_kib(pid, "VmRSS").unwrap_or(0);
                    threads += proc_status_kib(pid, "Threads").unwrap_or(0);
                    pss += proc_pss_kib(pid).unwrap_or(0);
                }
                s.peak_rss_kib = s.peak_rss_kib.max(rss);
                s.peak_pss_kib = s.peak_pss_kib.max(pss);
                s.most_threads = s.most_threads.max(threads);
                if flag.load(Ordering::SeqCst) {
                    return s;
                }
                thread::sleep(SAMPLE_EVERY);
            }
        });
        Sampler { stop, handle }
    }

    fn stop(self) -> Sampled {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------
// Small helpers

/// Dovecot is in /usr/sbin, which is not always on a user's PATH.
fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

// ---------------------------------------------------------------------------------------
// The write mix: several clients at once on one folder, as a household's phones and
// laptops are, each command timed.

/// Clients in the write mix, each on its own connection.
const MIX_CLIENTS: usize = 5;
/// Messages copied from INBOX into the mix's folder before it starts.
const MIX_MESSAGES: usize = 1000;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum MixOp {
    Store,
    Expunge,
    Copy,
    Append,
    Fetch,
    Search,
}

const MIX_OPS: [MixOp; 6] = [
    MixOp::Store,
    MixOp::Expunge,
    MixOp::Copy,
    MixOp::Append,
    MixOp::Fetch,
    MixOp::Search,
];

impl MixOp {
    fn label(self) -> &'static str {
        match self {
            MixOp::Store => "`UID STORE u +FLAGS/-FLAGS (\\Seen)`",
            MixOp::Expunge => "`UID EXPUNGE u` (after `+FLAGS.SILENT (\\Deleted)`)",
            MixOp::Copy => "`UID COPY u MixCopies`",
            MixOp::Append => "`APPEND Mix` (2–20 KB)",
            MixOp::Fetch => "`UID FETCH u (FLAGS BODY.PEEK[HEADER])`",
            MixOp::Search => "`UID SEARCH UNSEEN`",
        }
    }

    /// The mix: a third flag changes, the rest spread over the other five.
    fn pick(rng: &mut Lcg) -> MixOp {
        match rng.below(100) {
            0..35 => MixOp::Store,
            35..50 => MixOp::Expunge,
            50..63 => MixOp::Copy,
            63..78 => MixOp::Append,
            78..90 => MixOp::Fetch,
            _ => MixOp::Search,
        }
    }
}

struct MixResult {
    times: HashMap<MixOp, Vec<Duration>>,
    errors: Vec<String>,
    wall: Duration,
    /// Sampled every 100 ms over the server's processes (Dovecot's per-connection
    /// `imap` processes come and go with the clients).
    peak_rss_kib: u64,
    peak_pss_kib: u64,
    most_threads: u64,
    /// `ALONE` from one client alone after the mix, at the mix's rate, with the folder
    /// selected (sorted times, one list per command): NOOP is the round trip every
    /// command pays, the reads are the mix's without other clients to wait for.
    alone: Vec<Vec<Duration>>,
    /// CPU seconds the server's processes used during the mix.
    server_cpu: f64,
    /// Share of the machine's CPU time that was busy during the mix (clients included).
    machine_busy: f64,
}

/// Commands of each kind one client sends alone after the mix.
const ALONE_COMMANDS: usize = 2_000;

/// What one client alone sends after the mix (`u` a message of the folder), as labelled.
const ALONE: [(&str, &str); 3] = [
    ("NOOP", "`NOOP` (the round trip)"),
    (
        "UID FETCH u (FLAGS BODY.PEEK[HEADER])",
        "`UID FETCH u (FLAGS BODY.PEEK[HEADER])`",
    ),
    ("UID SEARCH UNSEEN", "`UID SEARCH UNSEEN`"),
];

/// How the mix's clients send: each as fast as its answers come back, or each at a
/// fixed rate. Flat out, the faster server is also sent more commands a second, and its
/// short reads wait behind more work on the two cores; at a fixed rate both servers get
/// the same load, and what differs is only how they answer it.
struct Mix {
    folder: &'static str,
    /// Commands a second per client.
    rate: Option<u32>,
    heading: &'static str,
}

impl Mix {
    const FLAT_OUT: Mix = Mix {
        folder: "Mix",
        rate: None,
        heading: "Write mix",
    };
    /// 5 × 100 commands a second: about half of what Dovecot answers flat out here.
    const PACED: Mix = Mix {
        folder: "Paced",
        rate: Some(100),
        heading: "Write mix at a fixed rate",
    };

    /// Commands per client: the paced run sends half as many (it takes longer).
    fn commands(&self) -> usize {
        match self.rate {
            None => mix_commands(),
            Some(_) => mix_commands().div_ceil(2),
        }
    }

    /// Commands of each kind the lone client sends after the mix, at the mix's rate:
    /// paced, fewer (300 take 3 s at 100 a second).
    fn alone_commands(&self) -> usize {
        match self.rate {
            None => ALONE_COMMANDS,
            Some(_) => ALONE_COMMANDS.min(300),
        }
    }
}

/// Commands each mix client sends (FERRYMAIL_BENCH_MIX_COMMANDS overrides it). A fixed
/// count, not a fixed time: the faster server would otherwise APPEND more, grow its
/// folder further and be timed on a larger one than the slower server.
fn mix_commands() -> usize {
    std::env::var("FERRYMAIL_BENCH_MIX_COMMANDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4_000)
}

/// Runs the mix against one server: MIX_CLIENTS clients on folder "Mix", each working
/// on its own messages (so it always knows which UIDs live) while every change reaches
/// the others as untagged updates.
fn write_mix(side: &Side, corpus: &Corpus, config: &Arc<ClientConfig>, mix: &Mix) -> MixResult {
    let fail = |e: String| -> ! { panic!("{}: write mix setup: {e}", side.name) };
    let mut admin = Imap::login(side.port, config).unwrap_or_else(|e| fail(e));
    let folder = mix.folder;
    for folder in [folder.to_string(), format!("{folder}Copies")] {
        admin
            .command(&format!("CREATE {folder}"), |_| {})
            .unwrap_or_else(|e| fail(e));
    }
    admin
        .command("SELECT INBOX", |_| {})
        .unwrap_or_else(|e| fail(e));
    let last = MIX_MESSAGES.min(corpus.messages.len());
    admin
        .command(&format!("UID COPY 1:{last} {folder}"), |_| {})
        .unwrap_or_else(|e| fail(e));
    admin
        .command(&format!("SELECT {folder}"), |_| {})
        .unwrap_or_else(|e| fail(e));
    let uids = admin.all_uids().unwrap_or_else(|e| fail(e));
    let _ = admin.command("LOGOUT", |_| {});
    let commands = mix.commands();
    println!(
        "\n{}: {}, {MIX_CLIENTS} clients on {} messages, {commands} commands each",
        side.name,
        mix.heading.to_lowercase(),
        uids.len()
    );
    let sampler = Sampler::start(side.pid);
    let (cpu_before, machine_before) = (side.cpu_seconds(), machine_cpu());
    let started = Instant::now();
    let results: Vec<MixTimes> = thread::scope(|scope| {
        let handles: Vec<_> = (0..MIX_CLIENTS)
            .map(|k| {
                let own: Vec<u32> = uids
                    .iter()
                    .copied()
                    .filter(|u| *u as usize % MIX_CLIENTS == k)
                    .collect();
                let port = side.port;
                scope.spawn(move || mix_client(k, port, config, own, corpus, commands, mix))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| panic!("a mix client panicked")))
            .collect()
    });
    let wall = started.elapsed();
    // Dovecot's per-connection processes end after LOGOUT; their time counts once the
    // master has reaped them.
    thread::sleep(Duration::from_millis(300));
    let server_cpu = side.cpu_seconds() - cpu_before;
    let machine_after = machine_cpu();
    let machine_busy = machine_after.0.saturating_sub(machine_before.0) as f64
        / (machine_after.1.saturating_sub(machine_before.1) as f64).max(1.0);
    let mut times: HashMap<MixOp, Vec<Duration>> = HashMap::new();
    let mut errors = Vec::new();
    for (t, e) in results {
        for (op, mut list) in t {
            times.entry(op).or_default().append(&mut list);
        }
        errors.extend(e);
    }
    for list in times.values_mut() {
        list.sort();
    }
    let sampled = sampler.stop();
    let mut alone_times = Vec::new();
    let mut alone = Imap::login(side.port, config).unwrap_or_else(|e| fail(e));
    alone
        .command(&format!("SELECT {folder}"), |_| {})
        .unwrap_or_else(|e| fail(e));
    let left = alone.all_uids().unwrap_or_else(|e| fail(e));
    let mut rng = Lcg(SEED);
    let interval = mix.rate.map(|r| Duration::from_secs(1) / r);
    for (command, _) in ALONE {
        let mut list = Vec::with_capacity(mix.alone_commands());
        let start = Instant::now();
        for sent in 0..mix.alone_commands() {
            wait_turn(start, interval, sent);
            let uid = left.get(rng.below(left.len().max(1))).copied().unwrap_or(1);
            let command = command.replace(" u ", &format!(" {uid} "));
            let began = Instant::now();
            alone.command(&command, |_| {}).unwrap_or_else(|e| fail(e));
            list.push(began.elapsed());
        }
        list.sort();
        alone_times.push(list);
    }
    let _ = alone.command("LOGOUT", |_| {});
    MixResult {
        times,
        errors,
        wall,
        peak_rss_kib: sampled.peak_rss_kib,
        peak_pss_kib: sampled.peak_pss_kib,
        most_threads: sampled.most_threads,
        alone: alone_times,
        server_cpu,
        machine_busy,
    }
}

/// Sleeps until command `sent`'s turn at one every `interval` from `start` (none when
/// flat out); a client that fell behind sends at once.
fn wait_turn(start: Instant, interval: Option<Duration>, sent: usize) {
    if let Some(interval) = interval {
        let due = start + interval * sent as u32;
        thread::sleep(due.saturating_duration_since(Instant::now()));
    }
}

type MixTimes = (HashMap<MixOp, Vec<Duration>>, Vec<String>);

fn mix_client(
    k: usize,
    port: u16,
    config: &Arc<ClientConfig>,
    mut own: Vec<u32>,
    corpus: &Corpus,
    commands: usize,
    mix: &Mix,
) -> MixTimes {
    let mut times: HashMap<MixOp, Vec<Duration>> = HashMap::new();
    let mut errors = Vec::new();
    let mut imap = match Imap::login(port, config) {
        Ok(imap) => imap,
        Err(e) => return (times, vec![format!("client {k}: login: {e}")]),
    };
    let folder = mix.folder;
    if let Err(e) = imap.command(&format!("SELECT {folder}"), |_| {}) {
        return (times, vec![format!("client {k}: {e}")]);
    }
    let mut rng = Lcg(SEED ^ ((k as u64 + 1) * 0x9e37_79b9));
    let mut seen = false;
    let interval = mix.rate.map(|r| Duration::from_secs(1) / r);
    let start = Instant::now();
    for sent in 0..commands {
        wait_turn(start, interval, sent);
        if errors.len() >= 20 {
            break;
        }
        let mut op = MixOp::pick(&mut rng);
        if own.is_empty() {
            op = MixOp::Append;
        }
        let at = if own.is_empty() {
            0
        } else {
            rng.below(own.len())
        };
        let uid = own.get(at).copied().unwrap_or(0);
        let began = Instant::now();
        let done = match op {
            MixOp::Store => {
                seen = !seen;
                let sign = if seen { '+' } else { '-' };
                imap.command(&format!("UID STORE {uid} {sign}FLAGS (\\Seen)"), |_| {})
            }
            MixOp::Expunge => {
                let marked = imap.command(
                    &format!("UID STORE {uid} +FLAGS.SILENT (\\Deleted)"),
                    |_| {},
                );
                match marked {
                    Ok(_) => {
                        own.swap_remove(at);
                        let began = Instant::now();
                        let done = imap.command(&format!("UID EXPUNGE {uid}"), |_| {});
                        if done.is_ok() {
                            times.entry(op).or_default().push(began.elapsed());
                        }
                        if let Err(e) = done {
                            errors.push(format!("client {k}: {e}"));
                        }
                        continue;
                    }
                    Err(e) => Err(e),
                }
            }
            MixOp::Copy => imap.command(&format!("UID COPY {uid} {folder}Copies"), |_| {}),
            MixOp::Append => {
                let m = &corpus.messages[rng.below(corpus.messages.len())];
                match imap.append_to(folder, m) {
                    Ok(new) => {
                        own.push(new);
                        Ok(String::new())
                    }
                    Err(e) => Err(e),
                }
            }
            MixOp::Fetch => imap.command(
                &format!("UID FETCH {uid} (FLAGS BODY.PEEK[HEADER])"),
                |_| {},
            ),
            MixOp::Search => imap.command("UID SEARCH UNSEEN", |_| {}),
        };
        match done {
            Ok(_) => times.entry(op).or_default().push(began.elapsed()),
            Err(e) => errors.push(format!("client {k}: {e}")),
        }
    }
    let _ = imap.command("LOGOUT", |_| {});
    (times, errors)
}

/// One table row: p50 / p99 (n) per server, then the ratio of the p50s and whether it
/// meets the target (when `targeted`).
fn mix_row(label: &str, lists: &[&[Duration]], servers: usize, targeted: bool) -> String {
    let mut row = format!("| {label} |");
    let mut p50s = Vec::new();
    for list in lists {
        match (percentile(list, 0.5), percentile(list, 0.99)) {
            (Some(a), Some(b)) => {
                row.push_str(&format!(
                    " {} / {} ({}) |",
                    fmt_time(a),
                    fmt_time(b),
                    list.len()
                ));
                p50s.push(a);
            }
            _ => row.push_str(" — |"),
        }
    }
    if let [a, b] = p50s[..] {
        let ratio = a.as_secs_f64() / b.as_secs_f64().max(1e-9);
        let met = match () {
            _ if !targeted => "(no target)",
            _ if ratio <= TARGET => "met",
            _ => "**not met**",
        };
        row.push_str(&format!(" {ratio:.2}× | {met} |"));
    } else if servers == 2 {
        row.push_str(" — | — |");
    }
    row
}

fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    Some(sorted[i])
}

fn report_mix(sides: &[Side], mixes: &[MixResult], plan: &Mix) {
    let pace = match plan.rate {
        None => "each sending its next command as soon as the last is answered".to_string(),
        Some(rate) => format!("each sending {rate} commands a second"),
    };
    println!(
        "\n## {}\n\n{MIX_CLIENTS} clients at once on one folder of {MIX_MESSAGES} \
         messages, {pace}, {} commands per client on each server (the same random sequence on \
         both), each command timed to its tagged OK (p50 / p99).\n",
        plan.heading,
        plan.commands()
    );
    let mut head = String::from("| command |");
    let mut rule = String::from("| --- |");
    for side in sides {
        head.push_str(&format!(" {} p50 / p99 (n) |", side.name));
        rule.push_str(" ---: |");
    }
    if sides.len() == 2 {
        head.push_str(&format!(
            " ferrymail ÷ Dovecot (p50) | target ≤ {TARGET}× |"
        ));
        rule.push_str(" ---: | --- |");
    }
    println!("{head}\n{rule}");
    for op in MIX_OPS {
        let lists: Vec<&[Duration]> = mixes
            .iter()
            .map(|m| m.times.get(&op).map(Vec::as_slice).unwrap_or_default())
            .collect();
        println!("{}", mix_row(op.label(), &lists, sides.len(), true));
    }
    if mixes.iter().any(|m| !m.alone.is_empty()) {
        match plan.rate {
            None => println!(
                "\nThen one client alone, {} of each back to back (p50 / p99): what the \
                 reads cost without the other clients' work to wait for.\n",
                plan.alone_commands()
            ),
            // At this rate both servers sleep between commands, and waking them (and the
            // client) is most of a short read's time: NOOP shows that floor.
            Some(rate) => println!(
                "\nThen one client alone, {} of each at {rate} a second (p50 / p99): `NOOP` \
                 is the floor of waking an idle server and client on this machine, which \
                 every command above pays too.\n",
                plan.alone_commands()
            ),
        }
        println!("{head}\n{rule}");
        for (k, (_, label)) in ALONE.iter().enumerate() {
            let lists: Vec<&[Duration]> = mixes
                .iter()
                .map(|m| m.alone.get(k).map(Vec::as_slice).unwrap_or_default())
                .collect();
            // The first, NOOP, is the round trip: no target.
            println!("{}", mix_row(label, &lists, sides.len(), k > 0));
        }
    }
    println!();
    for (side, mix) in sides.iter().zip(mixes) {
        let n: usize = mix.times.values().map(Vec::len).sum();
        println!(
            "- {}: {n} commands in {:.1} s ({:.0}/s), server CPU {:.1} s ({:.0} µs a command; the machine {:.0}% busy), peak memory {:.0} MB RSS / {:.0} MB PSS (summed over its processes, sampled; {} threads at most), {} errors{}",
            side.name,
            mix.wall.as_secs_f64(),
            n as f64 / mix.wall.as_secs_f64().max(1e-9),
            mix.server_cpu,
            mix.server_cpu * 1e6 / (n as f64).max(1.0),
            mix.machine_busy * 100.0,
            mix.peak_rss_kib as f64 * 1024.0 / 1e6,
            mix.peak_pss_kib as f64 * 1024.0 / 1e6,
            mix.most_threads,
            mix.errors.len(),
            mix.errors
                .first()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default()
        );
    }
}

//! CalDAV/CardDAV benchmark: the same calendar of 10,000 events and address book of
//! 1,000 contacts served by ferrymail and by Radicale 3 (Debian's, a private instance on a
//! loopback port), in the same run, both over TLS with the same certificate.
//!
//! The bench makes the events from a fixed seed over 2026 (one in ten recurring: weekly
//! with a COUNT, daily until a date, or yearly for ever, some with an exception) and
//! PUTs them and the contacts into each server (untimed). Then, over one keep-alive
//! connection per server, it times to the last byte of the answer: PROPFIND Depth 1 on
//! the calendar (getetag, getcontenttype), a calendar-query over the year (time-range,
//! getetag), a sync-collection after one change, and an addressbook-multiget of the
//! 1,000 contacts with their data. Each operation runs 5 times, the servers taking turns,
//! and the median counts. It also reports each server's peak memory. The target: every
//! operation at ≤ 0.5× Radicale's time. BENCHMARKS.md says how to read the results.

#[path = "support/machine.rs"]
mod machine;
#[path = "support/processes.rs"]
mod processes;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use machine::{cpu_model, ferrymail_revision};
use processes::*;

const FERRYMAIL: &str = env!("CARGO_BIN_EXE_ferrymail");
const EVENTS: usize = 10_000;
const CONTACTS: usize = 1_000;
const RUNS: usize = 5;
const TARGET: f64 = 0.5;
const USER: &str = "me@bench.test";
const PASSWORD: &str = "bench-dav-password";
const SEED: u64 = 0xda7_5eed_2026;
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// PUTs in flight at once while filling a server.
const FILL_CONCURRENCY: usize = 8;

/// A small deterministic generator (xorshift), so both servers get the same data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn event(i: usize, rng: &mut Rng) -> String {
    let day = rng.below(365) as i64;
    let start = chrono::NaiveDate::from_ymd_opt(2026, 1, 1)
        .unwrap()
        .and_hms_opt(7 + rng.below(12) as u32, 15 * rng.below(4) as u32, 0)
        .unwrap()
        + chrono::Duration::days(day);
    let stamp = start.format("%Y%m%dT%H%M%S");
    let mut body = format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//ferrymail bench//EN\r\n\
         BEGIN:VEVENT\r\nUID:event-{i}@bench.test\r\nDTSTAMP:20260101T000000Z\r\n\
         DTSTART:{stamp}Z\r\nDURATION:PT{}M\r\nSUMMARY:Meeting {i} about topic {}\r\n\
         LOCATION:Room {}\r\nDESCRIPTION:Agenda for meeting {i}: item one, item two.\r\n",
        30 * (1 + rng.below(4)),
        rng.below(1000),
        rng.below(50)
    );
    let recurring = i.is_multiple_of(10);
    if recurring {
        match rng.below(3) {
            0 => body.push_str("RRULE:FREQ=WEEKLY;COUNT=20\r\n"),
            1 => body.push_str("RRULE:FREQ=DAILY;UNTIL=20261231T000000Z\r\n"),
            _ => body.push_str("RRULE:FREQ=YEARLY\r\n"),
        }
    }
    body.push_str("END:VEVENT\r\n");
    if recurring && i.is_multiple_of(20) {
        // One instance moved an hour later.
        let moved = start + chrono::Duration::days(7);
        body.push_str(&format!(
            "BEGIN:VEVENT\r\nUID:event-{i}@bench.test\r\nDTSTAMP:20260101T000000Z\r\n\
             RECURRENCE-ID:{}Z\r\nDTSTART:{}Z\r\nDURATION:PT30M\r\nSUMMARY:Moved {i}\r\n\
             END:VEVENT\r\n",
            moved.format("%Y%m%dT%H%M%S"),
            (moved + chrono::Duration::hours(1)).format("%Y%m%dT%H%M%S")
        ));
    }
    body.push_str("END:VCALENDAR\r\n");
    body
}

fn contact(i: usize) -> String {
    format!(
        "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:contact-{i}@bench.test\r\nFN:Person {i}\r\n\
         N:Person {i};Given;;;\r\nEMAIL;TYPE=work:person{i}@example.net\r\n\
         TEL;TYPE=cell:+49 30 {i:07}\r\nORG:Company {}\r\nEND:VCARD\r\n",
        i % 37
    )
}

/// One server under test: where its calendar and address book are.
struct Server {
    name: &'static str,
    base: String,
    calendar: String,
    book: String,
    pid: u32,
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .pool_max_idle_per_host(FILL_CONCURRENCY)
        .timeout(Duration::from_secs(600))
        .build()
        .expect("http client")
}

async fn call(
    client: &reqwest::Client,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: String,
) -> (u16, String) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = client
        .request(method, url)
        .basic_auth(USER, Some(PASSWORD))
        .body(body);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

async fn fill(client: &reqwest::Client, server: &Server) {
    use futures_util::StreamExt;
    let mut rng = Rng(SEED);
    let events: Vec<(String, String)> = (0..EVENTS)
        .map(|i| {
            (
                format!("{}event-{i}.ics", server.calendar),
                event(i, &mut rng),
            )
        })
        .collect();
    let contacts: Vec<(String, String)> = (0..CONTACTS)
        .map(|i| (format!("{}contact-{i}.vcf", server.book), contact(i)))
        .collect();
    let started = Instant::now();
    let puts = events
        .into_iter()
        .map(|(url, body)| (url, body, "text/calendar"))
        .chain(
            contacts
                .into_iter()
                .map(|(url, body)| (url, body, "text/vcard")),
        );
    let results: Vec<u16> = futures_util::stream::iter(puts)
        .map(|(url, body, ty)| async move {
            call(client, "PUT", &url, &[("Content-Type", ty)], body)
                .await
                .0
        })
        .buffer_unordered(FILL_CONCURRENCY)
        .collect()
        .await;
    let bad = results.iter().filter(|s| !(200..300).contains(*s)).count();
    assert_eq!(bad, 0, "{}: {bad} PUTs failed", server.name);
    eprintln!(
        "{}: {} objects PUT in {:.1} s",
        server.name,
        results.len(),
        started.elapsed().as_secs_f64()
    );
}

/// Radicale's folder for a collection URL, under its storage root.
fn rdir_of(_server: &Server) -> (std::path::PathBuf, std::path::PathBuf) {
    let root = RADICALE_ROOT.with(|r| r.borrow().clone());
    let root = root.join("collection-root").join(USER);
    (root.join("calendar"), root.join("contacts"))
}

thread_local! {
    static RADICALE_ROOT: std::cell::RefCell<std::path::PathBuf> = Default::default();
}

fn fill_radicale_files((calendar, book): &(std::path::PathBuf, std::path::PathBuf)) {
    let mut rng = Rng(SEED);
    for i in 0..EVENTS {
        fs::write(calendar.join(format!("event-{i}.ics")), event(i, &mut rng)).unwrap();
    }
    for i in 0..CONTACTS {
        fs::write(book.join(format!("contact-{i}.vcf")), contact(i)).unwrap();
    }
}

fn token_of(body: &str) -> String {
    let start = body
        .find("sync-token>")
        .map(|i| i + "sync-token>".len())
        .expect("a sync token");
    let end = body[start..].find('<').expect("token end") + start;
    body[start..end].to_string()
}

/// The operations, each answering (what it answered, to check both servers agree).
async fn operation(client: &reqwest::Client, server: &Server, op: &str, round: usize) -> usize {
    match op {
        "PROPFIND Depth 1, 10,000 events" => {
            let (status, body) = call(
                client,
                "PROPFIND",
                &server.calendar,
                &[("Depth", "1"), ("Content-Type", "application/xml")],
                "<d:propfind xmlns:d=\"DAV:\"><d:prop><d:getetag/><d:getcontenttype/></d:prop></d:propfind>".into(),
            )
            .await;
            assert_eq!(status, 207, "{}: {body}", server.name);
            body.matches("getetag>").count() / 2
        }
        "calendar-query, a year" => {
            let (status, body) = call(
                client,
                "REPORT",
                &server.calendar,
                &[("Depth", "1"), ("Content-Type", "application/xml")],
                "<c:calendar-query xmlns:d=\"DAV:\" xmlns:c=\"urn:ietf:params:xml:ns:caldav\">\
                 <d:prop><d:getetag/></d:prop><c:filter><c:comp-filter name=\"VCALENDAR\">\
                 <c:comp-filter name=\"VEVENT\"><c:time-range start=\"20260301T000000Z\" \
                 end=\"20270301T000000Z\"/></c:comp-filter></c:comp-filter></c:filter>\
                 </c:calendar-query>"
                    .into(),
            )
            .await;
            assert_eq!(status, 207, "{}: {body}", server.name);
            body.matches("getetag>").count() / 2
        }
        "sync-collection after one change" => {
            let sync = |token: String| {
                format!(
                    "<d:sync-collection xmlns:d=\"DAV:\"><d:sync-token>{token}</d:sync-token>\
                     <d:sync-level>1</d:sync-level><d:prop><d:getetag/></d:prop></d:sync-collection>"
                )
            };
            let (_, body) = call(
                client,
                "PROPFIND",
                &server.calendar,
                &[("Depth", "0")],
                "<d:propfind xmlns:d=\"DAV:\"><d:prop><d:sync-token/></d:prop></d:propfind>".into(),
            )
            .await;
            let token = token_of(&body);
            let mut rng = Rng(SEED + round as u64);
            let (status, _) = call(
                client,
                "PUT",
                &format!("{}changed.ics", server.calendar),
                &[("Content-Type", "text/calendar")],
                event(EVENTS + 1, &mut rng).replace("SUMMARY:", &format!("SUMMARY:round {round} ")),
            )
            .await;
            assert!((200..300).contains(&status));
            // Only this request is timed (see `timed`).
            let started = Instant::now();
            let (status, body) = call(
                client,
                "REPORT",
                &server.calendar,
                &[("Depth", "1"), ("Content-Type", "application/xml")],
                sync(token),
            )
            .await;
            LAST.with(|l| l.set(Some(started.elapsed())));
            assert_eq!(status, 207, "{}: {body}", server.name);
            body.matches("getetag>").count() / 2
        }
        "addressbook-multiget, 1,000 contacts" => {
            let mut hrefs = String::new();
            let path = server
                .book
                .split_once("://")
                .map(|(_, r)| &r[r.find('/').unwrap()..])
                .unwrap();
            for i in 0..CONTACTS {
                hrefs.push_str(&format!("<d:href>{path}contact-{i}.vcf</d:href>"));
            }
            let (status, body) = call(
                client,
                "REPORT",
                &server.book,
                &[("Depth", "1"), ("Content-Type", "application/xml")],
                format!(
                    "<r:addressbook-multiget xmlns:d=\"DAV:\" xmlns:r=\"urn:ietf:params:xml:ns:carddav\">\
                     <d:prop><d:getetag/><r:address-data/></d:prop>{hrefs}</r:addressbook-multiget>"
                ),
            )
            .await;
            assert_eq!(status, 207, "{}: {body}", server.name);
            body.matches("BEGIN:VCARD").count()
        }
        _ => unreachable!("an operation of the list"),
    }
}

thread_local! {
    /// An operation that times only part of itself leaves its time here.
    static LAST: std::cell::Cell<Option<Duration>> = const { std::cell::Cell::new(None) };
}

const OPERATIONS: [&str; 4] = [
    "PROPFIND Depth 1, 10,000 events",
    "calendar-query, a year",
    "sync-collection after one change",
    "addressbook-multiget, 1,000 contacts",
];

fn start_ferrymail(dir: &Path) -> (ChildGuard, Server, String, String) {
    let port = free_port();
    let hash = {
        let out = Command::new(FERRYMAIL)
            .arg("passwd")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(PASSWORD.as_bytes())?;
                c.wait_with_output()
            })
            .expect("ferrymail passwd");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let spec = dir.join("ferrymail.toml");
    fs::write(
        &spec,
        format!(
            "[server]\nhostname = \"mx.bench.test\"\ndata_dir = \"data\"\n\n\
             [listeners]\ncaldav = \"127.0.0.1:{port}\"\n\n[tls]\nmode = \"self-signed\"\n\n\
             [domains.\"bench.test\".aliases.me]\nmailbox = {{ password = {{ hash = \"{hash}\" }} }}\n"
        ),
    )
    .unwrap();
    let child = Command::new(FERRYMAIL)
        .current_dir(dir)
        .args(["--spec", "ferrymail.toml", "serve"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.join("serve.log")).unwrap())
        .spawn()
        .expect("start ferrymail");
    let mut guard = ChildGuard::new(child, "ferrymail");
    assert!(
        wait_for_port(port, START_TIMEOUT, || guard.exited()),
        "ferrymail did not listen: {}",
        fs::read_to_string(dir.join("serve.log")).unwrap_or_default()
    );
    let base = format!("https://127.0.0.1:{port}");
    let server = Server {
        name: "ferrymail",
        calendar: format!("{base}/dav/calendars/{USER}/calendar/"),
        book: format!("{base}/dav/addressbooks/{USER}/contacts/"),
        base,
        pid: guard.pid(),
    };
    let data = dir.join("data");
    (
        guard,
        server,
        data.join("self-signed.crt").display().to_string(),
        data.join("self-signed.key").display().to_string(),
    )
}

fn start_radicale(dir: &Path, cert: &str, key: &str) -> (ChildGuard, Server) {
    let port = free_port();
    let users = dir.join("users");
    fs::write(&users, format!("{USER}:{PASSWORD}\n")).unwrap();
    let child = Command::new("/usr/bin/python3")
        .args(["-m", "radicale", "--storage-filesystem-folder"])
        .arg(dir.join("collections"))
        .args(["--server-hosts", &format!("127.0.0.1:{port}")])
        .args(["--auth-type", "htpasswd", "--auth-htpasswd-filename"])
        .arg(&users)
        .args(["--auth-htpasswd-encryption", "plain"])
        .args([
            "--server-ssl",
            "True",
            "--server-certificate",
            cert,
            "--server-key",
            key,
        ])
        .args([
            "--server-max-content-length",
            "100000000",
            "--logging-level",
            "warning",
        ])
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.join("radicale.log")).unwrap())
        .spawn()
        .expect("start radicale (apt-get install -y radicale)");
    let mut guard = ChildGuard::new(child, "radicale");
    assert!(
        wait_for_port(port, START_TIMEOUT, || guard.exited()),
        "Radicale did not listen: {}",
        fs::read_to_string(dir.join("radicale.log")).unwrap_or_default()
    );
    let base = format!("https://127.0.0.1:{port}");
    let server = Server {
        name: "Radicale",
        calendar: format!("{base}/{USER}/calendar/"),
        book: format!("{base}/{USER}/contacts/"),
        base,
        pid: guard.pid(),
    };
    (guard, server)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    // `cargo test --all-targets` runs this binary too, unoptimised and without --bench:
    // the figures would mean nothing and Radicale's side alone takes minutes.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "dav_vs_radicale bench: skipped (run it with `cargo bench --bench dav_vs_radicale`)"
        );
        return;
    }
    if Command::new("/usr/bin/python3")
        .args(["-c", "import radicale"])
        .status()
        .map_or(true, |s| !s.success())
    {
        eprintln!("Radicale is not installed: apt-get install -y radicale");
        std::process::exit(1);
    }
    let dir = tempfile::tempdir().unwrap();
    let (fdir, rdir) = (dir.path().join("ferrymail"), dir.path().join("radicale"));
    fs::create_dir_all(&fdir).unwrap();
    fs::create_dir_all(&rdir).unwrap();
    let (mut fguard, ferry, cert, key) = start_ferrymail(&fdir);
    let (mut rguard, radicale) = start_radicale(&rdir, &cert, &key);
    RADICALE_ROOT.with(|r| *r.borrow_mut() = rdir.join("collections"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = client();
    let fill_peak = runtime.block_on(async {
        // Radicale makes collections with MKCALENDAR / MKCOL; ferrymail has them already.
        let (s, b) = call(&client, "MKCALENDAR", &radicale.calendar, &[], String::new()).await;
        assert_eq!(s, 201, "{b}");
        let mkcol = "<d:mkcol xmlns:d=\"DAV:\" xmlns:r=\"urn:ietf:params:xml:ns:carddav\"><d:set><d:prop>\
                     <d:resourcetype><d:collection/><r:addressbook/></d:resourcetype></d:prop></d:set></d:mkcol>";
        let (s, b) = call(&client, "MKCOL", &radicale.book, &[], mkcol.into()).await;
        assert_eq!(s, 201, "{b}");
        fill(&client, &ferry).await;
        // Radicale takes a PUT in tens of milliseconds (11,000 took over 18 minutes
        // here): its items are written straight into its storage folder instead, as
        // the files its PUT would have written; it reads them on the first request.
        fill_radicale_files(&rdir_of(&radicale));
        // Radicale was filled through its files: only ferrymail's fill peak is known, and
        // the peaks compared below start afresh after it (clear_refs 5, proc(5)).
        let fill_peak = proc_status_kib(ferry.pid, "VmHWM").unwrap_or(0);
        // ferrymail gives freed memory back every second (src/trim.rs): the answering
        // peak starts from what it holds, not from the fill's leftovers.
        tokio::time::sleep(Duration::from_secs(3)).await;
        for pid in [ferry.pid, radicale.pid] {
            let _ = fs::write(format!("/proc/{pid}/clear_refs"), "5");
        }
        // One untimed pass each: caches warm on both.
        for op in OPERATIONS {
            for server in [&ferry, &radicale] {
                operation(&client, server, op, 0).await;
            }
        }
        fill_peak
    });
    println!(
        "# dav_vs_radicale: {} events, {} contacts",
        EVENTS, CONTACTS
    );
    println!(
        "# {} · ferrymail {} · Radicale 3.1.8 · median of {RUNS}",
        cpu_model(),
        ferrymail_revision()
    );
    println!("| operation | ferrymail | Radicale | ratio | target ≤ {TARGET} | answers |");
    println!("|---|---|---|---|---|---|");
    for op in OPERATIONS {
        let mut times = [Vec::new(), Vec::new()];
        let mut answers = [0, 0];
        for round in 1..=RUNS {
            for (i, server) in [&ferry, &radicale].into_iter().enumerate() {
                LAST.with(|l| l.set(None));
                let started = Instant::now();
                answers[i] = runtime.block_on(operation(&client, server, op, round));
                let took = LAST.with(|l| l.get()).unwrap_or_else(|| started.elapsed());
                times[i].push(took);
            }
        }
        let [f, r] = times.map(median);
        let ratio = f.as_secs_f64() / r.as_secs_f64();
        println!(
            "| {op} | {:.1} ms | {:.1} ms | {ratio:.2}× | {} | {} / {} |",
            f.as_secs_f64() * 1e3,
            r.as_secs_f64() * 1e3,
            if ratio <= TARGET { "met" } else { "not met" },
            answers[0],
            answers[1]
        );
    }
    // Radicale is one process; ferrymail too.
    let peak = |pid: u32| proc_status_kib(pid, "VmHWM").unwrap_or(0);
    println!(
        "| peak RSS answering | {:.0} MB | {:.0} MB | {:.2}× | | |",
        peak(ferry.pid) as f64 / 1024.0,
        peak(radicale.pid) as f64 / 1024.0,
        peak(ferry.pid) as f64 / peak(radicale.pid).max(1) as f64
    );
    println!(
        "| peak RSS filling (8 PUTs at a time) | {:.0} MB | (filled from files) | | | |",
        fill_peak as f64 / 1024.0
    );
    let _ = (&ferry.base, &radicale.base);
    fguard.terminate(Duration::from_secs(10));
    rguard.terminate(Duration::from_secs(10));
}

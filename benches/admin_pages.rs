//! Admin page benchmark: the web admin's pages rendered by a server holding 10,000
//! aliases and 100,000 mail log records, timed end to end from a loopback client.
//!
//! The bench writes a spec with 10,000 aliases over 10 domains (plus a few patterns),
//! applies it, fills the mail log with 100,000 records through ferrymail's own log
//! writer, starts `serve`, logs in as the first-boot admin over plain http (loopback),
//! then asks each page 30 times over one keep-alive-free connection per request and
//! reports the median and the 95th percentile. The target: every page under 50 ms.
//! Then the admin's edits of that spec (src/spec/edit.rs): an alias added through the
//! form, its plan alone and its confirmation (patch, validate, plan, write, apply), with
//! serve's memory before and after. There is no peer to race (Postfix and Dovecot have
//! no web admin).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FERRYMAIL: &str = env!("CARGO_BIN_EXE_ferrymail");
const ALIASES: usize = 10_000;
const RECORDS: usize = 100_000;
const RUNS: usize = 30;
/// Edits of each kind timed: each one writes the spec.
const EDITS: usize = 7;

/// A field of serve's /proc status (VmHWM, VmRSS) in MB.
fn memory_mb(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib * 1024.0 / 1e6)
}

/// A hidden field's value in a page.
fn hidden_value(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let at = page.find(&marker).expect("the field") + marker.len();
    page[at..].split('"').next().unwrap_or_default().to_string()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One HTTP/1.1 request; returns (status, headers, body) and how long it took.
fn request(
    port: u16,
    method: &str,
    path: &str,
    cookie: &str,
    body: &str,
) -> (u16, String, String, Duration) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut text = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nCookie: {cookie}\r\n"
    );
    if !body.is_empty() {
        text.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    text.push_str("\r\n");
    text.push_str(body);
    stream.write_all(text.as_bytes()).expect("send");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("read");
    let elapsed = started.elapsed();
    let answer = String::from_utf8_lossy(&answer).to_string();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string(), elapsed)
}

fn cookie_of(head: &str, name: &str) -> String {
    head.lines()
        .filter_map(|l| l.strip_prefix("set-cookie: "))
        .find(|c| c.starts_with(&format!("{name}=")))
        .and_then(|c| c.split(';').next())
        .expect("a cookie")
        .to_string()
}

fn write_spec(dir: &Path, mx: u16, http: u16) {
    let mut spec = format!(
        "[server]\nhostname = \"mx.example.test\"\ndata_dir = \"data\"\n\n[listeners]\nmx = \"127.0.0.1:{mx}\"\nhttp = \"127.0.0.1:{http}\"\n\n"
    );
    for d in 0..10 {
        spec.push_str(&format!("[domains.\"d{d}.example.test\".aliases]\n"));
        for a in 0..ALIASES / 10 {
            spec.push_str(&format!(
                "user{a} = {{ forward = [\"user{a}.d{d}@elsewhere.test\"] }}\n"
            ));
        }
        spec.push_str(&format!(
            "\n[[domains.\"d{d}.example.test\".patterns]]\nregex = '^ticket-(\\d+)$'\nforward = ['tickets+$1@helpdesk.test']\n\n"
        ));
    }
    std::fs::write(dir.join("ferrymail.toml"), spec).expect("spec");
}

fn fill_log(data: &Path) {
    use ferrymail::queue::log::{Entry, Event, MailLog};
    let log = MailLog::open(data, 365 * 86_400).expect("mail log");
    // The last day or so, one a second: within any retention serve prunes to when it
    // opens the log (a fixed date once fell out of it, and the pages timed an empty log).
    let now = ferrymail::queue::now_unix();
    for i in 0..RECORDS {
        let event = Event::ALL[i % 5];
        log.record(Entry {
            at: now - (RECORDS - i) as i64,
            event,
            message_id: Some(i as i64),
            mail_from: format!("sender{}@example.net", i % 977),
            rcpt: format!("user{}@d{}.example.test", i % 1000, i % 10),
            remote_ip: format!("192.0.2.{}", i % 250),
            detail: if event == Event::Rejected {
                "550 5.1.1 no such user".into()
            } else {
                String::new()
            },
        });
    }
    log.flush();
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("admin_pages bench: skipped (run it with `cargo bench --bench admin_pages`)");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let (mx, http) = (free_port(), free_port());
    write_spec(dir.path(), mx, http);
    let applied = Command::new(FERRYMAIL)
        .current_dir(dir.path())
        .args(["apply", "--auto-approve"])
        .stdout(Stdio::null())
        .status()
        .expect("apply");
    assert!(applied.success());
    let data = dir.path().join("data");
    fill_log(&data);
    let log = std::fs::File::create(dir.path().join("serve.log")).expect("log");
    let mut server = Command::new(FERRYMAIL)
        .current_dir(dir.path())
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("serve");
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", http)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "serve did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let password = std::fs::read_to_string(data.join("admin.password")).expect("password");
    let (_, head, body, _) = request(http, "GET", "/admin/login", "", "");
    let login_cookie = cookie_of(&head, "ferrymail_login");
    let at = body.find("name=\"csrf\" value=\"").expect("csrf") + 19;
    let csrf = body[at..].split('"').next().unwrap_or_default();
    let (status, head, _, _) = request(
        http,
        "POST",
        "/admin/login",
        &login_cookie,
        &format!("user=admin&password={}&csrf={csrf}", password.trim()),
    );
    assert_eq!(status, 303, "login");
    let session = cookie_of(&head, "ferrymail_session");

    println!(
        "{ALIASES} aliases, {RECORDS} mail log records; {RUNS} requests per page; ferrymail {}",
        Command::new("git")
            .args([
                "-C",
                env!("CARGO_MANIFEST_DIR"),
                "rev-parse",
                "--short",
                "HEAD"
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    );
    println!("| page | median ms | p95 ms | bytes |");
    println!("| --- | ---: | ---: | ---: |");
    for path in [
        "/admin",
        "/admin/aliases",
        "/admin/aliases?q=user99",
        "/admin/aliases?test=user500%2Btag%40d3.example.test",
        "/admin/emails",
        "/admin/emails?q=sender5%40",
        "/admin/emails?event=rejected",
        "/admin/emails?q=nobody-matches-this",
    ] {
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..RUNS {
            let (status, _, body, took) = request(http, "GET", path, &session, "");
            assert_eq!(status, 200, "{path}");
            bytes = body.len();
            times.push(took.as_secs_f64() * 1000.0);
        }
        times.sort_by(|a, b| a.total_cmp(b));
        println!(
            "| `{path}` | {:.1} | {:.1} | {bytes} |",
            times[RUNS / 2],
            times[RUNS * 95 / 100]
        );
    }

    let before = (
        memory_mb(server.id(), "VmRSS"),
        memory_mb(server.id(), "VmHWM"),
    );
    println!("\n| edit of the {ALIASES}-alias spec | median ms | p95 ms |");
    println!("| --- | ---: | ---: |");
    for (what, step) in [
        ("add an alias: its plan (nothing written)", "plan"),
        (
            "add an alias: confirmed (patch, validate, plan, write, apply)",
            "confirm",
        ),
    ] {
        let mut times = Vec::new();
        for i in 0..EDITS {
            let (_, _, form, _) = request(http, "GET", "/admin/aliases/new", &session, "");
            let (csrf, etag) = (hidden_value(&form, "csrf"), hidden_value(&form, "etag"));
            let body = format!(
                "op=add-alias&step={step}&csrf={csrf}&etag={etag}&local=bench-{step}-{i}&domain=d0.example.test&forward=x%40elsewhere.test&enabled=on"
            );
            let (status, _, answer, took) = request(http, "POST", "/admin/edit", &session, &body);
            assert_eq!(status, 200, "{answer}");
            if step == "confirm" {
                assert!(answer.contains("Applied: revision"), "{answer}");
            }
            times.push(took.as_secs_f64() * 1000.0);
        }
        times.sort_by(|a, b| a.total_cmp(b));
        println!(
            "| {what} | {:.0} | {:.0} |",
            times[EDITS / 2],
            times[(EDITS * 95 / 100).min(EDITS - 1)]
        );
    }
    println!(
        "\nserve's memory: RSS {:.0} MB, peak {:.0} MB before the edits; RSS {:.0} MB, peak {:.0} MB after",
        before.0,
        before.1,
        memory_mb(server.id(), "VmRSS"),
        memory_mb(server.id(), "VmHWM")
    );
    let _ = server.kill();
    let _ = server.wait();
}

//! Start and idle cost: `serve` from exec to READY=1 (systemd's notify protocol) with the
//! quickstart spec and with 100,000 aliases, first start and restart; then what the idle
//! server holds in memory 5 s and 15 s after, split by where it lives (/proc/PID/smaps).

#[path = "support/machine.rs"]
mod machine;
#[path = "support/processes.rs"]
mod processes;

use machine::{cpu_model, ferrymail_revision};
use processes::{ChildGuard, free_port, proc_status_kib};
use std::fmt::Write as _;
use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The binary measured (FERRYMAIL_BIN picks another; see machine::ferrymail_binary).
static FERRYMAIL: std::sync::LazyLock<String> = std::sync::LazyLock::new(machine::ferrymail_binary);
/// Restarts timed per spec; the median is reported.
const RESTARTS: usize = 5;
/// When the server's memory is read: soon after READY=1, and once settled (tokio's idle
/// blocking-pool threads, kept 10 s, have exited); the target applies to the second.
const SOON: Duration = Duration::from_secs(5);
const SETTLED: Duration = Duration::from_secs(15);
/// 1,000 domains × 100 aliases.
const DOMAINS: usize = 1_000;
const ALIASES_PER_DOMAIN: usize = 100;
const READY_TIMEOUT: Duration = Duration::from_secs(600);
const QUICKSTART_TARGET: Duration = Duration::from_millis(100);
const BIG_TARGET: Duration = Duration::from_secs(1);
const IDLE_RSS_TARGET_MB: f64 = 30.0;

fn main() {
    // `cargo test --all-targets` runs this binary without --bench: a debug build's
    // figures would mean nothing, so it only says how to run it.
    if !std::env::args().any(|a| a == "--bench") {
        println!("startup bench: skipped (run it with `cargo bench --bench startup`)");
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir for the bench (set TMPDIR to move it)");
    println!("# ferrymail start and idle benchmark\n");
    println!("binary: {} ({})", *FERRYMAIL, ferrymail_revision());
    println!(
        "{}",
        Command::new(&*FERRYMAIL)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout)
                .lines()
                .nth(1)
                .unwrap_or("")
                .to_string())
            .unwrap_or_default()
    );
    println!(
        "machine: {} cores ({})\n",
        thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model()
    );

    let quickstart = dir.path().join("quickstart");
    let big = dir.path().join("big");
    write_spec(&quickstart, 0);
    write_spec(&big, DOMAINS);

    let mut table = String::from(
        "| spec | first start (apply included) | restart, median of 5 | target | RSS 5 s after | idle RSS 15 s after | RssAnon | RssFile | threads |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let mut breakdowns = String::new();
    for (name, spec_dir, target) in [
        ("quickstart", &quickstart, QUICKSTART_TARGET),
        ("100,000 aliases", &big, BIG_TARGET),
    ] {
        let spec = spec_dir.join("ferrymail.toml");
        let first = start(&spec, dir.path());
        let first_ready = first.ready_after;
        first.stop();
        let mut restarts = Vec::new();
        let mut server = None;
        for i in 0..RESTARTS {
            let started = start(&spec, dir.path());
            restarts.push(started.ready_after);
            if i + 1 < RESTARTS {
                started.stop();
            } else {
                server = Some(started);
            }
        }
        restarts.sort();
        let median = restarts[restarts.len() / 2];
        let server = server.expect("RESTARTS is at least 1");
        thread::sleep(SOON);
        let soon = Memory::of(server.pid());
        thread::sleep(SETTLED - SOON);
        let memory = Memory::of(server.pid());
        let met = |ok: bool| if ok { "met" } else { "NOT met" };
        writeln!(
            table,
            "| {name} | {} | {} | < {} ({}) | {:.1} MB | {:.1} MB ({}) | {:.1} MB | {:.1} MB | {} |",
            ms(first_ready),
            ms(median),
            ms(target),
            met(median < target),
            soon.rss_mb,
            memory.rss_mb,
            met(memory.rss_mb < IDLE_RSS_TARGET_MB),
            memory.anon_mb,
            memory.file_mb,
            memory.threads,
        )
        .unwrap();
        writeln!(breakdowns, "\nWhere the idle {name} server's {:.1} MB are (/proc/PID/smaps, Rss per mapping, largest first):\n", memory.rss_mb).unwrap();
        breakdowns.push_str("| mapping | Rss | of which private dirty |\n| --- | ---: | ---: |\n");
        for (what, rss, dirty) in memory.by_mapping.iter().take(8) {
            writeln!(breakdowns, "| {what} | {rss:.1} MB | {dirty:.1} MB |").unwrap();
        }
        server.stop();
    }
    println!("{table}");
    println!("{breakdowns}");
    println!(
        "\nTargets: READY=1 < {} ms (quickstart) and < {} s (100,000 aliases) on restart; idle RSS < {IDLE_RSS_TARGET_MB} MB, {} s after READY=1.",
        QUICKSTART_TARGET.as_millis(),
        BIG_TARGET.as_secs(),
        SETTLED.as_secs()
    );
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// A spec in `dir`: the quickstart's services on free ports, and `domains` more domains
/// of `ALIASES_PER_DOMAIN` forwarding aliases each (ed25519 DKIM keys: rsa-2048 would
/// make the first start a key-generation bench).
fn write_spec(dir: &Path, domains: usize) {
    fs::create_dir_all(dir).expect("creating the spec dir");
    let quickstart = fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/specs/quickstart.toml"
    ))
    .expect("reading specs/quickstart.toml");
    let re = regex::Regex::new(r"127\.0\.0\.1:\d+").unwrap();
    let mut text = re
        .replace_all(&quickstart, |_: &regex::Captures| {
            format!("127.0.0.1:{}", free_port())
        })
        .replace("data_dir = \"../data/quickstart\"", "data_dir = \"data\"");
    for d in 0..domains {
        write!(
            text,
            "\n[domains.\"d{d:04}.bench.test\"]\ndkim = [{{ selector = \"fm1\", algorithm = \"ed25519\" }}]\n"
        )
        .unwrap();
        for a in 0..ALIASES_PER_DOMAIN {
            writeln!(
                text,
                "aliases.a{a} = {{ forward = [\"user{a}@example.net\"] }}"
            )
            .unwrap();
        }
    }
    fs::write(dir.join("ferrymail.toml"), text).expect("writing the spec");
}

/// A server that said READY=1, and how long after exec it did.
struct Started {
    child: ChildGuard,
    ready_after: Duration,
}

impl Started {
    fn pid(&self) -> u32 {
        self.child.pid()
    }

    fn stop(mut self) {
        self.child.terminate(Duration::from_secs(30));
    }
}

/// Starts `serve` with a notify socket of its own; returns once READY=1 arrives.
fn start(spec: &Path, scratch: &Path) -> Started {
    let socket_path = scratch.join(format!("notify-{}.sock", std::process::id()));
    let _ = fs::remove_file(&socket_path);
    let socket = UnixDatagram::bind(&socket_path).expect("binding the notify socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let log = fs::File::create(spec.with_extension("log")).expect("the server's log file");
    let started = Instant::now();
    let child = Command::new(&*FERRYMAIL)
        .arg("--spec")
        .arg(spec)
        .arg("serve")
        .env("NOTIFY_SOCKET", &socket_path)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting ferrymail serve");
    let mut child = ChildGuard::new(child, "ferrymail serve");
    let mut buf = [0u8; 4096];
    loop {
        if let Ok(n) = socket.recv(&mut buf)
            && String::from_utf8_lossy(&buf[..n])
                .lines()
                .any(|l| l == "READY=1")
        {
            let ready_after = started.elapsed();
            let _ = fs::remove_file(&socket_path);
            return Started { child, ready_after };
        }
        if child.exited() || started.elapsed() > READY_TIMEOUT {
            let log = fs::read_to_string(spec.with_extension("log")).unwrap_or_default();
            panic!("serve never said READY=1:\n{}", processes::tail(&log, 30));
        }
    }
}

/// The idle server's memory.
struct Memory {
    rss_mb: f64,
    anon_mb: f64,
    file_mb: f64,
    threads: u64,
    /// (mapping, Rss MB, private dirty MB), largest first; anonymous mappings summed.
    by_mapping: Vec<(String, f64, f64)>,
}

impl Memory {
    fn of(pid: u32) -> Memory {
        let kib = |field| proc_status_kib(pid, field).unwrap_or(0) as f64 / 1024.0;
        let mut groups: std::collections::BTreeMap<String, (f64, f64)> = Default::default();
        let smaps = fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
        let mut current = String::new();
        for line in smaps.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() >= 5 && fields[0].contains('-') && !fields[0].ends_with(':') {
                current = match fields.get(5) {
                    Some(p) if p.ends_with("/ferrymail") => format!("the binary ({})", fields[1]),
                    Some(p) if p.starts_with('/') => {
                        let name = Path::new(p)
                            .file_name()
                            .map_or(*p, |n| n.to_str().unwrap_or(p));
                        format!("{name} ({})", fields[1])
                    }
                    Some(p) => (*p).to_string(),
                    None => "anonymous (heap arenas, thread stacks)".to_string(),
                };
                continue;
            }
            let value = || {
                fields
                    .get(1)
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0)
                    / 1024.0
            };
            match fields.first() {
                Some(&"Rss:") => groups.entry(current.clone()).or_default().0 += value(),
                Some(&"Private_Dirty:") => groups.entry(current.clone()).or_default().1 += value(),
                _ => {}
            }
        }
        let mut by_mapping: Vec<(String, f64, f64)> =
            groups.into_iter().map(|(k, (r, d))| (k, r, d)).collect();
        by_mapping.sort_by(|a, b| b.1.total_cmp(&a.1));
        Memory {
            rss_mb: kib("VmRSS"),
            anon_mb: kib("RssAnon"),
            file_mb: kib("RssFile"),
            threads: proc_status_kib(pid, "Threads").unwrap_or(0),
            by_mapping,
        }
    }
}

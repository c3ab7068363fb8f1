//! Cluster throughput: the mail flow (MX accepts, queues durably, forwards to a sink) with
//! one node on the embedded SQLite store beside two nodes sharing a MongoDB-wire store
//! and Redis, in the same run and with the same load.
//!
//! The load is `SESSIONS` plain SMTP sessions sending 10 KB messages (split evenly across
//! the nodes in the two-node case); each server relays to a counting sink. Per setup it
//! records accept throughput (messages ÷ wall time of the load), end-to-end throughput
//! (until the sink has every message), p50/p99 accept latency, CPU seconds per message of
//! the nodes and of the store/cache servers, and the nodes' peak RSS.
//!
//! The MongoDB side is secantusd (`pip install secantusdb==0.7.0b3`), a MongoDB-wire server
//! written in Python: no MongoDB server is packaged for this machine. Its figures are a
//! floor set by that server, not what a real replica set would give.

#[path = "support/dns_stub.rs"]
mod dns_stub;
#[path = "support/machine.rs"]
mod machine;
#[path = "support/processes.rs"]
mod processes;
#[path = "support/smtp.rs"]
mod smtp;

use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use dns_stub::DnsStub;
use machine::{command_line, cpu_model, ferrymail_revision};
use processes::*;
use smtp::{MESSAGE_BYTES, builtin_sink, client_load};

const FERRYMAIL: &str = env!("CARGO_BIN_EXE_ferrymail");
/// Messages per setup (FERRYMAIL_BENCH_MESSAGES overrides it).
const MESSAGES: usize = 2_000;
const SESSIONS: usize = 20;
const START_TIMEOUT: Duration = Duration::from_secs(60);
const LOAD_TIMEOUT: Duration = Duration::from_secs(900);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(900);

struct Outcome {
    name: &'static str,
    accepted: usize,
    errors: Vec<String>,
    accept_wall: Duration,
    end_to_end: Option<Duration>,
    latencies: Vec<Duration>,
    node_cpu: f64,
    backend_cpu: f64,
    peak_rss_kib: u64,
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without
    // it, and the bench is not a test.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "cluster throughput bench: skipped (run it with `cargo bench --bench cluster_throughput`)"
        );
        return;
    }
    let messages = std::env::var("FERRYMAIL_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(MESSAGES);
    for tool in ["secantusd-py", "redis-server"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .map_or(true, |s| !s.success())
        {
            eprintln!(
                "{tool} is missing: `pip install secantusdb==0.7.0b3` and `apt-get install redis-server` (scripts/test installs both)"
            );
            std::process::exit(1);
        }
    }
    println!("# Cluster throughput: one node on SQLite beside two nodes on MongoDB + Redis\n");
    println!(
        "ferrymail {} · {} ({} cores) · {} · {}",
        ferrymail_revision(),
        cpu_model(),
        command_line("nproc", &[]),
        command_line("redis-server", &["--version"]),
        command_line("date", &["-u", "+%Y-%m-%dT%H:%MZ"])
    );
    println!(
        "load: {messages} messages × {MESSAGE_BYTES} bytes, {SESSIONS} sessions in all, each node relays to a counting sink\n"
    );
    let work = tempfile::tempdir().expect("temp dir");
    // FERRYMAIL_BENCH_KEEP=1 keeps the nodes' data dirs and logs to look at afterwards.
    let keep = std::env::var_os("FERRYMAIL_BENCH_KEEP").is_some();
    let dns = DnsStub::start().expect("stub DNS");
    let one = one_node(work.path(), dns.addr, messages);
    let two = two_nodes(work.path(), dns.addr, messages);
    report(&[one, two], messages);
    if keep {
        println!("\nkept: {}", work.keep().display());
    }
}

/// A counting sink on a free port.
struct Sink {
    port: u16,
    delivered: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Sink {
    fn start() -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("sink");
        let port = listener.local_addr().expect("sink address").port();
        let delivered = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (d, s) = (delivered.clone(), stop.clone());
        thread::spawn(move || builtin_sink(listener, d, s));
        Sink {
            port,
            delivered,
            stop,
        }
    }

    fn wait_for(&self, n: u64, timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.delivered.load(Ordering::SeqCst) >= n {
                return Some(Instant::now());
            }
            thread::sleep(Duration::from_millis(5));
        }
        None
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn node_toml(mx: u16, sink: u16) -> String {
    format!(
        "[server]\nhostname = \"mx.bench.test\"\ndata_dir = \"../data\"\nmaster_key = {{ file = \"master.key\" }}\n\n[listeners]\nmx = \"127.0.0.1:{mx}\"\n\n[delivery]\nrelay = \"127.0.0.1:{sink}\"\n"
    )
}

fn shared_toml(dns: std::net::SocketAddr, backends: &str) -> String {
    format!(
        "{backends}\n[dns]\nresolver = \"{dns}\"\n\n[limits]\nconnections_per_minute = 0\nconnections_per_ip = 50\n\n\
         [domains.\"bench.test\"]\ndkim = [{{ selector = \"fm1\", algorithm = \"ed25519\" }}]\n\n\
         [domains.\"bench.test\".aliases.hello]\nforward = [\"x@elsewhere.test\"]\n"
    )
}

/// Writes the shared part of a node's spec directory (beside its node.toml) and starts
/// `serve` on it.
fn start_node(dir: &Path, name: &str, mx: u16, shared: &str) -> ChildGuard {
    let spec = dir.join("spec");
    fs::create_dir_all(&spec).expect("node dir");
    fs::write(spec.join("shared.toml"), shared).expect("shared spec");
    fs::write(
        spec.join("master.key"),
        "the bench's master key, 32 characters or more\n",
    )
    .expect("master key");
    let log = dir.join("serve.log");
    let child = Command::new(FERRYMAIL)
        .current_dir(dir)
        .arg("--spec")
        .arg(&spec)
        .arg("serve")
        .env("FERRYMAIL_NODE", name)
        .env_remove("FERRYMAIL_SPEC")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).expect("serve.log"))
        .spawn()
        .expect("starting ferrymail serve");
    let mut guard = ChildGuard::new(child, "ferrymail");
    assert!(
        wait_for_port(mx, START_TIMEOUT, || guard.exited()),
        "{name} did not listen on {mx}: {}",
        tail(&fs::read_to_string(&log).unwrap_or_default(), 10)
    );
    guard
}

fn one_node(work: &Path, dns: std::net::SocketAddr, messages: usize) -> Outcome {
    println!("## one node, SQLite store and queue, in-process cache");
    let dir = work.join("one");
    let sink = Sink::start();
    let mx = free_port();
    fs::create_dir_all(dir.join("spec")).expect("spec dir");
    fs::write(dir.join("spec/node.toml"), node_toml(mx, sink.port)).expect("node spec");
    let node = start_node(&dir, "solo", mx, &shared_toml(dns, ""));
    let nodes = [node.pid()];
    measure("one node on SQLite", &nodes, &[], &[mx], &sink, messages)
}

fn two_nodes(work: &Path, dns: std::net::SocketAddr, messages: usize) -> Outcome {
    println!("## two nodes, MongoDB-wire store and queue (secantusd), Redis cache");
    let dir = work.join("two");
    fs::create_dir_all(&dir).expect("dir");
    let (mongo_port, redis_port) = (free_port(), free_port());
    let mongo = Command::new("secantusd-py")
        .args(["--host", "127.0.0.1", "--port", &mongo_port.to_string()])
        .arg("--storage-path")
        .arg(dir.join("mongodb"))
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.join("secantusd.log")).expect("log"))
        .spawn()
        .expect("secantusd-py");
    let mut mongo = ChildGuard::new(mongo, "secantusd");
    let redis = Command::new("redis-server")
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            &redis_port.to_string(),
            "--save",
            "",
        ])
        .args(["--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server");
    let mut redis = ChildGuard::new(redis, "redis-server");
    assert!(wait_for_port(mongo_port, START_TIMEOUT, || mongo.exited()));
    assert!(wait_for_port(redis_port, START_TIMEOUT, || redis.exited()));
    let backends = "[store]\nkind = \"mongodb\"\nurl = { file = \"mongo.url\" }\ndatabase = \"bench\"\n\n\
         [cache]\nkind = \"redis\"\nurl = { file = \"redis.url\" }\n";
    let sink = Sink::start();
    let mut guards = Vec::new();
    let mut ports = Vec::new();
    for name in ["a", "b"] {
        let node_dir = dir.join(name);
        let spec = node_dir.join("spec");
        fs::create_dir_all(&spec).expect("spec dir");
        fs::write(
            spec.join("mongo.url"),
            format!("mongodb://127.0.0.1:{mongo_port}/?directConnection=true"),
        )
        .expect("url");
        fs::write(
            spec.join("redis.url"),
            format!("redis://127.0.0.1:{redis_port}/"),
        )
        .expect("url");
        let mx = free_port();
        fs::write(spec.join("node.toml"), node_toml(mx, sink.port)).expect("node spec");
        guards.push(start_node(&node_dir, name, mx, &shared_toml(dns, backends)));
        ports.push(mx);
    }
    let nodes: Vec<u32> = guards.iter().map(ChildGuard::pid).collect();
    let backends = [mongo.pid(), redis.pid()];
    measure(
        "two nodes on MongoDB + Redis",
        &nodes,
        &backends,
        &ports,
        &sink,
        messages,
    )
}

/// Runs the load split across `ports`, waits for the sink, and reads the processes' CPU
/// and memory.
fn measure(
    name: &'static str,
    nodes: &[u32],
    backends: &[u32],
    ports: &[u16],
    sink: &Sink,
    messages: usize,
) -> Outcome {
    let cpu = |pids: &[u32]| pids.iter().map(|p| tree_cpu_seconds(*p)).sum::<f64>();
    let (nodes_before, backends_before) = (cpu(nodes), cpu(backends));
    let started = Instant::now();
    let per_node = messages / ports.len();
    let loads: Vec<_> = ports
        .iter()
        .enumerate()
        .map(|(i, &port)| {
            let share = per_node + usize::from(i < messages % ports.len());
            let sessions = SESSIONS / ports.len();
            thread::spawn(move || client_load(port, sessions, share, "load", LOAD_TIMEOUT))
        })
        .collect();
    let mut accepted = 0;
    let mut latencies = Vec::new();
    let mut errors = Vec::new();
    for load in loads {
        let l = load.join().expect("load thread");
        accepted += l.ok;
        latencies.extend(l.latencies);
        errors.extend(l.errors);
    }
    let accept_wall = started.elapsed();
    let end_to_end = sink
        .wait_for(accepted as u64, DRAIN_TIMEOUT)
        .map(|at| at - started);
    let peak_rss_kib = nodes
        .iter()
        .map(|p| proc_status_kib(*p, "VmHWM").unwrap_or(0))
        .max()
        .unwrap_or(0);
    latencies.sort();
    let outcome = Outcome {
        name,
        accepted,
        errors,
        accept_wall,
        end_to_end,
        latencies,
        node_cpu: cpu(nodes) - nodes_before,
        backend_cpu: cpu(backends) - backends_before,
        peak_rss_kib,
    };
    println!(
        "{name}: {accepted} accepted in {:.1} s, all at the sink after {}",
        accept_wall.as_secs_f64(),
        end_to_end.map_or("never (timed out)".into(), |d| format!(
            "{:.1} s",
            d.as_secs_f64()
        ))
    );
    for e in outcome.errors.iter().take(3) {
        println!("  error: {e}");
    }
    outcome
}

fn percentile(sorted: &[Duration], p: f64) -> String {
    if sorted.is_empty() {
        return "–".into();
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    format!("{:.1} ms", sorted[i].as_secs_f64() * 1000.0)
}

fn report(outcomes: &[Outcome], messages: usize) {
    println!(
        "\n| setup | accepted | accept msg/s | end-to-end msg/s | p50 accept | p99 accept | node CPU ms/msg | store+cache CPU ms/msg | peak RSS per node |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for o in outcomes {
        let per = |cpu: f64| {
            if o.accepted == 0 {
                "–".into()
            } else {
                format!("{:.2}", cpu * 1000.0 / o.accepted as f64)
            }
        };
        println!(
            "| {} | {}/{messages} | {:.0} | {} | {} | {} | {} | {} | {:.0} MiB |",
            o.name,
            o.accepted,
            o.accepted as f64 / o.accept_wall.as_secs_f64(),
            o.end_to_end.map_or("–".into(), |d| format!(
                "{:.0}",
                o.accepted as f64 / d.as_secs_f64()
            )),
            percentile(&o.latencies, 0.5),
            percentile(&o.latencies, 0.99),
            per(o.node_cpu),
            if o.backend_cpu > 0.0 {
                per(o.backend_cpu)
            } else {
                "–".into()
            },
            o.peak_rss_kib as f64 / 1024.0
        );
    }
}

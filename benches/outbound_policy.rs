//! What MTA-STS and DANE cost a forward once their lookups are warm: ferrymail forwarding
//! to MX hosts found in DNS, with opportunistic TLS, under an MTA-STS policy and under
//! DANE, beside Postfix delivering to the same hosts with `may`, `secure` and `fingerprint`.
//!
//! Knot serves a signed `test.` zone (DANE's MX and TLSA records) with unsigned delegations
//! (the plain domain and the MTA-STS domain, whose policy a Python HTTPS server serves with a
//! certificate from a test CA ferrymail trusts through SSL_CERT_FILE). Each MX host is a
//! STARTTLS sink in this bench on its own loopback address, port 25. Every server forwards
//! the same load (this bench's client, kept connections) while the bench counts what the
//! sinks received and the CPU the server used; rounds alternate between the servers, and the
//! median of each is compared with the same server's run without a policy.

#[path = "../tests/common/ca.rs"]
mod ca;
#[path = "../tests/common/knot.rs"]
mod knot;
#[path = "support/machine.rs"]
mod machine;
#[path = "support/postfix.rs"]
mod postfix;
#[path = "support/processes.rs"]
mod processes;
#[path = "support/smtp.rs"]
mod smtp;

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use ca::{Ca, cert_sha256, spki_sha256};
use machine::{command_line, cpu_model, ferrymail_revision};
use postfix::{PostfixInstance, find_tool, postfix_version};
use processes::{ChildGuard, free_port, tail, tree_cpu_seconds, wait_for_port};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use smtp::{MESSAGE_BYTES, RECIPIENT, client_load};

/// Messages per load (FERRYMAIL_BENCH_MESSAGES overrides it).
const MESSAGES: usize = 3_000;
/// Loads per server (FERRYMAIL_BENCH_ROUNDS overrides it); the median is reported.
const ROUNDS: usize = 3;
const SESSIONS: usize = 20;
/// Messages each server forwards before the rounds, so every cache is warm.
const WARM_UP: usize = 100;
/// The issue's target: a policy may cost at most this share of the throughput.
const TARGET: f64 = 0.05;
const LOAD_TIMEOUT: Duration = Duration::from_secs(600);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(300);
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The MX hosts' loopback addresses (port 25): one per recipient domain, and the policy server.
const PLAIN_MX: &str = "127.0.26.1";
const STS_MX: &str = "127.0.26.2";
const STS_POLICY: &str = "127.0.26.3";
const DANE_MX: &str = "127.0.26.4";

/// The recipient domain each run forwards to, and so the MX host and policy it meets.
#[derive(Clone, Copy, PartialEq)]
enum Destination {
    Plain,
    Sts,
    Dane,
}

impl Destination {
    fn domain(self) -> &'static str {
        match self {
            Destination::Plain => "plain.test",
            Destination::Sts => "sts.test",
            Destination::Dane => "dane.test",
        }
    }

    fn mx(self) -> &'static str {
        match self {
            Destination::Plain => PLAIN_MX,
            Destination::Sts => STS_MX,
            Destination::Dane => DANE_MX,
        }
    }
}

/// One server under load: a ferrymail or a Postfix instance with its own spec.
struct Server {
    name: String,
    port: u16,
    pid: u32,
    to: Destination,
    /// The run this one is compared with (same server, no policy); None for that run.
    baseline: Option<usize>,
    /// Per round: (end-to-end msg/s, CPU ms per message, DNS queries per message).
    rounds: Vec<(f64, f64, f64)>,
    failures: Vec<String>,
    /// What ferrymail's TLS report says of the sessions, read after the rounds.
    checked: Option<String>,
    ferrymail: Option<Ferrymail>,
    postfix: Option<PostfixInstance>,
}

struct Ferrymail {
    guard: ChildGuard,
    dir: PathBuf,
    log: PathBuf,
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "outbound_policy bench: skipped (run it with `cargo bench --bench outbound_policy`)"
        );
        return;
    }
    let number = |var: &str, default: usize| {
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let messages = number("FERRYMAIL_BENCH_MESSAGES", MESSAGES);
    let rounds = number("FERRYMAIL_BENCH_ROUNDS", ROUNDS);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!(
            "outbound_policy bench: needs root (the MX hosts listen on port 25 of 127.0.26.x, \
             the policy server on 443, Postfix switches users)"
        );
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir for the bench (set TMPDIR to move it)");
    // Postfix's daemons read the CA file below here as the postfix user.
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
        .expect("making the temp dir traversable");

    println!("# ferrymail outbound policy benchmark\n");
    println!(
        "binary: {} ({})",
        machine::ferrymail_binary(),
        ferrymail_revision()
    );
    println!(
        "machine: {} cores ({}), kernel {}",
        command_line("nproc", &[]),
        cpu_model(),
        command_line("uname", &["-r"])
    );
    println!(
        "load: {messages} messages × {MESSAGE_BYTES} bytes over {SESSIONS} kept connections, \
         {rounds} rounds per server after {WARM_UP} messages of warm-up"
    );

    let ca = Ca::new(dir.path());
    let plain_cert = ca.issue("mx.plain.test");
    let sts_cert = ca.issue("mx.sts.test");
    // DANE-EE: the MX's certificate comes from a CA nobody trusts; only its TLSA record vouches.
    let stranger = Ca::new(&dir.path().join("stranger"));
    let dane_cert = stranger.issue("mx.dane.test");
    let policy_cert = ca.issue("mta-sts.sts.test");

    let knot_port = free_port();
    let zones = zones(&dane_cert.0);
    let zones: Vec<(&str, &str)> = zones.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let conf = knot::configure(&dir.path().join("knot"), knot_port, &zones, None, &["test"]);
    // Knot counts the queries it answers (mod-stats), so each round says how many DNS
    // queries a message cost: the caches' work, seen from outside.
    let text = fs::read_to_string(&conf).expect("knot.conf");
    fs::write(
        &conf,
        text.replacen(
            "zone:\n",
            "mod-stats:\n  - id: counts\n    request-protocol: on\n\
             template:\n  - id: default\n    global-module: mod-stats/counts\nzone:\n",
            1,
        ),
    )
    .expect("knot.conf");
    let knot_log = dir.path().join("knot/knotd.log");
    let _knot = ChildGuard::new(
        Command::new("knotd")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&knot_log).expect("knot log"))
            .spawn()
            .expect("knotd (Debian's knot package; scripts/test installs it)"),
        "knotd",
    );
    assert!(
        wait_for_port(knot_port, START_TIMEOUT, || false),
        "knotd did not start: {}",
        fs::read_to_string(&knot_log).unwrap_or_default()
    );
    let anchors = knot::trust_anchors(&conf, &["test"]).expect("the signed zone's key");

    // A count per MX host: a load waits for its own destination's sink only.
    let delivered: Vec<(Destination, Arc<AtomicU64>)> = [
        (Destination::Plain, &plain_cert),
        (Destination::Sts, &sts_cert),
        (Destination::Dane, &dane_cert),
    ]
    .into_iter()
    .map(|(to, cert)| {
        let count = Arc::new(AtomicU64::new(0));
        tls_sink(to.mx(), cert, count.clone());
        (to, count)
    })
    .collect();
    let sink = |to: Destination| {
        delivered
            .iter()
            .find(|(d, _)| *d == to)
            .map(|(_, c)| c.clone())
            .expect("a sink for every destination")
    };
    let policy = dir.path().join("sts.policy");
    fs::write(
        &policy,
        "version: STSv1\nmode: enforce\nmx: mx.sts.test\nmax_age: 86400\n",
    )
    .expect("policy file");
    let _policy_server = ChildGuard::new(
        Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/peers/mta_sts_server.py"
            ))
            .arg(STS_POLICY)
            .arg(&policy_cert.0)
            .arg(&policy_cert.1)
            .arg(&policy)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3"),
        "the policy server",
    );
    println!(
        "DNS: Knot on 127.0.0.1:{knot_port}, test. signed (ECDSA P-256), plain.test and sts.test \
         delegated unsigned; TTL 3600"
    );

    let mut servers: Vec<Server> = Vec::new();
    for (name, to, policies, baseline) in [
        (
            "ferrymail, opportunistic TLS (mta_sts = false, dane = false)",
            Destination::Plain,
            false,
            None,
        ),
        (
            "ferrymail, defaults, a domain without a policy",
            Destination::Plain,
            true,
            Some(0),
        ),
        (
            "ferrymail, MTA-STS enforce (policy cached)",
            Destination::Sts,
            true,
            Some(0),
        ),
        (
            "ferrymail, DANE-EE (TLSA 3 1 1, DNSSEC validated)",
            Destination::Dane,
            true,
            Some(0),
        ),
    ] {
        let sub = dir.path().join(format!("ferrymail-{}", servers.len()));
        match start_ferrymail(&sub, knot_port, &anchors, &ca.root(), to, policies) {
            Ok(f) => servers.push(Server {
                name: name.into(),
                port: f.1,
                pid: f.0.guard.pid(),
                to,
                baseline,
                rounds: Vec::new(),
                failures: Vec::new(),
                checked: None,
                ferrymail: Some(f.0),
                postfix: None,
            }),
            Err(e) => println!("{name}: not run: {e}"),
        }
    }
    let postfix_version = postfix_version();
    match (find_tool("postfix"), find_tool("postmap"), &postfix_version) {
        (Some(postfix), Some(postmap), Some(version)) => {
            let first = servers.len();
            // Postfix has no MTA-STS of its own, and its DANE needs a validating resolver
            // this bench does not run: the nearest it does is the certificate check alone,
            // to a host named in its transport table (no MX, TLSA or policy lookups).
            for (level, to) in [
                ("may", Destination::Plain),
                (
                    "secure match=mx.sts.test (MTA-STS's certificate check, no lookups)",
                    Destination::Sts,
                ),
                (
                    "fingerprint (DANE-EE's certificate check, no lookups)",
                    Destination::Dane,
                ),
            ] {
                let base = dir.path().join(format!("postfix-{}", servers.len()));
                let port = free_port();
                let tls = match to {
                    Destination::Plain => "may".to_string(),
                    Destination::Sts => "secure match=mx.sts.test".to_string(),
                    Destination::Dane => {
                        format!("fingerprint match={}", colons(&cert_sha256(&dane_cert.0)))
                    }
                };
                let main_cf = postfix_main_cf(&base, &ca.root());
                let maps = [
                    ("virtual", format!("{RECIPIENT} x@{}\n", to.domain())),
                    ("transport", format!("{} smtp:[{}]\n", to.domain(), to.mx())),
                    ("tls_policy", format!("[{}] {tls}\n", to.mx())),
                ];
                let maps: Vec<(&str, &str)> = maps.iter().map(|(n, t)| (*n, t.as_str())).collect();
                let name = format!("Postfix {version}, smtp_tls_security_level {level}");
                match PostfixInstance::create(
                    &postfix,
                    &postmap,
                    &base,
                    &format!("127.0.0.1:{port}"),
                    &main_cf,
                    &maps,
                )
                .and_then(|p| {
                    wait_for_port(port, START_TIMEOUT, || false)
                        .then_some(())
                        .ok_or_else(|| format!("did not listen: {}", p.log_tail(5)))?;
                    let pid = p.master_pid().ok_or("no master.pid")?;
                    Ok((p, pid))
                }) {
                    Ok((instance, pid)) => servers.push(Server {
                        name,
                        port,
                        pid,
                        to,
                        baseline: (to != Destination::Plain).then_some(first),
                        rounds: Vec::new(),
                        failures: Vec::new(),
                        checked: None,
                        ferrymail: None,
                        postfix: Some(instance),
                    }),
                    Err(e) => println!("{name}: not run: {e}"),
                }
            }
        }
        _ => println!(
            "Postfix is not installed: its rows are skipped (apt-get install postfix to add them)"
        ),
    }

    println!("\nwarm-up: {WARM_UP} messages through each server");
    for s in &mut servers {
        if let Err(e) = load(s, WARM_UP, &sink(s.to), "warm", &conf) {
            s.failures.push(format!("warm-up: {e}"));
        }
    }
    for round in 1..=rounds {
        for s in servers.iter_mut().filter(|s| s.failures.is_empty()) {
            match load(s, messages, &sink(s.to), &format!("r{round}"), &conf) {
                Ok(figures) => {
                    println!(
                        "round {round}: {}: {:.0} msg/s end to end, {:.2} ms CPU and {:.2} DNS queries a message",
                        s.name, figures.0, figures.1, figures.2
                    );
                    s.rounds.push(figures);
                }
                Err(e) => s.failures.push(format!("round {round}: {e}")),
            }
        }
    }
    for s in &mut servers {
        if let Some(p) = s.postfix.as_ref() {
            s.checked = Some(postfix_sessions(p));
        }
        if let Some(f) = s.ferrymail.as_mut() {
            f.guard.terminate(Duration::from_secs(60));
            s.checked = Some(sessions_reported(f, s.to));
            let log = fs::read_to_string(&f.log).unwrap_or_default();
            let errors = log.lines().filter(|l| l.contains("ERROR")).count();
            if errors > 0 {
                s.failures
                    .push(format!("serve.log: {errors} error(s): {}", tail(&log, 3)));
            }
        }
        // Every message sent went through a session of the kind named.
        let sent = WARM_UP + s.rounds.len() * messages;
        s.checked = s.checked.take().map(|c| format!("{c} (of {sent} sent)"));
    }
    report(&servers, messages);
}

/// The zones: `test.` signed, holding dane.test's records itself and delegating the others
/// without DS records, so they are provably unsigned (DNSSEC's "insecure").
fn zones(dane_cert: &Path) -> Vec<(&'static str, String)> {
    let long = |z: String| z.replace("$TTL 60", "$TTL 3600");
    vec![
        (
            "test",
            long(knot::zone(
                "test",
                &format!(
                    "plain NS ns\nsts NS ns\nsender NS ns\nbench NS ns\n\
                     dane MX 10 mx.dane\nmx.dane A {DANE_MX}\n_25._tcp.mx.dane TLSA 3 1 1 {}\n",
                    spki_sha256(dane_cert)
                ),
            )),
        ),
        (
            "plain.test",
            long(knot::zone(
                "plain.test",
                &format!("@ MX 10 mx\nmx A {PLAIN_MX}\n"),
            )),
        ),
        (
            "sts.test",
            long(knot::zone(
                "sts.test",
                &format!(
                    "@ MX 10 mx\nmx A {STS_MX}\nmta-sts A {STS_POLICY}\n\
                     _mta-sts TXT \"v=STSv1; id=20261206\"\n"
                ),
            )),
        ),
        (
            "sender.test",
            long(knot::zone(
                "sender.test",
                "@ TXT \"v=spf1 ip4:127.0.0.1 -all\"\n",
            )),
        ),
        ("bench.test", long(knot::zone("bench.test", ""))),
    ]
}

fn start_ferrymail(
    dir: &Path,
    dns: u16,
    anchors: &Path,
    ca: &Path,
    to: Destination,
    policies: bool,
) -> Result<(Ferrymail, u16), String> {
    fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let mx = free_port();
    let delivery = if policies {
        String::new()
    } else {
        "[delivery]\nmta_sts = false\ndane = false\n\n".into()
    };
    // Postfix's limits for one client, as in mx_throughput; an ed25519 key so the
    // signature's cost (mx_throughput measures it) does not hide the policy's.
    let spec = format!(
        "[server]\nhostname = \"mx.bench.test\"\ndata_dir = \"data\"\n\n\
         [listeners]\nmx = \"127.0.0.1:{mx}\"\n\n\
         [dns]\nresolver = \"127.0.0.1:{dns}\"\ntrust_anchors = \"{}\"\n\n{delivery}\
         [limits]\nconnections_per_minute = 0\nconnections_per_ip = 50\n\n\
         [domains.\"bench.test\"]\ndkim = [{{ selector = \"fm1\", algorithm = \"ed25519\" }}]\n\n\
         [domains.\"bench.test\".aliases.hello]\nforward = [\"x@{}\"]\n",
        anchors.display(),
        to.domain()
    );
    let spec_file = dir.join("ferrymail.toml");
    fs::write(&spec_file, spec).map_err(|e| e.to_string())?;
    let log = dir.join("serve.log");
    let child = Command::new(machine::ferrymail_binary())
        .current_dir(dir)
        .arg("--spec")
        .arg(&spec_file)
        .arg("serve")
        .env_remove("FERRYMAIL_SPEC")
        .env("SSL_CERT_FILE", ca)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("starting ferrymail: {e}"))?;
    let mut guard = ChildGuard::new(child, "ferrymail");
    if !wait_for_port(mx, START_TIMEOUT, || guard.exited()) {
        return Err(format!(
            "did not listen on {mx}: {}",
            tail(&fs::read_to_string(&log).unwrap_or_default(), 5)
        ));
    }
    Ok((
        Ferrymail {
            guard,
            dir: dir.to_path_buf(),
            log,
        },
        mx,
    ))
}

/// Queries Knot has answered so far (its mod-stats counters, over every protocol).
fn dns_queries(conf: &Path) -> u64 {
    let out = Command::new("knotc")
        .arg("-c")
        .arg(conf)
        .args(["stats", "mod-stats"])
        .output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    text.lines()
        .filter(|l| l.contains("request-protocol"))
        .filter_map(|l| l.rsplit('=').next()?.trim().parse::<u64>().ok())
        .sum()
}

/// Sends `messages` through the server and waits until the sinks have them all: returns
/// (end-to-end msg/s, server CPU ms per message, DNS queries per message).
fn load(
    server: &Server,
    messages: usize,
    delivered: &AtomicU64,
    tag: &str,
    knot: &Path,
) -> Result<(f64, f64, f64), String> {
    let queries = dns_queries(knot);
    let before = delivered.load(Ordering::SeqCst);
    let cpu = tree_cpu_seconds(server.pid);
    let started = Instant::now();
    let sessions = SESSIONS.min(messages);
    let sent = client_load(server.port, sessions, messages, tag, LOAD_TIMEOUT);
    if sent.ok < messages {
        return Err(format!(
            "{} of {messages} accepted: {}",
            sent.ok,
            sent.errors.first().cloned().unwrap_or_default()
        ));
    }
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while delivered.load(Ordering::SeqCst) < before + messages as u64 {
        if Instant::now() > deadline {
            return Err(format!(
                "the sinks had {} of {messages} after {} s",
                delivered.load(Ordering::SeqCst) - before,
                DRAIN_TIMEOUT.as_secs()
            ));
        }
        thread::sleep(Duration::from_millis(5));
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = tree_cpu_seconds(server.pid) - cpu;
    let queries = dns_queries(knot).saturating_sub(queries);
    Ok((
        messages as f64 / wall,
        cpu * 1e3 / messages as f64,
        queries as f64 / messages as f64,
    ))
}

/// From ferrymail's TLS report for the destination: under which policy its sessions went
/// and how many succeeded and failed, so the table says the policy was in force.
fn sessions_reported(f: &Ferrymail, to: Destination) -> String {
    let out = Command::new(machine::ferrymail_binary())
        .current_dir(&f.dir)
        .arg("--spec")
        .arg(f.dir.join("ferrymail.toml"))
        .args(["queue", "tls-report"])
        .output();
    let Ok(out) = out else {
        return "no TLS report".into();
    };
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let mut said = Vec::new();
    for policy in reports
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["policies"].as_array().cloned().unwrap_or_default())
        .filter(|p| p["policy"]["policy-domain"] == to.domain())
    {
        said.push(format!(
            "{}: {} succeeded, {} failed",
            policy["policy"]["policy-type"].as_str().unwrap_or("?"),
            policy["summary"]["total-successful-session-count"],
            policy["summary"]["total-failure-session-count"]
        ));
    }
    if said.is_empty() {
        "no sessions in the TLS report".into()
    } else {
        said.join("; ")
    }
}

/// How Postfix's smtp client said its TLS sessions went (smtp_tls_loglevel 1): "Verified",
/// "Trusted", "Untrusted" or "Anonymous TLS connection established", counted by kind.
fn postfix_sessions(p: &PostfixInstance) -> String {
    let log = fs::read_to_string(p.config().with_file_name("postfix.log")).unwrap_or_default();
    let mut kinds: Vec<(String, usize)> = Vec::new();
    for line in log.lines().filter(|l| l.contains("postfix/smtp[")) {
        let Some(at) = line.find(" TLS connection established to ") else {
            continue;
        };
        let kind = line[..at].rsplit(' ').next().unwrap_or("?").to_string();
        match kinds.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => kinds.push((kind, 1)),
        }
    }
    if kinds.is_empty() {
        return "no TLS sessions logged".into();
    }
    kinds
        .iter()
        .map(|(k, n)| format!("{k} TLS: {n}"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn report(servers: &[Server], messages: usize) {
    println!("\n## Results\n");
    println!(
        "Median of the rounds; each round {messages} messages. The changes are against the \
         same server delivering with opportunistic TLS: a fall in throughput or a rise in CPU \
         per message is the policy's cost.\n"
    );
    println!(
        "| server | end-to-end msg/s | CPU ms/msg | DNS queries/msg | throughput change | CPU change | rounds (msg/s) | sessions |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |");
    let median = |s: &Server, pick: fn(&(f64, f64, f64)) -> f64| {
        let mut v: Vec<f64> = s.rounds.iter().map(pick).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    for s in servers {
        if !s.failures.is_empty() && s.rounds.is_empty() {
            println!(
                "| {} | not run: {} | | | | | |",
                s.name,
                s.failures.join("; ")
            );
            continue;
        }
        let (rate, cpu) = (median(s, |r| r.0), median(s, |r| r.1));
        let base = s.baseline.and_then(|b| servers.get(b));
        let change = |ours: Option<f64>, theirs: Option<f64>| match (ours, theirs) {
            (Some(o), Some(t)) if t > 0.0 => format!("{:+.1}%", (o / t - 1.0) * 100.0),
            _ => "—".into(),
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            s.name,
            rate.map_or("—".into(), |r| format!("{r:.0}")),
            cpu.map_or("—".into(), |c| format!("{c:.2}")),
            median(s, |r| r.2).map_or("—".into(), |q| format!("{q:.2}")),
            base.map_or("(baseline)".into(), |b| change(rate, median(b, |r| r.0))),
            base.map_or("(baseline)".into(), |b| change(cpu, median(b, |r| r.1))),
            s.rounds
                .iter()
                .map(|r| format!("{:.0}", r.0))
                .collect::<Vec<_>>()
                .join(", "),
            s.checked.as_deref().unwrap_or("—"),
        );
    }
    println!();
    for s in servers.iter().filter(|s| !s.failures.is_empty()) {
        println!("- {}: {}", s.name, s.failures.join("; "));
    }
    for s in servers
        .iter()
        .filter(|s| s.ferrymail.is_some() && s.baseline.is_some())
    {
        let base = s.baseline.and_then(|b| servers.get(b));
        match (median(s, |r| r.0), base.and_then(|b| median(b, |r| r.0))) {
            (Some(ours), Some(theirs)) if theirs > 0.0 => {
                let cost = 1.0 - ours / theirs;
                println!(
                    "- {}: throughput {:+.1}% against opportunistic TLS — target: a fall under {:.0}%: {}",
                    s.name,
                    -cost * 100.0,
                    TARGET * 100.0,
                    if cost < TARGET { "met" } else { "**not met**" }
                );
            }
            _ => println!("- {}: no figure to compare — target: **not met**", s.name),
        }
    }
}

/// A STARTTLS sink on ADDRESS:25 with the certificate (file, key) that counts every message
/// into `delivered`; it refuses mail before STARTTLS, so nothing is counted that came in clear.
fn tls_sink(address: &str, cert: &(PathBuf, PathBuf), delivered: Arc<AtomicU64>) {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert.0)
        .expect("the sink's certificate")
        .collect::<Result<_, _>>()
        .expect("the sink's certificate");
    let key = PrivateKeyDer::from_pem_file(&cert.1).expect("the sink's key");
    let config = Arc::new(
        rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("the sink's TLS config"),
    );
    let listener = TcpListener::bind((address, 25))
        .unwrap_or_else(|e| panic!("binding {address}:25 for a sink: {e}"));
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (config, delivered) = (config.clone(), delivered.clone());
            thread::spawn(move || {
                let _ = sink_session(stream, config, &delivered);
            });
        }
    });
}

fn sink_session(
    mut stream: TcpStream,
    config: Arc<rustls::ServerConfig>,
    delivered: &AtomicU64,
) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    stream.write_all(b"220 sink.test ESMTP\r\n")?;
    // Before STARTTLS lines are read a byte at a time, so none of the handshake is buffered.
    loop {
        let line = unbuffered_line(&mut stream)?;
        match verb(&line).as_slice() {
            b"EHLO" => stream.write_all(b"250-sink.test\r\n250-8BITMIME\r\n250 STARTTLS\r\n")?,
            b"STAR" => {
                stream.write_all(b"220 2.0.0 Ready to start TLS\r\n")?;
                break;
            }
            b"QUIT" => return stream.write_all(b"221 2.0.0 Bye\r\n"),
            b"" => return Ok(()),
            _ => stream.write_all(b"530 5.7.0 Must issue a STARTTLS command first\r\n")?,
        }
    }
    let connection = rustls::ServerConnection::new(config).map_err(io::Error::other)?;
    let mut tls = BufReader::new(rustls::StreamOwned::new(connection, stream));
    let mut in_data = false;
    let mut line = Vec::new();
    loop {
        line.clear();
        if tls.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        if in_data {
            if line == b".\r\n" {
                in_data = false;
                delivered.fetch_add(1, Ordering::SeqCst);
                tls.get_mut().write_all(b"250 2.0.0 Ok\r\n")?;
            }
            continue;
        }
        let reply: &[u8] = match verb(&line).as_slice() {
            b"EHLO" => b"250-sink.test\r\n250 8BITMIME\r\n",
            b"DATA" => {
                in_data = true;
                b"354 End data with <CR><LF>.<CR><LF>\r\n"
            }
            b"QUIT" => {
                tls.get_mut().write_all(b"221 2.0.0 Bye\r\n")?;
                tls.get_mut().flush()?;
                return Ok(());
            }
            _ => b"250 2.0.0 Ok\r\n",
        };
        tls.get_mut().write_all(reply)?;
        tls.get_mut().flush()?;
    }
}

fn unbuffered_line(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let mut byte = [0u8];
    while stream.read(&mut byte)? == 1 {
        line.push(byte[0]);
        if byte[0] == b'\n' || line.len() > 1_000 {
            break;
        }
    }
    Ok(line)
}

fn verb(line: &[u8]) -> Vec<u8> {
    line.iter().take(4).map(u8::to_ascii_uppercase).collect()
}

/// "ab12…" as Postfix writes fingerprints: "AB:12:…".
fn colons(hex: &str) -> String {
    hex.as_bytes()
        .chunks(2)
        .map(|pair| String::from_utf8_lossy(pair).to_uppercase())
        .collect::<Vec<_>>()
        .join(":")
}

/// A forwarder to the transport map's hosts, as mx_throughput's but over TLS: the policy
/// per host comes from tls_policy, the CA from the test CA.
fn postfix_main_cf(base: &Path, ca: &Path) -> String {
    let b = base.display();
    format!(
        "{}transport_maps = hash:{b}/etc/transport
smtp_tls_security_level = may
smtp_tls_policy_maps = hash:{b}/etc/tls_policy
smtp_tls_CAfile = {ca}
smtp_tls_fingerprint_digest = sha256
smtp_tls_loglevel = 1
",
        postfix::base_main_cf(base),
        ca = ca.display()
    )
}

//! MX throughput benchmark: ferrymail's inbound MX beside Postfix configured as a
//! forwarder (virtual_alias_maps → relayhost), on the same machine in the same run.
//!
//! Postfix's `smtp-source` drives 10,000 messages of 10 KB over 20 parallel sessions into
//! each server (ferrymail with an ed25519 DKIM key, ferrymail with the default rsa-2048
//! key, Postfix), which forwards them to its own `smtp-sink`; then the same again over kept
//! connections (`smtp-source -d`). Per server it records accept throughput (messages ÷
//! smtp-source wall time), end-to-end throughput (until the sink has seen every message),
//! p50/p99 accept latency (a probe in this file: 20 sessions, 2,000 messages, timed from
//! the final "\r\n.\r\n" to the 250), CPU per message and peak RSS. BENCHMARKS.md says
//! how to read the results.

#[path = "support/dns_stub.rs"]
mod dns_stub;
#[path = "support/machine.rs"]
mod machine;
#[path = "support/postfix.rs"]
mod postfix;
#[path = "support/processes.rs"]
mod processes;
#[path = "support/rspamd.rs"]
mod rspamd;
#[path = "../tests/common/rspamd_config.rs"]
mod rspamd_config;
#[path = "support/smtp.rs"]
mod smtp;

use dns_stub::DnsStub;
use machine::{command_line, cpu_model, ferrymail_revision};
use postfix::{PostfixInstance, find_tool, postfix_version};
use processes::*;
use smtp::{MESSAGE_BYTES, RECIPIENT, SENDER, builtin_sink, client_load, probe_message};
use std::fs;
use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// The binary measured (FERRYMAIL_BIN picks another; see machine::ferrymail_binary).
static FERRYMAIL: std::sync::LazyLock<String> = std::sync::LazyLock::new(machine::ferrymail_binary);
/// Messages per load (FERRYMAIL_BENCH_MESSAGES overrides it, for a quick look).
const MESSAGES: usize = 10_000;
/// The mailbox runs' password hash (of "quickstart", as in the tests): never used to log in.
const BENCH_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$Qg98Va9ayqaw1HQ7vvK7nQ$xqVTaKQ3SYHqAOBOPknmor42UCN5mIJVixGFtr9oaHA";
const SESSIONS: usize = 20;
/// Messages the latency probe sends, spread over `SESSIONS` connections.
const PROBE_MESSAGES: usize = 2_000;
const TARGET_RATIO: f64 = 1.5;
/// Longest one load may take before smtp-source is killed.
const LOAD_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest the sink may take to see every accepted message after a load ends.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest a server or the sink may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest the latency probe may run in all.
const PROBE_TIMEOUT: Duration = Duration::from_secs(300);
/// How often the memory sampler looks at the server's processes.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);
/// ferrymail's [limits] in the bench: Postfix's defaults for a client. Postfix has no
/// connection rate limit unless one is configured (smtpd_client_connection_rate_limit = 0)
/// and allows 50 simultaneous connections per client (smtpd_client_connection_count_limit).
const BENCH_LIMITS_PER_MINUTE: u32 = 0;
const BENCH_LIMITS_PER_IP: u32 = 50;
const INSTALL_POSTFIX: &str = "echo 'postfix postfix/main_mailer_type select Local only' | debconf-set-selections\n    \
     apt-get install -y postfix";

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without
    // it, and a debug-build bench there would only slow the tests down.
    if !std::env::args().any(|a| a == "--bench") {
        println!("mx_throughput bench: skipped (run it with `cargo bench --bench mx_throughput`)");
        return;
    }
    let messages = std::env::var("FERRYMAIL_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(MESSAGES);
    let system_dns = std::env::var("FERRYMAIL_BENCH_DNS").is_ok_and(|v| v == "system");
    let default_limits = std::env::var("FERRYMAIL_BENCH_LIMITS").is_ok_and(|v| v == "default");
    let tools = Tools::find();
    let dir =
        tempfile::tempdir().expect("creating a temp dir for the bench (set TMPDIR to move it)");
    // Postfix's daemons drop to the postfix user and must reach their files below here.
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
        .expect("making the bench's temp dir traversable");

    println!("# ferrymail MX throughput benchmark\n");
    println!("binary: {} ({})", *FERRYMAIL, ferrymail_revision());
    println!(
        "machine: {} cores ({}), kernel {}, temp dir {}",
        command_line("nproc", &[]),
        cpu_model(),
        command_line("uname", &["-r"]),
        dir.path().display()
    );
    println!(
        "load: {messages} messages × {MESSAGE_BYTES} bytes payload, {SESSIONS} parallel sessions; \
         latency probe: {PROBE_MESSAGES} messages over {SESSIONS} sessions"
    );
    let missing = tools.missing();
    if !missing.is_empty() {
        println!(
            "\nPostfix tools not found: {}. The Postfix half is skipped{}. To include it, install Postfix:\n\n    \
             {INSTALL_POSTFIX}\n",
            missing.join(", "),
            if tools.source.is_none() {
                "; the load is sent by this bench's own client instead of smtp-source"
            } else {
                ""
            }
        );
    }
    let dns = if system_dns {
        println!("DNS: ferrymail uses the system resolver (FERRYMAIL_BENCH_DNS=system)");
        None
    } else {
        let stub = DnsStub::start().expect("starting the stub DNS server on 127.0.0.1");
        println!(
            "DNS: ferrymail asks a stub on {} that answers NXDOMAIN at once \
             (FERRYMAIL_BENCH_DNS=system uses the system's resolver)",
            stub.addr
        );
        Some(stub)
    };
    let limits = if default_limits {
        println!("limits: ferrymail's defaults (FERRYMAIL_BENCH_LIMITS=default)");
        None
    } else {
        println!(
            "limits: ferrymail's [limits] set to Postfix's defaults for this client: \
             connections_per_minute = {BENCH_LIMITS_PER_MINUTE} (off, like smtpd_client_connection_rate_limit), \
             connections_per_ip = {BENCH_LIMITS_PER_IP} (smtpd_client_connection_count_limit) \
             (FERRYMAIL_BENCH_LIMITS=default keeps ferrymail's)"
        );
        Some((BENCH_LIMITS_PER_MINUTE, BENCH_LIMITS_PER_IP))
    };
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
    let bench = Bench {
        tools,
        dns,
        limits,
        messages,
    };

    // FERRYMAIL_BENCH_ONLY=rsa,postfix (say) runs a subset, e.g. to profile one server.
    let only = std::env::var("FERRYMAIL_BENCH_ONLY").ok();
    let wanted = |run: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|w| w == run))
    };
    let mut runs = Vec::new();
    for (name, dkim, sub, key) in [
        (
            "ferrymail (DKIM ed25519)",
            Some("ed25519"),
            "fm-ed25519",
            "ed25519",
        ),
        (
            "ferrymail (DKIM rsa-2048, the default)",
            None,
            "fm-rsa",
            "rsa",
        ),
    ] {
        if wanted(key) {
            runs.push(run_ferrymail(
                name,
                &dir.path().join(sub),
                dkim,
                None,
                &bench,
            ));
        }
    }
    if wanted("postfix") && bench.tools.postfix_ready() {
        runs.push(run_postfix(&dir.path().join("postfix"), None, &bench));
    }
    // Both again with every message scanned by one rspamd: ferrymail over its HTTP API,
    // Postfix through rspamd's milter proxy (which hands it to the same worker).
    if wanted("rspamd") {
        match rspamd::start(&dir.path().join("rspamd")) {
            Ok(scanner) => {
                println!(
                    "\nrspamd (pid {}): scanning worker on {}, milter proxy on {}; its CPU is \
                     counted under other processes for both servers",
                    scanner.guard.pid(),
                    scanner.port,
                    scanner.milter
                );
                runs.push(run_ferrymail(
                    "ferrymail + rspamd (DKIM rsa-2048)",
                    &dir.path().join("fm-rspamd"),
                    None,
                    Some(Delivery::Rspamd(scanner.port)),
                    &bench,
                ));
                if bench.tools.postfix_ready() {
                    runs.push(run_postfix(
                        &dir.path().join("postfix-rspamd"),
                        Some(scanner.milter),
                        &bench,
                    ));
                }
            }
            Err(e) => println!("\nrspamd could not be started ({e}): the rspamd rows are skipped"),
        }
    }
    // Filed in a mailbox: as it comes, then through a Sieve script of 50 rules none of
    // which matches (every rule is tested), the cost the script may add (at most 10%).
    for (name, sub, key, script) in [
        (
            "ferrymail → mailbox (no Sieve script)",
            "fm-mailbox",
            "mailbox",
            false,
        ),
        (
            "ferrymail → mailbox (Sieve script of 50 rules)",
            "fm-sieve",
            "sieve",
            true,
        ),
    ] {
        if wanted(key) {
            let mut run = run_ferrymail(
                name,
                &dir.path().join(sub),
                None,
                Some(Delivery::Mailbox { script }),
                &bench,
            );
            run.sieve = Some(script);
            runs.push(run);
        }
    }
    report(&runs, messages, bench.tools.source.is_some());
}

/// What the bench's address does with its mail besides forwarding it.
#[derive(Clone, Copy)]
enum Delivery {
    /// Rspamd's scanning worker on this port sees every message (forwarded).
    Rspamd(u16),
    /// Filed in the address's mailbox, through `SIEVE_SCRIPT` when `script`.
    Mailbox { script: bool },
}

/// The script's own cost, apart from the noise of a whole delivery: the interpreter run
/// in this process over the bench's message, as delivery runs it (parse, 50 rules).
fn sieve_cpu_per_message() -> Duration {
    use ferrymail::sieve::{Facts, Interpreter, Scripts, Sieve, SpamStatus, Surroundings};
    struct Nothing;
    impl Surroundings for Nothing {
        fn folder_exists(&mut self, _: &str) -> bool {
            false
        }
        fn special_use_exists(&mut self, _: &str) -> bool {
            false
        }
        fn seen(&mut self, _: &str, _: Duration) -> bool {
            false
        }
        fn personal_script(&mut self, _: &str) -> Option<Arc<Sieve>> {
            None
        }
    }
    let script =
        ferrymail::sieve::compile(sieve_script().as_bytes()).expect("the bench script compiles");
    let interpreter = Interpreter::new("mx.bench.test");
    let scripts = Scripts {
        operator: Some(script),
        ..Default::default()
    };
    let facts = Facts {
        account: RECIPIENT,
        recipient: RECIPIENT,
        mail_from: SENDER,
        spam: SpamStatus::Unknown,
    };
    let message = probe_message("sieve", 0, 0);
    let runs = 2_000;
    let started = Instant::now();
    for _ in 0..runs {
        let outcome = interpreter
            .run(&message, &scripts, &facts, &mut Nothing)
            .expect("the bench script runs");
        assert_eq!(outcome.stores.len(), 1, "no rule matches: kept");
    }
    started.elapsed() / runs
}

/// The mailbox bench's Sieve script: 50 rules of the kinds people write (lists, senders,
/// domains, subjects, envelope, one body search), none matching the bench's messages, so
/// every one is tested for every message.
fn sieve_script() -> String {
    let mut out = String::from("require [\"fileinto\", \"envelope\", \"imap4flags\", \"body\"];\n");
    for i in 0..20 {
        out.push_str(&format!(
            "if header :contains \"List-Id\" \"list{i}.example.org\" {{ fileinto \"Lists/list{i}\"; stop; }}\n"
        ));
    }
    for i in 0..10 {
        out.push_str(&format!(
            "if address :is \"from\" \"boss{i}@work.example\" {{ addflag \"\\\\Flagged\"; }}\n"
        ));
    }
    for i in 0..10 {
        out.push_str(&format!(
            "if address :domain :is \"from\" \"shop{i}.example\" {{ fileinto \"Shopping\"; stop; }}\n"
        ));
    }
    for i in 0..5 {
        out.push_str(&format!(
            "if header :matches \"subject\" \"*[ticket-{i}]*\" {{ fileinto \"Tickets\"; stop; }}\n"
        ));
    }
    for i in 0..4 {
        out.push_str(&format!(
            "if envelope :is \"from\" \"alerts{i}@monitor.example\" {{ fileinto \"Alerts\"; stop; }}\n"
        ));
    }
    out.push_str("if body :text :contains \"unsubscribe-token-xyz\" { fileinto \"Bulk\"; }\n");
    out
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

/// What every run shares.
struct Bench {
    tools: Tools,
    /// The stub resolver ferrymail asks, or None for the system's.
    dns: Option<DnsStub>,
    /// ferrymail's [limits] (connections_per_minute, connections_per_ip); None = defaults.
    limits: Option<(u32, u32)>,
    messages: usize,
}

// ---------------------------------------------------------------------------------------
// What one server did.

/// One load (10,000 messages) through one server.
struct Load {
    wall: Duration,
    /// Time from the start of the load until the sink had every message.
    end_to_end: Option<Duration>,
    /// Why the load did not complete (smtp-source's complaint, or a timeout).
    error: Option<String>,
    /// Set when the load completed but the sink did not see every message in time.
    undelivered: Option<String>,
    /// CPU seconds the server's processes used during the load and its drain.
    server_cpu: f64,
    /// Share of the machine's CPU time that was busy during the load and its drain.
    machine_busy: f64,
    /// The part of it used by processes other than the server, the load generator, the
    /// sink and this bench: noise, if it is more than a few percent.
    others_busy: f64,
}

struct Latency {
    p50: Duration,
    p99: Duration,
    max: Duration,
    samples: usize,
    errors: Vec<String>,
}

struct Memory {
    /// ferrymail: VmHWM of the one process. Postfix: peak of the summed RSS of all the
    /// instance's processes, sampled every 200 ms.
    peak_kib: u64,
    /// Peak of the summed PSS (shared pages split between processes), sampled.
    peak_pss_kib: u64,
    /// Largest VmHWM of any single process.
    largest_kib: u64,
    /// Most processes seen at once.
    processes: usize,
    /// Most threads seen at once (all processes).
    threads: u64,
}

struct Run {
    name: String,
    /// Mail passes rspamd (HTTP for ferrymail, its milter proxy for Postfix): compared
    /// with the Postfix run that does the same.
    rspamd: bool,
    /// Mail is filed in a mailbox instead of forwarded: Some(false) as it comes, Some(true)
    /// through a 50-rule Sieve script. Compared with each other, not with Postfix.
    sieve: Option<bool>,
    /// smtp-source's default: a new connection for each message.
    per_message: Option<Load>,
    /// smtp-source -d: each session keeps its connection.
    kept: Option<Load>,
    latency: Option<Latency>,
    memory: Option<Memory>,
    /// DNS queries the stub answered per message accepted (ferrymail only).
    dns_per_message: Option<f64>,
    /// Why the run could not happen at all.
    failed: Option<String>,
    notes: Vec<String>,
}

impl Run {
    fn new(name: &str) -> Run {
        Run {
            name: name.into(),
            rspamd: false,
            sieve: None,
            per_message: None,
            kept: None,
            latency: None,
            memory: None,
            dns_per_message: None,
            failed: None,
            notes: Vec::new(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// ferrymail

/// The bench's spec. `limits` = (connections_per_minute, connections_per_ip), or None for
/// ferrymail's defaults.
fn ferrymail_spec(
    mx: u16,
    sink: u16,
    dns: Option<SocketAddr>,
    limits: Option<(u32, u32)>,
    dkim: Option<&str>,
    extra: &str,
) -> String {
    let mut spec = format!(
        "[server]\nhostname = \"mx.bench.test\"\ndata_dir = \"data\"\n\n\
         [listeners]\nmx = \"127.0.0.1:{mx}\"\n\n[delivery]\nrelay = \"127.0.0.1:{sink}\"\n\n"
    );
    if let Some(dns) = dns {
        spec.push_str(&format!("[dns]\nresolver = \"{dns}\"\n\n"));
    }
    if let Some((per_minute, per_ip)) = limits {
        spec.push_str(&format!(
            "[limits]\nconnections_per_minute = {per_minute}\nconnections_per_ip = {per_ip}\n\n"
        ));
    }
    spec.push_str("[domains.\"bench.test\"]\n");
    if let Some(algorithm) = dkim {
        spec.push_str(&format!(
            "dkim = [{{ selector = \"fm1\", algorithm = \"{algorithm}\" }}]\n"
        ));
    }
    spec.push_str("\n[domains.\"bench.test\".aliases.hello]\nforward = [\"x@elsewhere.test\"]\n");
    spec.push_str(extra);
    spec
}

/// `rspamd`: the port of rspamd's scanning worker every message goes to.
fn run_ferrymail(
    name: &str,
    dir: &Path,
    dkim: Option<&str>,
    delivery: Option<Delivery>,
    bench: &Bench,
) -> Run {
    let (tools, dns, messages) = (&bench.tools, bench.dns.as_ref(), bench.messages);
    println!("\n## {name}\n");
    let mut run = Run::new(name);
    run.rspamd = matches!(delivery, Some(Delivery::Rspamd(_)));
    fs::create_dir_all(dir).expect("creating a ferrymail dir in the temp dir");
    let extra = match delivery {
        None => String::new(),
        Some(Delivery::Rspamd(port)) => {
            format!("\n[spam]\nkind = \"rspamd\"\nurl = \"http://127.0.0.1:{port}\"\n")
        }
        Some(Delivery::Mailbox { script }) => {
            let mut mailbox = format!("password = {{ hash = \"{BENCH_HASH}\" }}");
            if script {
                fs::write(dir.join("rules.sieve"), sieve_script()).expect("writing the script");
                mailbox.push_str(", sieve = { file = \"rules.sieve\" }");
            }
            format!("mailbox = {{ {mailbox} }}\n")
        }
    };
    let mut sink = Sink::start(tools.sink.as_deref(), dir);
    if let Some(Delivery::Mailbox { .. }) = delivery {
        // Delivered means filed: the sink counts the messages in the mailbox instead.
        sink.count_mailbox(dir.join("data/mailboxes/bench.test/hello.db"));
    }
    let (mx, sink_port) = (free_port(), sink.port);
    let spec = dir.join("ferrymail.toml");
    let mut spec_text = ferrymail_spec(mx, sink_port, dns.map(|d| d.addr), bench.limits, dkim, "");
    if extra.starts_with("mailbox") {
        // Only filed: forwarding's cost (DKIM, the relay) would hide the script's.
        spec_text = spec_text.replace("forward = [\"x@elsewhere.test\"]\n", &extra);
    } else {
        spec_text.push_str(&extra);
    }
    fs::write(&spec, spec_text).expect("writing the bench spec");
    let log = dir.join("serve.log");
    let child = Command::new(&*FERRYMAIL)
        .current_dir(dir)
        .arg("--spec")
        .arg(&spec)
        .arg("serve")
        .env_remove("FERRYMAIL_SPEC")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).expect("creating serve.log"))
        .spawn()
        .expect("starting ferrymail serve");
    let mut server = ChildGuard::new(child, "ferrymail");
    if !wait_for_port(mx, START_TIMEOUT, || server.exited()) {
        run.failed = Some(format!(
            "ferrymail did not listen on {mx}: {}",
            tail(&fs::read_to_string(&log).unwrap_or_default(), 10)
        ));
        println!("{}", run.failed.as_deref().unwrap_or_default());
        return run;
    }
    let pid = server.pid();
    println!("ferrymail serve (pid {pid}) on 127.0.0.1:{mx}, relay to the sink on {sink_port}");
    let sampler = Sampler::start(pid);
    let dns_before = dns.map(DnsStub::queries);
    let sink_before = sink.count();

    let loads = run_loads(mx, &sink, tools, messages, pid);
    run.per_message = loads.0;
    run.kept = loads.1;
    let accepted_by_loads = sink.count().saturating_sub(sink_before);
    if let (Some(before), Some(stub)) = (dns_before, dns)
        && accepted_by_loads > 0
    {
        run.dns_per_message =
            Some(stub.queries().saturating_sub(before) as f64 / accepted_by_loads as f64);
    }
    run.latency = Some(latency_probe(mx, &sink));

    let hwm = proc_status_kib(pid, "VmHWM").unwrap_or(0);
    let sampled = sampler.stop();
    run.memory = Some(Memory {
        peak_kib: hwm,
        peak_pss_kib: sampled.peak_pss_kib,
        largest_kib: hwm,
        processes: 1,
        threads: sampled.most_threads,
    });
    match server.terminate(Duration::from_secs(60)) {
        Some(true) => {}
        Some(false) => run
            .notes
            .push("ferrymail exited with an error after SIGTERM".into()),
        None => run
            .notes
            .push("ferrymail did not stop within 60 s of SIGTERM; killed".into()),
    }
    let log_text = fs::read_to_string(&log).unwrap_or_default();
    let warnings = log_text.lines().filter(|l| l.contains("WARN")).count();
    let errors = log_text.lines().filter(|l| l.contains("ERROR")).count();
    if warnings + errors > 0 {
        run.notes.push(format!(
            "serve.log: {warnings} warning(s), {errors} error(s); last lines: {}",
            tail(&log_text, 3)
        ));
    }
    print_run_notes(&run);
    run
}

// ---------------------------------------------------------------------------------------
// Postfix

/// main.cf of the private instance: a forwarder, nothing local, fsync defaults untouched.
fn postfix_main_cf(base: &Path, sink_port: u16, milter: Option<u16>) -> String {
    // rspamd's proxy as a milter, the way rspamd's own docs set Postfix up.
    let milter = milter.map_or(String::new(), |port| {
        format!(
            "smtpd_milters = inet:127.0.0.1:{port}\nnon_smtpd_milters = inet:127.0.0.1:{port}\n\
             milter_protocol = 6\nmilter_default_action = tempfail\n\
             milter_mail_macros = i {{mail_addr}} {{client_addr}} {{client_name}} {{auth_authen}}\n"
        )
    });
    format!(
        "{}relayhost = [127.0.0.1]:{sink_port}\n{milter}",
        postfix::base_main_cf(base)
    )
}

/// `milter`: the port of rspamd's proxy in milter mode every message goes through.
fn run_postfix(base: &Path, milter: Option<u16>, bench: &Bench) -> Run {
    let (tools, messages) = (&bench.tools, bench.messages);
    let name = format!(
        "Postfix {} (virtual_alias_maps → relayhost){}",
        postfix_version().unwrap_or_default(),
        if milter.is_some() {
            " + rspamd milter"
        } else {
            ""
        }
    );
    println!("\n## {name}\n");
    let mut run = Run::new(&name);
    run.rspamd = milter.is_some();
    fs::create_dir_all(base).expect("creating the postfix dir in the temp dir");
    let sink = Sink::start(tools.sink.as_deref(), base);
    let port = free_port();
    let (Some(postfix), Some(postmap)) = (&tools.postfix, &tools.postmap) else {
        run.failed = Some("postfix or postmap is missing".into());
        return run;
    };
    let mut instance = match PostfixInstance::create(
        postfix,
        postmap,
        base,
        &format!("127.0.0.1:{port}"),
        &postfix_main_cf(base, sink.port, milter),
        &[("virtual", &format!("{RECIPIENT} x@elsewhere.test\n"))],
    ) {
        Ok(i) => i,
        Err(e) => {
            println!("a private Postfix instance could not be set up: {e}");
            run.failed = Some(e);
            return run;
        }
    };
    if !wait_for_port(port, START_TIMEOUT, || false) {
        run.failed = Some(format!(
            "Postfix did not listen on {port}: {}",
            instance.log_tail(10)
        ));
        return run;
    }
    let Some(master) = instance.master_pid() else {
        run.failed = Some("no master.pid after postfix start".into());
        return run;
    };
    println!(
        "private instance in {} (master pid {master}), smtpd on 127.0.0.1:{port}, relayhost = the sink on {}",
        base.display(),
        sink.port
    );
    let sampler = Sampler::start(master);
    let loads = run_loads(port, &sink, tools, messages, master);
    run.per_message = loads.0;
    run.kept = loads.1;
    run.latency = Some(latency_probe(port, &sink));
    let sampled = sampler.stop();
    run.memory = Some(Memory {
        peak_kib: sampled.peak_rss_kib,
        peak_pss_kib: sampled.peak_pss_kib,
        largest_kib: sampled.largest_hwm_kib,
        processes: sampled.most_processes,
        threads: sampled.most_threads,
    });
    if !instance.stop() {
        run.notes
            .push("Postfix did not stop within 30 s; `postfix abort` was used".into());
    }
    let log = fs::read_to_string(base.join("postfix.log")).unwrap_or_default();
    let problems: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("warning:") || l.contains("fatal:") || l.contains("panic:"))
        .collect();
    if !problems.is_empty() {
        run.notes.push(format!(
            "postfix.log: {} warning/fatal line(s), e.g. {}",
            problems.len(),
            problems[0]
        ));
    }
    print_run_notes(&run);
    run
}

// ---------------------------------------------------------------------------------------
// The loads

/// The issue's load (a new connection per message), then the same over kept connections.
fn run_loads(
    port: u16,
    sink: &Sink,
    tools: &Tools,
    messages: usize,
    server: u32,
) -> (Option<Load>, Option<Load>) {
    let per_message = tools.source.as_ref().map(|source| {
        one_load(
            "smtp-source, new connection per message",
            sink,
            messages,
            server,
            || smtp_source(source, port, messages, false),
        )
    });
    let kept = one_load(
        "kept connections",
        sink,
        messages,
        server,
        || match &tools.source {
            Some(source) => smtp_source(source, port, messages, true),
            None => {
                let p = client_load(port, SESSIONS, messages, "load", LOAD_TIMEOUT);
                (p.errors.first().cloned(), p.ok)
            }
        },
    );
    (per_message, Some(kept))
}

/// Runs one load, then waits for the sink to see every message it sent.
fn one_load(
    what: &str,
    sink: &Sink,
    messages: usize,
    server: u32,
    send: impl FnOnce() -> (Option<String>, usize),
) -> Load {
    let before = sink.count();
    let cpu_before = CpuReading::take(server, sink);
    let started = Instant::now();
    let (error, _sent) = send();
    let wall = started.elapsed();
    let end_to_end = if error.is_none() {
        sink.wait_for(before + messages as u64, DRAIN_TIMEOUT)
            .map(|at| at.duration_since(started))
    } else {
        // Some messages were accepted before the failure; let them drain before the
        // next load starts.
        sink.wait_until_quiet(Duration::from_secs(3), DRAIN_TIMEOUT);
        None
    };
    let cpu = CpuReading::take(server, sink).since(&cpu_before);
    let (cpu_used, machine_busy, others_busy) = (cpu.server, cpu.busy, cpu.others);
    let delivered = sink.count() - before;
    match (&error, end_to_end) {
        (Some(e), _) => println!(
            "{what}: FAILED after {:.2} s ({delivered} delivered): {e}",
            wall.as_secs_f64()
        ),
        (None, Some(e2e)) => println!(
            "{what}: accepted {messages} in {:.2} s = {:.0} msg/s; all at the sink after {:.2} s = {:.0} msg/s \
             (server CPU {cpu_used:.1} s; machine {:.0}% busy, {:.0}% of it by other processes)",
            wall.as_secs_f64(),
            messages as f64 / wall.as_secs_f64(),
            e2e.as_secs_f64(),
            messages as f64 / e2e.as_secs_f64(),
            machine_busy * 100.0,
            others_busy * 100.0
        ),
        (None, None) => println!(
            "{what}: accepted {messages} in {:.2} s = {:.0} msg/s; only {delivered} reached the sink within {} s",
            wall.as_secs_f64(),
            messages as f64 / wall.as_secs_f64(),
            DRAIN_TIMEOUT.as_secs()
        ),
    }
    let undelivered = (error.is_none() && end_to_end.is_none()).then(|| {
        format!(
            "only {delivered} of {messages} reached the sink within {} s",
            DRAIN_TIMEOUT.as_secs()
        )
    });
    Load {
        wall,
        end_to_end,
        error,
        undelivered,
        server_cpu: cpu_used,
        machine_busy,
        others_busy,
    }
}

/// `smtp-source -s 20 -m N -l 10240 -f … -t … [-d] 127.0.0.1:PORT`; returns its complaint
/// if it failed, and the messages it was asked to send.
fn smtp_source(tool: &Path, port: u16, messages: usize, keep: bool) -> (Option<String>, usize) {
    let mut cmd = Command::new(tool);
    cmd.args(["-s", &SESSIONS.to_string()])
        .args(["-m", &messages.to_string()])
        .args(["-l", &MESSAGE_BYTES.to_string()])
        .args(["-f", SENDER, "-t", RECIPIENT]);
    if keep {
        cmd.arg("-d");
    }
    cmd.arg(format!("127.0.0.1:{port}"));
    let errors = tempfile::NamedTempFile::new().expect("a temp file for smtp-source's stderr");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(errors.reopen().expect("reopening the stderr file"))
        .spawn()
        .expect("starting smtp-source");
    let mut child = ChildGuard::new(child, "smtp-source");
    let status = child.wait_timeout(LOAD_TIMEOUT);
    let stderr = fs::read_to_string(errors.path()).unwrap_or_default();
    let error = match status {
        Some(s) if s.success() => None,
        Some(s) => Some(format!("smtp-source {s}: {}", tail(&stderr, 2))),
        None => Some(format!(
            "smtp-source did not finish within {} s",
            LOAD_TIMEOUT.as_secs()
        )),
    };
    (error, messages)
}

/// The latency probe: `PROBE_MESSAGES` over `SESSIONS` kept connections.
fn latency_probe(port: u16, sink: &Sink) -> Latency {
    let before = sink.count();
    let p = client_load(port, SESSIONS, PROBE_MESSAGES, "probe", PROBE_TIMEOUT);
    let mut samples = p.latencies;
    samples.sort();
    let pick = |q: f64| -> Duration {
        if samples.is_empty() {
            return Duration::ZERO;
        }
        // Nearest rank.
        let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
        samples[rank - 1]
    };
    let latency = Latency {
        p50: pick(0.50),
        p99: pick(0.99),
        max: samples.last().copied().unwrap_or_default(),
        samples: samples.len(),
        errors: p.errors,
    };
    println!(
        "latency probe: {} messages over {SESSIONS} sessions in {:.2} s: p50 {}, p99 {}, max {}{}",
        latency.samples,
        p.wall.as_secs_f64(),
        fmt_latency(latency.p50),
        fmt_latency(latency.p99),
        fmt_latency(latency.max),
        if latency.errors.is_empty() {
            String::new()
        } else {
            format!("; {} error(s): {}", latency.errors.len(), latency.errors[0])
        }
    );
    // Let the probe's messages leave before the server is measured and stopped.
    sink.wait_for(before + p.ok as u64, Duration::from_secs(60));
    latency
}

// ---------------------------------------------------------------------------------------
// Downstream: smtp-sink, or a counting sink of our own when Postfix's is missing.

struct Sink {
    port: u16,
    delivered: Arc<AtomicU64>,
    child: Option<ChildGuard>,
    stop: Arc<AtomicBool>,
}

impl Sink {
    fn start(tool: Option<&Path>, dir: &Path) -> Sink {
        let delivered = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let Some(tool) = tool else {
            let listener = TcpListener::bind("127.0.0.1:0").expect("binding the built-in sink");
            let port = listener.local_addr().expect("sink address").port();
            let (d, s) = (delivered.clone(), stop.clone());
            thread::spawn(move || builtin_sink(listener, d, s));
            return Sink {
                port,
                delivered,
                child: None,
                stop,
            };
        };
        let port = free_port();
        let mut cmd = Command::new(tool);
        // smtp-sink refuses to run as root without a user to switch to.
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            cmd.args(["-u", "nobody"]);
        }
        // -c: a running count ("sess=… quit=… mesg=N") after every message.
        let mut child = cmd
            .arg("-c")
            .arg(format!("127.0.0.1:{port}"))
            .arg("1000")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting smtp-sink");
        let out = child.stdout.take().expect("smtp-sink stdout");
        let d = delivered.clone();
        thread::spawn(move || count_sink_output(out, d));
        let mut guard = ChildGuard::new(child, "smtp-sink");
        assert!(
            wait_for_port(port, START_TIMEOUT, || guard.exited()),
            "smtp-sink did not listen on {port}"
        );
        Sink {
            port,
            delivered,
            child: Some(guard),
            stop,
        }
    }

    fn count(&self) -> u64 {
        self.delivered.load(Ordering::SeqCst)
    }

    /// Counts the messages filed in the mailbox file at `path` (read-only, polled)
    /// rather than those the sink receives.
    fn count_mailbox(&mut self, path: PathBuf) {
        let counted = Arc::new(AtomicU64::new(0));
        self.delivered = counted.clone();
        let stop = self.stop.clone();
        thread::spawn(move || {
            let mut conn = None;
            while !stop.load(Ordering::SeqCst) {
                if conn.is_none() && path.exists() {
                    conn = rusqlite::Connection::open_with_flags(
                        &path,
                        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
                    )
                    .ok();
                }
                if let Some(c) = &conn
                    && let Ok(n) =
                        c.query_row("SELECT COUNT(*) FROM messages", [], |r| r.get::<_, i64>(0))
                {
                    counted.store(n as u64, Ordering::SeqCst);
                }
                thread::sleep(Duration::from_millis(5));
            }
        });
    }

    /// smtp-sink's pid; None for the built-in sink, which runs in this process.
    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(ChildGuard::pid)
    }

    /// Waits until `n` messages have arrived; returns when that happened.
    fn wait_for(&self, n: u64, timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.count() >= n {
                return Some(Instant::now());
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits until the count has not moved for `quiet`.
    fn wait_until_quiet(&self, quiet: Duration, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let (mut last, mut since) = (self.count(), Instant::now());
        while Instant::now() < deadline && since.elapsed() < quiet {
            thread::sleep(Duration::from_millis(50));
            let now = self.count();
            if now != last {
                (last, since) = (now, Instant::now());
            }
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(mut child) = self.child.take() {
            child.kill();
        }
    }
}

/// Reads smtp-sink -c's counter records ("sess=1 quit=0 mesg=1\r") and keeps the message
/// count.
fn count_sink_output(mut out: impl Read, delivered: Arc<AtomicU64>) {
    let mut buf = [0u8; 4096];
    let mut record = Vec::new();
    loop {
        let n = match out.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            if b == b'\r' || b == b'\n' {
                if let Some(mesg) = parse_mesg(&record) {
                    delivered.fetch_max(mesg, Ordering::SeqCst);
                }
                record.clear();
            } else {
                record.push(b);
            }
        }
    }
}

fn parse_mesg(record: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(record).ok()?;
    let at = text.find("mesg=")? + "mesg=".len();
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// CPU counters at one moment; `since` turns two into what happened between them.
struct CpuReading {
    /// Seconds used by the server's processes.
    server: f64,
    /// Seconds used by the server, the sink, this bench and its reaped children.
    ours: f64,
    /// The machine's (busy, total) jiffies.
    machine: (u64, u64),
}

struct CpuUse {
    server: f64,
    /// Share of all CPUs' time that was busy.
    busy: f64,
    /// Share of all CPUs' time used by processes that are not ours.
    others: f64,
}

impl CpuReading {
    fn take(server: u32, sink: &Sink) -> CpuReading {
        let server_s = tree_cpu_seconds(server);
        let sink_s = sink.pid().map(tree_cpu_seconds).unwrap_or(0.0);
        CpuReading {
            server: server_s,
            ours: server_s + sink_s + self_cpu_seconds(),
            machine: machine_cpu(),
        }
    }

    fn since(&self, before: &CpuReading) -> CpuUse {
        let server = self.server - before.server;
        let total = self.machine.1.saturating_sub(before.machine.1) as f64;
        if total == 0.0 {
            return CpuUse {
                server,
                busy: 0.0,
                others: 0.0,
            };
        }
        let busy = self.machine.0.saturating_sub(before.machine.0) as f64;
        let ours = (self.ours - before.ours) * clock_ticks();
        CpuUse {
            server,
            busy: busy / total,
            others: ((busy - ours) / total).max(0.0),
        }
    }
}

#[derive(Default)]
struct Sampled {
    peak_rss_kib: u64,
    peak_pss_kib: u64,
    largest_hwm_kib: u64,
    most_processes: usize,
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
                    s.largest_hwm_kib = s
                        .largest_hwm_kib
                        .max(proc_status_kib(pid, "VmHWM").unwrap_or(0));
                }
                s.peak_rss_kib = s.peak_rss_kib.max(rss);
                s.peak_pss_kib = s.peak_pss_kib.max(pss);
                s.most_processes = s.most_processes.max(pids.len());
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
// The report

fn report(runs: &[Run], messages: usize, smtp_source: bool) {
    let load_name = if smtp_source {
        "smtp-source, a new connection per message"
    } else {
        "this bench's client, kept connections (smtp-source is missing)"
    };
    println!("\n## Results\n");
    println!(
        "Load: {messages} messages, {MESSAGE_BYTES}-byte payload, {SESSIONS} parallel sessions ({load_name}). \
         Latency: {PROBE_MESSAGES} messages over {SESSIONS} kept connections, from the final \"\\r\\n.\\r\\n\" \
         to the 250. MB = 10^6 bytes.\n"
    );
    println!(
        "| server | messages | msg size | sessions | accept msg/s | end-to-end msg/s | p50 | p99 | peak RSS |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let main_load = |r| main_load(r, smtp_source);
    for r in runs {
        if let Some(why) = &r.failed {
            println!("| {} | — | — | — | not run: {why} | | | | |", r.name);
            continue;
        }
        let (accept, e2e) = rates(main_load(r), messages);
        let (p50, p99) = r
            .latency
            .as_ref()
            .filter(|l| l.samples > 0)
            .map(|l| (fmt_latency(l.p50), fmt_latency(l.p99)))
            .unwrap_or_else(|| ("—".into(), "—".into()));
        println!(
            "| {} | {messages} | {} KB | {SESSIONS} | {accept} | {e2e} | {p50} | {p99} | {} |",
            r.name,
            MESSAGE_BYTES / 1024,
            r.memory.as_ref().map(fmt_memory).unwrap_or_default()
        );
    }

    if smtp_source {
        println!(
            "\nThe same load over kept connections (`smtp-source -d`: each session sends its messages over one connection):\n"
        );
        println!("| server | accept msg/s | end-to-end msg/s |");
        println!("| --- | ---: | ---: |");
        for r in runs.iter().filter(|r| r.failed.is_none()) {
            let (accept, e2e) = rates(r.kept.as_ref(), messages);
            println!("| {} | {accept} | {e2e} |", r.name);
        }
    }

    println!(
        "\nCost per message (CPU of the server's processes during each load and its drain, on all cores):\n"
    );
    println!(
        "| server | CPU ms/msg (new conn.) | CPU ms/msg (kept) | machine busy (new conn.) | of which other processes | DNS queries/msg |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for r in runs.iter().filter(|r| r.failed.is_none()) {
        let per = |l: Option<&Load>| {
            l.filter(|l| l.error.is_none())
                .map(|l| format!("{:.2}", l.server_cpu * 1e3 / messages as f64))
                .unwrap_or_else(|| "—".into())
        };
        let (busy, others) = r
            .per_message
            .as_ref()
            .map(|l| {
                (
                    format!("{:.0}%", l.machine_busy * 100.0),
                    format!("{:.0}%", l.others_busy * 100.0),
                )
            })
            .unwrap_or_else(|| ("—".into(), "—".into()));
        let dns = r
            .dns_per_message
            .map(|d| format!("{d:.1}"))
            .unwrap_or_else(|| "—".into());
        println!(
            "| {} | {} | {} | {busy} | {others} | {dns} |",
            r.name,
            per(r.per_message.as_ref()),
            per(r.kept.as_ref())
        );
    }

    println!();
    // The Sieve script's cost. Filed-in-the-mailbox rates with and without it move by
    // ±10% from run to run on this machine (fsync), so the verdict is the script's own
    // CPU time (measured in-process) against the server's CPU per message without it;
    // the rates of both loads are shown beside it.
    let filed = |script: bool| {
        runs.iter()
            .find(|r| r.sieve == Some(script) && r.failed.is_none())
    };
    if let (Some(plain), Some(scripted)) = (filed(false), filed(true)) {
        let rate = |l: Option<&Load>| {
            l.and_then(|l| l.end_to_end.map(|e| messages as f64 / e.as_secs_f64()))
        };
        for (label, p, s) in [
            (
                "new connections",
                rate(plain.per_message.as_ref()),
                rate(scripted.per_message.as_ref()),
            ),
            (
                "kept connections",
                rate(plain.kept.as_ref()),
                rate(scripted.kept.as_ref()),
            ),
        ] {
            if let (Some(p), Some(s)) = (p, s) {
                println!(
                    "- filed in the mailbox ({label}): {s:.0} msg/s with the 50-rule script, {p:.0} without ({:+.1}%)",
                    (s / p - 1.0) * 100.0
                );
            }
        }
        let script = sieve_cpu_per_message();
        let cpu = self::main_load(plain, smtp_source)
            .filter(|l| l.error.is_none())
            .map(|l| l.server_cpu / messages as f64);
        match cpu {
            Some(cpu) if cpu > 0.0 => {
                let share = script.as_secs_f64() / cpu * 100.0;
                println!(
                    "- the 50-rule script itself: {:.0} µs of CPU a message, {share:.1}% of the {:.2} ms the server spends on a message without it — target at most 10%: {}",
                    script.as_secs_f64() * 1e6,
                    cpu * 1e3,
                    if share <= 10.0 { "met" } else { "**not met**" }
                );
            }
            _ => println!(
                "- the 50-rule script: no CPU figure to compare (the plain mailbox run failed)"
            ),
        }
    }
    for r in runs
        .iter()
        .filter(|r| r.name.starts_with("ferrymail") && r.sieve.is_none())
    {
        let Some(postfix) = runs
            .iter()
            .find(|p| p.name.starts_with("Postfix") && p.failed.is_none() && p.rspamd == r.rspamd)
        else {
            println!(
                "- {}: no Postfix run like it, so no ratio: the 1.5× target could not be checked.",
                r.name
            );
            continue;
        };
        let mut pairs = vec![("the issue's load", main_load(r), main_load(postfix))];
        if smtp_source {
            pairs.push(("kept connections", r.kept.as_ref(), postfix.kept.as_ref()));
        }
        for (label, ours, theirs) in pairs {
            match (accept_rate(ours, messages), accept_rate(theirs, messages)) {
                (Some(f), Some(p)) if p > 0.0 => {
                    let x = f / p;
                    let verdict = if x >= TARGET_RATIO {
                        "met"
                    } else {
                        "**not met**"
                    };
                    println!(
                        "- {} ÷ {}, accept throughput ({label}): {x:.2}× — target {TARGET_RATIO}×: {verdict}",
                        r.name, postfix.name
                    );
                }
                _ => {
                    let why = ours
                        .and_then(|l| l.error.clone())
                        .or_else(|| theirs.and_then(|l| l.error.clone()))
                        .map(|e| short_error(&e).to_string())
                        .unwrap_or_else(|| "no run".into());
                    println!(
                        "- {} ÷ {}, accept throughput ({label}): no ratio ({why}) — target {TARGET_RATIO}×: **not met**",
                        r.name, postfix.name
                    );
                }
            }
        }
    }
}

/// The issue's load when smtp-source ran it, else the bench's own client's.
fn main_load(r: &Run, smtp_source: bool) -> Option<&Load> {
    if smtp_source {
        r.per_message.as_ref()
    } else {
        r.kept.as_ref()
    }
}

fn accept_rate(load: Option<&Load>, messages: usize) -> Option<f64> {
    let l = load?;
    l.error
        .is_none()
        .then(|| messages as f64 / l.wall.as_secs_f64())
}

fn rates(load: Option<&Load>, messages: usize) -> (String, String) {
    let Some(l) = load else {
        return ("—".into(), "—".into());
    };
    let accept = match accept_rate(Some(l), messages) {
        Some(r) => format!("{r:.0}"),
        None => format!(
            "failed after {:.1} s: {}",
            l.wall.as_secs_f64(),
            short_error(l.error.as_deref().unwrap_or_default())
        ),
    };
    let e2e = match (l.end_to_end, &l.undelivered) {
        (Some(d), _) => format!("{:.0}", messages as f64 / d.as_secs_f64()),
        (None, Some(why)) => why.clone(),
        (None, None) => "—".into(),
    };
    (accept, e2e)
}

/// smtp-source's complaint without its program name: what the server said.
fn short_error(e: &str) -> &str {
    e.rfind("fatal: ")
        .map(|at| &e[at + "fatal: ".len()..])
        .unwrap_or(e)
}

fn fmt_memory(m: &Memory) -> String {
    if m.processes <= 1 {
        format!("{:.0} MB", megabytes(m.peak_kib))
    } else {
        format!(
            "{:.0} MB summed over ≤{} processes (PSS {:.0} MB; largest process {:.0} MB)",
            megabytes(m.peak_kib),
            m.processes,
            megabytes(m.peak_pss_kib),
            megabytes(m.largest_kib)
        )
    }
}

fn fmt_latency(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

fn print_run_notes(run: &Run) {
    if let Some(m) = &run.memory {
        println!(
            "peak memory: {}; most threads at once: {}",
            fmt_memory(m),
            m.threads
        );
    }
    if let Some(d) = run.dns_per_message {
        println!("DNS queries per message accepted: {d:.1}");
    }
    for n in &run.notes {
        println!("note: {n}");
    }
}

/// KiB to MB of 10^6 bytes.
fn megabytes(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1e6
}

// ---------------------------------------------------------------------------------------
// Small helpers

struct Tools {
    source: Option<PathBuf>,
    sink: Option<PathBuf>,
    postfix: Option<PathBuf>,
    postmap: Option<PathBuf>,
}

impl Tools {
    fn find() -> Tools {
        Tools {
            source: find_tool("smtp-source"),
            sink: find_tool("smtp-sink"),
            postfix: find_tool("postfix"),
            postmap: find_tool("postmap"),
        }
    }

    fn missing(&self) -> Vec<&'static str> {
        [
            ("smtp-source", &self.source),
            ("smtp-sink", &self.sink),
            ("postfix", &self.postfix),
            ("postmap", &self.postmap),
        ]
        .into_iter()
        .filter(|(_, p)| p.is_none())
        .map(|(n, _)| n)
        .collect()
    }

    fn postfix_ready(&self) -> bool {
        self.missing().is_empty()
    }
}

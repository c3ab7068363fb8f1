//! One rspamd (Debian's) for the benches, offline like the tests' (no DNS lists, no map
//! downloads): its scanning worker for ferrymail's HTTP API, and its proxy in milter mode,
//! forwarding to that same worker, for Postfix.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::processes::{ChildGuard, free_port, wait_for_port};

pub struct Rspamd {
    pub guard: ChildGuard,
    /// The scanning worker (`/checkv2`).
    pub port: u16,
    /// The proxy in milter mode (Postfix's smtpd_milters).
    pub milter: u16,
}

/// Modules that reach the network (DNS lists, URL maps, rspamd.com) or need Redis.
const OFF: [&str; 26] = [
    "rbl",
    "fuzzy_check",
    "asn",
    "mx_check",
    "spf",
    "dkim",
    "dmarc",
    "arc",
    "dkim_signing",
    "rspamd_update",
    "phishing",
    "url_redirector",
    "reputation",
    "neural",
    "greylist",
    "ratelimit",
    "history_redis",
    "bimi",
    "dcc",
    "external_services",
    "emails",
    "replies",
    "clickhouse",
    "elastic",
    "metadata_exporter",
    "whitelist",
];

pub fn start(dir: &Path) -> Result<Rspamd, String> {
    if Command::new("rspamd").arg("--version").output().is_err() {
        return Err("rspamd is not installed (apt-get install -y rspamd)".into());
    }
    let (port, milter, controller) = (free_port(), free_port(), free_port());
    for sub in ["local.d", "db", "run", "log"] {
        fs::create_dir_all(dir.join(sub)).map_err(|e| e.to_string())?;
    }
    // The compiled expressions the tests keep: minutes saved on a 2-core machine.
    let hs_cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/rspamd-hs");
    fs::create_dir_all(&hs_cache).map_err(|e| e.to_string())?;
    let write =
        |name: &str, text: String| fs::write(dir.join(name), text).map_err(|e| e.to_string());
    write(
        "rspamd.conf",
        format!(
            ".include \"$CONFDIR/common.conf\"\n\
             options {{\n  pidfile = \"$RUNDIR/rspamd.pid\";\n  .include \"$CONFDIR/options.inc\"\n\
               .include(try=true; priority=1,duplicate=merge) \"$LOCAL_CONFDIR/local.d/options.inc\"\n}}\n\
             logging {{\n  type = \"file\";\n  filename = \"$LOGDIR/rspamd.log\";\n  level = \"warning\";\n}}\n\
             worker \"normal\" {{\n  bind_socket = \"127.0.0.1:{port}\";\n  .include \"$CONFDIR/worker-normal.inc\"\n}}\n\
             worker \"controller\" {{\n  bind_socket = \"127.0.0.1:{controller}\";\n  .include \"$CONFDIR/worker-controller.inc\"\n}}\n\
             worker \"rspamd_proxy\" {{\n  bind_socket = \"127.0.0.1:{milter}\";\n  milter = yes;\n  timeout = 120s;\n\
               upstream \"local\" {{\n    default = yes;\n    hosts = \"127.0.0.1:{port}\";\n  }}\n}}\n"
        ),
    )?;
    write(
        "local.d/options.inc",
        format!(
            "dns {{ nameserver = [\"127.0.0.1:9\"]; timeout = 0.1s; retransmits = 1; }}\n\
             hs_cache_dir = \"{}\";\n",
            hs_cache.display()
        ),
    )?;
    for module in OFF {
        write(
            &format!("local.d/{module}.conf"),
            "enabled = false;\n".into(),
        )?;
    }
    let var = |name: &str, sub: &str| format!("{name}={}", dir.join(sub).display());
    let child = Command::new("rspamd")
        .args(["-f", "-u", "root", "-g", "root", "-c"])
        .arg(dir.join("rspamd.conf"))
        .args(["--var", &var("LOCAL_CONFDIR", "")])
        .args(["--var", &var("DBDIR", "db")])
        .args(["--var", &var("RUNDIR", "run")])
        .args(["--var", &var("LOGDIR", "log")])
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.join("stderr.log")).map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("starting rspamd: {e}"))?;
    let mut guard = ChildGuard::new(child, "rspamd");
    let up = wait_for_port(port, Duration::from_secs(180), || guard.exited())
        && wait_for_port(milter, Duration::from_secs(60), || guard.exited());
    if !up {
        return Err(format!(
            "rspamd did not listen: {}",
            fs::read_to_string(dir.join("log/rspamd.log")).unwrap_or_default()
        ));
    }
    // Its compiled expressions load after it listens: scan until answers come fast.
    for _ in 0..50 {
        let started = std::time::Instant::now();
        scan_once(port)?;
        if started.elapsed() < Duration::from_millis(50) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(Rspamd {
        guard,
        port,
        milter,
    })
}

/// One small message to `/checkv2`, the answer read whole.
fn scan_once(port: u16) -> Result<(), String> {
    use std::io::{Read, Write};
    let message =
        "From: a@sender.test\r\nTo: hello@bench.test\r\nSubject: warm-up\r\n\r\nhello\r\n";
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    write!(
        stream,
        "POST /checkv2 HTTP/1.0\r\nContent-Length: {}\r\nIp: 192.0.2.1\r\n\r\n{message}",
        message.len()
    )
    .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| e.to_string())?;
    if answer.contains("\"action\"") {
        Ok(())
    } else {
        Err(format!("rspamd answered: {answer}"))
    }
}

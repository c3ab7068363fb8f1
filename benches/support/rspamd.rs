//! One rspamd (Debian's) for the benches, offline like the tests' (no DNS lists, no map
//! downloads): its scanning worker for ferrymail's HTTP API, and its proxy in milter mode,
//! forwarding to that same worker, for Postfix.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::processes::{ChildGuard, free_port, wait_for_port};
use super::rspamd_config;

pub struct Rspamd {
    pub guard: ChildGuard,
    /// The scanning worker (`/checkv2`).
    pub port: u16,
    /// The proxy in milter mode (Postfix's smtpd_milters).
    pub milter: u16,
}

pub fn start(dir: &Path) -> Result<Rspamd, String> {
    if Command::new("rspamd").arg("--version").output().is_err() {
        return Err("rspamd is not installed (apt-get install -y rspamd)".into());
    }
    let (port, milter, controller) = (free_port(), free_port(), free_port());
    // The proxy in milter mode hands each message to the scanning worker above.
    let workers = format!(
        "{}{}worker \"rspamd_proxy\" {{\n  bind_socket = \"127.0.0.1:{milter}\";\n  milter = yes;\n  \
         timeout = 120s;\n  upstream \"local\" {{\n    default = yes;\n    hosts = \"127.0.0.1:{port}\";\n  }}\n}}\n",
        rspamd_config::worker("normal", port),
        rspamd_config::worker("controller", controller)
    );
    rspamd_config::write_offline(dir, &workers).map_err(|e| e.to_string())?;
    let child = rspamd_config::command(dir)
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

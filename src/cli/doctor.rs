//! `ferrymail doctor`: the checks a self-hoster runs when mail does not flow: the spec,
//! every DNS record live, whether mail can leave (port 25 or the relay), TLS and keys.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::spec::{LoadedSpec, TlsMode};

#[derive(clap::Args)]
pub struct Args {
    /// Where to try an outbound SMTP connection ("host:port"); default: the relay if the
    /// spec has one, else port 25 of gmail.com's first MX.
    #[arg(long, value_name = "HOST:PORT")]
    smtp_probe: Option<String>,
}

const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

pub fn run(spec: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let loaded = super::load_spec(spec)?;
    println!("== spec: {} domain(s), valid", loaded.spec.domains.len());
    let mut problems = 0;

    // Before anything opens the store (opening it makes its file private again).
    println!("\n== TLS and keys");
    problems += tls_and_keys(&loaded);

    println!("\n== listeners the DNS records send others to");
    let warnings = advertised_listeners(&loaded);

    println!("\n== DNS records (through {})", resolver_name(&loaded));
    let (_, desired) = super::dns::desired(&loaded, None)?;
    problems += super::dns::check_live(&loaded, &desired)?;

    println!("\n== outbound SMTP");
    problems += usize::from(!outbound(&loaded, args.smtp_probe.as_deref())?);

    println!();
    if problems == 0 {
        match warnings {
            0 => println!("No problems found."),
            n => println!("No problems found; {n} warning(s) about listeners (marked above)."),
        }
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{problems} problem(s) found (marked above).");
        Ok(ExitCode::from(1))
    }
}

fn resolver_name(loaded: &LoadedSpec) -> String {
    match loaded.spec.dns.resolver {
        Some(addr) => format!("dns.resolver {addr}"),
        None => "the system resolver".into(),
    }
}

/// Tries to reach an SMTP server and read its greeting; true when mail can leave.
fn outbound(loaded: &LoadedSpec, probe: Option<&str>) -> anyhow::Result<bool> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let relay = loaded.spec.delivery.relay.as_deref();
    runtime.block_on(async {
        let (target, what) = match (probe, relay) {
            (Some(p), _) => (p.to_string(), "the probe"),
            (None, Some(r)) => (r.to_string(), "delivery.relay"),
            (None, None) => {
                let resolver = crate::dns::resolver(loaded.spec.dns.resolver)?;
                match resolver.mx_lookup("gmail.com.").await {
                    Ok(mx) => match mx.answers().iter().find_map(|r| match &r.data {
                        hickory_resolver::proto::rr::RData::MX(m) => Some(m.exchange.to_string()),
                        _ => None,
                    }) {
                        Some(host) => (format!("{}:25", host.trim_end_matches('.')), "port 25"),
                        None => {
                            println!("FAIL     gmail.com has no MX through {}; is DNS working?", resolver_name(loaded));
                            return Ok(false);
                        }
                    },
                    Err(e) => {
                        println!(
                            "FAIL     cannot look up gmail.com's MX through {}: {}; is DNS working?",
                            resolver_name(loaded),
                            crate::dns::lookup_error::explain(&e)
                        );
                        return Ok(false);
                    }
                }
            }
        };
        match greeting(&target).await {
            Ok((addr, line)) => {
                println!("ok       {what}: {target} ({addr}) answered \"{line}\"");
                Ok(true)
            }
            Err(e) => {
                println!("FAIL     {what}: {target}: {e}");
                if relay.is_none() && probe.is_none() {
                    println!(
                        "         Many ISPs and clouds block outbound port 25: ask for it to be opened, or send through a smarthost (delivery.relay)."
                    );
                }
                Ok(false)
            }
        }
    })
}

/// Connects, reads the 220 greeting, says QUIT.
async fn greeting(target: &str) -> Result<(SocketAddr, String), String> {
    let connect = tokio::net::TcpStream::connect(target);
    let stream = match tokio::time::timeout(PROBE_TIMEOUT, connect).await {
        Err(_) => return Err("no answer within 10 s (blocked?)".into()),
        Ok(Err(e)) => return Err(format!("cannot connect: {e}")),
        Ok(Ok(s)) => s,
    };
    let addr = stream.peer_addr().map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    match tokio::time::timeout(PROBE_TIMEOUT, reader.read_line(&mut line)).await {
        Err(_) => return Err("connected, but no greeting within 10 s".into()),
        Ok(Err(e)) => return Err(format!("connected, then: {e}")),
        Ok(Ok(_)) => {}
    }
    let line = line.trim_end().to_string();
    let _ = reader.get_mut().write_all(b"QUIT\r\n").await;
    if line.starts_with("220") {
        Ok((addr, line))
    } else {
        Err(format!("connected, but the greeting was \"{line}\""))
    }
}

/// TLS mode and the files that must stay private; returns the number of problems.
fn tls_and_keys(loaded: &LoadedSpec) -> usize {
    use std::os::unix::fs::PermissionsExt;
    let mut problems = 0;
    match loaded.spec.tls.mode {
        TlsMode::SelfSigned => println!(
            "warn     tls.mode = \"self-signed\": clients will warn and other servers cannot verify it; use \"acme\" or \"files\" in production"
        ),
        TlsMode::Acme => println!(
            "ok       tls.mode = \"acme\": issued and renewed by `serve` (`ferrymail certificates list` shows them)"
        ),
        TlsMode::Files => println!("ok       tls.mode = \"files\""),
    }
    let data = loaded.data_dir();
    let mut private = vec![("", 0o700), ("ferrymail.db", 0o600)];
    // The master key lives in the data directory unless the spec keeps it elsewhere.
    if loaded.spec.server.master_key.is_none() {
        private.push(("master.key", 0o600));
    }
    for (file, want) in private {
        let path = data.join(file);
        match std::fs::metadata(&path) {
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    problems += 1;
                    println!(
                        "FAIL     {} is readable by others (mode {mode:o}); chmod {want:o} it",
                        path.display()
                    );
                } else {
                    println!("ok       {} is private ({mode:o})", path.display());
                }
            }
            Err(_) => println!(
                "warn     {} does not exist yet (`ferrymail init` or the first `serve` makes it)",
                path.display()
            ),
        }
    }
    problems
}

/// Warns of a listener the DNS records advertise that the world cannot reach: bound to
/// loopback (a trial spec taken to production), or an MX on a port other servers never
/// try. Returns the number of warnings.
fn advertised_listeners(loaded: &LoadedSpec) -> usize {
    let spec = &loaded.spec;
    if spec.domains.is_empty() {
        println!("ok       no domains: nothing is advertised");
        return 0;
    }
    let host = spec.server.hostname.trim_end_matches('.');
    let mut warnings = 0;
    let mut warn = |text: String| {
        warnings += 1;
        println!("warn     {text}");
    };
    match spec.listeners.mx {
        None => warn(format!(
            "no mx listener: the MX records send other servers to {host}:25, and nothing here takes their mail"
        )),
        Some(addr) if addr.ip().is_loopback() => warn(format!(
            "mx listens on {addr} only: the MX records send other servers to {host}:25, which they cannot reach there"
        )),
        Some(addr) if addr.port() != 25 => warn(format!(
            "mx listens on port {}: other servers always connect to port 25 (fine only when 25 is forwarded to it)",
            addr.port()
        )),
        Some(addr) => println!("ok       mx {addr}"),
    }
    let mut advertised: Vec<(&str, SocketAddr)> = crate::dns::records::services(&spec.listeners)
        .into_iter()
        .filter_map(|(label, addr)| Some((label, addr?)))
        .collect();
    // As `dns::records::for_domain` advertises them: autoconfig and MTA-STS on https,
    // CalDAV and CardDAV on their own listener else https, ManageSieve on its own.
    let l = &spec.listeners;
    for (label, addr) in [
        ("autoconfig and MTA-STS", l.https),
        ("_caldavs._tcp", l.caldav.or(l.https)),
        ("_carddavs._tcp", l.carddav.or(l.https)),
        ("_sieve._tcp", l.managesieve),
    ] {
        if let Some(addr) = addr {
            advertised.push((label, addr));
        }
    }
    for (label, addr) in advertised {
        if addr.ip().is_loopback() {
            warn(format!(
                "{label} advertises {host}:{} to mail clients, but the listener is on {addr} only",
                addr.port()
            ));
        } else {
            println!("ok       {label} {addr}");
        }
    }
    warnings
}

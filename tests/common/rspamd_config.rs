//! rspamd's configuration for running it offline on loopback, shared by the tests and the
//! benches: Debian's defaults, with every module that reaches the network turned off.

use std::path::Path;
use std::process::Command;

/// Modules that would reach the network (DNS lists, URL maps, rspamd.com) or need Redis.
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

/// Writes rspamd.conf, with `workers` (its worker sections), and local.d into `root`.
/// Compiled expressions go to `target/rspamd-hs`, kept between runs: compiling them takes
/// seconds on a small machine.
pub fn write_offline(root: &Path, workers: &str) -> std::io::Result<()> {
    for sub in ["local.d", "db", "run", "log"] {
        std::fs::create_dir_all(root.join(sub))?;
    }
    let hs_cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/rspamd-hs");
    std::fs::create_dir_all(&hs_cache)?;
    std::fs::write(
        root.join("rspamd.conf"),
        format!(
            ".include \"$CONFDIR/common.conf\"\n\
             options {{\n  pidfile = \"$RUNDIR/rspamd.pid\";\n  .include \"$CONFDIR/options.inc\"\n\
               .include(try=true; priority=1,duplicate=merge) \"$LOCAL_CONFDIR/local.d/options.inc\"\n}}\n\
             logging {{\n  type = \"file\";\n  filename = \"$LOGDIR/rspamd.log\";\n  level = \"info\";\n}}\n\
             {workers}"
        ),
    )?;
    // DNS goes to a closed port: every lookup fails at once instead of timing out.
    std::fs::write(
        root.join("local.d/options.inc"),
        format!(
            "dns {{ nameserver = [\"127.0.0.1:9\"]; timeout = 0.1s; retransmits = 1; }}\n\
             hs_cache_dir = \"{}\";\n",
            hs_cache.display()
        ),
    )?;
    for module in OFF {
        std::fs::write(
            root.join(format!("local.d/{module}.conf")),
            "enabled = false;\n",
        )?;
    }
    Ok(())
}

/// A worker section bound to a loopback port, with Debian's settings for its kind
/// ("normal", "controller").
pub fn worker(kind: &str, port: u16) -> String {
    format!(
        "worker \"{kind}\" {{\n  bind_socket = \"127.0.0.1:{port}\";\n  .include \"$CONFDIR/worker-{kind}.inc\"\n}}\n"
    )
}

/// rspamd in the foreground on the configuration in `root`.
pub fn command(root: &Path) -> Command {
    let var = |name: &str, sub: &str| format!("{name}={}", root.join(sub).display());
    let mut command = Command::new("rspamd");
    command
        .args(["-f", "-u", "root", "-g", "root", "-c"])
        .arg(root.join("rspamd.conf"))
        .args(["--var", &var("LOCAL_CONFDIR", "")])
        .args(["--var", &var("DBDIR", "db")])
        .args(["--var", &var("RUNDIR", "run")])
        .args(["--var", &var("LOGDIR", "log")]);
    command
}

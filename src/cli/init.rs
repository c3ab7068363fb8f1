//! `ferrymail init`: a commented starter spec for one domain, a private data directory
//! with a generated master key and postmaster password, and the next steps.

use std::io::{BufRead, IsTerminal, Write};
use std::net::IpAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use base64::Engine;

use crate::address::normalize_domain;

#[derive(clap::Args)]
pub struct Args {
    /// The first mail domain, e.g. example.com (asked for on a terminal when missing).
    #[arg(long)]
    domain: Option<String>,
    /// The server's host name. Default: mx.DOMAIN.
    #[arg(long)]
    hostname: Option<String>,
    /// The server's public IP address, for its A/AAAA records (repeat for IPv6). Default:
    /// the address of this machine's default route, when it is a public one; asked for on
    /// a terminal.
    #[arg(long = "address", value_name = "IP")]
    addresses: Vec<IpAddr>,
    /// Try it on this machine: listeners on 127.0.0.1 at 10000 + the standard ports
    /// (10025, 10587, 10993, 10443), clear of the quickstart's, and a self-signed
    /// certificate. Without it: every address, the standard ports, Let's Encrypt.
    #[arg(long)]
    local: bool,
    /// Data directory, relative to the spec. Default: ./data.
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
    /// Overwrite an existing spec.
    #[arg(long)]
    force: bool,
}

pub fn run(spec: &Path, args: Args) -> anyhow::Result<ExitCode> {
    // Before any question: an answer typed for nothing is worse than none asked.
    if spec.exists() && !args.force {
        bail!(
            "{} already exists; pass --force to overwrite it",
            spec.display()
        );
    }
    let domain = match args.domain {
        Some(d) => d,
        None if std::io::stdin().is_terminal() => ask("Mail domain (e.g. example.com): ")?,
        None => bail!("--domain is required when not run on a terminal"),
    };
    let domain = normalize_domain(&domain)?;
    let hostname = normalize_domain(&args.hostname.unwrap_or_else(|| format!("mx.{domain}")))?;
    let addresses = if args.local || !args.addresses.is_empty() {
        args.addresses
    } else {
        public_addresses()?
    };
    let base = spec
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(base).with_context(|| format!("creating {}", base.display()))?;
    let data_dir = base.join(&args.data_dir);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;

    let master_key = data_dir.join("master.key");
    if !master_key.exists() {
        let key = random_bytes::<32>()?;
        let text = base64::engine::general_purpose::STANDARD.encode(key) + "\n";
        super::write_private(&master_key, text.as_bytes())?;
    }
    let password_file = data_dir.join("postmaster.password");
    let password = crate::password::generate()?;
    super::write_private(&password_file, format!("{password}\n").as_bytes())?;
    let hash = crate::password::hash(&password)?;

    std::fs::write(
        base.join("ferrymail.schema.json"),
        super::schema::schema_json(),
    )?;
    let starter = Starter {
        domain: &domain,
        hostname: &hostname,
        data_dir: &args.data_dir,
        hash: &hash,
        addresses: &addresses,
        local: args.local,
    };
    std::fs::write(spec, starter.spec()).with_context(|| format!("writing {}", spec.display()))?;

    println!("Wrote {} for {domain} (server {hostname}).", spec.display());
    if args.local {
        println!(
            "Listeners on 127.0.0.1 only (mx 10025, submission 10587, imaps 10993, https 10443), self-signed TLS: for trying it out."
        );
    } else {
        match addresses.as_slice() {
            [] => println!(
                "No public address found: set [server] addresses (or pass --address) so {hostname} gets its A/AAAA records."
            ),
            found => println!(
                "Public address {} (its A/AAAA records; --address to choose another).",
                found
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
        println!(
            "Listeners on every address at the standard ports (25, 587, 465, 993, 80, 443); certificates from Let's Encrypt."
        );
    }
    println!(
        "Data directory {} (0700): master key and the postmaster password (0600).",
        data_dir.display()
    );
    let at = format!("ferrymail --spec {}", spec.display());
    println!("\nNext steps:");
    println!("  1. Edit {} — add aliases and forwards.", spec.display());
    println!("  2. {at} plan            # what apply would do");
    println!("  3. {at} apply           # make it so (also generates the DKIM keys)");
    println!("  4. {at} dns records     # the records to publish at your DNS host");
    if args.local {
        println!("  5. {at} serve           # serve mail on this machine");
    } else {
        println!(
            "  5. {at} serve           # as root or with CAP_NET_BIND_SERVICE for ports below 1024;"
        );
        println!("     examples/ferrymail.service runs it under systemd");
        println!("  6. {at} doctor          # checks DNS, outbound port 25, TLS and the files");
    }
    println!(
        "The postmaster@{domain} mailbox password is in {}.",
        password_file.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// This machine's public addresses as far as it can tell (the source address of its
/// default routes), asked for on a terminal. Private ones (behind NAT) are left out: a
/// wrong A record is worse than none.
fn public_addresses() -> anyhow::Result<Vec<IpAddr>> {
    // connect() on UDP only picks the route; nothing is sent. Documentation addresses.
    let routed = |bind: &str, to: &str| {
        let socket = std::net::UdpSocket::bind(bind).ok()?;
        socket.connect(to).ok()?;
        socket.local_addr().ok().map(|a| a.ip())
    };
    let found: Vec<IpAddr> = [
        routed("0.0.0.0:0", "192.0.2.1:9"),
        routed("[::]:0", "[2001:db8::1]:9"),
    ]
    .into_iter()
    .flatten()
    .filter(is_public)
    .collect();
    if !std::io::stdin().is_terminal() {
        return Ok(found);
    }
    let shown: Vec<String> = found.iter().map(ToString::to_string).collect();
    let answer = ask(&format!(
        "Public IP address(es) of this server, space-separated [{}]: ",
        shown.join(" ")
    ))?;
    if answer.is_empty() {
        return Ok(found);
    }
    answer
        .split_whitespace()
        .map(|a| {
            a.parse::<IpAddr>()
                .with_context(|| format!("{a:?} is not an IP address (e.g. 203.0.113.7)"))
        })
        .collect()
}

/// Reachable from the internet: not loopback, private, link-local, CGNAT or documentation.
fn is_public(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_documentation()
                || v4.is_broadcast()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19))
                || (a == 192 && b == 0 && c == 0))
        }
        IpAddr::V6(v6) => {
            let seg = v6.segments();
            // Global unicast is 2000::/3; within it, documentation and NAT64 are not ours.
            (seg[0] & 0xe000) == 0x2000 && !(seg[0] == 0x2001 && seg[1] == 0x0db8)
        }
    }
}

fn ask(prompt: &str) -> anyhow::Result<String> {
    print!("{prompt}");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim().to_string())
}

fn random_bytes<const N: usize>() -> anyhow::Result<[u8; N]> {
    let mut buf = [0u8; N];
    aws_lc_rs::rand::fill(&mut buf).map_err(|_| anyhow::anyhow!("no system randomness"))?;
    Ok(buf)
}

/// What the starter spec is written from.
struct Starter<'a> {
    domain: &'a str,
    hostname: &'a str,
    data_dir: &'a Path,
    hash: &'a str,
    addresses: &'a [IpAddr],
    local: bool,
}

impl Starter<'_> {
    fn spec(&self) -> String {
        let Starter {
            domain,
            hostname,
            hash,
            ..
        } = *self;
        let data_dir = self.data_dir.display();
        let addresses = if self.addresses.is_empty() {
            "# The server's public addresses, for its A/AAAA records, e.g.\n# addresses = [\"203.0.113.7\", \"2001:db8::7\"]".to_string()
        } else {
            let quoted: Vec<String> = self.addresses.iter().map(|a| format!("\"{a}\"")).collect();
            format!(
                "# The server's public addresses: its A/AAAA records.\naddresses = [{}]",
                quoted.join(", ")
            )
        };
        // With an IPv6 address published, the listeners must take IPv6 too: "[::]" is
        // both (Linux's dual stack), "0.0.0.0" IPv4 only.
        let any = if self.addresses.iter().any(IpAddr::is_ipv6) {
            "[::]"
        } else {
            "0.0.0.0"
        };
        let listeners = if self.local {
            r#"# On this machine only, at 10000 + the standard ports. For the world: 0.0.0.0 and
# the standard ports (25, 587, 465, 993, 80, 443), as `ferrymail init` without --local.
mx = "127.0.0.1:10025"
submission = "127.0.0.1:10587"
imaps = "127.0.0.1:10993"
https = "127.0.0.1:10443"        # the web admin (/admin), the API, CalDAV and CardDAV"#
                .to_string()
        } else {
            format!(
                r#"# Omit a listener to disable it. Ports below 1024 need root or CAP_NET_BIND_SERVICE
# (examples/ferrymail.service grants it). "[::]" takes IPv4 and IPv6, "0.0.0.0" IPv4.
mx = "{any}:25"
submission = "{any}:587"
submissions = "{any}:465"
imaps = "{any}:993"
http = "{any}:80"              # Let's Encrypt's http-01 challenge, autoconfig
https = "{any}:443"            # the web admin (/admin), the API, CalDAV and CardDAV"#
            )
        };
        let tls = if self.local {
            format!(
                r#"# self-signed (clients warn once). In production, certificates from Let's Encrypt,
# issued and renewed by `ferrymail serve`: mode = "acme" with the http listener on
# port 80 and [tls.acme] contact = "postmaster@{domain}".
mode = "self-signed""#
            )
        } else {
            format!(
                r#"# Issued and renewed by `ferrymail serve` from Let's Encrypt once the DNS names
# this server (the CA connects to port 80). Until then a self-signed one is served.
# Or mode = "files" with [tls.files] cert/key for certbot's files.
mode = "acme"

[tls.acme]
contact = "postmaster@{domain}""#
            )
        };
        format!(
            r##"#:schema ./ferrymail.schema.json
# ferrymail spec: what must exist. `ferrymail plan` shows what apply would change;
# `ferrymail apply` makes it so. Keep this file in git and review changes as code.
# Every key, its type and default: docs/spec-reference.md in ferrymail's source.

[server]
# The name this server answers as (EHLO, banner); your MX records point here.
hostname = "{hostname}"
# Store, spool, mailboxes and keys. Relative paths start at this file's directory.
data_dir = "{data_dir}"
{addresses}
# A saved edit waits for `ferrymail plan` and `ferrymail apply` (or a reload, or the
# web admin); "auto" applies every save.
apply = "manual"

[listeners]
{listeners}

[tls]
{tls}

[domains."{domain}"]
# Mail for unknown addresses: uncomment to forward it somewhere.
# catch_all = {{ forward = ["you@elsewhere.example"] }}

# A mailbox, readable over IMAP/POP3. The password is in {data_dir}/postmaster.password;
# make new hashes with `ferrymail passwd`.
[domains."{domain}".aliases.postmaster]
mailbox = {{ password = {{ hash = "{hash}" }}, quota = "1GiB" }}

# Forward to one or more targets: addresses, a domain (keeps the local part), a webhook.
[domains."{domain}".aliases.hello]
forward = ["postmaster@{domain}"]

# Regex rules: $1 is the first capture.
# [[domains."{domain}".patterns]]
# regex = '^support-(\d+)$'
# forward = ['postmaster+ticket-$1@{domain}']
"##
        )
    }
}

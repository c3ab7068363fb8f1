//! `ferrymail init`: a commented starter spec for one domain, a private data directory
//! with a generated master key and postmaster password, and the next steps.

use std::io::{BufRead, IsTerminal, Write};
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
    /// Data directory, relative to the spec. Default: ./data.
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
    /// Overwrite an existing spec.
    #[arg(long)]
    force: bool,
}

pub fn run(spec: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let domain = match args.domain {
        Some(d) => d,
        None if std::io::stdin().is_terminal() => ask("Mail domain (e.g. example.com): ")?,
        None => bail!("--domain is required when not run on a terminal"),
    };
    let domain = normalize_domain(&domain)?;
    let hostname = normalize_domain(&args.hostname.unwrap_or_else(|| format!("mx.{domain}")))?;
    if spec.exists() && !args.force {
        bail!(
            "{} already exists; pass --force to overwrite it",
            spec.display()
        );
    }
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
    let text = starter_spec(&domain, &hostname, &args.data_dir, &hash);
    std::fs::write(spec, text).with_context(|| format!("writing {}", spec.display()))?;

    println!("Wrote {} for {domain} (server {hostname}).", spec.display());
    println!(
        "Data directory {} (0700): master key and the postmaster password (0600).",
        data_dir.display()
    );
    println!("\nNext steps:");
    println!("  1. Edit {} — add aliases and forwards.", spec.display());
    println!("  2. ferrymail --spec {} plan", spec.display());
    println!("  3. ferrymail --spec {} apply", spec.display());
    println!(
        "The postmaster@{domain} mailbox password is in {}.",
        password_file.display()
    );
    Ok(ExitCode::SUCCESS)
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

fn starter_spec(domain: &str, hostname: &str, data_dir: &Path, hash: &str) -> String {
    format!(
        r##"#:schema ./ferrymail.schema.json
# ferrymail spec: what must exist. `ferrymail plan` shows what apply would change;
# `ferrymail apply` makes it so. Keep this file in git and review changes as code.

[server]
# The name this server answers as (EHLO, banner); your MX records point here.
hostname = "{hostname}"
# Store, spool, mailboxes and keys. Relative paths start at this file's directory.
data_dir = "{data_dir}"
# A saved edit waits for `ferrymail plan` and `ferrymail apply` (or a reload, or the
# web admin); "auto" applies every save.
apply = "manual"

[listeners]
# Omit a listener to disable it. Unprivileged ports to start with; 25/587/993 in production.
mx = "127.0.0.1:2525"
submission = "127.0.0.1:2587"
imaps = "127.0.0.1:2993"

[tls]
# self-signed to start (clients warn). In production, certificates from Let's Encrypt,
# issued and renewed by `ferrymail serve`: set mode = "acme", declare the http listener
# (the CA connects to port 80, e.g. http = "0.0.0.0:80") and add
#   [tls.acme]
#   contact = "postmaster@{domain}"
# Or mode = "files" with [tls.files] cert/key for certbot's files.
mode = "self-signed"

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
"##,
        data_dir = data_dir.display()
    )
}

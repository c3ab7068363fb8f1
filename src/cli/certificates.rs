//! `ferrymail certificates`: what ACME issued (names, expiry, when it renews), and
//! `renew` to ask the running server for a new one now.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::spec::TlsMode;

#[derive(clap::Subcommand)]
pub enum Command {
    /// The certificate the server serves: issued by ACME, read from files, or
    /// self-signed.
    List,
    /// Ask the running server to renew now (it looks every few seconds).
    Renew {
        /// The certificate's first name; default the server's hostname.
        name: Option<String>,
    },
}

pub fn run(spec: &Path, command: Command) -> anyhow::Result<ExitCode> {
    let loaded = super::load_spec(spec)?;
    if matches!(command, Command::List) && loaded.spec.tls.mode != TlsMode::Acme {
        return list_local(&loaded);
    }
    let Some(store) = super::open_store(&loaded, false)? else {
        bail!("there is no store yet: no certificate was issued");
    };
    let hostname = crate::reconcile::certs::certificate_id(&loaded.spec);
    match command {
        Command::List => {
            let Some(cert) = store.certificate(&hostname)? else {
                println!("No ACME certificate for {hostname} yet.");
                return Ok(ExitCode::SUCCESS);
            };
            let renew = crate::tls::acme::renewal_time(&cert);
            println!(
                "{}: {}\n  expires {}, renewed from {}{}",
                cert.id,
                cert.names.join(", "),
                rfc3339(cert.not_after),
                rfc3339(renew),
                if cert.renew_requested {
                    " (renewal asked for)"
                } else {
                    ""
                }
            );
        }
        Command::Renew { name } => {
            let id = name.unwrap_or(hostname);
            if !store
                .request_renewal(&id)
                .context("asking for the renewal")?
            {
                bail!("no ACME certificate named {id} in the store");
            }
            println!(
                "Renewal of {id} asked for: a running `ferrymail serve` renews it within seconds (see `ferrymail status`)."
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `list` for a certificate that lives in files: the spec's, or the self-signed one
/// `serve` made in the data directory.
fn list_local(loaded: &crate::spec::LoadedSpec) -> anyhow::Result<ExitCode> {
    let (cert, key, what) = match &loaded.spec.tls.files {
        Some(files) if loaded.spec.tls.mode == TlsMode::Files => (
            loaded.base_dir.join(&files.cert),
            loaded.base_dir.join(&files.key),
            "files",
        ),
        _ => {
            let (cert, key) = crate::tls::self_signed_paths(&loaded.data_dir());
            if !cert.exists() {
                println!(
                    "No self-signed certificate yet: `ferrymail serve` makes one for {} at its first start.",
                    loaded.spec.server.hostname
                );
                return Ok(ExitCode::SUCCESS);
            }
            (cert, key, "self-signed")
        }
    };
    let found = crate::tls::from_files(&cert, &key, what)
        .with_context(|| format!("reading {}", cert.display()))?;
    let info = &found.info;
    println!(
        "{what} ({}): {}
  issuer {}
  valid {} to {}
  sha256 {}",
        cert.display(),
        info.names.join(", "),
        info.issuer,
        rfc3339(info.not_before),
        rfc3339(info.not_after),
        info.sha256
    );
    if what == "self-signed" {
        println!(
            "  made again by `serve` at a start within its last 30 days; clients warn about it: use tls.mode = \"acme\" or \"files\" for anything others reach"
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn rfc3339(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| t.to_rfc3339())
        .unwrap_or_else(|| unix.to_string())
}

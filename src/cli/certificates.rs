//! `ferrymail certificates`: what ACME issued (names, expiry, when it renews), and
//! `renew` to ask the running server for a new one now.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};

#[derive(clap::Subcommand)]
pub enum Command {
    /// The certificate issued for the server's hostname.
    List,
    /// Ask the running server to renew now (it looks every few seconds).
    Renew {
        /// The certificate's first name; default the server's hostname.
        name: Option<String>,
    },
}

pub fn run(spec: &Path, command: Command) -> anyhow::Result<ExitCode> {
    let loaded = super::load_spec(spec)?;
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

fn rfc3339(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| t.to_rfc3339())
        .unwrap_or_else(|| unix.to_string())
}

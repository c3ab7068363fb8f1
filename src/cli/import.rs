//! `ferrymail import`: spec tables from a Postfix virtual map or a domain's Forward Email
//! TXT records, printed (or written) for review before they join the spec.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::address::normalize_domain;
use crate::import::{Imported, forward_email, postfix_virtual};

#[derive(clap::Subcommand)]
pub enum Command {
    /// A Postfix virtual(5) alias map: `user@domain targets`, `@domain targets` (a
    /// catch-all) and bare domain lines.
    PostfixVirtual {
        /// The map's text source (e.g. /etc/postfix/virtual), not the .db.
        file: PathBuf,
        /// Only these domains (repeat the flag); default every domain in the map.
        #[arg(long = "domain", value_name = "DOMAIN")]
        domains: Vec<String>,
        #[command(flatten)]
        out: Out,
    },
    /// A domain's Forward Email setup, read from its `forward-email=` TXT records: looked
    /// up live (through the spec's [dns] resolver when there is one), or given with --txt
    /// when the DNS has moved already.
    ForwardEmail {
        /// The domains to read (each its own TXT records).
        #[arg(required = true)]
        domains: Vec<String>,
        /// A TXT record's text to read instead of looking one up (repeat the flag).
        #[arg(long = "txt", value_name = "TEXT")]
        records: Vec<String>,
        #[command(flatten)]
        out: Out,
    },
}

#[derive(clap::Args)]
pub struct Out {
    /// Write the tables to this file (e.g. a file in a spec directory) instead of stdout;
    /// an existing file is kept.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

pub fn run(spec: &Path, command: Command) -> anyhow::Result<ExitCode> {
    let (imported, source, out) = match command {
        Command::PostfixVirtual { file, domains, out } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let only = domains
                .iter()
                .map(|d| normalize_domain(d))
                .collect::<Result<Vec<_>, _>>()?;
            let imported = postfix_virtual::parse(&text, &only);
            (imported, file.display().to_string(), out)
        }
        Command::ForwardEmail {
            domains,
            records,
            out,
        } => {
            // The records given belong to one domain: read for several, each would take
            // the others' aliases.
            if !records.is_empty() && domains.len() > 1 {
                bail!("--txt gives one domain's records: import one domain at a time with it");
            }
            let mut imported = Imported::default();
            for domain in &domains {
                let domain = normalize_domain(domain)?;
                let records = if records.is_empty() {
                    txt_records(spec, &domain)?
                } else {
                    records.clone()
                };
                forward_email::parse(&domain, &records, &mut imported);
            }
            let source = if records.is_empty() {
                format!("the TXT records of {}", domains.join(", "))
            } else {
                "the TXT records given".to_string()
            };
            (imported, source, out)
        }
    };
    if imported.domains.is_empty() {
        for note in &imported.notes {
            eprintln!("{note}");
        }
        bail!("nothing to import from {source}");
    }
    let text = imported.to_toml(&source);
    match out.out {
        Some(path) => {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .with_context(|| {
                    format!("creating {} (an existing file is kept)", path.display())
                })?;
            file.write_all(text.as_bytes())?;
            let aliases: usize = imported.domains.values().map(|d| d.aliases.len()).sum();
            println!(
                "Wrote {}: {} domain(s), {aliases} alias(es); {} thing(s) not imported (listed at its end).",
                path.display(),
                imported.domains.len(),
                imported.notes.len()
            );
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// The TXT records of `domain`, each record's strings joined, through the spec's
/// resolver when a spec with one is there.
fn txt_records(spec: &Path, domain: &str) -> anyhow::Result<Vec<String>> {
    let server = crate::spec::load_unchecked(spec)
        .ok()
        .and_then(|loaded| loaded.spec.dns.resolver);
    let resolver = crate::dns::resolver(server)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let lookup = runtime
        .block_on(resolver.txt_lookup(format!("{domain}.")))
        .map_err(|e| {
            anyhow::anyhow!(
                "looking up the TXT records of {domain}: {}",
                crate::dns::lookup_error::explain(&e)
            )
        })?;
    Ok(crate::dns::rdata::txt_texts(lookup.answers()))
}

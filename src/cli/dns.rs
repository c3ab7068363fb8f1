//! `ferrymail dns records [DOMAIN]`: the records each mail domain needs, as zone-file
//! lines to paste into a DNS panel (publishing through providers comes with `apply`).

use std::path::Path;
use std::process::ExitCode;

use anyhow::bail;

use crate::dns::records::{self, DkimKey};
use crate::store::records::dkim_key_id;

#[derive(clap::Subcommand)]
pub enum Command {
    /// The desired records of every domain (or one), as zone-file lines.
    Records {
        /// Only this domain.
        domain: Option<String>,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Look every desired record up live (through `dns.resolver`) and say which are
    /// missing or wrong; exits 1 when any is.
    Check {
        /// Only this domain.
        domain: Option<String>,
    },
    /// Let go of the records ferrymail published at a provider (all zones, or one):
    /// nothing is deleted there; ferrymail just stops managing them.
    Forget {
        /// The provider's name, as it was declared under [dns.providers].
        provider: String,
        /// Only this zone.
        zone: Option<String>,
    },
}

pub fn run(spec: &Path, command: Command) -> anyhow::Result<ExitCode> {
    let (domain, json, check) = match command {
        Command::Records { domain, json } => (domain, json, false),
        Command::Check { domain } => (domain, false, true),
        Command::Forget { provider, zone } => return forget(spec, &provider, zone.as_deref()),
    };
    let loaded = super::load_spec(spec)?;
    let (text, all) = desired(&loaded, domain)?;
    if check {
        let bad = check_live(&loaded, &all)?;
        return Ok(if bad == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else {
        print!("{text}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `dns forget`: drops ownership rows, so a provider that is gone stops being planned.
fn forget(spec: &Path, provider: &str, zone: Option<&str>) -> anyhow::Result<ExitCode> {
    let loaded = super::load_spec(spec)?;
    let Some(store) = super::open_store(&loaded, false)? else {
        bail!("there is no store yet: nothing was published");
    };
    let owned = store.dns_owned()?;
    let mut zones: Vec<&str> = owned
        .iter()
        .filter(|o| o.provider == provider && zone.is_none_or(|z| z == o.zone))
        .map(|o| o.zone.as_str())
        .collect();
    zones.dedup();
    if zones.is_empty() {
        bail!(
            "ferrymail owns no records at provider \"{provider}\"{}",
            zone.map(|z| format!(" in {z}")).unwrap_or_default()
        );
    }
    for z in &zones {
        let n = owned
            .iter()
            .filter(|o| o.provider == provider && o.zone == *z)
            .count();
        store.set_dns_owned(provider, z, &[])?;
        println!("Forgot {n} record set(s) in {z} at {provider}; they stay published, unmanaged.");
    }
    Ok(ExitCode::SUCCESS)
}

/// The DKIM keys of `domain` as published: from the snapshot's key list and the store.
pub(super) fn dkim_keys(
    store: &dyn crate::store::Store,
    snapshot: &crate::snapshot::Snapshot,
    domain: &str,
) -> anyhow::Result<Vec<DkimKey>> {
    let mut keys = Vec::new();
    for k in snapshot.dkim_keys.get(domain).into_iter().flatten() {
        if let Some(public) = store.dkim_public_key(&dkim_key_id(&k.selector, domain))? {
            keys.push(DkimKey {
                selector: k.selector.clone(),
                algorithm: k.algorithm.clone(),
                public,
            });
        }
    }
    Ok(keys)
}

/// Every domain's desired records (or one domain's): as zone-file text, and as data.
pub(super) fn desired(
    loaded: &crate::spec::LoadedSpec,
    domain: Option<String>,
) -> anyhow::Result<(String, Vec<records::Record>)> {
    // DKIM keys exist once `apply` has made them; before that the rest still prints.
    let store = super::open_store(loaded, false)?;
    let snapshot = match &store {
        Some(s) => Some(crate::snapshot::Snapshot::load(s.as_ref())?),
        None => None,
    };
    let wanted = domain
        .map(|d| crate::address::normalize_domain(&d))
        .transpose()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut all = Vec::new();
    let mut text = String::new();
    let mut found = false;
    for name in loaded.spec.domains.keys() {
        let Ok(name) = crate::address::normalize_domain(name) else {
            continue;
        };
        if wanted.as_ref().is_some_and(|w| *w != name) {
            continue;
        }
        found = true;
        let keys = match (&store, &snapshot) {
            (Some(store), Some(snapshot)) => dkim_keys(store.as_ref(), snapshot, &name)?,
            _ => Vec::new(),
        };
        let list = records::for_domain(&loaded.spec, &name, &keys);
        text.push_str(&format!("; {name}\n"));
        if keys.is_empty() {
            text.push_str("; (no DKIM record yet: `ferrymail apply` makes the key)\n");
        }
        for r in &list {
            text.push_str(&r.zone_line());
            text.push('\n');
        }
        all.extend(list);
    }
    if !found {
        bail!("no such domain in the spec");
    }
    Ok((text, all))
}

/// `dns check`: every record looked up, one line each; returns how many are not right.
pub(super) fn check_live(
    loaded: &crate::spec::LoadedSpec,
    desired: &[records::Record],
) -> anyhow::Result<usize> {
    use crate::dns::check::{Verdict, check};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let resolver = crate::dns::resolver(loaded.spec.dns.resolver)?;
    let mut bad = 0;
    runtime.block_on(async {
        for record in desired {
            let what = format!("{} {} {}", record.name, record.kind, record.data);
            match check(&resolver, record).await {
                Verdict::Ok => println!("ok       {what}"),
                Verdict::Missing => {
                    bad += 1;
                    println!("missing  {what}");
                }
                Verdict::Wrong(found) => {
                    bad += 1;
                    println!("wrong    {what}\n         published: {}", found.join(" | "));
                }
                Verdict::Unknown(why) => {
                    bad += 1;
                    println!("unknown  {what}\n         lookup failed: {why}");
                }
            }
        }
    });
    // The server's own name: it must resolve (the MX points at it), and each address's
    // PTR should name it back, or receivers distrust what it sends.
    let hostname = loaded.spec.server.hostname.clone();
    let host = runtime.block_on(crate::dns::check::host(&resolver, &hostname));
    if let Some(why) = &host.failed {
        bad += 1;
        println!("unknown  {hostname} A/AAAA\n         lookup failed: {why}");
    } else if host.addresses.is_empty() {
        bad += 1;
        println!("missing  {hostname} A/AAAA (the MX records point at it)");
    }
    for (ip, verdict) in &host.addresses {
        match verdict {
            Verdict::Ok => println!("ok       PTR {ip} {hostname}"),
            Verdict::Missing => {
                bad += 1;
                println!("missing  PTR {ip} {hostname} (ask whoever gives you the address)");
            }
            Verdict::Wrong(names) => {
                bad += 1;
                println!(
                    "wrong    PTR {ip} {hostname}\n         published: {}",
                    names.join(" | ")
                );
            }
            Verdict::Unknown(why) => {
                bad += 1;
                println!("unknown  PTR {ip} {hostname}\n         lookup failed: {why}");
            }
        }
    }
    let total = desired.len() + host.addresses.len().max(1);
    println!("{} of {total} records as they should be.", total - bad);
    Ok(bad)
}

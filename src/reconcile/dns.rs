//! DNS in the reconcile: each domain's records grouped by the provider and zone that
//! publish them, diffed against the zone (plan) and written (apply), ownership in the store.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::plan::{Action, Plan};
use crate::dns::diff::{Owned, ZoneDiff, diff_zone};
use crate::dns::provider::{self, Provider, ProviderError, RrsetChange};
use crate::dns::records::{self, DkimKey, Kind, Record, canonical, same_set};
use crate::spec::LoadedSpec;
use crate::store::records::{DkimKeyRecord, dkim_key_id};
use crate::store::{DnsOwned, RetiredKey, Store, StoreError, unix_now};

/// Stands for a DKIM public key the apply is about to generate.
pub const PENDING_DKIM: &str = "v=DKIM1; p=(public key, made at apply)";

/// Deleting more than this share of a zone's records needs `--allow-dns-deletes`.
pub const DEFAULT_MAX_DELETE_PERCENT: u32 = 33;

/// Runs DNS work from synchronous code: on the runtime it is called from (the serve
/// loop's reconcile), or on a small runtime of its own (the CLI).
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    match tokio::runtime::Handle::try_current() {
        // On a runtime thread (a blocking-pool thread, or a worker that hands its other
        // tasks away first); a current-thread runtime never calls in here.
        Ok(handle) => tokio::task::block_in_place(|| handle.block_on(future)),
        Err(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
            .block_on(future),
    }
}

/// One zone at one provider: what changes there, and what is left alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZonePlan {
    pub provider: String,
    pub zone: String,
    /// False for a manual provider: the changes are for a person to make.
    pub writes: bool,
    /// The mail domains whose records live in this zone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
    /// Why apply will refuse this zone's deletions without `--allow-dns-deletes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<String>,
    #[serde(flatten)]
    pub diff: ZoneDiff,
}

/// The DNS part of a plan.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DnsPlan {
    pub zones: Vec<ZonePlan>,
    /// Zones that could not be planned (provider unreachable, no such zone...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// Domains whose records could not be planned (their zone is unknown).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_domains: Vec<String>,
}

impl DnsPlan {
    /// Nothing an apply would write, nothing wrong, nothing in conflict. (Changes at a
    /// manual provider are a person's to make: listed, never counted.)
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
            && self
                .zones
                .iter()
                .all(|z| z.diff.conflicts.is_empty() && (!z.writes || z.diff.changes.is_empty()))
    }

    /// Changes a person must make at manual providers.
    pub fn manual_changes(&self) -> usize {
        self.zones
            .iter()
            .filter(|z| !z.writes)
            .map(|z| z.diff.changes.len())
            .sum()
    }

    /// Nothing to show at all (no zone managed): left out of saved plans.
    pub fn is_empty_and_quiet(&self) -> bool {
        self.errors.is_empty() && self.zones.is_empty()
    }

    /// The changes an apply writes (not those at manual providers).
    pub fn changes(&self) -> impl Iterator<Item = (&ZonePlan, &RrsetChange)> {
        self.zones
            .iter()
            .filter(|z| z.writes)
            .flat_map(|z| z.diff.changes.iter().map(move |c| (z, c)))
    }
}

/// What a change does to its RRset.
pub fn action(change: &RrsetChange) -> Action {
    match (change.before.is_empty(), change.after.is_empty()) {
        (true, _) => Action::Create,
        (false, true) => Action::Delete,
        (false, false) => Action::Update,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(
        "refusing to delete {removed} of the {size} records in {zone} at {provider} (more than {percent}%); \
         check the plan, then apply with --allow-dns-deletes or raise dns.max_delete_percent"
    )]
    Guard {
        provider: String,
        zone: String,
        removed: usize,
        size: usize,
        percent: u32,
    },
    #[error("{0}")]
    Several(String),
}

fn owned_of(o: &DnsOwned) -> Option<Owned> {
    Some(Owned {
        name: o.name.clone(),
        kind: Kind::parse(&o.rtype)?,
        value: (!o.value.is_empty()).then(|| o.value.clone()),
    })
}

fn stored(provider: &str, zone: &str, o: &Owned) -> DnsOwned {
    DnsOwned {
        provider: provider.to_string(),
        zone: zone.to_string(),
        name: o.name.clone(),
        rtype: o.kind.to_string(),
        value: o.value.clone().unwrap_or_default(),
    }
}

/// The DKIM keys a domain will have once `store_plan` is applied: the store's public
/// key, the one the apply just generated (`new_keys`: key id → TXT), or a stand-in.
fn dkim_records(
    domain: &str,
    store: Option<&dyn Store>,
    store_plan: &Plan,
    new_keys: &HashMap<String, String>,
    desired_keys: &[DkimKeyRecord],
) -> Result<(Vec<DkimKey>, Vec<Record>), StoreError> {
    let mut keys = Vec::new();
    let mut pending = Vec::new();
    for key in desired_keys.iter().filter(|k| k.domain == domain) {
        let id = dkim_key_id(&key.selector, domain);
        let regenerated = store_plan
            .changes
            .iter()
            .any(|c| c.regenerates_key() && c.id == id);
        let public = match (regenerated, store) {
            (false, Some(store)) => store.dkim_public_key(&id)?,
            _ => None,
        };
        match public {
            Some(public) => keys.push(DkimKey {
                selector: key.selector.clone(),
                algorithm: key.algorithm.clone(),
                public,
            }),
            None if regenerated => pending.push(Record {
                data: new_keys
                    .get(&id)
                    .cloned()
                    .unwrap_or_else(|| PENDING_DKIM.into()),
                name: id,
                kind: Kind::TXT,
                ttl: records::TTL,
            }),
            // No key and none coming (a DNS-only plan before the first apply).
            None => {}
        }
    }
    Ok((keys, pending))
}

/// The records of `domain`'s retired DKIM keys still within `keep` seconds, unless the
/// selector is in use again.
fn retired_records(
    domain: &str,
    retired: &[RetiredKey],
    wanted: &[Record],
    keep: i64,
) -> Vec<Record> {
    let now = unix_now();
    retired
        .iter()
        .filter(|k| k.id.ends_with(&format!("._domainkey.{domain}")))
        .filter(|k| now - k.retired_at < keep)
        .filter(|k| !wanted.iter().any(|w| w.name == k.id && w.kind == Kind::TXT))
        .map(|k| Record {
            name: k.id.clone(),
            kind: Kind::TXT,
            ttl: records::TTL,
            data: crate::dkim::txt_record(&k.algorithm, &k.public),
        })
        .collect()
}

/// Plans the DNS of every domain that names a provider, and the clean-up of zones where
/// ferrymail published records for domains the spec no longer has.
pub async fn plan(loaded: &LoadedSpec, store: Option<&dyn Store>, store_plan: &Plan) -> DnsPlan {
    plan_with_keys(loaded, store, store_plan, &HashMap::new()).await
}

async fn plan_with_keys(
    loaded: &LoadedSpec,
    store: Option<&dyn Store>,
    store_plan: &Plan,
    new_keys: &HashMap<String, String>,
) -> DnsPlan {
    let mut out = DnsPlan::default();
    let spec = &loaded.spec;
    let desired_keys: Vec<DkimKeyRecord> = super::desired::desired_dkim_keys(loaded);
    let owned: Vec<DnsOwned> = match store.map(|s| s.dns_owned()) {
        Some(Ok(owned)) => owned,
        Some(Err(e)) => {
            out.errors.push(format!("reading DNS ownership: {e}"));
            return out;
        }
        None => Vec::new(),
    };

    let retired = match store.map(|s| s.dkim_retired()) {
        Some(Ok(retired)) => retired,
        Some(Err(e)) => {
            out.errors.push(format!("reading retired DKIM keys: {e}"));
            return out;
        }
        None => Vec::new(),
    };
    let keep_retired = spec.dns.keep_retired_dkim_secs() as i64;
    // Keys this plan takes out of the spec retire at apply: their records stay.
    let mut retired = retired;
    for change in store_plan
        .changes
        .iter()
        .filter(|c| c.kind == crate::store::Kind::DkimKey && c.action == Action::Delete)
    {
        if let Some(Ok(Some(public))) = store.map(|s| s.dkim_public_key(&change.id)) {
            retired.push(RetiredKey {
                id: change.id.clone(),
                algorithm: change.key_algorithm().to_string(),
                public,
                retired_at: unix_now(),
            });
        }
    }

    let mut providers: BTreeMap<String, Box<dyn Provider>> = BTreeMap::new();
    let wanted_providers = spec
        .domains
        .values()
        .filter_map(|d| d.dns_provider.clone())
        .chain(owned.iter().map(|o| o.provider.clone()));
    for name in wanted_providers {
        if providers.contains_key(&name) {
            continue;
        }
        match spec.dns.providers.get(&name) {
            Some(declared) => {
                match provider::from_spec(&name, declared, &loaded.base_dir, spec.dns.resolver) {
                    Ok(p) => {
                        providers.insert(name, p);
                    }
                    Err(e) => out.errors.push(e.to_string()),
                }
            }
            None => out.errors.push(format!(
                "records published earlier through DNS provider \"{name}\" cannot be cleaned up: \
                 it is no longer declared under [dns.providers] (declare it again to remove them, \
                 or `ferrymail dns forget {name}` to leave them as they are)"
            )),
        }
    }

    // (provider, zone) → the records wanted there, and the domains they are for.
    let mut zones: BTreeMap<(String, String), (Vec<Record>, Vec<String>)> = BTreeMap::new();
    // A provider that failed for one domain plans nothing at all: that domain's records
    // would otherwise look unwanted, and be deleted.
    let mut failed: BTreeSet<String> = BTreeSet::new();
    for (name, domain) in &spec.domains {
        let (Some(pname), Ok(dname)) =
            (&domain.dns_provider, crate::address::normalize_domain(name))
        else {
            continue;
        };
        let Some(p) = providers.get(pname) else {
            continue;
        };
        let (keys, pending) = match dkim_records(&dname, store, store_plan, new_keys, &desired_keys)
        {
            Ok(k) => k,
            Err(e) => {
                out.errors.push(format!("{dname}: DKIM keys: {e}"));
                failed.insert(pname.clone());
                out.failed_domains.push(dname);
                continue;
            }
        };
        let zone = match p.zone_of(&dname).await {
            Ok(zone) => zone,
            Err(e) => {
                out.errors.push(e.to_string());
                failed.insert(pname.clone());
                out.failed_domains.push(dname);
                continue;
            }
        };
        let mut wanted = records::for_domain(spec, &dname, &keys);
        wanted.extend(pending);
        wanted.extend(retired_records(&dname, &retired, &wanted, keep_retired));
        // Only names inside the zone can be published there.
        wanted.retain(|r| r.name == zone || r.name.ends_with(&format!(".{zone}")));
        let entry = zones.entry((pname.clone(), zone)).or_default();
        entry.0.extend(wanted);
        entry.1.push(dname);
    }
    for o in &owned {
        if providers.contains_key(&o.provider) {
            zones
                .entry((o.provider.clone(), o.zone.clone()))
                .or_default();
        }
    }
    zones.retain(|(pname, _), _| !failed.contains(pname));
    for (pname, _) in spec
        .domains
        .iter()
        .filter_map(|(n, d)| Some((d.dns_provider.as_ref()?, n)))
    {
        if failed.contains(pname) {
            out.errors.push(format!(
                "nothing is planned at DNS provider \"{pname}\" until every domain it publishes can be"
            ));
            break;
        }
    }

    let percent = spec
        .dns
        .max_delete_percent
        .unwrap_or(DEFAULT_MAX_DELETE_PERCENT);
    for ((pname, zone), (wanted, domains)) in zones {
        let Some(p) = providers.get(&pname) else {
            continue;
        };
        let owned_here: Vec<Owned> = owned
            .iter()
            .filter(|o| o.provider == pname && o.zone == zone)
            .filter_map(owned_of)
            .collect();
        let mut lookups: Vec<(String, Kind)> = wanted
            .iter()
            .map(|r| (r.name.clone(), r.kind))
            .chain(owned_here.iter().map(|o| (o.name.clone(), o.kind)))
            .collect();
        lookups.sort();
        lookups.dedup();
        match p.list(&zone, &lookups).await {
            Ok(live) => {
                let diff = diff_zone(&wanted, &live, &owned_here, p.writes());
                let guard = (diff.removed > 0 && diff.removed * 100 > percent as usize * diff.size)
                    .then(|| {
                        DnsError::Guard {
                            provider: pname.clone(),
                            zone: zone.clone(),
                            removed: diff.removed,
                            size: diff.size,
                            percent,
                        }
                        .to_string()
                    });
                out.zones.push(ZonePlan {
                    provider: pname.clone(),
                    zone: zone.clone(),
                    writes: p.writes(),
                    domains,
                    guard,
                    diff,
                })
            }
            Err(e) if domains.is_empty() => out.errors.push(format!(
                "{e} (ferrymail published records in {zone} earlier; `ferrymail dns forget {pname} {zone}` lets go of them)"
            )),
            Err(e) => out.errors.push(e.to_string()),
        }
    }
    out
}

/// Whether the zone now needs what the plan said, allowing for DKIM keys that were
/// stand-ins at plan time and are real now.
fn same_changes(planned: &[RrsetChange], fresh: &[RrsetChange]) -> bool {
    planned.len() == fresh.len()
        && planned.iter().zip(fresh).all(|(p, f)| {
            let known: Vec<String> = p
                .after
                .iter()
                .filter(|v| *v != PENDING_DKIM)
                .cloned()
                .collect();
            p.name == f.name
                && p.kind == f.kind
                && p.ttl == f.ttl
                && p.old_ttl == f.old_ttl
                && same_set(p.kind, &p.before, &f.before)
                && p.after.len() == f.after.len()
                && known.iter().all(|v| {
                    f.after
                        .iter()
                        .any(|a| canonical(p.kind, a) == canonical(p.kind, v))
                })
        })
}

/// What an apply did to DNS.
#[derive(Debug, Default)]
pub struct DnsOutcome {
    /// Record sets written.
    pub written: usize,
    /// Record sets a person must still create or change (manual providers), as zone
    /// lines to copy.
    pub manual: Vec<String>,
    /// Conflicts left for a person to settle.
    pub conflicts: Vec<String>,
}

/// A DNS apply that did not fully go through: what went wrong, and the domains whose
/// records were not (all) written, whose new DKIM keys must therefore wait.
#[derive(Debug)]
pub struct DnsFailure {
    pub error: DnsError,
    pub domains: Vec<String>,
}

/// Applies the DNS part of `plan` before its store part goes in: re-plans with the DKIM
/// keys just generated (`new_keys`), checks each zone still needs what the plan showed,
/// keeps the deletion guard, writes each zone, and records what ferrymail owns there.
pub async fn apply(
    loaded: &LoadedSpec,
    store: &dyn Store,
    plan: &Plan,
    new_keys: &HashMap<String, String>,
    allow_deletes: bool,
) -> Result<DnsOutcome, DnsFailure> {
    let mut outcome = DnsOutcome::default();
    let planned = &plan.dns;
    let fresh = plan_with_keys(loaded, Some(store), plan, new_keys).await;
    let mut errors: Vec<String> = fresh.errors.clone();
    let mut failed_domains = fresh.failed_domains.clone();
    let spec_providers = &loaded.spec.dns.providers;
    for zone in &fresh.zones {
        let d = &zone.diff;
        outcome
            .conflicts
            .extend(d.conflicts.iter().map(|c| format!("{}: {c}", zone.zone)));
        if !zone.writes {
            outcome.manual.extend(d.changes.iter().map(|c| {
                let verb = match action(c) {
                    Action::Create => "create",
                    Action::Update => "set",
                    Action::Delete => "delete",
                };
                let values = if c.after.is_empty() {
                    &c.before
                } else {
                    &c.after
                };
                let lines: Vec<String> = values
                    .iter()
                    .map(|v| {
                        Record {
                            name: c.name.clone(),
                            kind: c.kind,
                            ttl: c.ttl,
                            data: v.clone(),
                        }
                        .zone_line()
                    })
                    .collect();
                format!("{verb}: {}", lines.join("\n        "))
            }));
            continue;
        }
        let mut fail = |message: String| {
            errors.push(message);
            failed_domains.extend(zone.domains.iter().cloned());
        };
        let planned_changes = planned
            .zones
            .iter()
            .find(|z| z.provider == zone.provider && z.zone == zone.zone)
            .map(|z| z.diff.changes.as_slice())
            .unwrap_or(&[]);
        if !same_changes(planned_changes, &d.changes) {
            fail(
                ProviderError::Changed {
                    provider: zone.provider.clone(),
                    zone: zone.zone.clone(),
                    detail: "its records are not what the plan saw".into(),
                }
                .to_string(),
            );
            continue;
        }
        if let (Some(refusal), false) = (&zone.guard, allow_deletes) {
            fail(refusal.clone());
            continue;
        }
        let Some(declared) = spec_providers.get(&zone.provider) else {
            continue;
        };
        let stored_all = |owned: &mut dyn Iterator<Item = &Owned>| -> Vec<DnsOwned> {
            owned
                .map(|o| stored(&zone.provider, &zone.zone, o))
                .collect()
        };
        let written = async {
            let p = provider::from_spec(
                &zone.provider,
                declared,
                &loaded.base_dir,
                loaded.spec.dns.resolver,
            )?;
            if !d.changes.is_empty() {
                // Claimed before writing: a provider that stops halfway (Cloudflare
                // writes record by record) leaves nothing ferrymail made unowned.
                let before: Vec<DnsOwned> = store
                    .dns_owned()?
                    .into_iter()
                    .filter(|o| o.provider == zone.provider && o.zone == zone.zone)
                    .collect();
                let mut claimed = before.clone();
                for o in stored_all(&mut d.owned.iter()) {
                    if !claimed.contains(&o) {
                        claimed.push(o);
                    }
                }
                store.set_dns_owned(&zone.provider, &zone.zone, &claimed)?;
                p.apply(&zone.zone, &d.changes).await?;
            }
            store.set_dns_owned(&zone.provider, &zone.zone, &stored_all(&mut d.owned.iter()))?;
            Ok::<_, DnsError>(d.changes.len())
        };
        match written.await {
            Ok(n) => outcome.written += n,
            Err(e) => fail(e.to_string()),
        }
    }
    if errors.is_empty() {
        Ok(outcome)
    } else {
        failed_domains.sort();
        failed_domains.dedup();
        Err(DnsFailure {
            error: DnsError::Several(errors.join("\n")),
            domains: failed_domains,
        })
    }
}

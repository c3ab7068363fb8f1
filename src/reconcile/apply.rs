//! Carries out a plan: generates DKIM key material for new keys, publishes DNS, then
//! writes every change to the store in one transaction, refused if the store moved.

use std::thread;

use std::collections::HashMap;

use super::dns::{DnsError, DnsOutcome};
use super::plan::{Action, Plan};
use crate::dkim;
use crate::spec::LoadedSpec;
use crate::store::{KeyMaterial, Object, Store, StoreError, Write};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Keygen(#[from] dkim::KeygenError),
    #[error("the plan file has format {0}; this ferrymail reads format {1}")]
    Format(u32, u32),
}

/// Applies `plan` to the store; returns the new store revision (unchanged for an
/// empty plan).
pub fn apply(store: &dyn Store, plan: &Plan) -> Result<u64, ApplyError> {
    check_format(plan)?;
    let keys = generate_keys(plan)?;
    apply_with_keys(store, plan, keys)
}

fn check_format(plan: &Plan) -> Result<(), ApplyError> {
    if plan.format != super::plan::PLAN_FORMAT {
        return Err(ApplyError::Format(plan.format, super::plan::PLAN_FORMAT));
    }
    Ok(())
}

/// What a whole apply did: the store's new revision, and how DNS went (a DNS problem
/// never holds mail routing back: the store part stands).
pub struct Applied {
    pub revision: u64,
    pub dns: Result<DnsOutcome, DnsError>,
    /// DKIM key changes not made because their domain's records could not be published
    /// (key ids): the keys that sign stay as they were, and the next apply retries.
    pub held_back: Vec<String>,
}

/// Applies a whole plan. New DKIM keys are made first and published in DNS before the
/// store holds them, so no message is signed with a key receivers cannot find yet.
pub fn apply_all(
    loaded: &LoadedSpec,
    store: &dyn Store,
    plan: &Plan,
    allow_dns_deletes: bool,
) -> Result<Applied, ApplyError> {
    check_format(plan)?;
    let keys = generate_keys(plan)?;
    let mut dns = Ok(DnsOutcome::default());
    if !plan.dns.is_empty_and_quiet() {
        // Nothing goes to DNS for a plan the store would refuse.
        check_fresh(store, plan)?;
        let new_keys: HashMap<String, String> = plan
            .changes
            .iter()
            .filter(|c| c.regenerates_key())
            .zip(&keys)
            .map(|(c, k)| (c.id.clone(), dkim::txt_record(c.key_algorithm(), &k.public)))
            .collect();
        let result = super::dns::block_on(super::dns::apply(
            loaded,
            store,
            plan,
            &new_keys,
            allow_dns_deletes,
        ));
        if let Err(failure) = result {
            let (held, rest) = hold_back_keys(plan, keys, &failure.domains);
            let revision = apply_with_keys(store, &rest.0, rest.1)?;
            return Ok(Applied {
                revision,
                dns: Err(failure.error),
                held_back: held,
            });
        }
        dns = result.map_err(|f| f.error);
    }
    let revision = apply_with_keys(store, plan, keys)?;
    Ok(Applied {
        revision,
        dns,
        held_back: Vec::new(),
    })
}

/// The plan without the DKIM key changes of `domains` (and their generated keys): a key
/// whose record is not published must not sign, and one being retired keeps signing.
fn hold_back_keys(
    plan: &Plan,
    keys: Vec<KeyMaterial>,
    domains: &[String],
) -> (Vec<String>, (Plan, Vec<KeyMaterial>)) {
    let held = |c: &super::plan::Change| {
        c.kind == crate::store::Kind::DkimKey
            && c.id
                .split_once("._domainkey.")
                .is_some_and(|(_, domain)| domains.iter().any(|d| d == domain))
    };
    let mut keys = keys.into_iter();
    let mut kept_keys = Vec::new();
    let mut rest = plan.clone();
    rest.changes.clear();
    let mut held_ids = Vec::new();
    for change in &plan.changes {
        let key = if change.regenerates_key() {
            keys.next()
        } else {
            None
        };
        if held(change) {
            held_ids.push(change.id.clone());
            continue;
        }
        kept_keys.extend(key);
        rest.changes.push(change.clone());
    }
    (held_ids, (rest, kept_keys))
}

/// The store's revision, if it is still the one the plan was made against.
fn check_fresh(store: &dyn Store, plan: &Plan) -> Result<u64, ApplyError> {
    let current = store.revision()?;
    if current != plan.base_revision {
        return Err(StoreError::Stale {
            planned: plan.base_revision,
            current,
        }
        .into());
    }
    Ok(current)
}

fn apply_with_keys(
    store: &dyn Store,
    plan: &Plan,
    keys: Vec<KeyMaterial>,
) -> Result<u64, ApplyError> {
    if plan.changes.is_empty() {
        return check_fresh(store, plan);
    }
    let mut keys = keys.into_iter();
    let mut writes = Vec::with_capacity(plan.changes.len());
    for change in &plan.changes {
        let write = match change.action {
            Action::Create | Action::Update => Write::Put {
                object: Object::from_fields(
                    change.kind,
                    change.id.clone(),
                    change.after.clone().unwrap_or_default(),
                ),
                key: if change.regenerates_key() {
                    keys.next()
                } else {
                    None
                },
            },
            Action::Delete => Write::Delete {
                kind: change.kind,
                id: change.id.clone(),
            },
        };
        writes.push(write);
    }
    Ok(store.apply(plan.base_revision, &writes, &plan.source)?)
}

/// Key generation is CPU-bound (RSA especially): spread it over the cores, before the
/// store transaction so the database is never held while keys are made.
fn generate_keys(plan: &Plan) -> Result<Vec<KeyMaterial>, ApplyError> {
    let algorithms: Vec<String> = plan
        .changes
        .iter()
        .filter(|c| c.regenerates_key())
        .map(|c| c.key_algorithm().to_string())
        .collect();
    let workers = thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(algorithms.len().max(1));
    let chunk = algorithms.len().div_ceil(workers).max(1);
    let results: Vec<Result<Vec<KeyMaterial>, dkim::KeygenError>> = thread::scope(|s| {
        let handles: Vec<_> = algorithms
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(|a| dkim::generate(a)).collect()))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(Err(dkim::KeygenError("worker"))))
            .collect()
    });
    let mut keys = Vec::with_capacity(algorithms.len());
    for r in results {
        keys.extend(r?);
    }
    Ok(keys)
}

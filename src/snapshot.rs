//! The immutable view protocol servers read: routing table, accounts, domain settings,
//! built from the store and swapped atomically (ArcSwap) when the store revision moves.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::routing::{DomainRoutes, Resolution, Router, Rule, compile_pattern};
use crate::store::records::*;
use crate::store::{Kind, Object, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Shape(#[from] ShapeError),
    #[error("pattern {0:?} does not compile: {1}")]
    Regex(String, regex::Error),
}

/// Everything the servers need, consistent as of one store revision.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub revision: u64,
    pub router: Router,
    pub domains: HashMap<String, DomainRecord>,
    pub accounts: HashMap<String, AccountRecord>,
    /// DKIM key ids ("selector._domainkey.domain") per domain.
    pub dkim_keys: HashMap<String, Vec<DkimKeyRecord>>,
    /// Aliases that send their junk elsewhere than their domain says: alias → address.
    pub junk_forwards: HashMap<String, String>,
    /// The operator's Sieve script and vacation responder per account, compiled.
    pub sieve: HashMap<String, DeclaredSieve>,
    /// Addresses at this server's domains that domains name for their DMARC and TLS
    /// reports: what arrives there is read and kept for the admin's report pages.
    pub report_inboxes: std::collections::HashSet<String>,
}

/// What the spec runs on an account's mail before the user's own script.
#[derive(Debug, Default, Clone)]
pub struct DeclaredSieve {
    pub script: Option<Arc<crate::sieve::Sieve>>,
    pub vacation: Option<(crate::spec::model::Vacation, Arc<crate::sieve::Sieve>)>,
}

impl Snapshot {
    /// Builds a snapshot from the store's objects.
    pub fn load(store: &dyn Store) -> Result<Snapshot, SnapshotError> {
        let (revision, stored) = store.objects()?;
        let objects: Vec<Object> = stored.into_iter().map(|s| s.object).collect();
        let mut snapshot = Snapshot {
            revision,
            router: build_router(&objects)?,
            ..Default::default()
        };
        for o in &objects {
            match o.kind {
                Kind::Domain => {
                    snapshot.domains.insert(o.id.clone(), o.record()?);
                }
                Kind::Account => {
                    let account: AccountRecord = o.record()?;
                    if let Some(declared) = declared_sieve(&o.id, &account) {
                        snapshot.sieve.insert(o.id.clone(), declared);
                    }
                    snapshot.accounts.insert(o.id.clone(), account);
                }
                Kind::DkimKey => {
                    let k: DkimKeyRecord = o.record()?;
                    snapshot
                        .dkim_keys
                        .entry(k.domain.clone())
                        .or_default()
                        .push(k);
                }
                Kind::Alias => {
                    let alias: AliasRecord = o.record()?;
                    if let Some(to) = alias.junk_forward {
                        snapshot.junk_forwards.insert(o.id.clone(), to);
                    }
                }
                Kind::Pattern => {}
            }
        }
        snapshot.report_inboxes = snapshot
            .domains
            .values()
            .filter_map(|d| d.dmarc_reports.clone())
            .filter(|a| {
                a.rsplit_once('@')
                    .is_some_and(|(_, domain)| snapshot.domains.contains_key(domain))
            })
            .collect();
        Ok(snapshot)
    }

    /// Where mail for `recipient` goes; `Ok(None)` means no such address here.
    pub fn resolve(
        &self,
        recipient: &str,
    ) -> Result<Option<Resolution>, crate::address::AddressError> {
        self.router.resolve(recipient)
    }
}

/// Compiles an account's declared scripts. They were checked at validate; one that no
/// longer compiles (a stored record from another version) is left out and logged, and
/// the account's mail is delivered unfiltered rather than not at all.
fn declared_sieve(account: &str, record: &AccountRecord) -> Option<DeclaredSieve> {
    let compile = |what: &str, text: &str| match crate::sieve::compile(text.as_bytes()) {
        Ok(script) => Some(script),
        Err(e) => {
            tracing::error!(
                account,
                "the declared {what} does not compile, left out: {e}"
            );
            None
        }
    };
    let declared = DeclaredSieve {
        script: record
            .sieve
            .as_deref()
            .and_then(|t| compile("Sieve script", t)),
        vacation: record.vacation.as_ref().and_then(|v| {
            compile("vacation", &crate::sieve::vacation::script(v)).map(|s| (v.clone(), s))
        }),
    };
    (declared.script.is_some() || declared.vacation.is_some()).then_some(declared)
}

/// Builds the routing table from stored (or desired) objects.
pub fn build_router(objects: &[Object]) -> Result<Router, SnapshotError> {
    let mut domains: HashMap<&str, DomainRoutes> = HashMap::new();
    for o in objects.iter().filter(|o| o.kind == Kind::Domain) {
        let d: DomainRecord = o.record()?;
        let catch_all = d.catch_all.map(|c| Rule {
            forward: c.forward,
            mailbox: false,
            reject: c.reject,
            message: c.message,
            enabled: c.enabled,
        });
        domains.insert(
            &o.id,
            DomainRoutes::new(d.subaddressing, catch_all)
                .external_forward_tags(d.external_forward_tags),
        );
    }
    let mut patterns: Vec<(&str, PatternRecord)> = Vec::new();
    for o in objects {
        match o.kind {
            Kind::Alias => {
                let Some((local, domain)) = o.id.rsplit_once('@') else {
                    continue;
                };
                let Some(routes) = domains.get_mut(domain) else {
                    continue;
                };
                let a: AliasRecord = o.record()?;
                let rule = Rule {
                    forward: a.forward,
                    mailbox: a.mailbox,
                    reject: a.reject,
                    message: a.message,
                    enabled: a.enabled,
                };
                routes.add_alias(local.to_string(), rule);
            }
            Kind::Pattern => patterns.push((&o.id, o.record()?)),
            _ => {}
        }
    }
    patterns.sort_by_key(|(_, p)| p.position);
    // Many domains often share one pattern text: compile each text once (a Regex clone
    // shares the compiled program).
    let mut compiled: HashMap<String, regex::Regex> = HashMap::new();
    for (_, p) in patterns {
        let Some(routes) = domains.get_mut(p.domain.as_str()) else {
            continue;
        };
        let rule = Rule {
            forward: p.forward,
            mailbox: false,
            reject: p.reject,
            message: p.message,
            enabled: p.enabled,
        };
        let regex = match compiled.get(&p.regex) {
            Some(re) => re.clone(),
            None => {
                let re = compile_pattern(&p.regex)
                    .map_err(|e| SnapshotError::Regex(p.regex.clone(), e))?;
                compiled.insert(p.regex.clone(), re.clone());
                re
            }
        };
        routes.add_pattern(regex, rule);
    }
    let mut router = Router::default();
    for (name, routes) in domains {
        router
            .insert(name.to_string(), routes)
            .map_err(|e| SnapshotError::Regex(name.to_string(), e))?;
    }
    Ok(router)
}

/// The current snapshot, readable without locks; `refresh` swaps in a new one when the
/// store revision has moved.
pub struct SnapshotHandle {
    current: ArcSwap<Snapshot>,
}

impl SnapshotHandle {
    pub fn new(store: &dyn Store) -> Result<SnapshotHandle, SnapshotError> {
        Ok(SnapshotHandle {
            current: ArcSwap::from_pointee(Snapshot::load(store)?),
        })
    }

    pub fn get(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Rebuilds when the store is at a newer revision. Returns whether it swapped.
    pub fn refresh(&self, store: &dyn Store) -> Result<bool, SnapshotError> {
        if store.revision()? == self.current.load().revision {
            return Ok(false);
        }
        self.current.store(Arc::new(Snapshot::load(store)?));
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::Action;
    use crate::store::{SqliteStore, Write};

    fn domain() -> DomainRecord {
        DomainRecord {
            dns_provider: None,
            max_message_size: 1000,
            max_forwards: 10,
            allowlist: vec![],
            denylist: vec![],
            greylisting: false,
            greylist_delay: 300,
            require_tls: false,
            reject_spf_fail: true,
            reject_dmarc_fail: true,
            subaddressing: true,
            external_forward_tags: false,
            catch_all: None,
            spam: SpamPolicy::default(),
            dmarc_reports: None,
        }
    }

    #[test]
    fn refresh_swaps_in_new_routes_after_an_apply() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let handle = SnapshotHandle::new(&store).unwrap();
        assert!(handle.get().resolve("hi@d.test").unwrap().is_none());
        let alias = AliasRecord {
            forward: vec!["x@y.test".into()],
            mailbox: false,
            reject: None,
            message: None,
            enabled: true,
            junk_forward: None,
        };
        let writes = [
            Write::Put {
                object: Object::new(Kind::Domain, "d.test", &domain()),
                key: None,
            },
            Write::Put {
                object: Object::new(Kind::Alias, "hi@d.test", &alias),
                key: None,
            },
        ];
        store.apply(0, &writes, "test").unwrap();
        let before = handle.get();
        assert!(handle.refresh(&store).unwrap());
        assert!(!handle.refresh(&store).unwrap());
        // A reader holding the old snapshot keeps a consistent view.
        assert!(before.resolve("hi@d.test").unwrap().is_none());
        // The +tag is matched, and kept here: y.test is another server's domain.
        let res = handle.get().resolve("HI+tag@D.test").unwrap().unwrap();
        assert_eq!(res.tag.as_deref(), Some("tag"));
        assert!(
            matches!(res.action, Action::Deliver { ref forward, .. } if forward[0].to_string() == "x@y.test")
        );
    }
}

//! What TLS a delivery to a domain must have: its MTA-STS policy (RFC 8461), found
//! through DNS, fetched over verified HTTPS, and cached by id and max_age in the queue's store.

mod fetch;
mod policy;
pub mod verify;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hickory_resolver::TokioResolver;
use serde::{Deserialize, Serialize};

pub use fetch::{FETCH_TIMEOUT, FetchError, MAX_POLICY_BYTES};
pub use policy::{Mode, Policy, PolicyError};

use super::Queue;

/// A policy as the queue keeps it, shared by every node that delivers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPolicy {
    pub domain: String,
    /// The id of the `_mta-sts` record it was fetched under.
    pub id: String,
    /// The policy file as fetched.
    pub text: String,
    /// Unix seconds.
    pub fetched_at: i64,
}

/// A policy in force for a domain.
#[derive(Debug, Clone)]
pub struct Active {
    pub domain: String,
    pub id: String,
    pub policy: Policy,
    /// Unix seconds after which it is no longer applied without a fresh fetch.
    pub expires_at: i64,
}

impl Active {
    fn of(stored: &StoredPolicy) -> Option<Active> {
        let policy = Policy::parse(stored.text.as_bytes()).ok()?;
        Some(Active {
            domain: stored.domain.clone(),
            id: stored.id.clone(),
            expires_at: stored.fetched_at.saturating_add(policy.max_age as i64),
            policy,
        })
    }

    fn fresh(&self, now: i64) -> bool {
        now < self.expires_at
    }
}

/// What discovery found for a domain: the policy to apply (none in mode none), and
/// what went wrong on the way, for the log and for TLS reports.
#[derive(Debug, Clone, Default)]
pub struct Found {
    pub policy: Option<Arc<Active>>,
    pub problem: Option<String>,
}

/// Policy discovery with a cache in memory, backed by the queue's store.
pub struct TlsPolicies {
    resolver: TokioResolver,
    http: reqwest::Client,
    queue: Arc<dyn Queue>,
    memory: Mutex<HashMap<String, Arc<Active>>>,
}

/// What the `_mta-sts` record said.
enum Record {
    /// One valid STSv1 record with this id.
    Id(String),
    /// No record, or several (RFC 8461 §3.1: then there is no policy).
    Absent,
    /// The lookup failed; this says why.
    Unknown(String),
}

impl TlsPolicies {
    pub fn new(resolver: TokioResolver, queue: Arc<dyn Queue>) -> reqwest::Result<TlsPolicies> {
        Ok(TlsPolicies {
            http: fetch::client(Some(resolver.clone()))?,
            resolver,
            queue,
            memory: Mutex::new(HashMap::new()),
        })
    }

    /// The policy to apply to a delivery to `domain` now (RFC 8461 §5.1): the cached one
    /// while its id matches the DNS record; a new one fetched when the id changed; the
    /// cached one still when the record is gone or the fetch fails, until it expires.
    pub async fn for_domain(&self, domain: &str) -> Found {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let now = super::now_unix();
        let record = self.record(&domain).await;
        let mut cached = self.cached(&domain).await.filter(|c| c.fresh(now));
        let mut problem = None;
        match record {
            Record::Id(id) => {
                if cached.as_ref().is_none_or(|c| c.id != id) {
                    // Another node may have fetched it already.
                    let stored = self.stored(&domain).await;
                    match stored.and_then(|s| Active::of(&s)) {
                        Some(a) if a.id == id && a.fresh(now) => {
                            cached = Some(self.remember(a));
                        }
                        _ => match self.fetch(&domain, &id, now).await {
                            Ok(a) => cached = Some(a),
                            Err(e) => problem = Some(e),
                        },
                    }
                }
            }
            Record::Absent => {}
            Record::Unknown(why) => problem = Some(why),
        }
        Found {
            policy: cached.filter(|c| c.policy.mode != Mode::None),
            problem,
        }
    }

    async fn record(&self, domain: &str) -> Record {
        match self
            .resolver
            .txt_lookup(format!("_mta-sts.{domain}."))
            .await
        {
            Ok(lookup) => {
                let texts: Vec<String> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        hickory_resolver::proto::rr::RData::TXT(txt) => Some(
                            txt.txt_data
                                .iter()
                                .map(|part| String::from_utf8_lossy(part))
                                .collect::<String>(),
                        ),
                        _ => None,
                    })
                    .filter(|t| is_sts_record(t))
                    .collect();
                match texts.as_slice() {
                    [one] => {
                        use mail_auth::common::parse::TxtRecordParser;
                        match mail_auth::mta_sts::MtaSts::parse(one.as_bytes()) {
                            Ok(sts) => Record::Id(sts.id),
                            Err(_) => Record::Absent,
                        }
                    }
                    _ => Record::Absent,
                }
            }
            Err(e) if e.is_nx_domain() || e.is_no_records_found() => Record::Absent,
            Err(e) => Record::Unknown(format!(
                "looking up _mta-sts.{domain}: {}",
                crate::dns::lookup_error::explain(&e)
            )),
        }
    }

    async fn cached(&self, domain: &str) -> Option<Arc<Active>> {
        if let Some(a) = self.memory.lock().ok()?.get(domain).cloned() {
            return Some(a);
        }
        let stored = self.stored(domain).await?;
        Some(self.remember(Active::of(&stored)?))
    }

    async fn stored(&self, domain: &str) -> Option<StoredPolicy> {
        let queue = self.queue.clone();
        let key = domain.to_string();
        match tokio::task::spawn_blocking(move || queue.sts_policy(&key)).await {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => {
                tracing::warn!(domain, error = %e, "reading the cached MTA-STS policy");
                None
            }
            Err(_) => None,
        }
    }

    fn remember(&self, active: Active) -> Arc<Active> {
        let active = Arc::new(active);
        if let Ok(mut memory) = self.memory.lock() {
            memory.insert(active.domain.clone(), active.clone());
        }
        active
    }

    async fn fetch(&self, domain: &str, id: &str, now: i64) -> Result<Arc<Active>, String> {
        let body = fetch::policy_text(&self.http, domain)
            .await
            .map_err(|e| e.to_string())?;
        let policy = Policy::parse(&body).map_err(|e| format!("mta-sts.{domain}: {e}"))?;
        let stored = StoredPolicy {
            domain: domain.to_string(),
            id: id.to_string(),
            text: String::from_utf8_lossy(&body).into_owned(),
            fetched_at: now,
        };
        tracing::info!(domain, id, mode = %policy.mode, max_age = policy.max_age, "MTA-STS policy fetched");
        let queue = self.queue.clone();
        let keep = stored.clone();
        match tokio::task::spawn_blocking(move || queue.put_sts_policy(&keep)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(domain, error = %e, "keeping the MTA-STS policy"),
            Err(_) => {}
        }
        Ok(self.remember(Active {
            domain: domain.to_string(),
            id: id.to_string(),
            expires_at: now.saturating_add(policy.max_age as i64),
            policy,
        }))
    }
}

/// "v=STSv1" followed by the end, a ";" or white space (RFC 8461 §3.1).
fn is_sts_record(text: &str) -> bool {
    text.strip_prefix("v=STSv1")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([';', ' ', '\t']))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_stsv1_record_counts() {
        assert!(is_sts_record("v=STSv1; id=20160831085700Z;"));
        assert!(is_sts_record("v=STSv1 ;id=1"));
        assert!(!is_sts_record("v=STSv10; id=1"));
        assert!(!is_sts_record("v=spf1 -all"));
    }

    #[test]
    fn a_stored_policy_expires_after_its_max_age() {
        let stored = StoredPolicy {
            domain: "example.com".into(),
            id: "1".into(),
            text: "version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 600\n".into(),
            fetched_at: 1_000,
        };
        let a = Active::of(&stored).expect("valid");
        assert!(a.fresh(1_599));
        assert!(!a.fresh(1_600));
        assert!(
            Active::of(&StoredPolicy {
                text: "junk".into(),
                ..stored
            })
            .is_none()
        );
    }
}

//! What TLS a delivery to a domain must have: its MTA-STS policy (RFC 8461), found
//! through DNS, fetched over verified HTTPS, and cached by id and max_age in the queue's store.

pub mod dane;
pub mod dane_check;
mod fetch;
mod policy;
pub mod report;
pub mod require_tls;
pub mod send;
pub mod tally;
pub mod verify;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use hickory_resolver::TokioResolver;
use serde::{Deserialize, Serialize};

pub use fetch::{FETCH_TIMEOUT, FetchError, MAX_POLICY_BYTES};
pub use policy::{Mode, Policy, PolicyError};

use super::Queue;

/// A failed fetch is not tried again for the same id sooner than this (RFC 8461 §3.3
/// asks senders not to hammer a policy host), nor is any policy fetched more often.
const RETRY_SECS: i64 = 300;
/// How long what the store holds for a domain is trusted before it is read again (other
/// nodes may have fetched meanwhile).
const STORE_READ_SECS: i64 = 300;
/// Domains whose state is kept in memory: past it, those without a policy are forgotten
/// (the store still has every policy), so mail to a million domains cannot grow it.
const DOMAINS_KEPT: usize = 10_000;
/// A cached policy is fetched again, in the background, once it is this old (or half its
/// max_age), so an attacker must block every refresh for a whole max_age (§3.3, §10.2).
const REFRESH_SECS: i64 = 86_400;

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
    /// The policy file as fetched, for TLS reports.
    pub text: String,
    pub fetched_at: i64,
}

impl Active {
    fn of(stored: &StoredPolicy) -> Option<Active> {
        Some(Active {
            policy: Policy::parse(stored.text.as_bytes()).ok()?,
            domain: stored.domain.clone(),
            id: stored.id.clone(),
            text: stored.text.clone(),
            fetched_at: stored.fetched_at,
        })
    }

    /// Within max_age; a policy fetched in the last few minutes counts whatever its
    /// max_age (0 included), so it is not fetched again for every message.
    fn fresh(&self, now: i64) -> bool {
        now < self.fetched_at.saturating_add(self.policy.max_age as i64)
            || now < self.fetched_at.saturating_add(RETRY_SECS)
    }

    fn due_for_refresh(&self, now: i64) -> bool {
        let age = now.saturating_sub(self.fetched_at);
        age >= REFRESH_SECS
            .min(self.policy.max_age as i64 / 2)
            .max(RETRY_SECS)
    }
}

/// What discovery found for a domain: the policy to apply (none in mode none), and
/// what went wrong on the way, for the log and for TLS reports.
#[derive(Debug, Clone, Default)]
pub struct Found {
    pub policy: Option<Arc<Active>>,
    pub problem: Option<Problem>,
}

/// Why no policy, or an old one, is applied.
#[derive(Debug, Clone)]
pub struct Problem {
    /// How TLS reports count it: a fetch that failed, a policy that does not parse;
    /// None for a DNS failure (the record may not exist at all).
    pub outcome: Option<tally::Outcome>,
    pub why: String,
}

impl Problem {
    fn dns(why: String) -> Problem {
        Problem { outcome: None, why }
    }
}

/// Policy discovery with a cache in memory, backed by the queue's store.
pub struct TlsPolicies {
    resolver: TokioResolver,
    http: reqwest::Client,
    queue: Arc<dyn Queue>,
    domains: Mutex<HashMap<String, Arc<DomainState>>>,
}

/// What this node knows of one domain, and the lock that lets one delivery fetch its
/// policy while the others wait for the result.
#[derive(Default)]
struct DomainState {
    known: Mutex<Known>,
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Known {
    policy: Option<Arc<Active>>,
    /// When the store was last read for this domain (0: never).
    store_read_at: i64,
    /// The last fetch that failed: for which id, when, and why.
    failed: Option<(String, i64, Problem)>,
}

/// What the `_mta-sts` record said.
enum Record {
    /// One valid STSv1 record with this id.
    Id(String),
    /// No record, several, or one that does not parse (RFC 8461 §3.1: no policy).
    Absent,
    /// The lookup failed; this says why.
    Unknown(String),
}

/// A lock whose holder panicked still guards plain data: use it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl TlsPolicies {
    pub fn new(resolver: TokioResolver, queue: Arc<dyn Queue>) -> reqwest::Result<TlsPolicies> {
        Ok(TlsPolicies {
            http: fetch::client(Some(resolver.clone()))?,
            resolver,
            queue,
            domains: Mutex::new(HashMap::new()),
        })
    }

    /// The policy to apply to a delivery to `domain` now (RFC 8461 §5.1): the cached one
    /// while its id matches the DNS record; a new one fetched when the id changed; the
    /// cached one still when the record is gone or the fetch fails, until it expires.
    pub async fn for_domain(self: &Arc<Self>, domain: &str) -> Found {
        let Some(domain) = policy_domain(domain) else {
            return Found::default();
        };
        let state = self.state(&domain);
        let record = self.record(&domain).await;
        let now = super::now_unix();
        let mut active = self.known(&state, &domain, now, false).await;
        let mut problem = None;
        match record {
            Record::Id(id) => {
                if active.as_ref().is_none_or(|a| a.id != id || !a.fresh(now)) {
                    match self.fetch_once(&state, &domain, &id).await {
                        Ok(fetched) => active = Some(fetched),
                        Err(why) => {
                            problem = Some(why);
                            active = active.filter(|a| a.fresh(now));
                        }
                    }
                } else if let Some(a) = active.as_ref().filter(|a| a.due_for_refresh(now)) {
                    self.refresh_later(state.clone(), a.clone());
                }
            }
            Record::Absent => {}
            Record::Unknown(why) => problem = Some(Problem::dns(why)),
        }
        Found {
            policy: active.filter(|a| a.fresh(now) && a.policy.mode != Mode::None),
            problem,
        }
    }

    fn state(&self, domain: &str) -> Arc<DomainState> {
        let mut domains = lock(&self.domains);
        if domains.len() >= DOMAINS_KEPT && !domains.contains_key(domain) {
            domains.retain(|_, state| lock(&state.known).policy.is_some());
            if domains.len() >= DOMAINS_KEPT {
                domains.clear();
            }
        }
        domains.entry(domain.to_string()).or_default().clone()
    }

    /// The policy this node knows, from the store when it has not looked lately (or
    /// `again`: the record's id moved on, and another node may have fetched it).
    async fn known(
        &self,
        state: &DomainState,
        domain: &str,
        now: i64,
        again: bool,
    ) -> Option<Arc<Active>> {
        let (policy, read_at) = {
            let known = lock(&state.known);
            (known.policy.clone(), known.store_read_at)
        };
        if !again && now.saturating_sub(read_at) < STORE_READ_SECS {
            return policy;
        }
        let queue = self.queue.clone();
        let key = domain.to_string();
        let stored = match tokio::task::spawn_blocking(move || queue.sts_policy(&key)).await {
            Ok(Ok(stored)) => stored,
            Ok(Err(e)) => {
                // Keep what this node knew: a store that cannot be read is no reason to
                // drop a policy.
                tracing::warn!(domain, error = %e, "reading the cached MTA-STS policy");
                return policy;
            }
            Err(_) => return policy,
        };
        let mut known = lock(&state.known);
        known.store_read_at = now;
        if let Some(a) = stored.as_ref().and_then(Active::of)
            && known
                .policy
                .as_ref()
                .is_none_or(|k| k.fetched_at < a.fetched_at)
        {
            known.policy = Some(Arc::new(a));
        }
        known.policy.clone()
    }

    /// Fetches the policy for `id`, once however many deliveries ask at the same moment,
    /// and not again within RETRY_SECS of a failure for the same id.
    async fn fetch_once(
        &self,
        state: &DomainState,
        domain: &str,
        id: &str,
    ) -> Result<Arc<Active>, Problem> {
        let _turn = state.fetching.lock().await;
        let now = super::now_unix();
        // Whoever held the lock may have fetched it; or another node, into the store.
        for again in [false, true] {
            if let Some(a) = self.known(state, domain, now, again).await
                && a.id == id
                && a.fresh(now)
            {
                return Ok(a);
            }
        }
        if let Some((failed_id, at, why)) = &lock(&state.known).failed
            && failed_id == id
            && now.saturating_sub(*at) < RETRY_SECS
        {
            return Err(why.clone());
        }
        match self.fetch(domain, id, now).await {
            Ok(active) => {
                let mut known = lock(&state.known);
                known.policy = Some(active.clone());
                known.failed = None;
                Ok(active)
            }
            Err(why) => {
                lock(&state.known).failed = Some((id.to_string(), now, why.clone()));
                Err(why)
            }
        }
    }

    /// Fetches a policy still in force again, in the background; a failure keeps it.
    fn refresh_later(self: &Arc<Self>, state: Arc<DomainState>, current: Arc<Active>) {
        let this = self.clone();
        tokio::spawn(async move {
            let Ok(_turn) = state.fetching.try_lock() else {
                return;
            };
            let now = super::now_unix();
            if lock(&state.known)
                .failed
                .as_ref()
                .is_some_and(|(_, at, _)| now.saturating_sub(*at) < RETRY_SECS)
            {
                return;
            }
            match this.fetch(&current.domain, &current.id, now).await {
                Ok(active) => {
                    lock(&state.known).policy = Some(active);
                }
                Err(why) => {
                    tracing::warn!(
                        domain = current.domain,
                        why = why.why,
                        "refreshing the MTA-STS policy failed; the cached one stays"
                    );
                    lock(&state.known).failed = Some((current.id.clone(), now, why));
                }
            }
        });
    }

    async fn record(&self, domain: &str) -> Record {
        match self
            .resolver
            .txt_lookup(format!("_mta-sts.{domain}."))
            .await
        {
            Ok(lookup) => {
                let texts: Vec<String> = crate::dns::rdata::txt_texts(lookup.answers())
                    .into_iter()
                    .filter(|t| t.starts_with("v=STSv1"))
                    .collect();
                match texts.as_slice() {
                    [one] => sts_id(one).map_or(Record::Absent, Record::Id),
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

    async fn fetch(&self, domain: &str, id: &str, now: i64) -> Result<Arc<Active>, Problem> {
        let body = fetch::policy_text(&self.http, domain)
            .await
            .map_err(|e| Problem {
                outcome: Some(tally::Outcome::StsPolicyFetchError),
                why: e.to_string(),
            })?;
        let policy = Policy::parse(&body).map_err(|e| Problem {
            outcome: Some(tally::Outcome::StsPolicyInvalid),
            why: format!("mta-sts.{domain}: {e}"),
        })?;
        let text = String::from_utf8_lossy(&body).into_owned();
        let stored = StoredPolicy {
            domain: domain.to_string(),
            id: id.to_string(),
            text: text.clone(),
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
        Ok(Arc::new(Active {
            domain: domain.to_string(),
            id: id.to_string(),
            policy,
            text,
            fetched_at: now,
        }))
    }
}

/// A domain as policies are looked up and kept: lower-case A-labels, no final dot, so
/// every spelling of one name shares one policy. None for what is no domain name.
pub fn policy_domain(domain: &str) -> Option<String> {
    let name = hickory_resolver::proto::rr::Name::from_utf8(domain.trim_end_matches('.')).ok()?;
    let ascii = name.to_lowercase().to_ascii();
    Some(ascii.trim_end_matches('.').to_string())
}

/// The id of an `_mta-sts` record (RFC 8461 §3.1): "v=STSv1" first, exactly one id of
/// 1–32 letters and digits, every other field name=value; anything else is no policy.
fn sts_id(record: &str) -> Option<String> {
    let mut fields = record.split(';').map(str::trim).filter(|f| !f.is_empty());
    if fields.next()? != "v=STSv1" {
        return None;
    }
    let mut id = None;
    for field in fields {
        let (name, value) = field.split_once('=')?;
        if name.trim() == "id" {
            if id.is_some() {
                return None;
            }
            id = Some(value.trim());
        }
    }
    let id = id?;
    ((1..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn mail_to_ever_more_domains_keeps_a_bounded_state() {
        let dir = tempfile::tempdir().expect("dir");
        let queue: Arc<dyn Queue> =
            Arc::new(crate::queue::QueueDb::open(dir.path()).expect("queue"));
        let resolver =
            crate::dns::resolver(Some("127.0.0.1:9".parse().expect("address"))).expect("resolver");
        let policies = TlsPolicies::new(resolver, queue).expect("policies");
        for i in 0..3 * DOMAINS_KEPT {
            policies.state(&format!("d{i}.example"));
            assert!(lock(&policies.domains).len() <= DOMAINS_KEPT);
        }
    }

    #[test]
    fn a_record_counts_only_as_rfc_8461_writes_it() {
        assert_eq!(
            sts_id("v=STSv1; id=20160831085700Z;").as_deref(),
            Some("20160831085700Z")
        );
        assert_eq!(sts_id("v=STSv1 ;id=1").as_deref(), Some("1"));
        assert_eq!(sts_id("v=STSv1; id=abc; ext=1").as_deref(), Some("abc"));
        for bad in [
            "v=STSv10; id=1",
            "v=spf1 -all",
            "id=1; v=STSv1",
            "v=STSv1; id=",
            "v=STSv1;",
            "v=STSv1; id=a\u{1b}]52;b",
            "v=STSv1; id=1; id=2",
            "v=STSv1; id=123456789012345678901234567890123",
            "v=STSv1; id=1; junk",
        ] {
            assert_eq!(sts_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn every_spelling_of_a_domain_is_one_key() {
        for spelling in [
            "bücher.example",
            "BÜCHER.example.",
            "xn--bcher-kva.example",
            "XN--BCHER-KVA.EXAMPLE",
        ] {
            assert_eq!(
                policy_domain(spelling).as_deref(),
                Some("xn--bcher-kva.example"),
                "{spelling}"
            );
        }
        assert_eq!(
            policy_domain("Example.COM.").as_deref(),
            Some("example.com")
        );
    }

    #[test]
    fn a_stored_policy_expires_after_its_max_age_and_is_refreshed_before() {
        let day = 86_400;
        let stored = StoredPolicy {
            domain: "example.com".into(),
            id: "1".into(),
            text: "version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 604800\n".into(),
            fetched_at: 1_000,
        };
        let a = Active::of(&stored).expect("valid");
        assert!(a.fresh(1_000 + 7 * day - 1));
        assert!(!a.fresh(1_000 + 7 * day));
        // Refreshed daily, long before it expires.
        assert!(!a.due_for_refresh(1_000 + day - 1));
        assert!(a.due_for_refresh(1_000 + day));
        // max_age 0 still holds for a few minutes, so it is not fetched per message.
        let zero = Active::of(&StoredPolicy {
            text: stored.text.replace("604800", "0"),
            ..stored.clone()
        })
        .expect("valid");
        assert!(zero.fresh(1_000 + RETRY_SECS - 1));
        assert!(!zero.fresh(1_000 + RETRY_SECS));
        assert!(
            Active::of(&StoredPolicy {
                text: "junk".into(),
                ..stored
            })
            .is_none()
        );
    }
}

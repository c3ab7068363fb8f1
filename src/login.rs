//! Mailbox logins for IMAP, POP3 and submission: argon2id checked off the async threads,
//! failures limited per client IP and per account, and one answer, in the same time, for
//! a wrong password and an unknown account (no enumeration).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::cache::Cache;
use crate::mailbox::Mailboxes;
use crate::selfservice::{self, Own, app_password};
use crate::snapshot::SnapshotHandle;
use crate::spec::model::MainPassword;

/// Failed logins allowed within `WINDOW` per client network (any account). Past
/// `FAILURES_PER_ACCOUNT` from everywhere (a distributed guesser), a network that has
/// failed for the account and never logged in to it lately gets no more tries; its
/// owner, from a known network or a new one trying for the first time, still does.
const FAILURES_PER_IP: u32 = 10;
const FAILURES_PER_ACCOUNT: u32 = 20;
const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Characters of an account name the counters keep.
const MAX_ACCOUNT_CHARS: usize = 254;
/// How long a network an account logged in from stays known for it.
const KNOWN_FOR: Duration = Duration::from_secs(30 * 86_400);

/// Who failed logins count against, kept in the cache (Redis when declared, so every
/// node and a restart see them): the client's network, and the account. `kind` keeps
/// mailbox and admin logins apart.
pub struct Throttle<'a> {
    pub cache: &'a dyn Cache,
    pub kind: &'static str,
}

impl Throttle<'_> {
    /// The counters: this network, this network for the account, the account, and
    /// whether the network logged in to the account lately.
    /// The account as the client gave it, up to the length an address can have (RFC
    /// 5321: 254): a name of a megabyte must not make a megabyte of keys.
    fn keys(&self, ip: IpAddr, account: &str) -> [String; 4] {
        let (kind, net) = (self.kind, crate::listen::network_of(ip));
        let end = account
            .char_indices()
            .nth(MAX_ACCOUNT_CHARS)
            .map_or(account.len(), |(i, _)| i);
        let account = &account[..end];
        [
            format!("{kind}-fail-ip:{net}"),
            format!("{kind}-fail:{net}:{account}"),
            format!("{kind}-fail-account:{account}"),
            format!("{kind}-known:{net}:{account}"),
        ]
    }

    /// Whether `ip` may try to log in as `account` now.
    pub fn allows(&self, ip: IpAddr, account: &str) -> bool {
        let [ip_key, pair, account_key, known] = self.keys(ip, account);
        if self.cache.recent(&ip_key, WINDOW) >= FAILURES_PER_IP {
            return false;
        }
        self.cache.recent(&pair, WINDOW) == 0
            || self.cache.recent(&account_key, WINDOW) < FAILURES_PER_ACCOUNT
            || self.cache.recent(&known, KNOWN_FOR) > 0
    }

    pub fn failed(&self, ip: IpAddr, account: &str) {
        let [ip_key, pair, account_key, _] = self.keys(ip, account);
        for key in [ip_key, pair, account_key] {
            self.cache.hit(&key, u32::MAX, WINDOW);
        }
    }

    /// The client's network becomes known for the account; no count is cleared (a
    /// login of one's own must not reset the guesses at someone else's password).
    pub fn succeeded(&self, ip: IpAddr, account: &str) {
        let [_, _, _, known] = self.keys(ip, account);
        if self.cache.recent(&known, KNOWN_FOR) == 0 {
            self.cache.hit(&known, u32::MAX, KNOWN_FOR);
        }
    }
}
/// Every failure is answered this late: a guesser gets a few tries a second per
/// connection, a user who mistyped hardly notices.
const FAILURE_DELAY: Duration = Duration::from_millis(600);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The account (lower-case address) the client is now logged in as.
    Accepted(String),
    Rejected,
    /// Too many failures lately; try again later (nothing was checked).
    Throttled,
}

/// Where a login is made. App passwords open mail and DAV only; a main password kept
/// to the web opens the owner's page only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// IMAP, POP3, SMTP submission, CalDAV, CardDAV.
    Mail,
    /// ManageSieve: a script may redirect all mail, so a device's app password does not
    /// open it (nor would it open the settings page).
    Sieve,
    /// The owner's own web page.
    Web,
}

/// How often an app password's "last used" is written at most.
const LAST_USED_EVERY: i64 = 3600;

pub struct Logins {
    snapshot: Arc<SnapshotHandle>,
    cache: Arc<dyn Cache>,
    /// Where the owners' own settings are kept (their password, app passwords).
    mailboxes: Option<Mailboxes>,
    /// When this process last wrote an app password's use (by its id): clients that
    /// open several connections at once cause one write, not one each.
    noted: Mutex<HashMap<String, Instant>>,
    /// Failed and throttled attempts since the process started (for /metrics).
    failures: std::sync::atomic::AtomicU64,
    throttled: std::sync::atomic::AtomicU64,
    /// Recent successful checks (a digest of account, password and stored hash → when),
    /// so a client that reconnects every minute does not pay argon2 each time, as with
    /// Dovecot's auth cache. A changed password or hash never matches an old entry.
    verified: Mutex<HashMap<[u8; 32], Instant>>,
    /// Checks running at once: each argon2id check holds 19 MiB for its length, so a
    /// crowd of logins (from anywhere: unknown accounts pay the decoy's cost) would
    /// otherwise hold that much per login at once. As many as there are cores.
    checking: tokio::sync::Semaphore,
}

/// How long a successful check is remembered.
const VERIFIED_FOR: Duration = Duration::from_secs(10 * 60);
const VERIFIED_MAX: usize = 10_000;

/// Failed logins (mailbox and admin) logged one by one each minute: a botnet guessing
/// from thousands of addresses stays under every per-network limit, and must not fill
/// the disk or the journal with a line per guess. The rest are summed up each minute.
pub fn failed_logins_logged() -> &'static crate::log_budget::LogBudget {
    static BUDGET: OnceLock<crate::log_budget::LogBudget> = OnceLock::new();
    BUDGET.get_or_init(|| crate::log_budget::LogBudget::new("failed logins", 60))
}

/// A hash of the same cost as real ones, checked for unknown accounts so they take as
/// long as a wrong password.
pub(crate) fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| crate::password::hash("ferrymail decoy password").unwrap_or_default())
}

impl Logins {
    pub fn new(
        snapshot: Arc<SnapshotHandle>,
        cache: Arc<dyn Cache>,
        mailboxes: Option<Mailboxes>,
    ) -> Logins {
        Logins {
            snapshot,
            cache,
            mailboxes,
            noted: Mutex::new(HashMap::new()),
            failures: Default::default(),
            throttled: Default::default(),
            verified: Mutex::new(HashMap::new()),
            checking: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            ),
        }
    }

    fn digest(account: &str, password: &str, hash: &str) -> [u8; 32] {
        let mut d = Sha256::new();
        for part in [account, password, hash] {
            d.update(part.as_bytes());
            d.update([0u8]);
        }
        d.finalize().into()
    }

    fn remembered(&self, key: &[u8; 32]) -> bool {
        let mut map = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(key) {
            Some(at) if at.elapsed() < VERIFIED_FOR => true,
            Some(_) => {
                map.remove(key);
                false
            }
            None => false,
        }
    }

    fn remember(&self, key: [u8; 32]) {
        let mut map = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= VERIFIED_MAX {
            map.retain(|_, at| at.elapsed() < VERIFIED_FOR);
            if map.len() >= VERIFIED_MAX {
                map.clear();
            }
        }
        map.insert(key, Instant::now());
    }

    /// Failed and throttled login attempts so far.
    pub fn failure_counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.failures.load(Relaxed), self.throttled.load(Relaxed))
    }

    /// The owner's own settings of `account` (blocking read, off the async threads);
    /// none kept here is none set.
    pub async fn own(&self, account: &str) -> Result<Own, selfservice::SettingsError> {
        let Some(mailboxes) = self.mailboxes.clone() else {
            return Ok(Own::default());
        };
        let account = account.to_string();
        tokio::task::spawn_blocking(move || selfservice::settings::read(&mailboxes, &account))
            .await
            .unwrap_or_else(|_| Err(selfservice::SettingsError::Busy))
    }

    /// The hash of `account`'s main password in effect (the owner's own or the spec's);
    /// None when the account is gone or its settings cannot be read.
    pub async fn main_hash(&self, account: &str) -> Option<String> {
        let record = self.snapshot.get().accounts.get(account).cloned()?;
        if !selfservice::keeps_credentials(&record) {
            return Some(record.password_hash);
        }
        let own = self.own(account).await.ok()?;
        Some(selfservice::main_hash(&record, &own).to_string())
    }

    /// Checks `user` (an account address) and `password` for a mail client at `ip`.
    pub async fn check(&self, ip: IpAddr, user: &str, password: &str) -> Outcome {
        self.check_at(ip, user, password, Door::Mail).await
    }

    /// Checks a login at `door`: a mail client may use an app password; the main
    /// password works where the spec lets it.
    pub async fn check_at(&self, ip: IpAddr, user: &str, password: &str, door: Door) -> Outcome {
        let account = user.trim().to_lowercase();
        let throttle = Throttle {
            cache: self.cache.as_ref(),
            kind: "login",
        };
        if !throttle.allows(ip, &account) {
            self.throttled
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep(FAILURE_DELAY).await;
            return Outcome::Throttled;
        }
        let record = self.snapshot.get().accounts.get(&account).cloned();
        let own = match &record {
            Some(r) if selfservice::keeps_credentials(r) => match self.own(&account).await {
                Ok(own) => own,
                // Never the spec's hash instead: the owner may have changed it because
                // it leaked.
                Err(e) => {
                    tracing::error!(account = %account, "login: the owner's settings cannot be read: {e}");
                    tokio::time::sleep(FAILURE_DELAY).await;
                    return Outcome::Rejected;
                }
            },
            _ => Own::default(),
        };
        // An app password is found by its digest: no argon2, and no trying each in turn.
        if let (Door::Mail, Some(r)) = (door, &record)
            && let Some(digest) = app_password::digest(&account, password)
            && let Some(found) = selfservice::live_app_passwords(r, &own).find(|a| {
                aws_lc_rs::constant_time::verify_slices_are_equal(
                    a.digest.as_bytes(),
                    digest.as_bytes(),
                )
                .is_ok()
            })
        {
            throttle.succeeded(ip, &account);
            self.note_use(&account, found);
            return Outcome::Accepted(account);
        }
        let main_opens = |r: &crate::store::records::AccountRecord| {
            door == Door::Web || r.main_password == MainPassword::Everywhere
        };
        let hash = record
            .as_ref()
            .filter(|r| main_opens(r))
            .map(|r| selfservice::main_hash(r, &own).to_string());
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| decoy_hash().to_string());
        let key = Self::digest(&account, password, &hash);
        if known && self.remembered(&key) {
            throttle.succeeded(ip, &account);
            return Outcome::Accepted(account);
        }
        let matches = {
            let Ok(_permit) = self.checking.acquire().await else {
                return Outcome::Rejected;
            };
            // The same login may have been checked while this one waited (a client
            // opening several connections at once).
            if known && self.remembered(&key) {
                throttle.succeeded(ip, &account);
                return Outcome::Accepted(account);
            }
            let password = password.to_string();
            tokio::task::spawn_blocking(move || crate::password::verify(&password, &hash))
                .await
                .unwrap_or(false)
        };
        if matches && known {
            throttle.succeeded(ip, &account);
            self.remember(key);
            return Outcome::Accepted(account);
        }
        throttle.failed(ip, &account);
        self.failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if failed_logins_logged().allows() {
            tracing::info!(%ip, account = %account, "login failed");
        }
        tokio::time::sleep(FAILURE_DELAY).await;
        Outcome::Rejected
    }

    /// Writes when an app password was last used, once an hour at most, in the
    /// background: the login does not wait for it.
    fn note_use(&self, account: &str, used: &selfservice::AppPassword) {
        let now = crate::store::unix_now();
        if used.last_used.is_some_and(|t| now - t < LAST_USED_EVERY) {
            return;
        }
        {
            let mut noted = self.noted.lock().unwrap_or_else(|p| p.into_inner());
            let every = Duration::from_secs(LAST_USED_EVERY as u64);
            if noted.get(&used.id).is_some_and(|at| at.elapsed() < every) {
                return;
            }
            if noted.len() >= VERIFIED_MAX {
                noted.retain(|_, at| at.elapsed() < every);
            }
            noted.insert(used.id.clone(), Instant::now());
        }
        let Some(mailboxes) = self.mailboxes.clone() else {
            return;
        };
        let (account, id) = (account.to_string(), used.id.clone());
        tokio::task::spawn_blocking(move || {
            let written = selfservice::settings::update(&mailboxes, &account, |own| {
                if let Some(a) = own.app_passwords.iter_mut().find(|a| a.id == id) {
                    a.last_used = Some(now);
                }
            });
            if let Err(e) = written {
                tracing::warn!(account, "noting an app password's use: {e}");
            }
        });
    }

    /// SASL PLAIN (RFC 4616): "authzid NUL authcid NUL password". An authzid other than
    /// the authcid (acting for someone else) is refused.
    pub async fn check_plain(&self, ip: IpAddr, response: &[u8]) -> Outcome {
        self.check_plain_at(ip, response, Door::Mail).await
    }

    /// `check_plain` at another door than mail's.
    pub async fn check_plain_at(&self, ip: IpAddr, response: &[u8], door: Door) -> Outcome {
        let mut fields = response.split(|&b| b == 0);
        let (Some(authz), Some(user), Some(pass), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Outcome::Rejected;
        };
        let (Ok(authz), Ok(user), Ok(pass)) = (
            std::str::from_utf8(authz),
            std::str::from_utf8(user),
            std::str::from_utf8(pass),
        ) else {
            return Outcome::Rejected;
        };
        if !authz.is_empty() && !authz.eq_ignore_ascii_case(user) {
            return Outcome::Rejected;
        }
        self.check_at(ip, user, pass, door).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_megabyte_of_account_name_makes_keys_of_an_address_length() {
        let cache = crate::cache::MemoryCache::default();
        let throttle = Throttle {
            cache: &cache,
            kind: "login",
        };
        let ip: IpAddr = "2001:db8:1:2::7".parse().unwrap();
        let name = "é".repeat(1 << 20);
        for key in throttle.keys(ip, &name) {
            assert!(key.len() < 600, "{} bytes", key.len());
        }
        // An IPv6 client counts by its /64: another address in it shares the counts.
        let neighbour: IpAddr = "2001:db8:1:2::8".parse().unwrap();
        assert_eq!(
            throttle.keys(ip, "a@b.test"),
            throttle.keys(neighbour, "a@b.test")
        );
        for _ in 0..FAILURES_PER_IP {
            throttle.failed(ip, &name);
        }
        assert!(!throttle.allows(neighbour, "a@b.test"));
    }
}

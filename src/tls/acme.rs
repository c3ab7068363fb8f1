//! ACME (RFC 8555) with instant-acme: the account and certificates live in the store
//! (every node shares them); issued at start when missing, renewed in the background.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, CertificateIdentifier, ChallengeType,
    ExternalAccountKey, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

use super::{Certificates, TlsError, certs};
use crate::dns::provider::{Provider, RrsetChange};
use crate::dns::records::Kind;
use crate::store::{Store, StoreError, StoredCertificate, unix_now};

/// How often the store is looked at for a renewal request or a certificate another node
/// issued; the renewal itself comes when a third of the lifetime is left.
const LOOK_EVERY: Duration = Duration::from_secs(5);
/// A failed issuance is tried again after 1, 2, 4… minutes, at most an hour apart.
const RETRY_FIRST: Duration = Duration::from_secs(60);
const RETRY_MAX: Duration = Duration::from_secs(3600);
/// An order (account, challenges, finalization) that takes longer is given up and retried.
const ORDER_TIMEOUT: Duration = Duration::from_secs(600);

/// Answers the CA will ask for while an order is under way: HTTP-01 key authorizations
/// by token, TLS-ALPN-01 certificates by name.
#[derive(Default)]
pub struct Challenges {
    http: Mutex<HashMap<String, String>>,
    alpn: Mutex<HashMap<String, Arc<CertifiedKey>>>,
    /// Beside a MongoDB store, HTTP-01 answers are kept there too: the CA may ask any
    /// node behind the name, not only the one that ordered.
    #[cfg(feature = "mongodb")]
    shared: Option<Arc<crate::mongo::Mongo>>,
}

/// Another node's answer to an HTTP-01 token, from MongoDB.
#[cfg(feature = "mongodb")]
fn shared_http01(mongo: &crate::mongo::Mongo, token: &str) -> Option<String> {
    let found = mongo.block(async {
        mongo
            .coll("acme_challenges")
            .find_one(mongodb::bson::doc! { "_id": token })
            .await
    });
    match found {
        Ok(d) => d.and_then(|d| d.get_str("key_authorization").ok().map(str::to_string)),
        Err(e) => {
            tracing::warn!(error = %e, "HTTP-01 answers of other nodes unreadable");
            None
        }
    }
}

/// The ALPN protocol of TLS-ALPN-01 (RFC 8737 §6.2).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

impl Challenges {
    /// Challenges answered by every node sharing `mongo`.
    #[cfg(feature = "mongodb")]
    pub fn shared(mongo: Arc<crate::mongo::Mongo>) -> Challenges {
        Challenges {
            shared: Some(mongo),
            ..Challenges::default()
        }
    }

    /// The key authorization for an HTTP-01 token: this node's, or another node's.
    pub fn http01(&self, token: &str) -> Option<String> {
        if let Some(answer) = self.lock().get(token).cloned() {
            return Some(answer);
        }
        #[cfg(feature = "mongodb")]
        if let Some(mongo) = &self.shared {
            return shared_http01(mongo, token);
        }
        None
    }

    fn put_http01(&self, token: &str, key_authorization: &str) {
        self.lock()
            .insert(token.to_string(), key_authorization.to_string());
        #[cfg(feature = "mongodb")]
        if let Some(mongo) = &self.shared {
            let written = mongo.block(async {
                mongo
                    .coll("acme_challenges")
                    .replace_one(
                        mongodb::bson::doc! { "_id": token },
                        mongodb::bson::doc! { "_id": token, "key_authorization": key_authorization },
                    )
                    .upsert(true)
                    .await
            });
            if let Err(e) = written {
                tracing::warn!(error = %e, "HTTP-01 answer not shared with the other nodes");
            }
        }
    }

    fn remove_http01(&self, token: &str) {
        self.lock().remove(token);
        #[cfg(feature = "mongodb")]
        if let Some(mongo) = &self.shared {
            let _ = mongo.block(async {
                mongo
                    .coll("acme_challenges")
                    .delete_one(mongodb::bson::doc! { "_id": token })
                    .await
            });
        }
    }

    /// The TLS configuration that answers a TLS-ALPN-01 validation of `name`: only the
    /// challenge certificate, only the acme-tls/1 protocol.
    pub fn tls_alpn01(&self, name: &str) -> Option<Arc<rustls::ServerConfig>> {
        let key = lock(&self.alpn).get(&name.to_ascii_lowercase()).cloned()?;
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Fixed(key)));
        config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
        Some(Arc::new(config))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        lock(&self.http)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One certificate for every handshake.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for Fixed {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The self-signed certificate for `name` carrying the acmeIdentifier extension with
/// the key authorization's digest (RFC 8737 §3).
fn alpn_certificate(name: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, AcmeError> {
    let fail = |e: String| AcmeError::Refused(format!("TLS-ALPN-01 certificate for {name}: {e}"));
    let mut params =
        rcgen::CertificateParams::new(vec![name.to_string()]).map_err(|e| fail(e.to_string()))?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate().map_err(|e| fail(e.to_string()))?;
    let cert = params.self_signed(&key).map_err(|e| fail(e.to_string()))?;
    let der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    // Not CertifiedKey::from_der: its key check parses the certificate with webpki,
    // which refuses the critical acmeIdentifier extension this certificate exists for.
    let signing = rustls::crypto::aws_lc_rs::default_provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| fail(e.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signing,
    )))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    Http01,
    TlsAlpn01,
    Dns01,
}

/// What to ask for, and from whom.
#[derive(Debug, Clone)]
pub struct Settings {
    pub directory: String,
    pub contact: String,
    pub challenge: Challenge,
    /// A CA certificate to trust for the directory (a private CA, pebble in tests).
    pub ca_file: Option<PathBuf>,
    /// External Account Binding: key id and HMAC key.
    pub eab: Option<(String, Vec<u8>)>,
    /// The names the certificate must cover; the first is its id.
    pub names: Vec<String>,
    /// For DNS-01; None when no domain has a DNS provider that writes.
    pub dns01: Option<Arc<Dns01>>,
}

#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("ACME {step}: {}", crate::error_chain::in_words(source))]
    Protocol {
        step: &'static str,
        #[source]
        source: instant_acme::Error,
    },
    #[error("ACME: {0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

fn at(step: &'static str) -> impl FnOnce(instant_acme::Error) -> AcmeError {
    move |source| AcmeError::Protocol { step, source }
}

/// When a certificate is renewed: a third of its lifetime before it ends.
pub fn renew_at(issued_at: i64, not_after: i64) -> i64 {
    not_after - (not_after - issued_at).max(0) / 3
}

/// When this certificate is renewed: `renew_at`, moved up to a thirtieth of the lifetime
/// earlier by a jitter drawn from the certificate itself, so that servers issued
/// together do not all come back to the CA in the same minute, and every node of one
/// server agrees on the moment.
pub fn renewal_time(cert: &StoredCertificate) -> i64 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(cert.chain_pem.as_bytes());
    let draw = u64::from_be_bytes(digest[..8].try_into().unwrap_or_default());
    let span = ((cert.not_after - cert.issued_at).max(0) / 30).max(1) as u64;
    renew_at(cert.issued_at, cert.not_after) - (draw % span) as i64
}

/// Where DNS-01 answers are published: the DNS provider of each mail domain (a name is
/// published through the domain it lies in), and the resolver that shows them published.
pub struct Dns01 {
    pub domains: Vec<(String, Arc<dyn Provider>)>,
    pub resolver: Option<std::net::SocketAddr>,
}

/// How long a published answer may take to be seen before the order is given up.
const PROPAGATION: Duration = Duration::from_secs(120);

impl std::fmt::Debug for Dns01 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let domains: Vec<&str> = self.domains.iter().map(|(d, _)| d.as_str()).collect();
        f.debug_struct("Dns01").field("domains", &domains).finish()
    }
}

impl Dns01 {
    fn provider_for(&self, name: &str) -> Option<&Arc<dyn Provider>> {
        self.domains
            .iter()
            .filter(|(d, _)| name == d || name.ends_with(&format!(".{d}")))
            .max_by_key(|(d, _)| d.len())
            .map(|(_, p)| p)
    }

    /// Adds (or, with `add` false, takes away) `value` at `_acme-challenge.NAME`, next to
    /// whatever else is there (a wildcard and its base name share one name).
    async fn change(&self, name: &str, value: &str, add: bool) -> Result<(), AcmeError> {
        let fail = |e: String| AcmeError::Refused(format!("DNS-01 for {name}: {e}"));
        let provider = self
            .provider_for(name)
            .ok_or_else(|| fail("no DNS provider publishes this name's domain".into()))?;
        let record = format!("_acme-challenge.{name}");
        let zone = provider
            .zone_of(name)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let wanted = [(record.clone(), Kind::TXT)];
        let before: Vec<String> = provider
            .list(&zone, &wanted)
            .await
            .map_err(|e| fail(e.to_string()))?
            .into_iter()
            .filter(|r| r.name == record && r.rtype == "TXT")
            .map(|r| r.data)
            .collect();
        let mut after: Vec<String> = before.iter().filter(|v| *v != value).cloned().collect();
        if add {
            after.push(value.to_string());
        }
        if after == before {
            return Ok(());
        }
        // Other answers at the name (another order's) are left as they are.
        let theirs = before.iter().filter(|v| *v != value).cloned().collect();
        let change = RrsetChange {
            name: record,
            kind: Kind::TXT,
            ttl: 60,
            before,
            after,
            theirs,
            old_ttl: None,
        };
        provider
            .apply(&zone, std::slice::from_ref(&change))
            .await
            .map_err(|e| fail(e.to_string()))
    }

    /// Waits until `value` is seen at `_acme-challenge.NAME`: at the provider's own
    /// authoritative server when it has one (no cache can hide the change there), else
    /// through the spec's resolver.
    async fn propagated(&self, name: &str, value: &str) -> Result<(), AcmeError> {
        let record = format!("_acme-challenge.{name}.");
        let server = self
            .provider_for(name)
            .and_then(|p| p.authoritative())
            .or(self.resolver);
        let deadline = tokio::time::Instant::now() + PROPAGATION;
        loop {
            // A fresh resolver each time: no answer cached from before the change.
            if let Ok(resolver) = crate::dns::resolver(server)
                && let Ok(found) = resolver.txt_lookup(record.as_str()).await
                && found.answers().iter().any(|r| match &r.data {
                    hickory_resolver::proto::rr::RData::TXT(t) => {
                        t.txt_data
                            .iter()
                            .map(|s| String::from_utf8_lossy(s))
                            .collect::<String>()
                            == value
                    }
                    _ => false,
                })
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(AcmeError::Refused(format!(
                    "DNS-01 for {name}: {record} not visible after {} s",
                    PROPAGATION.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// Keeps the served certificate issued and fresh.
pub struct Manager {
    /// One node at a time orders a certificate; the others serve it from the store.
    pub cluster: Arc<crate::cache::Cluster>,
    /// Swapped when the spec changes (new names are then a reason to re-issue).
    pub settings: Arc<ArcSwap<Settings>>,
    pub store: Arc<dyn Store>,
    pub certs: Arc<Certificates>,
    pub challenges: Arc<Challenges>,
    /// Where the last outcome is written for `ferrymail status` (data_dir/acme.json).
    pub status_file: Option<PathBuf>,
    /// When to ask the CA's renewal information (ARI) next, and whether it has any.
    pub ari: Mutex<Ari>,
    /// The SHA-256 of the chain (PEM) last installed from the store.
    pub installed: Mutex<Option<Vec<u8>>>,
}

/// What is known of the CA's renewal information (RFC 9773) for the served certificate.
#[derive(Debug, Default)]
pub struct Ari {
    /// Unix seconds; 0 = ask at the next look.
    pub next_check: i64,
    /// The CA offers renewal information (new orders then say what they replace).
    pub offered: bool,
    /// The moment chosen in the CA's suggested window, once known.
    pub renew_at: Option<i64>,
}

/// The moment in a suggested window `[start, end]` this certificate is renewed at: drawn
/// uniformly from the certificate itself (RFC 9773 §4.2 asks for a random point).
pub fn moment_in_window(cert: &StoredCertificate, start: i64, end: i64) -> i64 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(cert.chain_pem.as_bytes());
    let draw = u64::from_be_bytes(digest[8..16].try_into().unwrap_or_default());
    let span = (end - start).max(0) as u64;
    start + (draw % (span + 1)) as i64
}

/// The last thing the manager did, for `status`: failures show long before expiry.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AcmeStatus {
    pub at: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_in_secs: Option<u64>,
}

impl Manager {
    /// Runs until shutdown: issue when missing, renew when due or asked, retry with backoff.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut retry = RETRY_FIRST;
        let mut last: Option<String> = None;
        loop {
            // Shutdown does not wait for an order under way (a CA can be slow).
            let outcome = tokio::select! {
                outcome = tokio::time::timeout(ORDER_TIMEOUT, self.ensure()) => outcome
                    .unwrap_or_else(|_| Err(AcmeError::Refused(format!(
                        "the order took longer than {} s", ORDER_TIMEOUT.as_secs()
                    )))),
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            let (wait, status) = match outcome {
                Ok(()) => {
                    retry = RETRY_FIRST;
                    (LOOK_EVERY, None)
                }
                Err(e) => {
                    // Which CA: an operator with several (staging, a private one) must
                    // not have to guess where "cannot connect" was.
                    let e = format!("{e} (CA directory {})", self.settings.load().directory);
                    tracing::error!(
                        error = %e,
                        retry_in_secs = retry.as_secs(),
                        "certificate not issued; the current one keeps serving"
                    );
                    let wait = retry;
                    retry = (retry * 2).min(RETRY_MAX);
                    (wait, Some(e))
                }
            };
            // Written when something changes, not on every look.
            if status != last || status.is_some() {
                self.record(status.clone(), wait);
            }
            last = status;
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }

    fn record(&self, error: Option<String>, wait: Duration) {
        let Some(path) = &self.status_file else {
            return;
        };
        let status = AcmeStatus {
            at: crate::store::now_rfc3339(),
            ok: error.is_none(),
            retry_in_secs: error.as_ref().map(|_| wait.as_secs()),
            error,
        };
        if let Ok(json) = serde_json::to_vec_pretty(&status)
            && let Err(e) = crate::private_file::write(path, &json)
        {
            tracing::warn!(error = %e, "cannot write {}", path.display());
        }
    }

    /// Serves the stored certificate when it is good for the names and not due; issues
    /// (and stores) a new one when not.
    pub async fn ensure(&self) -> Result<(), AcmeError> {
        let settings = self.settings.load_full();
        let id = settings.names.first().cloned().unwrap_or_default();
        let stored = crate::blocking::run(|| self.store.certificate(&id))?;
        // The certificate a new order replaces (RFC 9773 §5), when the CA cares.
        let stored_id = stored.as_ref().and_then(certificate_identifier);
        let issued_before = stored.as_ref().map_or(i64::MIN, |c| c.issued_at);
        let mut wanted = settings.names.clone();
        wanted.sort();
        if let Some(cert) = stored {
            let mut names = cert.names.clone();
            names.sort();
            // Whatever happens to the renewal, a certificate that has not expired is
            // better than the temporary self-signed one (after a restart, say).
            if unix_now() < cert.not_after {
                self.serve(&cert)?;
            }
            let due =
                unix_now() >= renewal_time(&cert) || self.ari_says_renew(&settings, &cert).await;
            if names == wanted && !due && !cert.renew_requested {
                return Ok(());
            }
            let why = if names != wanted {
                "the names changed"
            } else if cert.renew_requested {
                "a renewal was asked for"
            } else {
                "a third of its lifetime is left"
            };
            tracing::info!(certificate = %id, "renewing: {why}");
        }
        let Some(_held) = self.cluster.try_lock(crate::cache::cluster::ACME) else {
            // Another node is ordering: its certificate arrives through the store.
            return Ok(());
        };
        // It may have just finished one.
        if let Some(cert) = crate::blocking::run(|| self.store.certificate(&id))?
            && cert.issued_at > issued_before
        {
            self.serve(&cert)?;
            return Ok(());
        }
        let replaces = lock(&self.ari)
            .offered
            .then_some(stored_id.as_ref())
            .flatten()
            .cloned();
        let issued = self.issue(&settings, replaces).await?;
        *lock(&self.ari) = Ari::default();
        crate::blocking::run(|| self.store.put_certificate(&issued))?;
        self.serve(&issued)?;
        tracing::info!(
            certificate = %id,
            names = ?issued.names,
            not_after = issued.not_after,
            "certificate issued and served"
        );
        Ok(())
    }

    /// Asks the CA's renewal information when it is time to (RFC 9773): true when its
    /// suggested window says to renew now (a CA revoking early, say). A CA without it is
    /// asked again a day later; the lifetime rule alone then decides.
    async fn ari_says_renew(&self, settings: &Settings, cert: &StoredCertificate) -> bool {
        let now = unix_now();
        {
            let ari = lock(&self.ari);
            if let Some(at) = ari.renew_at {
                return now >= at;
            }
            if now < ari.next_check {
                return false;
            }
        }
        let Some(identifier) = certificate_identifier(cert) else {
            lock(&self.ari).next_check = now + 86_400;
            return false;
        };
        let answer = match self.account(settings, false).await {
            Ok(account) => account.renewal_info(&identifier).await,
            Err(e) => {
                tracing::debug!(error = %e, "no account for renewal information");
                lock(&self.ari).next_check = now + 3600;
                return false;
            }
        };
        let mut ari = lock(&self.ari);
        match answer {
            Ok((info, retry_after)) => {
                let (start, end) = (
                    info.suggested_window.start.unix_timestamp(),
                    info.suggested_window.end.unix_timestamp(),
                );
                let at = moment_in_window(cert, start, end);
                ari.offered = true;
                // The CA says when to ask again; within an hour and a day.
                ari.next_check = now + retry_after.as_secs().clamp(3600, 86_400) as i64;
                // A moment before the next question is kept: no need to ask again.
                if at <= ari.next_check {
                    ari.renew_at = Some(at);
                }
                tracing::debug!(start, end, at, "renewal information from the CA");
                now >= at
            }
            Err(instant_acme::Error::Unsupported(_)) => {
                ari.next_check = now + 86_400;
                false
            }
            Err(e) => {
                tracing::debug!(error = %e, "renewal information not available");
                ari.next_check = now + 3600;
                false
            }
        }
    }

    /// Installs `cert` unless it is already what is served.
    fn serve(&self, cert: &StoredCertificate) -> Result<(), AcmeError> {
        // Looked at every few seconds: parse only what has not been installed yet.
        let digest = {
            use sha2::Digest;
            sha2::Sha256::digest(cert.chain_pem.as_bytes()).to_vec()
        };
        let mut installed = lock(&self.installed);
        if installed.as_deref() == Some(digest.as_slice()) {
            return Ok(());
        }
        let loaded = certs::load_pem(cert.chain_pem.as_bytes(), cert.key_pem.as_bytes(), "acme")?;
        self.certs.install(loaded, true);
        *installed = Some(digest);
        Ok(())
    }

    /// The account, from the store; made (and stored) when there is none, or `fresh`.
    async fn account(&self, s: &Settings, fresh: bool) -> Result<Account, AcmeError> {
        let builder = match &s.ca_file {
            Some(root) => Account::builder_with_root(root).map_err(at("trusting ca_file"))?,
            None => Account::builder().map_err(at("starting the client"))?,
        };
        let saved = match fresh {
            true => None,
            false => crate::blocking::run(|| self.store.acme_account(&s.directory))?,
        };
        if let Some(json) = saved
            && let Ok(credentials) = serde_json::from_str::<AccountCredentials>(&json)
        {
            return builder
                .from_credentials(credentials)
                .await
                .map_err(at("loading the account"));
        }
        let contact = format!("mailto:{}", s.contact);
        let eab = s
            .eab
            .as_ref()
            .map(|(kid, key)| ExternalAccountKey::new(kid.clone(), key));
        let (account, credentials) = builder
            .create(
                &NewAccount {
                    contact: &[&contact],
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                s.directory.clone(),
                eab.as_ref(),
            )
            .await
            .map_err(at("creating the account"))?;
        let json = serde_json::to_string(&credentials)
            .map_err(|e| AcmeError::Refused(format!("saving the account: {e}")))?;
        crate::blocking::run(|| self.store.set_acme_account(&s.directory, &json))?;
        tracing::info!(directory = %s.directory, "ACME account created");
        Ok(account)
    }

    /// One order, start to end: challenges answered, CSR sent, chain fetched.
    async fn issue(
        &self,
        settings: &Settings,
        replaces: Option<CertificateIdentifier<'static>>,
    ) -> Result<StoredCertificate, AcmeError> {
        let account = self.account(settings, false).await?;
        let identifiers: Vec<Identifier> = settings
            .names
            .iter()
            .map(|n| Identifier::Dns(n.clone()))
            .collect();
        let mut new_order = NewOrder::new(&identifiers);
        if let Some(replaces) = replaces {
            new_order = new_order.replaces(replaces);
        }
        let mut order = match account.new_order(&new_order).await {
            // The CA forgot the account (a test CA restarted, a deactivation): a new one.
            Err(instant_acme::Error::Api(problem))
                if problem
                    .r#type
                    .as_deref()
                    .is_some_and(|t| t.ends_with(":accountDoesNotExist")) =>
            {
                tracing::warn!("the CA no longer knows the ACME account; registering a new one");
                let account = self.account(settings, true).await?;
                account.new_order(&new_order).await
            }
            other => other,
        }
        .map_err(at("ordering"))?;
        let (mut tokens, mut published) = (Vec::new(), Vec::new());
        let answered = self
            .answer(&mut order, &mut tokens, &mut published, settings)
            .await;
        let ready = match answered {
            Ok(()) => order
                .poll_ready(&RetryPolicy::new().timeout(Duration::from_secs(120)))
                .await
                .map_err(at("waiting for validation")),
            Err(e) => Err(e),
        };
        // DNS-01 answers are taken down again, whatever happened.
        if let Some(dns) = &settings.dns01 {
            for (name, value) in &published {
                if let Err(e) = dns.change(name, value, false).await {
                    tracing::warn!(error = %e, "a DNS-01 answer could not be removed");
                }
            }
        }
        for token in &tokens {
            match token.strip_prefix("alpn:") {
                Some(name) => {
                    lock(&self.challenges.alpn).remove(name);
                }
                None => self.challenges.remove_http01(token),
            }
        }
        let status = ready?;
        if status != OrderStatus::Ready {
            return Err(AcmeError::Refused(refusal(&mut order).await));
        }
        let key_pem = order.finalize().await.map_err(at("finalizing"))?;
        let chain_pem = order
            .poll_certificate(&RetryPolicy::new().timeout(Duration::from_secs(120)))
            .await
            .map_err(at("fetching the certificate"))?;
        let loaded = certs::load_pem(chain_pem.as_bytes(), key_pem.as_bytes(), "acme")?;
        Ok(StoredCertificate {
            id: settings.names.first().cloned().unwrap_or_default(),
            names: settings.names.clone(),
            chain_pem,
            key_pem,
            not_after: loaded.info.not_after,
            issued_at: unix_now().max(loaded.info.not_before),
            renew_requested: false,
        })
    }

    /// Sets up the answer to each pending authorization and tells the CA to look.
    async fn answer(
        &self,
        order: &mut instant_acme::Order,
        tokens: &mut Vec<String>,
        published: &mut Vec<(String, String)>,
        settings: &Settings,
    ) -> Result<(), AcmeError> {
        let kind = match settings.challenge {
            Challenge::Http01 => ChallengeType::Http01,
            Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
            Challenge::Dns01 => ChallengeType::Dns01,
        };
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(at("reading authorizations"))?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => {
                    return Err(AcmeError::Refused(format!(
                        "authorization for {} is {other:?}",
                        authz.identifier()
                    )));
                }
            }
            let name = authz.identifier().to_string();
            let mut challenge = authz.challenge(kind.clone()).ok_or_else(|| {
                AcmeError::Refused(format!("the CA offers no {kind:?} challenge for {name}"))
            })?;
            match kind {
                ChallengeType::Http01 => {
                    let key_authorization = challenge.key_authorization().as_str().to_string();
                    self.challenges
                        .put_http01(&challenge.token, &key_authorization);
                    tokens.push(challenge.token.clone());
                }
                ChallengeType::TlsAlpn01 => {
                    let digest = challenge.key_authorization().digest();
                    let cert = alpn_certificate(&name, digest.as_ref())?;
                    lock(&self.challenges.alpn).insert(name.to_ascii_lowercase(), cert);
                    tokens.push(format!("alpn:{}", name.to_ascii_lowercase()));
                }
                ChallengeType::Dns01 => {
                    let dns = settings.dns01.as_ref().ok_or_else(|| {
                        AcmeError::Refused(
                            "dns-01 needs a DNS provider (not manual) for the domains".into(),
                        )
                    })?;
                    let value = challenge.key_authorization().dns_value();
                    let bare = name.trim_start_matches("*.").to_string();
                    dns.change(&bare, &value, true).await?;
                    published.push((bare.clone(), value.clone()));
                    dns.propagated(&bare, &value).await?;
                }
                other => {
                    return Err(AcmeError::Refused(format!(
                        "the {other:?} challenge is not supported"
                    )));
                }
            }
            challenge.set_ready().await.map_err(at("answering"))?;
        }
        Ok(())
    }
}

/// The ARI identifier of a stored certificate (its end-entity certificate's AKI and
/// serial), when it has one.
fn certificate_identifier(cert: &StoredCertificate) -> Option<CertificateIdentifier<'static>> {
    use rustls::pki_types::pem::PemObject;
    let first = rustls::pki_types::CertificateDer::pem_slice_iter(cert.chain_pem.as_bytes())
        .next()?
        .ok()?;
    CertificateIdentifier::try_from(&first)
        .ok()
        .map(|id| id.into_owned())
}

/// Why the CA did not validate: the order's problem and each challenge's.
async fn refusal(order: &mut instant_acme::Order) -> String {
    let mut reasons = Vec::new();
    if let Some(problem) = &order.state().error {
        reasons.push(problem.to_string());
    }
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authz)) = authorizations.next().await {
        let name = authz.identifier().to_string();
        if let Ok(state) = authz.refresh().await {
            for c in &state.challenges {
                if let Some(problem) = &c.error {
                    reasons.push(format!("{name}: {problem}"));
                }
            }
        }
    }
    if reasons.is_empty() {
        "the CA did not validate the order".into()
    } else {
        format!("the CA did not validate the order: {}", reasons.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_comes_when_a_third_of_the_lifetime_is_left() {
        let day = 86_400;
        assert_eq!(renew_at(0, 90 * day), 60 * day);
        // The jitter moves it at most three days (a thirtieth of 90) earlier, never later,
        // and the same certificate always gets the same moment.
        let cert = |pem: &str| StoredCertificate {
            id: "mx.d.test".into(),
            names: vec![],
            chain_pem: pem.into(),
            key_pem: String::new(),
            not_after: 90 * day,
            issued_at: 0,
            renew_requested: false,
        };
        let times: Vec<i64> = ["a", "b", "c", "d"]
            .iter()
            .map(|p| renewal_time(&cert(p)))
            .collect();
        assert!(
            times.iter().all(|t| (57 * day..=60 * day).contains(t)),
            "{times:?}"
        );
        assert!(times.windows(2).any(|w| w[0] != w[1]), "{times:?}");
        assert_eq!(renewal_time(&cert("a")), times[0]);
        // A CA's suggested window (RFC 9773): a point inside it, the same each time.
        let moments: Vec<i64> = ["a", "b", "c"]
            .iter()
            .map(|p| moment_in_window(&cert(p), 100, 200))
            .collect();
        assert!(
            moments.iter().all(|m| (100..=200).contains(m)),
            "{moments:?}"
        );
        assert_eq!(moment_in_window(&cert("a"), 100, 100), 100);
        assert_eq!(
            renew_at(0, 6 * day),
            4 * day,
            "short-lived certificates too"
        );
    }
}

//! Parsed signing keys, kept between messages. Building an RSA key from its DER (with
//! the key check and blinding set-up) cost more than signing with it (BENCHMARKS.md,
//! finding 1), so each key is parsed once and re-read only when the store revision moves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use mail_auth::common::crypto::{Algorithm, Ed25519Key, RsaKey, Sha256, SigningKey};
use mail_auth::common::headers::Writable;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::store::Store;
use crate::store::records::{DkimKeyRecord, dkim_key_id};

/// A parsed key, shared by every signature made with it.
#[derive(Clone)]
pub enum SharedKey {
    Rsa(Arc<RsaKey<Sha256>>),
    Ed25519(Arc<Ed25519Key>),
}

impl SigningKey for SharedKey {
    type Hasher = Sha256;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        match self {
            SharedKey::Rsa(k) => k.sign(input),
            SharedKey::Ed25519(k) => k.sign(input),
        }
    }

    fn algorithm(&self) -> Algorithm {
        match self {
            SharedKey::Rsa(k) => k.algorithm(),
            SharedKey::Ed25519(k) => k.algorithm(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("DKIM key {0} is missing from the store")]
    Missing(String),
    #[error("DKIM key {0}: {1}")]
    Parse(String, String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

struct Cached {
    revision: u64,
    der: Vec<u8>,
    key: SharedKey,
}

/// Keys by id ("selector._domainkey.domain"), valid for the store revision they were read at.
pub struct SigningKeys {
    store: Arc<dyn Store>,
    keys: Mutex<HashMap<String, Cached>>,
}

impl SigningKeys {
    pub fn new(store: Arc<dyn Store>) -> SigningKeys {
        SigningKeys {
            store,
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// The parsed key for `record`, as of store `revision` (blocking: may read the store).
    pub fn get(&self, record: &DkimKeyRecord, revision: u64) -> Result<SharedKey, KeyError> {
        let id = dkim_key_id(&record.selector, &record.domain);
        if let Some(hit) = self.lock().get(&id).filter(|c| c.revision == revision) {
            return Ok(hit.key.clone());
        }
        let der = self
            .store
            .dkim_private_key(&id)?
            .ok_or_else(|| KeyError::Missing(id.clone()))?;
        let mut keys = self.lock();
        // The same material at a newer revision: keep the parsed key.
        if let Some(cached) = keys.get_mut(&id).filter(|c| c.der == der) {
            cached.revision = revision;
            return Ok(cached.key.clone());
        }
        let bad = |e: mail_auth::Error| KeyError::Parse(id.clone(), e.to_string());
        let key = if record.algorithm == "ed25519" {
            SharedKey::Ed25519(Arc::new(
                Ed25519Key::from_pkcs8_maybe_unchecked_der(&der).map_err(bad)?,
            ))
        } else {
            let pkcs8 = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der.as_slice()));
            SharedKey::Rsa(Arc::new(
                RsaKey::<Sha256>::from_key_der(pkcs8).map_err(bad)?,
            ))
        };
        keys.insert(
            id,
            Cached {
                revision,
                der,
                key: key.clone(),
            },
        );
        Ok(key)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cached>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }
}

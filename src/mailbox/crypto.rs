//! Encryption at rest for mailboxes: every message and its parsed metadata are sealed with
//! AES-256-GCM under a key per account, derived (HKDF-SHA256) from the server's master key.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};

/// Versioned so a later scheme can be told apart from this one.
const KDF_SALT: &[u8] = b"ferrymail mailbox key v1";

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("the master key is too short ({0} bytes; at least 32 are needed)")]
    ShortMasterKey(usize),
    #[error("stored data does not decrypt with this server's master key (wrong key, or damaged)")]
    Open,
    #[error("no system randomness")]
    Random,
}

/// The server's master key: the input every account key is derived from. Losing it makes
/// every mailbox unreadable; `backup` includes it only when the spec says so.
pub struct MasterKey(Vec<u8>);

impl MasterKey {
    pub fn new(material: &[u8]) -> Result<MasterKey, CryptoError> {
        if material.len() < 32 {
            return Err(CryptoError::ShortMasterKey(material.len()));
        }
        Ok(MasterKey(material.to_vec()))
    }

    /// The key of one account, bound to its (lower-cased) address.
    pub fn account_key(&self, account: &str) -> AccountKey {
        let prk = Salt::new(HKDF_SHA256, KDF_SALT).extract(&self.0);
        let info = account.to_lowercase();
        let info = [info.as_bytes()];
        let mut bytes = [0u8; 32];
        // 32 bytes from HKDF-SHA256 cannot fail (the limit is 255 × 32).
        if let Ok(okm) = prk.expand(&info, &AES_256_GCM) {
            let _ = okm.fill(&mut bytes);
        }
        let key = UnboundKey::new(&AES_256_GCM, &bytes).map(LessSafeKey::new);
        AccountKey(key.ok())
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// What a sealed value is, so a body can never be passed off as metadata or the reverse.
#[derive(Debug, Clone, Copy)]
pub enum Part {
    Body = 1,
    Meta = 2,
}

/// The associated-data tag of a calendar or contact resource (src/collections), beside
/// `Part`'s: a resource never opens as a message part, nor the reverse.
const RESOURCE: u8 = 3;
/// The tag of a user's Sieve script (src/sieve/store.rs).
const SCRIPT: u8 = 4;
/// The tag of an owner's own settings (src/selfservice/settings.rs).
const SETTINGS: u8 = 5;

pub struct AccountKey(Option<LessSafeKey>);

/// A random id a sealed value is bound to (its row's, where the row has no id of its
/// own to bind to).
pub fn new_seal_id() -> Result<i64, CryptoError> {
    let mut raw = [0u8; 8];
    aws_lc_rs::rand::fill(&mut raw).map_err(|_| CryptoError::Random)?;
    Ok(i64::from_le_bytes(raw) & i64::MAX)
}

impl AccountKey {
    /// nonce ‖ ciphertext ‖ tag. The associated data binds it to its blob and part: a
    /// sealed value copied onto another row does not open there.
    pub fn seal(&self, blob: i64, part: Part, plain: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.seal_tagged(blob, part as u8, plain)
    }

    pub fn open(&self, blob: i64, part: Part, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.open_tagged(blob, part as u8, sealed)
    }

    /// A calendar object or vCard, bound to its row.
    pub fn seal_resource(&self, id: i64, plain: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.seal_tagged(id, RESOURCE, plain)
    }

    pub fn open_resource(&self, id: i64, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.open_tagged(id, RESOURCE, sealed)
    }

    /// A user's Sieve script, bound to the id it was stored under.
    pub fn seal_script(&self, id: i64, plain: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.seal_tagged(id, SCRIPT, plain)
    }

    pub fn open_script(&self, id: i64, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.open_tagged(id, SCRIPT, sealed)
    }

    /// An owner's settings record, bound to the id it was stored under.
    pub fn seal_settings(&self, id: i64, plain: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.seal_tagged(id, SETTINGS, plain)
    }

    pub fn open_settings(&self, id: i64, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.open_tagged(id, SETTINGS, sealed)
    }

    fn seal_tagged(&self, blob: i64, tag: u8, plain: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let key = self.0.as_ref().ok_or(CryptoError::Random)?;
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| CryptoError::Random)?;
        let mut out = Vec::with_capacity(NONCE_LEN + plain.len() + 16);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let mut body = out.split_off(NONCE_LEN);
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(blob, tag)),
            &mut body,
        )
        .map_err(|_| CryptoError::Random)?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    fn open_tagged(&self, blob: i64, tag: u8, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let key = self.0.as_ref().ok_or(CryptoError::Open)?;
        if sealed.len() < NONCE_LEN {
            return Err(CryptoError::Open);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Open)?;
        let mut body = body.to_vec();
        let plain = key
            .open_in_place(nonce, Aad::from(aad(blob, tag)), &mut body)
            .map_err(|_| CryptoError::Open)?;
        let len = plain.len();
        body.truncate(len);
        Ok(body)
    }
}

fn aad(blob: i64, tag: u8) -> [u8; 9] {
    let mut aad = [0u8; 9];
    aad[..8].copy_from_slice(&blob.to_le_bytes());
    aad[8] = tag;
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_where_they_belong() {
        let master = MasterKey::new(&[7u8; 32]).unwrap();
        let key = master.account_key("Me@D.test");
        let sealed = key.seal(5, Part::Body, b"hello").unwrap();
        assert!(!sealed.windows(5).any(|w| w == b"hello"));
        assert_eq!(key.open(5, Part::Body, &sealed).unwrap(), b"hello");
        assert!(key.open(6, Part::Body, &sealed).is_err(), "another blob");
        assert!(key.open(5, Part::Meta, &sealed).is_err(), "another part");
        assert!(key.open_resource(5, &sealed).is_err(), "a resource");
        let resource = key.seal_resource(5, b"hello").unwrap();
        assert_eq!(key.open_resource(5, &resource).unwrap(), b"hello");
        assert!(key.open(5, Part::Body, &resource).is_err());
        let same = master.account_key("me@d.test");
        assert_eq!(same.open(5, Part::Body, &sealed).unwrap(), b"hello");
        let other = master.account_key("you@d.test");
        assert!(
            other.open(5, Part::Body, &sealed).is_err(),
            "another account"
        );
        assert!(MasterKey::new(b"short").is_err());
    }
}

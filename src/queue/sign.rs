//! DKIM signatures for mail leaving on a domain's behalf, with the keys the reconciler
//! generated (every selector of the domain signs: RSA for reach, Ed25519 where declared).

use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::store::Store;
use crate::store::records::{DkimKeyRecord, dkim_key_id};

/// Headers covered by the signature (From is required; the rest as receivers expect).
const SIGNED_HEADERS: [&str; 9] = [
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "MIME-Version",
    "Content-Type",
];

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("DKIM key {0} is missing from the store")]
    MissingKey(String),
    #[error("DKIM key {0}: {1}")]
    Key(String, String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// The DKIM-Signature header lines (CRLF-terminated) to prepend to `message`.
pub fn dkim_headers(
    store: &dyn Store,
    keys: &[DkimKeyRecord],
    message: &[u8],
) -> Result<String, SignError> {
    let mut out = String::new();
    for key in keys {
        let id = dkim_key_id(&key.selector, &key.domain);
        let der = store
            .dkim_private_key(&id)?
            .ok_or_else(|| SignError::MissingKey(id.clone()))?;
        let bad = |e: mail_auth::Error| SignError::Key(id.clone(), e.to_string());
        let signature = if key.algorithm == "ed25519" {
            let pk = Ed25519Key::from_pkcs8_maybe_unchecked_der(&der).map_err(bad)?;
            DkimSigner::from_key(pk)
                .domain(&key.domain)
                .selector(&key.selector)
                .headers(SIGNED_HEADERS)
                .sign(message)
        } else {
            let pk = RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs8(
                PrivatePkcs8KeyDer::from(der.as_slice()),
            ))
            .map_err(bad)?;
            DkimSigner::from_key(pk)
                .domain(&key.domain)
                .selector(&key.selector)
                .headers(SIGNED_HEADERS)
                .sign(message)
        }
        .map_err(bad)?;
        out.push_str(&signature.to_header());
    }
    Ok(out)
}

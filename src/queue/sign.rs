//! DKIM signatures for mail leaving on a domain's behalf, with the keys the reconciler
//! generated (every selector of the domain signs: RSA for reach, Ed25519 where declared).

use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;

use crate::dkim::signing::{KeyError, SigningKeys};
use crate::store::records::DkimKeyRecord;

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

/// The DKIM-Signature header lines (CRLF-terminated) to prepend to `message`, one per key
/// of the domain, with keys parsed once and kept (`revision` is the store revision).
pub fn dkim_headers(
    keys: &SigningKeys,
    records: &[DkimKeyRecord],
    revision: u64,
    message: &[u8],
) -> Result<String, KeyError> {
    let mut out = String::new();
    for record in records {
        let key = keys.get(record, revision)?;
        let signature = DkimSigner::from_key(key)
            .domain(&record.domain)
            .selector(&record.selector)
            .headers(SIGNED_HEADERS)
            .sign(message)
            .map_err(|e| KeyError::Parse(record.selector.clone(), e.to_string()))?;
        out.push_str(&signature.to_header());
    }
    Ok(out)
}

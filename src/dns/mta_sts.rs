//! The MTA-STS policy (RFC 8461) as served over HTTPS, and the id its `_mta-sts` TXT
//! record carries: derived from the text, so a changed policy is a new id.

use sha2::{Digest, Sha256};

/// The policy file: this server is the only MX.
pub fn policy(mode: &str, mx: &str, max_age: u64) -> String {
    format!(
        "version: STSv1\r\nmode: {mode}\r\nmx: {}\r\nmax_age: {max_age}\r\n",
        mx.trim_end_matches('.').to_ascii_lowercase()
    )
}

/// The policy's id: 20 hex digits of its SHA-256 (RFC 8461 allows 1–32 alphanumerics).
pub fn policy_id(policy: &str) -> String {
    hex::encode(Sha256::digest(policy.as_bytes()))[..20].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_follow_rfc_8461_and_their_id_follows_the_text() {
        let p = policy("enforce", "MX.Example.com.", 604_800);
        assert_eq!(
            p,
            "version: STSv1\r\nmode: enforce\r\nmx: mx.example.com\r\nmax_age: 604800\r\n"
        );
        let id = policy_id(&p);
        assert_eq!(id.len(), 20);
        assert!(id.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(id, policy_id(&policy("testing", "mx.example.com", 604_800)));
    }
}

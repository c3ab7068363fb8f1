//! Password hashing for mailbox and admin logins: argon2id with OWASP's parameters, so
//! the hashes `ferrymail passwd` prints are what the servers verify against.

use argon2::{Argon2, PasswordHasher, PasswordVerifier};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PasswordError(String);

/// Hashes a password into a PHC string ("$argon2id$v=19$m=19456,t=2,p=1$...").
pub fn hash(password: &str) -> Result<String, PasswordError> {
    let hash = Argon2::default()
        .hash_password(password.as_bytes())
        .map_err(|e| PasswordError(e.to_string()))?;
    Ok(hash.to_string())
}

/// Checks that a stored hash parses.
pub fn parse_hash(hash: &str) -> Result<(), PasswordError> {
    argon2::password_hash::phc::PasswordHash::new(hash)
        .map(|_| ())
        .map_err(|e| PasswordError(e.to_string()))
}

/// True when `password` matches `hash`. A malformed hash never matches.
pub fn verify(password: &str, hash: &str) -> bool {
    let matches = Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok();
    // The check's 19 MiB go back to the OS now: the allocator would keep them until it
    // next allocates a lot, and an idle server after a login does not.
    crate::trim::give_back();
    matches
}

#[cfg(test)]
mod tests {
    #[test]
    fn hash_then_verify() {
        let h = super::hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$"));
        assert!(super::verify("correct horse", &h));
        assert!(!super::verify("wrong", &h));
        assert!(super::parse_hash(&h).is_ok());
        assert!(super::parse_hash("$argon2id$garbage").is_err());
    }
}

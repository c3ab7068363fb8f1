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

/// The shortest password `passwd` takes without `--force` (NIST SP 800-63B asks for 8
/// at least; a mail password sits in every client, so typing it is rare).
pub const MIN_LENGTH: usize = 10;

/// Passwords guessed first: the top of every breach list, and this project's demo one.
const COMMON: &[&str] = &[
    "password",
    "password1",
    "password123",
    "123456789",
    "1234567890",
    "12345678910",
    "qwertyuiop",
    "qwerty123",
    "1q2w3e4r5t",
    "iloveyou",
    "sunshine",
    "princess",
    "football",
    "baseball",
    "welcome1",
    "letmein123",
    "admin12345",
    "passw0rd",
    "changeme",
    "trustno1",
    "quickstart",
    "ferrymail",
    "mailserver",
    "abcdefghij",
];

/// Why `password` is easy to guess, if it is: too short, one repeated character, a
/// run of the keyboard or the alphabet, or a password from the top of breach lists.
pub fn weakness(password: &str) -> Option<String> {
    let chars: Vec<char> = password.chars().collect();
    if chars.len() < MIN_LENGTH {
        return Some(format!("it has fewer than {MIN_LENGTH} characters"));
    }
    let lower = password.to_lowercase();
    if COMMON.contains(&lower.as_str()) {
        return Some("it is among the first passwords any attacker tries".into());
    }
    if chars.iter().all(|c| *c == chars[0]) {
        return Some("it is one character repeated".into());
    }
    let steps: Vec<i64> = chars
        .windows(2)
        .map(|w| w[1] as i64 - w[0] as i64)
        .collect();
    if steps.iter().all(|d| *d == steps[0]) && steps[0].abs() == 1 {
        return Some("it is a run of consecutive characters".into());
    }
    None
}

/// A password to hand out: 144 random bits, in URL-safe base64 (24 characters).
pub fn generate() -> Result<String, PasswordError> {
    use base64::Engine as _;
    let mut bytes = [0u8; 18];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| PasswordError("no system randomness".into()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    #[test]
    fn weak_passwords_are_named_and_strong_ones_pass() {
        for weak in [
            "s3cret",
            "Password123",
            "aaaaaaaaaaaa",
            "0123456789",
            "quickstart",
        ] {
            assert!(super::weakness(weak).is_some(), "{weak}");
        }
        for strong in ["correct horse battery", "s3cret pass phrase"] {
            assert_eq!(super::weakness(strong), None, "{strong}");
        }
        let made = super::generate().unwrap();
        assert_eq!(made.len(), 24);
        assert_eq!(super::weakness(&made), None);
        assert_ne!(made, super::generate().unwrap());
    }

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

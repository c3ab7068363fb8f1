//! App passwords: made by the server, 16 random characters (about 79 bits), so a fast
//! keyed digest suffices where a person's password needs argon2id, and a login finds
//! the one it matches by its digest instead of trying every hash in turn.

use sha2::{Digest, Sha256};

/// Letters and digits no one mistakes for each other when typing from one screen
/// into another (no 0/o, 1/l/i).
const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
const LENGTH: usize = 16;

/// A new app password, in groups of four: "abcd-efgh-jkmn-pqrs"; None if the system's
/// random generator failed.
pub fn generate() -> Option<String> {
    // Rejection sampling: bytes past the last whole multiple of the alphabet's length
    // would favour its first letters.
    let limit = 256 - 256 % ALPHABET.len();
    let mut out = String::with_capacity(LENGTH + 3);
    let mut made = 0;
    while made < LENGTH {
        let mut bytes = [0u8; 32];
        aws_lc_rs::rand::fill(&mut bytes).ok()?;
        for b in bytes.into_iter().filter(|&b| (b as usize) < limit) {
            if made == LENGTH {
                break;
            }
            if made > 0 && made % 4 == 0 {
                out.push('-');
            }
            out.push(ALPHABET[b as usize % ALPHABET.len()] as char);
            made += 1;
        }
    }
    Some(out)
}

/// The stored digest of `password` for `account`, or None when it cannot be an app
/// password (so a person's password is never digested and kept in a fast hash's reach).
/// Spaces, dashes and case are the user's to choose: "ABCD EFGH…" is the same password.
pub fn digest(account: &str, password: &str) -> Option<String> {
    let normal: String = password
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if normal.len() != LENGTH || !normal.bytes().all(|b| ALPHABET.contains(&b)) {
        return None;
    }
    let mut d = Sha256::new();
    d.update(b"ferrymail app password\0");
    d.update(account.to_lowercase().as_bytes());
    d.update([0u8]);
    d.update(normal.as_bytes());
    Some(hex::encode(d.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_passwords_are_random_readable_and_bound_to_their_account() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 19);
        assert_eq!(a.matches('-').count(), 3);
        let d = digest("me@d.test", &a).unwrap();
        assert_eq!(
            digest("ME@d.test", &a.to_uppercase().replace('-', " ")),
            Some(d.clone())
        );
        assert_ne!(digest("you@d.test", &a), Some(d));
        // A person's password is never digested here.
        assert_eq!(digest("me@d.test", "correct horse battery staple"), None);
        assert_eq!(digest("me@d.test", "0000-1111-oooo-llll"), None);
    }
}

//! Sender Rewriting Scheme: a forwarded message leaves with an envelope sender on our
//! domain (so SPF passes at the destination) that a bounce can be traced back from.
//! `SRS0=HHHHHHHH=TT=orig-domain=orig-local@our-domain`, hash and timestamp in base32
//! so MTAs that fold case do not break them.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
/// How long a bounce may take to come back, in days (timestamps wrap at 1024 days).
pub const MAX_AGE_DAYS: u64 = 21;
/// Base32 characters of the hash: 40 bits. libsrs2's 4 (20 bits) let one connection
/// forge an address by trying a million, which made the forwarder an open relay.
const HASH_CHARS: usize = 8;
/// What earlier versions wrote, still taken back for addresses they issued.
const LEGACY_HASH_CHARS: usize = 4;

#[derive(Clone)]
pub struct Srs {
    secret: Vec<u8>,
    /// Short (legacy) hashes are taken back for timestamps up to this day only: the day
    /// this server first issued long ones. Past MAX_AGE_DAYS after it, never.
    legacy_until: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SrsError {
    #[error("not an SRS address")]
    NotSrs,
    #[error("SRS address has a bad hash (forged or corrupted)")]
    BadHash,
    #[error("SRS address has expired")]
    Expired,
}

fn days_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0)
}

impl Srs {
    pub fn new(secret: Vec<u8>) -> Srs {
        Srs {
            secret,
            legacy_until: 0,
        }
    }

    /// Takes back the short hashes of addresses issued up to `day` (days since the
    /// epoch) by a version that wrote them, while they have not expired.
    pub fn accepting_legacy_until(mut self, day: u64) -> Srs {
        self.legacy_until = day;
        self
    }

    /// Today, as `accepting_legacy_until` counts days.
    pub fn today() -> u64 {
        days_now()
    }

    fn hash(&self, timestamp: &str, domain: &str, local: &str) -> String {
        let bytes = self.mac(timestamp, domain, local);
        // Five bits at a time from the first five bytes of the MAC.
        let bits = bytes[..5]
            .iter()
            .fold(0u64, |acc, &b| acc << 8 | u64::from(b));
        (0..HASH_CHARS)
            .map(|i| BASE32[((bits >> (35 - 5 * i)) & 31) as usize] as char)
            .collect()
    }

    /// The hash as versions before 0.2 wrote it.
    fn legacy_hash(&self, timestamp: &str, domain: &str, local: &str) -> String {
        let bytes = self.mac(timestamp, domain, local);
        (0..LEGACY_HASH_CHARS)
            .map(|i| BASE32[(bytes[i] & 31) as usize] as char)
            .collect()
    }

    fn mac(&self, timestamp: &str, domain: &str, local: &str) -> Vec<u8> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(timestamp.to_ascii_uppercase().as_bytes());
        mac.update(domain.to_ascii_lowercase().as_bytes());
        mac.update(local.to_ascii_lowercase().as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    fn timestamp(days: u64) -> String {
        let t = days % 1024;
        [
            BASE32[(t >> 5) as usize] as char,
            BASE32[(t & 31) as usize] as char,
        ]
        .iter()
        .collect()
    }

    /// Rewrites `sender` to an SRS address at `our_domain`. The null sender stays null,
    /// and an address already at our domain needs no rewriting.
    pub fn forward(&self, sender: &str, our_domain: &str) -> String {
        let Some((local, domain)) = sender.rsplit_once('@') else {
            return sender.to_string();
        };
        if sender.is_empty() || domain.eq_ignore_ascii_case(our_domain) {
            return sender.to_string();
        }
        let ts = Self::timestamp(days_now());
        let hash = self.hash(&ts, domain, local);
        format!("SRS0={hash}={ts}={domain}={local}@{our_domain}")
    }

    /// The original sender behind an SRS address, if it is ours and still valid.
    pub fn reverse(&self, address: &str) -> Result<String, SrsError> {
        let (local, _) = address.rsplit_once('@').ok_or(SrsError::NotSrs)?;
        let rest = local
            .get(..5)
            .filter(|p| p.eq_ignore_ascii_case("SRS0="))
            .map(|_| &local[5..])
            .ok_or(SrsError::NotSrs)?;
        let mut parts = rest.splitn(4, '=');
        let (Some(hash), Some(ts), Some(domain), Some(orig_local)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(SrsError::NotSrs);
        };
        let expected = match hash.len() {
            HASH_CHARS => self.hash(ts, domain, orig_local),
            LEGACY_HASH_CHARS => self.legacy_hash(ts, domain, orig_local),
            _ => return Err(SrsError::BadHash),
        };
        // Compared in constant time: the time taken must not tell how much was right.
        let same = aws_lc_rs::constant_time::verify_slices_are_equal(
            expected.as_bytes(),
            hash.to_ascii_uppercase().as_bytes(),
        )
        .is_ok();
        if !same {
            return Err(SrsError::BadHash);
        }
        let decode = |c: u8| {
            BASE32
                .iter()
                .position(|b| *b == c.to_ascii_uppercase())
                .map(|p| p as u64)
        };
        let ts_bytes = ts.as_bytes();
        let then = match ts_bytes {
            [a, b] => decode(*a)
                .zip(decode(*b))
                .map(|(a, b)| a << 5 | b)
                .ok_or(SrsError::NotSrs)?,
            _ => return Err(SrsError::NotSrs),
        };
        let age = (days_now() % 1024 + 1024 - then) % 1024;
        if age > MAX_AGE_DAYS {
            return Err(SrsError::Expired);
        }
        if hash.len() == LEGACY_HASH_CHARS {
            let issued = days_now().saturating_sub(age);
            if issued > self.legacy_until {
                return Err(SrsError::BadHash);
            }
        }
        Ok(format!("{orig_local}@{domain}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_survives_case_folding_and_rejects_forgery() {
        let srs = Srs::new(b"secret".to_vec());
        let rewritten = srs.forward("Alice@Sender.example", "forward.test");
        assert!(
            rewritten.starts_with("SRS0=") && rewritten.ends_with("@forward.test"),
            "{rewritten}"
        );
        assert_eq!(srs.reverse(&rewritten).unwrap(), "Alice@Sender.example");
        assert_eq!(
            srs.reverse(&rewritten.to_lowercase())
                .unwrap()
                .to_lowercase(),
            "alice@sender.example"
        );
        let forged = rewritten.replacen("SRS0=", "SRS0=AAAA", 1);
        assert!(srs.reverse(&forged).is_err());
        let hash = rewritten[5..].split('=').next().unwrap();
        assert_eq!(hash.len(), 8, "{rewritten}");
        assert_eq!(
            Srs::new(b"other".to_vec()).reverse(&rewritten),
            Err(SrsError::BadHash)
        );
        assert_eq!(srs.reverse("plain@forward.test"), Err(SrsError::NotSrs));
        assert_eq!(srs.forward("", "forward.test"), "");
    }

    #[test]
    fn short_hashes_are_taken_back_only_for_addresses_issued_before_the_change() {
        let srs = Srs::new(b"secret".to_vec());
        let ts = Srs::timestamp(days_now());
        let legacy = srs.legacy_hash(&ts, "sender.example", "alice");
        let address = format!("SRS0={legacy}={ts}=sender.example=alice@forward.test");
        // A server that never wrote short hashes takes none.
        assert_eq!(srs.reverse(&address), Err(SrsError::BadHash));
        let upgraded = srs.clone().accepting_legacy_until(days_now());
        assert_eq!(upgraded.reverse(&address).unwrap(), "alice@sender.example");
        let before = srs.clone().accepting_legacy_until(days_now() - 1);
        assert_eq!(before.reverse(&address), Err(SrsError::BadHash));
        // Any other length is refused.
        let seven = address.replacen(&legacy, &format!("{legacy}AAA"), 1);
        assert_eq!(upgraded.reverse(&seven), Err(SrsError::BadHash));
    }
}

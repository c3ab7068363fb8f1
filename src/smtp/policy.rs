//! Who may send what to whom: relay-syntax tricks, and a domain's allow/deny lists of
//! IPs, networks, domains and addresses.

use std::net::IpAddr;

use crate::store::records::DomainRecord;

/// Recipient syntaxes that older MTAs interpreted as relay instructions: `%`-hack,
/// `!`-paths, an `@` inside the local part, source routes. None of them is ever ours.
pub fn is_relay_trick(address: &str) -> bool {
    let (local, _) = address.rsplit_once('@').unwrap_or((address, ""));
    address.starts_with('@') || address.contains(':') || local.contains(['%', '!', '@', '"'])
}

/// How one allow/deny list entry matches a sender.
fn entry_matches(entry: &str, ip: IpAddr, sender: &str) -> bool {
    if let Ok(e) = entry.parse::<IpAddr>() {
        return e == ip;
    }
    if let Ok(net) = entry.parse::<ipnet::IpNet>() {
        return net.contains(&ip);
    }
    let entry = entry.to_ascii_lowercase();
    let sender = sender.to_ascii_lowercase();
    if entry.contains('@') {
        return sender == entry;
    }
    let domain = sender.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
    domain == entry || domain.ends_with(&format!(".{entry}"))
}

/// The domain's verdict on a sender: `Some(true)` allowlisted, `Some(false)` denied.
pub fn sender_verdict(domain: &DomainRecord, ip: IpAddr, sender: &str) -> Option<bool> {
    if domain
        .allowlist
        .iter()
        .any(|e| entry_matches(e, ip, sender))
    {
        return Some(true);
    }
    if domain.denylist.iter().any(|e| entry_matches(e, ip, sender)) {
        return Some(false);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_tricks_are_recognised() {
        for trick in [
            "user%evil.test@ours.test",
            "evil.test!user@ours.test",
            "@relay.test:user@evil.test",
            "\"a@evil.test\"@ours.test",
        ] {
            assert!(is_relay_trick(trick), "{trick}");
        }
        assert!(!is_relay_trick("hello+tag@ours.test"));
    }

    #[test]
    fn lists_match_ip_network_domain_and_address() {
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        assert!(entry_matches("192.0.2.7", ip, "a@b.test"));
        assert!(entry_matches("192.0.2.0/24", ip, "a@b.test"));
        assert!(entry_matches("b.test", ip, "a@mail.b.test"));
        assert!(entry_matches("A@B.test", ip, "a@b.test"));
        assert!(!entry_matches("c.test", ip, "a@b.test"));
    }
}

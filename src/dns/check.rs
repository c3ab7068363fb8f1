//! `dns check`: each desired record looked up live, through the spec's resolver, and
//! found ok, missing (nothing of that name and type) or wrong (something else there).

use hickory_resolver::TokioResolver;
use hickory_resolver::proto::rr::RData;

use super::rdata::{record_type, text_of};
use super::records::{Record, canonical};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Missing,
    /// What is published instead.
    Wrong(Vec<String>),
    /// The lookup itself failed (SERVFAIL, a timeout): nothing is known, in words.
    Unknown(String),
}

/// No record (or no such name) is an answer; anything else leaves the question open.
fn is_answer(e: &hickory_resolver::net::NetError) -> bool {
    e.is_no_records_found() || e.is_nx_domain()
}

/// Looks `record` up and compares. Several TXT records may share a name (SPF beside
/// site verifications): one equal to ours is enough.
pub async fn check(resolver: &TokioResolver, record: &Record) -> Verdict {
    let kind = record_type(record.kind);
    let found: Vec<String> = match resolver.lookup(format!("{}.", record.name), kind).await {
        Ok(lookup) => lookup
            .answers()
            .iter()
            .filter(|r| r.record_type() == kind)
            .map(|r| text_of(&r.data))
            .collect(),
        Err(e) if is_answer(&e) => Vec::new(),
        Err(e) => return Verdict::Unknown(super::lookup_error::explain(&e)),
    };
    if found.is_empty() {
        Verdict::Missing
    } else if found
        .iter()
        .any(|f| canonical(record.kind, f) == record.canonical_data())
    {
        Verdict::Ok
    } else {
        Verdict::Wrong(found)
    }
}

/// The reverse name of an address ("1.0.0.127.in-addr.arpa.", nibbles for IPv6).
fn arpa(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa.")
        }
        std::net::IpAddr::V6(v6) => {
            let mut out = String::new();
            for byte in v6.octets().iter().rev() {
                out.push_str(&format!("{:x}.{:x}.", byte & 0xf, byte >> 4));
            }
            out + "ip6.arpa."
        }
    }
}

/// What the server's own name looks like from outside: its addresses (the MX target must
/// have some), and for each the PTR name, which receivers expect to match (FCrDNS).
pub struct HostCheck {
    pub addresses: Vec<(std::net::IpAddr, Verdict)>,
    /// Why the addresses could not be looked up, when they could not.
    pub failed: Option<String>,
}

pub async fn host(resolver: &TokioResolver, hostname: &str) -> HostCheck {
    let hostname = hostname.trim_end_matches('.').to_ascii_lowercase();
    let ips: Vec<std::net::IpAddr> = match resolver.lookup_ip(format!("{hostname}.")).await {
        Ok(found) => found.iter().collect(),
        Err(e) if is_answer(&e) => Vec::new(),
        Err(e) => {
            return HostCheck {
                addresses: Vec::new(),
                failed: Some(super::lookup_error::explain(&e)),
            };
        }
    };
    let mut addresses = Vec::new();
    for ip in ips {
        let names: Vec<String> = match resolver.reverse_lookup(arpa(ip)).await {
            Ok(lookup) => lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::PTR(p) => {
                        Some(p.0.to_string().trim_end_matches('.').to_ascii_lowercase())
                    }
                    _ => None,
                })
                .collect(),
            Err(e) if is_answer(&e) => Vec::new(),
            Err(e) => {
                addresses.push((ip, Verdict::Unknown(super::lookup_error::explain(&e))));
                continue;
            }
        };
        let verdict = if names.is_empty() {
            Verdict::Missing
        } else if names.contains(&hostname) {
            Verdict::Ok
        } else {
            Verdict::Wrong(names)
        };
        addresses.push((ip, verdict));
    }
    HostCheck {
        addresses,
        failed: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_names() {
        assert_eq!(
            arpa("127.0.0.1".parse().unwrap()),
            "1.0.0.127.in-addr.arpa."
        );
        let v6 = arpa("2001:db8::1".parse().unwrap());
        assert!(
            v6.starts_with("1.0.0.0.") && v6.ends_with(".8.b.d.0.1.0.0.2.ip6.arpa."),
            "{v6}"
        );
    }
}

//! One forward target: an address, a host that keeps the local part, or a webhook URL.

use std::fmt;
use std::net::IpAddr;

use crate::address::{Address, normalize_domain};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error(
        "\"{0}\" is not a valid forward target (expected an address, a domain or IP, or an https:// URL)"
    )]
    Invalid(String),
    #[error("webhook \"{0}\" must use https:// (http:// is allowed only for localhost)")]
    PlainHttp(String),
}

/// Where a copy of a message goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// A full address: mail goes there.
    Address(Address),
    /// A domain name or IP literal: mail goes to the same local part at that host.
    Host(String),
    /// An HTTP(S) endpoint: the parsed message is POSTed as JSON.
    Webhook(String),
}

impl Target {
    pub fn parse(input: &str) -> Result<Target, TargetError> {
        let input = input.trim();
        let invalid = || TargetError::Invalid(input.to_string());
        let lower = input.to_ascii_lowercase();
        if lower.starts_with("https://") || lower.starts_with("http://") {
            let url = url::Url::parse(input).map_err(|_| invalid())?;
            let host = url.host_str().ok_or_else(invalid)?;
            if url.scheme() == "http" && !is_loopback(host) {
                return Err(TargetError::PlainHttp(input.to_string()));
            }
            return Ok(Target::Webhook(url.to_string()));
        }
        if input.contains("://") {
            return Err(invalid());
        }
        if input.contains('@') {
            return Address::parse(input)
                .map(Target::Address)
                .map_err(|_| invalid());
        }
        let bare = input.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(Target::Host(format!("[{ip}]")));
        }
        normalize_domain(input)
            .map(Target::Host)
            .map_err(|_| invalid())
    }

    /// The target for one recipient: a host target takes the recipient's local part; an
    /// address target takes the +tag when it has none of its own.
    pub fn for_recipient(&self, local: &str, tag: Option<&str>) -> Target {
        match (self, tag) {
            (Target::Host(host), _) => Target::Address(Address {
                local: local.to_string(),
                domain: host.clone(),
            }),
            (Target::Address(a), Some(tag)) if !a.local.contains('+') => Target::Address(Address {
                local: format!("{}+{tag}", a.local),
                domain: a.domain.clone(),
            }),
            (t, _) => t.clone(),
        }
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Address(a) => write!(f, "{a}"),
            Target::Host(h) | Target::Webhook(h) => f.write_str(h),
        }
    }
}

/// Replaces `$1`, `${name}` placeholders with a neutral letter so a pattern's target
/// template can be checked before any capture exists. Returns the group references used.
pub fn expand_placeholders_for_check(template: &str) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut groups = Vec::new();
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let mut name = String::new();
        if chars.peek() == Some(&'{') {
            chars.next();
            for c in chars.by_ref() {
                if c == '}' {
                    break;
                }
                name.push(c);
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_ascii_alphanumeric() || c == '_' {
                    name.push(c);
                    chars.next();
                } else {
                    break;
                }
            }
        }
        if name.is_empty() {
            out.push('$');
        } else {
            groups.push(name);
            out.push('x');
        }
    }
    (out, groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_kinds_of_target() {
        assert!(
            matches!(Target::parse("User@Gmail.com"), Ok(Target::Address(a)) if a.to_string() == "user@gmail.com")
        );
        assert_eq!(
            Target::parse("Elsewhere.NET").unwrap(),
            Target::Host("elsewhere.net".into())
        );
        assert_eq!(
            Target::parse("192.0.2.7").unwrap(),
            Target::Host("[192.0.2.7]".into())
        );
        assert!(matches!(
            Target::parse("https://hooks.example.net/mail"),
            Ok(Target::Webhook(_))
        ));
        assert!(matches!(
            Target::parse("http://hooks.example.net/"),
            Err(TargetError::PlainHttp(_))
        ));
        assert!(Target::parse("http://127.0.0.1:8080/hook").is_ok());
        assert!(Target::parse("ftp://x.com").is_err());
        assert!(Target::parse("not an address").is_err());
    }

    #[test]
    fn host_targets_keep_the_local_part_and_tags_carry_over() {
        let host = Target::parse("elsewhere.net").unwrap();
        assert_eq!(
            host.for_recipient("hello+x", Some("x")).to_string(),
            "hello+x@elsewhere.net"
        );
        let addr = Target::parse("user@gmail.com").unwrap();
        assert_eq!(
            addr.for_recipient("hello", Some("x")).to_string(),
            "user+x@gmail.com"
        );
        assert_eq!(
            addr.for_recipient("hello", None).to_string(),
            "user@gmail.com"
        );
    }

    #[test]
    fn placeholders_are_found() {
        let (s, g) = expand_placeholders_for_check("tickets+$1@help.net/${name}");
        assert_eq!(s, "tickets+x@help.net/x");
        assert_eq!(g, vec!["1", "name"]);
    }
}

//! A domain's MTA-STS policy file (RFC 8461 §3.2) as a sender reads it, and which MX
//! hosts it allows (§4.1).

use std::fmt;

/// What a policy asks of senders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Deliver only to a listed MX, over TLS with a certificate valid for its name.
    Enforce,
    /// Deliver as before; failures are only reported.
    Testing,
    /// The domain withdrew its policy.
    None,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Enforce => "enforce",
            Mode::Testing => "testing",
            Mode::None => "none",
        })
    }
}

/// A parsed policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub mode: Mode,
    /// MX patterns, lower case: a name, or "*." and a name for one label more.
    pub mx: Vec<String>,
    /// Seconds the policy may be cached (at most a year, RFC 8461 §3.2).
    pub max_age: u64,
}

/// Why a policy file was refused (reported as `sts-policy-invalid`, RFC 8460).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("the policy is not UTF-8 text")]
    NotText,
    #[error("the policy has no \"version: STSv1\"")]
    Version,
    #[error("the policy's mode {0:?} is not enforce, testing or none")]
    Mode(String),
    #[error("the policy has no mode")]
    NoMode,
    #[error("the policy's max_age {0:?} is not a number of seconds up to 31557600")]
    MaxAge(String),
    #[error("the policy has no max_age")]
    NoMaxAge,
    #[error("the policy's mx {0:?} is not a host name or *.name")]
    Mx(String),
    #[error("the policy lists no mx, which only mode none may")]
    NoMx,
}

/// RFC 8461 §3.2: at most 31557600 seconds (about a year).
const MAX_AGE_LIMIT: u64 = 31_557_600;

impl Policy {
    /// Reads a policy file: "key: value" lines ended by CRLF or LF; "mx" may repeat, any
    /// other known key counts the first time, unknown keys are ignored (§3.2).
    pub fn parse(body: &[u8]) -> Result<Policy, PolicyError> {
        let text = std::str::from_utf8(body).map_err(|_| PolicyError::NotText)?;
        let (mut version, mut mode, mut max_age) = (None, None, None);
        let mut mx = Vec::new();
        for line in text.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim_matches([' ', '\t']);
            match key {
                "version" => {
                    version.get_or_insert(value);
                }
                "mode" => {
                    mode.get_or_insert(value);
                }
                "max_age" => {
                    max_age.get_or_insert(value);
                }
                "mx" => mx.push(value),
                _ => {}
            }
        }
        if version != Some("STSv1") {
            return Err(PolicyError::Version);
        }
        let mode = match mode {
            Some("enforce") => Mode::Enforce,
            Some("testing") => Mode::Testing,
            Some("none") => Mode::None,
            Some(other) => return Err(PolicyError::Mode(other.to_string())),
            None => return Err(PolicyError::NoMode),
        };
        let max_age = match max_age {
            // 1*10DIGIT: a sign or anything else is refused.
            Some(v) if !v.is_empty() && v.len() <= 10 && v.bytes().all(|b| b.is_ascii_digit()) => v
                .parse::<u64>()
                .ok()
                .filter(|&n| n <= MAX_AGE_LIMIT)
                .ok_or_else(|| PolicyError::MaxAge(v.to_string()))?,
            Some(v) => return Err(PolicyError::MaxAge(v.to_string())),
            None => return Err(PolicyError::NoMaxAge),
        };
        let mx = mx
            .into_iter()
            .map(|pattern| {
                let lower = pattern.trim_end_matches('.').to_ascii_lowercase();
                let name = lower.strip_prefix("*.").unwrap_or(&lower);
                if is_host_name(name) {
                    Ok(lower)
                } else {
                    Err(PolicyError::Mx(pattern.to_string()))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        if mx.is_empty() && mode != Mode::None {
            return Err(PolicyError::NoMx);
        }
        Ok(Policy { mode, mx, max_age })
    }

    /// Whether `host` (an MX name, any case, with or without the final dot) is one the
    /// policy lists: exactly, or as one label more than a "*." pattern (§4.1).
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.mx
            .iter()
            .any(|pattern| match pattern.strip_prefix("*.") {
                Some(parent) => host
                    .split_once('.')
                    .is_some_and(|(first, rest)| !first.is_empty() && rest == parent),
                None => *pattern == host,
            })
    }
}

/// Letters, digits and hyphens in dot-separated labels of 1–63, two labels at least,
/// the last not all digits: a DNS name, never an address (§4.2 checks a DNS-ID).
fn is_host_name(name: &str) -> bool {
    name.len() <= 253
        && name.contains('.')
        && !name
            .rsplit('.')
            .next()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rfc_example_reads_as_written() {
        // RFC 8461 §3.2, verbatim.
        let body = b"version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.example.net\nmx: backupmx.example.com\nmax_age: 604800\n";
        let p = Policy::parse(body).expect("the RFC's example");
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.max_age, 604_800);
        assert_eq!(
            p.mx,
            ["mail.example.com", "*.example.net", "backupmx.example.com"]
        );
        assert!(p.allows("mail.example.com"));
        assert!(p.allows("MAIL.Example.COM."));
        assert!(p.allows("mx1.example.net"));
        // A wildcard stands for one label, never for none or two (§4.1).
        assert!(!p.allows("example.net"));
        assert!(!p.allows("a.b.example.net"));
        assert!(!p.allows("mail.example.org"));
        assert!(!p.allows("xmail.example.com"));
    }

    #[test]
    fn crlf_extra_space_unknown_keys_and_repeated_fields() {
        let body = b"version: STSv1\r\nmode:\ttesting\r\nfuture: 1\r\nmx:   mx.example.org.  \r\nmode: enforce\r\nmax_age: 86400\r\nmax_age: 1\r\n";
        let p = Policy::parse(body).expect("valid");
        // The first mode and max_age count; the mx loses its dot and the spaces.
        assert_eq!(p.mode, Mode::Testing);
        assert_eq!(p.max_age, 86_400);
        assert_eq!(p.mx, ["mx.example.org"]);
    }

    #[test]
    fn what_is_refused() {
        let cases: &[(&[u8], PolicyError)] = &[
            (
                b"mode: enforce\nmx: a.b\nmax_age: 1\n",
                PolicyError::Version,
            ),
            (
                b"version: STSv2\nmode: enforce\nmx: a.b\nmax_age: 1\n",
                PolicyError::Version,
            ),
            (
                b"version: STSv1\nmx: a.b\nmax_age: 1\n",
                PolicyError::NoMode,
            ),
            (
                b"version: STSv1\nmode: strict\nmx: a.b\nmax_age: 1\n",
                PolicyError::Mode("strict".into()),
            ),
            (
                b"version: STSv1\nmode: enforce\nmx: a.b\n",
                PolicyError::NoMaxAge,
            ),
            (
                b"version: STSv1\nmode: enforce\nmx: a.b\nmax_age: 31557601\n",
                PolicyError::MaxAge("31557601".into()),
            ),
            (
                b"version: STSv1\nmode: enforce\nmx: a.b\nmax_age: -1\n",
                PolicyError::MaxAge("-1".into()),
            ),
            (
                b"version: STSv1\nmode: enforce\nmx: a.b\nmax_age: 99999999999999999999\n",
                PolicyError::MaxAge("99999999999999999999".into()),
            ),
            (
                b"version: STSv1\nmode: enforce\nmax_age: 1\n",
                PolicyError::NoMx,
            ),
            (
                b"version: STSv1\nmode: enforce\nmx: *.*.example.com\nmax_age: 1\n",
                PolicyError::Mx("*.*.example.com".into()),
            ),
            (
                b"version: STSv1\nmode: enforce\nmx: localhost\nmax_age: 1\n",
                PolicyError::Mx("localhost".into()),
            ),
            (b"version: STSv1\xff\n", PolicyError::NotText),
        ];
        for (body, want) in cases {
            assert_eq!(
                Policy::parse(body).as_ref(),
                Err(want),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // Mode none needs no mx: it is how a domain withdraws its policy.
        let none = Policy::parse(b"version: STSv1\nmode: none\nmax_age: 86400\n").expect("valid");
        assert_eq!(none.mode, Mode::None);
    }

    #[test]
    fn the_largest_policy_accepted_is_read_whole() {
        // 64 KB of mx lines (all a fetch lets through): every one of them counts.
        let mut many = b"version: STSv1\nmode: enforce\nmax_age: 1\n".to_vec();
        let mut i = 0;
        while many.len() < crate::queue::tls_policy::MAX_POLICY_BYTES - 32 {
            many.extend(format!("mx: mx{i}.example.com\n").as_bytes());
            i += 1;
        }
        let p = Policy::parse(&many).expect("valid");
        assert_eq!(p.mx.len(), i);
        assert!(p.allows(&format!("mx{}.example.com", i - 1)));
        // An address is no MX name for a policy.
        assert_eq!(
            Policy::parse(b"version: STSv1\nmode: enforce\nmx: 192.0.2.1\nmax_age: 1\n"),
            Err(PolicyError::Mx("192.0.2.1".into()))
        );
    }
}

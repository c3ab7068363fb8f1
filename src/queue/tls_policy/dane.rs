//! DANE for outbound SMTP (RFC 7672): which MX hosts publish DNSSEC-signed TLSA records,
//! and so must be reached over TLS with a certificate those records name.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::dnssec::Proof;
use hickory_resolver::proto::rr::{RData, Record, RecordType};

use crate::dns::dnssec::Validating;

/// How long a probe's verdict on DNSSEC stands: a working validator is checked hourly,
/// a broken one every few minutes (so DANE comes back soon after the resolver is fixed).
const PROBE_GOOD: Duration = Duration::from_secs(3600);
const PROBE_BAD: Duration = Duration::from_secs(300);

/// DANE's lookups, through a resolver that validates DNSSEC itself.
pub struct Dane {
    validating: Validating,
    probe: Mutex<Option<(Instant, bool)>>,
}

/// Why DANE cannot say whether a host needs it: the delivery to that host waits.
#[derive(Debug, thiserror::Error)]
pub enum DaneError {
    #[error("the {what} failed DNSSEC validation (bogus)")]
    Bogus { what: String },
    #[error("looking up the {what}: {why}")]
    Lookup { what: String, why: String },
}

impl DaneError {
    fn of(e: &NetError, what: String) -> DaneError {
        match e {
            NetError::Dns(DnsError::DnssecBogus) => DaneError::Bogus { what },
            _ => DaneError::Lookup {
                what,
                why: crate::dns::lookup_error::explain(e),
            },
        }
    }

    /// Whether DNSSEC said no (RFC 8460's "dnssec-invalid"), not a server that failed.
    pub fn is_bogus(&self) -> bool {
        matches!(self, DaneError::Bogus { .. })
    }
}

/// One TLSA record (RFC 6698 §2.1): what it matches, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tlsa {
    pub usage: u8,
    pub selector: u8,
    pub matching: u8,
    pub data: Vec<u8>,
}

impl Tlsa {
    /// RFC 7672 §3.1: only DANE-TA(2) and DANE-EE(3) mean anything for SMTP, with a
    /// full certificate or public key (selector 0, 1), as is or hashed (matching 0, 1, 2).
    pub fn usable(&self) -> bool {
        matches!(self.usage, 2 | 3) && self.selector <= 1 && self.matching <= 2
    }
}

impl std::fmt::Display for Tlsa {
    /// Presentation form, as TLS reports quote a policy: "3 1 1 ab12…".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {} ", self.usage, self.selector, self.matching)?;
        for b in &self.data {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A host's signed TLSA records. None usable still means TLS is required, unauthenticated
/// (RFC 7672 §2.2: they say the host does TLS, only not how to check it).
#[derive(Debug, Clone, Default)]
pub struct TlsaSet {
    pub records: Vec<Tlsa>,
}

impl TlsaSet {
    pub fn usable(&self) -> Vec<Tlsa> {
        self.records
            .iter()
            .filter(|r| r.usable())
            .cloned()
            .collect()
    }

    /// The records as TLS reports quote them, one per line.
    pub fn text(&self) -> String {
        self.records
            .iter()
            .map(Tlsa::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Whether every record of an answer was proven by DNSSEC (an empty answer is not).
pub fn all_secure(records: &[Record]) -> bool {
    !records.is_empty() && records.iter().all(|r| r.proof == Proof::Secure)
}

impl Dane {
    pub fn new(validating: Validating) -> Dane {
        Dane {
            validating,
            probe: Mutex::new(None),
        }
    }

    /// The validating resolver, for the MX and address lookups DANE depends on.
    pub fn resolver(&self) -> &TokioResolver {
        &self.validating.resolver
    }

    /// Whether validation works through this resolver at all: the trust anchors' own
    /// DNSKEY records validate (as Postfix's dnssec_probe asks). A resolver that strips
    /// signatures would make every answer bogus; then DANE is set aside, with a warning,
    /// rather than every delivery held.
    pub async fn working(&self) -> bool {
        if let Some((at, verdict)) = *self.probe.lock().unwrap_or_else(|p| p.into_inner()) {
            let valid_for = if verdict { PROBE_GOOD } else { PROBE_BAD };
            if at.elapsed() < valid_for {
                return verdict;
            }
        }
        let mut why = String::new();
        for anchor in &self.validating.anchors {
            match self
                .validating
                .resolver
                .lookup(anchor.clone(), RecordType::DNSKEY)
                .await
            {
                Ok(found) if all_secure(found.answers()) => {
                    why.clear();
                    break;
                }
                Ok(_) => why = format!("the DNSKEY records of {anchor} do not validate"),
                Err(e) => {
                    why = format!(
                        "looking up the DNSKEY records of {anchor}: {}",
                        crate::dns::lookup_error::explain(&e)
                    )
                }
            }
        }
        let verdict = why.is_empty();
        let before = self
            .probe
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace((Instant::now(), verdict));
        if !verdict && before.is_none_or(|(_, was)| was) {
            tracing::warn!(
                problem = why,
                "DNSSEC cannot be checked through this resolver: DANE (RFC 7672) is not applied until it can"
            );
        } else if verdict && before.is_some_and(|(_, was)| !was) {
            tracing::info!("DNSSEC can be checked again: DANE is applied");
        }
        verdict
    }

    /// The signed TLSA records of `host`'s SMTP port, if it publishes any. Only asked for
    /// a host whose name and addresses DNSSEC proved (RFC 7672 §2.2.2).
    pub async fn tlsa(&self, host: &str, port: u16) -> Result<Option<TlsaSet>, DaneError> {
        let name = format!("_{port}._tcp.{host}.");
        match self
            .validating
            .resolver
            .lookup(name.as_str(), RecordType::TLSA)
            .await
        {
            Ok(found) => {
                let answers = found.answers();
                let tlsa: Vec<&Record> = answers
                    .iter()
                    .filter(|r| r.record_type() == RecordType::TLSA)
                    .collect();
                if tlsa.is_empty() || !answers.iter().all(|r| r.proof == Proof::Secure) {
                    return Ok(None);
                }
                let records = tlsa
                    .into_iter()
                    .filter_map(|r| match &r.data {
                        RData::TLSA(t) => Some(Tlsa {
                            usage: t.cert_usage.into(),
                            selector: t.selector.into(),
                            matching: t.matching.into(),
                            data: t.cert_data.clone(),
                        }),
                        _ => None,
                    })
                    .collect();
                Ok(Some(TlsaSet { records }))
            }
            Err(e) if crate::dns::lookup_error::absent(&e).is_some() => Ok(None),
            Err(e) => Err(DaneError::of(&e, format!("TLSA records of {name}"))),
        }
    }
}

/// A failed validating lookup (other than "no such record") as DANE's error.
pub fn lookup_failed(e: &NetError, what: String) -> DaneError {
    DaneError::of(e, what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dane_ta_and_ee_are_usable_for_smtp() {
        let r = |usage, selector, matching| Tlsa {
            usage,
            selector,
            matching,
            data: vec![0xab, 0x01],
        };
        assert!(r(3, 1, 1).usable());
        assert!(r(2, 0, 2).usable());
        assert!(r(3, 0, 0).usable());
        // PKIX-TA/PKIX-EE (RFC 7672 §3.1.3), unknown selectors and matching types.
        assert!(!r(0, 0, 1).usable());
        assert!(!r(1, 1, 1).usable());
        assert!(!r(3, 2, 1).usable());
        assert!(!r(3, 1, 3).usable());
        assert_eq!(r(3, 1, 1).to_string(), "3 1 1 ab01");
    }
}

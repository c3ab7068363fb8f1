//! DANE for outbound SMTP (RFC 7672): which MX hosts publish DNSSEC-signed TLSA records,
//! and so must be reached over TLS with a certificate those records name.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::dnssec::Proof;
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};

use crate::dns::dnssec::Validating;

/// How long a probe's verdict on DNSSEC stands: a working validator is checked hourly,
/// a broken one every few minutes (so DANE comes back soon after the resolver is fixed).
const PROBE_GOOD: Duration = Duration::from_secs(3600);
const PROBE_BAD: Duration = Duration::from_secs(300);

/// DANE's lookups, through a resolver that validates DNSSEC itself.
pub struct Dane {
    validating: Validating,
    probe: Mutex<Probe>,
}

#[derive(Default)]
struct Probe {
    /// When it last ran, and what it concluded.
    last: Option<(Instant, Verdict)>,
    /// Whether validation has worked since the server started.
    ever_worked: bool,
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
    /// A failed validating lookup (other than "no such record") as DANE's error.
    pub fn of(e: &NetError, what: String) -> DaneError {
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
    /// A digest of the wrong length can match nothing: such a record is unusable, not a
    /// reason to hold mail for ever.
    pub fn usable(&self) -> bool {
        let length_ok = match self.matching {
            0 => !self.data.is_empty(),
            1 => self.data.len() == 32,
            2 => self.data.len() == 64,
            _ => false,
        };
        matches!(self.usage, 2 | 3) && self.selector <= 1 && length_ok
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
    /// The CNAME target of the MX host the records were found at, when they were: a
    /// DANE-TA certificate may be valid for it instead of the MX name (RFC 7672 §3.2.2).
    pub target: Option<String>,
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

/// The records of an answer that answer the question: those of `types` at the name asked,
/// after any CNAMEs; and whether DNSSEC proved each of them and every CNAME on the way.
/// RRSIGs, and records at other names (which a forger can append, signed in a zone of
/// their own), are left out.
pub struct Answer<'a> {
    /// The name the records are at: the one asked, or the end of its CNAME chain.
    pub name: Name,
    pub records: Vec<&'a Record>,
    pub secure: bool,
}

/// CNAMEs followed at most (RFC 1034 asks resolvers to bound chains; 8 is what they do).
const MAX_CNAMES: usize = 8;

pub fn answer<'a>(answers: &'a [Record], asked: &Name, types: &[RecordType]) -> Answer<'a> {
    let mut name = asked.clone();
    let mut secure = true;
    for _ in 0..MAX_CNAMES {
        let Some(cname) = answers
            .iter()
            .find(|r| r.record_type() == RecordType::CNAME && r.name == name)
        else {
            break;
        };
        let RData::CNAME(target) = &cname.data else {
            break;
        };
        secure &= cname.proof == Proof::Secure;
        name = target.0.clone();
    }
    let records: Vec<&Record> = answers
        .iter()
        .filter(|r| types.contains(&r.record_type()) && r.name == name)
        .collect();
    secure &= !records.is_empty() && records.iter().all(|r| r.proof == Proof::Secure);
    Answer {
        name,
        records,
        secure,
    }
}

/// A host or domain name as DNS asks for it (fully qualified, IDNA A-labels).
pub fn fqdn(name: &str) -> Option<Name> {
    let mut name = Name::from_utf8(name.trim_end_matches('.')).ok()?;
    name.set_fqdn(true);
    Some(name)
}

/// Whether DANE is applied to the deliveries starting now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Apply,
    /// This resolver never let DNSSEC be checked: as without DANE (and warned).
    SetAside,
    /// It did, and now does not: what an attacker stripping signatures would cause, so
    /// deliveries wait rather than go without DANE.
    Wait(String),
}

impl Dane {
    pub fn new(validating: Validating) -> Dane {
        Dane {
            validating,
            probe: Mutex::new(Probe::default()),
        }
    }

    /// The validating resolver, for the MX and address lookups DANE depends on.
    pub fn resolver(&self) -> &TokioResolver {
        &self.validating.resolver
    }

    /// Whether validation works through this resolver at all: the trust anchors' own
    /// DNSKEY records validate (as Postfix's dnssec_probe asks). A resolver that never
    /// passes signatures would make every answer bogus: then DANE is set aside, with a
    /// warning, rather than every delivery held. Once it has worked, a failing probe holds
    /// deliveries instead, so an attacker cannot switch DANE off by spoiling the probe.
    pub async fn working(&self) -> Verdict {
        {
            let probe = self.probe.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, verdict)) = &probe.last {
                let valid_for = if *verdict == Verdict::Apply {
                    PROBE_GOOD
                } else {
                    PROBE_BAD
                };
                if at.elapsed() < valid_for {
                    return verdict.clone();
                }
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
                Ok(found) if answer(found.answers(), anchor, &[RecordType::DNSKEY]).secure => {
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
        let mut probe = self.probe.lock().unwrap_or_else(|p| p.into_inner());
        let before = probe.last.as_ref().map(|(_, v)| v.clone());
        let verdict = if why.is_empty() {
            probe.ever_worked = true;
            Verdict::Apply
        } else if probe.ever_worked {
            Verdict::Wait(format!(
                "DNSSEC could be checked through this resolver and now cannot ({why}): mail waits rather than go without DANE"
            ))
        } else {
            Verdict::SetAside
        };
        if before.as_ref() != Some(&verdict) {
            match &verdict {
                Verdict::Apply if before.is_some() => {
                    tracing::info!("DNSSEC can be checked again: DANE is applied")
                }
                Verdict::Apply => {}
                Verdict::SetAside => tracing::warn!(
                    problem = why,
                    "DNSSEC cannot be checked through this resolver: DANE (RFC 7672) is not applied until it can"
                ),
                Verdict::Wait(why) => tracing::warn!("{why}"),
            }
        }
        probe.last = Some((Instant::now(), verdict.clone()));
        verdict
    }

    /// The signed TLSA records of `host`'s SMTP port, if it publishes any. Only asked for
    /// a host whose name and addresses DNSSEC proved (RFC 7672 §2.2.2).
    pub async fn tlsa(&self, host: &str, port: u16) -> Result<Option<TlsaSet>, DaneError> {
        let name = format!("_{port}._tcp.{}", host.trim_end_matches('.'));
        let Some(asked) = fqdn(&name) else {
            return Ok(None);
        };
        match self
            .validating
            .resolver
            .lookup(asked.clone(), RecordType::TLSA)
            .await
        {
            Ok(found) => {
                let tlsa = answer(found.answers(), &asked, &[RecordType::TLSA]);
                if !tlsa.secure {
                    return Ok(None);
                }
                let records = tlsa
                    .records
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
                Ok(Some(TlsaSet {
                    records,
                    target: None,
                }))
            }
            Err(e) if crate::dns::lookup_error::absent(&e).is_some() => Ok(None),
            Err(e) => Err(DaneError::of(&e, format!("TLSA records of {name}"))),
        }
    }
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
            data: vec![0xab; [3, 32, 64, 32][usize::from(matching.min(3))]],
        };
        assert!(r(3, 1, 1).usable());
        assert!(r(2, 0, 2).usable());
        assert!(r(3, 0, 0).usable());
        // PKIX-TA/PKIX-EE (RFC 7672 §3.1.3), unknown selectors and matching types.
        assert!(!r(0, 0, 1).usable());
        assert!(!r(1, 1, 1).usable());
        assert!(!r(3, 2, 1).usable());
        assert!(!r(3, 1, 3).usable());
        // A digest of the wrong length names nothing.
        let short = Tlsa {
            data: vec![0xab; 31],
            ..r(3, 1, 1)
        };
        assert!(!short.usable());
        assert_eq!(r(3, 0, 0).to_string(), "3 0 0 ababab");
    }

    fn record(name: &str, data: RData, proof: Proof) -> Record {
        let mut r = Record::from_rdata(fqdn(name).unwrap(), 60, data);
        r.proof = proof;
        r
    }

    fn tlsa(byte: u8) -> RData {
        use hickory_resolver::proto::rr::rdata::tlsa::{CertUsage, Matching, Selector};
        RData::TLSA(hickory_resolver::proto::rr::rdata::TLSA::new(
            CertUsage::DaneEe,
            Selector::Spki,
            Matching::Sha256,
            vec![byte; 32],
        ))
    }

    #[test]
    fn an_answer_is_the_records_at_the_name_asked_all_proven() {
        use hickory_resolver::proto::rr::rdata::CNAME;
        let asked = fqdn("_25._tcp.mx.example.test").unwrap();
        // A forger's own signed set, appended, is not part of the answer.
        let answers = vec![
            record("_25._tcp.mx.example.test", tlsa(1), Proof::Secure),
            record("_25._tcp.mx.evil.test", tlsa(2), Proof::Secure),
        ];
        let found = answer(&answers, &asked, &[RecordType::TLSA]);
        assert!(found.secure);
        assert_eq!(found.records.len(), 1);
        assert_eq!(found.records[0].data, tlsa(1));
        // One unproven record of the set makes it insecure; other types do not count.
        let mut with_insecure = answers.clone();
        with_insecure.push(record(
            "_25._tcp.mx.example.test",
            tlsa(3),
            Proof::Indeterminate,
        ));
        assert!(!answer(&with_insecure, &asked, &[RecordType::TLSA]).secure);
        // A CNAME chain is followed, and must be proven too.
        let chain = |proof| {
            vec![
                record(
                    "_25._tcp.mx.example.test",
                    RData::CNAME(CNAME(fqdn("tlsa.example.net").unwrap())),
                    proof,
                ),
                record("tlsa.example.net", tlsa(4), Proof::Secure),
            ]
        };
        let secure_chain = chain(Proof::Secure);
        let found = answer(&secure_chain, &asked, &[RecordType::TLSA]);
        assert!(found.secure);
        assert_eq!(found.name, fqdn("tlsa.example.net").unwrap());
        let insecure_chain = chain(Proof::Insecure);
        assert!(!answer(&insecure_chain, &asked, &[RecordType::TLSA]).secure);
        // Nothing is not secure.
        assert!(!answer(&[], &asked, &[RecordType::TLSA]).secure);
    }
}

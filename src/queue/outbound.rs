//! Hands a message to the next MTA: the spec's relay (smarthost) or the recipient
//! domain's MX hosts in preference order, with STARTTLS whenever the peer offers it, and
//! only over verified TLS to a listed MX when the domain's MTA-STS policy enforces it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::rr::RecordType;
use mail_send::SmtpClient;
use mail_send::smtp::AssertReply;
use mail_send::smtp::message::Parameters;
use smtp_proto::{
    EXT_8BIT_MIME, EXT_DSN, EXT_REQUIRE_TLS, EXT_SIZE, EXT_SMTP_UTF8, EXT_START_TLS,
    RCPT_NOTIFY_DELAY, RCPT_NOTIFY_FAILURE, RCPT_NOTIFY_NEVER, RCPT_NOTIFY_SUCCESS,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::tls_policy::dane::{Dane, TlsaSet, Verdict, answer, fqdn};
use super::tls_policy::require_tls::TlsRequest;
use super::tls_policy::tally::{Outcome, SessionKey, Tally};
use super::tls_policy::{Active, Mode, TlsPolicies};
use crate::dns::lookup_error::{Absent, absent};
use crate::mime::downgrade::{Cannot, Shape};

/// Why a delivery attempt failed, and whether trying again can help.
#[derive(Debug, Clone)]
pub struct DeliveryError {
    pub permanent: bool,
    pub message: String,
}

impl DeliveryError {
    pub fn temporary(message: impl Into<String>) -> Self {
        DeliveryError {
            permanent: false,
            message: message.into(),
        }
    }
}

impl From<mail_send::Error> for DeliveryError {
    fn from(e: mail_send::Error) -> Self {
        // A 5xx reply is final; anything else (network, 4xx, TLS) is worth a retry.
        match &e {
            // Quoted as the server said it, e.g. "550 5.1.1 No such user": the form
            // bounces and `queue list` show.
            mail_send::Error::UnexpectedReply(r) => DeliveryError {
                permanent: r.severity() == smtp_proto::Severity::PermanentNegativeCompletion,
                message: quoted(r),
            },
            _ => DeliveryError::temporary(e.to_string()),
        }
    }
}

/// A reply as the server said it, on one line: "250 2.0.0 Ok: queued as 4XyZ".
fn quoted(r: &smtp_proto::Response<String>) -> String {
    let [a, b, c] = r.esc;
    let status = if a == 0 {
        String::new()
    } else {
        format!(" {a}.{b}.{c}")
    };
    format!(
        "{}{status} {}",
        r.code,
        r.message.replace(['\r', '\n'], " ")
    )
}

/// A message the next hop took.
#[derive(Debug, Clone)]
pub struct Handed {
    /// Whether the sender's DSN request went along (the next hop then reports on it).
    pub dsn_passed_on: bool,
    /// Who took it and what it answered, for the mail log: the proof a sender asks for.
    pub reply: String,
}

pub struct Outbound {
    hostname: String,
    relay: Option<String>,
    resolver: Option<TokioResolver>,
    timeout: Duration,
    policies: Option<Arc<TlsPolicies>>,
    dane: Option<Arc<Dane>>,
    tally: Option<Arc<Tally>>,
}

impl Outbound {
    /// `relay` is "host:port"; without it mail goes to the recipients' MX hosts.
    pub fn new(
        hostname: String,
        relay: Option<String>,
        resolver: Option<TokioResolver>,
    ) -> Outbound {
        Outbound {
            hostname,
            relay,
            resolver,
            timeout: Duration::from_secs(120),
            policies: None,
            dane: None,
            tally: None,
        }
    }

    /// Honours MTA-STS policies: the recipient domain's, or the relay's when mail goes
    /// through a relay named by its host name (RFC 8461 §3.4).
    pub fn with_policies(mut self, policies: Arc<TlsPolicies>) -> Outbound {
        self.policies = Some(policies);
        self
    }

    /// Honours DANE (RFC 7672): an MX host whose DNSSEC-signed TLSA records name its
    /// certificate is reached only over TLS with that certificate.
    pub fn with_dane(mut self, dane: Arc<Dane>) -> Outbound {
        self.dane = Some(dane);
        self
    }

    /// Counts how each TLS session went, per policy domain and day (for TLS reports).
    pub fn with_tally(mut self, tally: Arc<Tally>) -> Outbound {
        self.tally = Some(tally);
        self
    }

    /// The smarthost every message goes to, if one is set.
    pub fn relay(&self) -> Option<&str> {
        self.relay.as_deref()
    }

    /// Delivers a message from `from` to `to` (all at one domain), in the copy the next
    /// hop takes, with the sender's DSN request when there is one, and TLS as the sender
    /// asked (RFC 8689).
    pub async fn send(
        &self,
        from: &str,
        to: &[String],
        copies: Copies<'_>,
        dsn: Option<DsnRequest<'_>>,
        tls: TlsRequest,
    ) -> Result<Handed, DeliveryError> {
        // `TLS-Required: No`: the sender would rather the message went than waited for
        // the receiver's policies (RFC 8689 §5); STARTTLS is still used where offered.
        let policies = policies_apply(tls);
        let required = tls == TlsRequest::Required;
        let (hosts, policy_domain, dane) = match &self.relay {
            // A relay named by an address has no policy to look up.
            Some(relay) => {
                let name = host_name(relay)
                    .trim_start_matches('[')
                    .trim_end_matches(']');
                let named = name.parse::<IpAddr>().is_err() && name != "localhost";
                (vec![relay.clone()], named.then_some(name), None)
            }
            None => {
                let dane = match &self.dane {
                    Some(dane) if policies => match dane.working().await {
                        Verdict::Apply => Some(dane.as_ref()),
                        Verdict::SetAside => None,
                        Verdict::Wait(why) => return Err(DeliveryError::temporary(why)),
                    },
                    _ => None,
                };
                let (hosts, secure) = self.mx_hosts(to, dane).await?;
                // RFC 7672 §2.2.1: DANE only for MX hosts DNSSEC vouches for.
                (hosts, Some(domain_of(to)), dane.filter(|_| secure))
            }
        };
        // Spelled once as policies and reports key it (lower-case A-labels).
        let policy_domain = policy_domain.and_then(super::tls_policy::policy_domain);
        let policy_domain = policy_domain.as_deref();
        let (policy, policy_unknown) = match (&self.policies, policy_domain) {
            (Some(policies), Some(domain)) if policies_apply(tls) => {
                let found = policies.for_domain(domain).await;
                if let Some(problem) = &found.problem {
                    tracing::warn!(domain, problem = problem.why, "MTA-STS");
                    if let (Some(tally), Some(outcome)) = (&self.tally, problem.outcome) {
                        tally.count(SessionKey {
                            day: super::tls_policy::tally::today(),
                            domain: domain.to_string(),
                            policy_type: "sts".into(),
                            policy: String::new(),
                            mx_host: String::new(),
                            receiving_ip: String::new(),
                            sending_ip: String::new(),
                            outcome,
                        });
                    }
                }
                (found.policy, found.problem.map(|p| p.why))
            }
            _ => (None, None),
        };
        // RFC 8461 §4.1: under enforce, an MX the policy does not list is not used. Where
        // DNSSEC vouches for the MX hosts, one with TLSA records is DANE's to judge (RFC
        // 8461 §2), so each host is judged as it is tried (send_to).
        let hosts = match policy.as_deref() {
            Some(p) if p.policy.mode == Mode::Enforce && dane.is_none() => {
                let (listed, unlisted): (Vec<String>, Vec<String>) = hosts
                    .into_iter()
                    .partition(|h| p.policy.allows(host_name(h)));
                if listed.is_empty() {
                    return Err(DeliveryError::temporary(format!(
                        "no MX host of {} ({}) is one its MTA-STS policy (enforce, id {}) lists: {}",
                        p.domain,
                        few(unlisted.iter().map(|h| host_name(h))),
                        p.id,
                        few(p.policy.mx.iter().map(String::as_str))
                    )));
                }
                listed
            }
            _ => hosts,
        };
        // RFC 8689 §4.2.1: REQUIRETLS mail goes only to an MX host that DNSSEC or an
        // MTA-STS policy vouches for (a relay the spec names is vouched for by it).
        if required && self.relay.is_none() && dane.is_none() && policy.is_none() {
            // A policy that could not be had this time (its lookup or fetch failed) may
            // vouch next time: the message waits rather than bounces.
            if let Some(why) = policy_unknown {
                return Err(DeliveryError::temporary(format!(
                    "the message asks for REQUIRETLS, and {}'s MTA-STS policy, which could vouch for its MX hosts, could not be had: {why}",
                    domain_of(to)
                )));
            }
            return Err(DeliveryError {
                permanent: true,
                message: format!(
                    "5.7.30 the message asks for REQUIRETLS, and no MX host of {} can be authenticated: its MX records are not DNSSEC-signed and it has no MTA-STS policy",
                    domain_of(to)
                ),
            });
        }
        // RFC 8689 §4.2.1, RFC 1870, 6152, 6531: a host that lacks what the message needs
        // (REQUIRETLS, SMTPUTF8, 8BITMIME where no copy will do, a large enough SIZE) is
        // passed over for the next. When every host lacks something, waiting will not
        // change that often enough to hold the message for days: it fails at once.
        let mut all_lack = !hosts.is_empty();
        let (mut lacking, mut other) = (None, None);
        for host in hosts {
            match self
                .send_to(
                    &host,
                    from,
                    to,
                    copies,
                    dsn,
                    Terms {
                        policy: policy.as_deref(),
                        domain: policy_domain,
                        dane,
                        required,
                    },
                )
                .await
            {
                Ok(handed) => return Ok(handed),
                Err(e) if e.permanent => return Err(e),
                Err(e) if e.message.starts_with(NOT_OFFERED) => {
                    lacking = Some(e.message[NOT_OFFERED.len()..].to_string());
                }
                Err(e) if required && e.message.starts_with(NO_REQUIRETLS) => {
                    lacking = Some(format!("{host}: {}", e.message));
                }
                Err(e) => {
                    all_lack = false;
                    other = Some(format!("{host}: {}", e.message));
                }
            }
        }
        // While the message waits, the reason shown (and its status in a delay notice)
        // is a host that may take it later, not one that never will.
        let message = if all_lack { lacking } else { other.or(lacking) };
        Err(DeliveryError {
            permanent: all_lack,
            message: message.unwrap_or_else(|| "no host to deliver to".to_string()),
        })
    }

    /// The MX hosts of the recipients' domain, in preference order, and whether DNSSEC
    /// proved them (only asked through DANE's validating resolver).
    async fn mx_hosts(
        &self,
        to: &[String],
        dane: Option<&Dane>,
    ) -> Result<(Vec<String>, bool), DeliveryError> {
        let domain = domain_of(to);
        let resolver = match dane {
            Some(dane) => dane.resolver(),
            None => self
                .resolver
                .as_ref()
                .ok_or_else(|| DeliveryError::temporary("no DNS resolver configured"))?,
        };
        let asked = fqdn(domain).ok_or_else(|| DeliveryError {
            permanent: true,
            message: format!("{domain} is not a domain name"),
        })?;
        match resolver.mx_lookup(asked.clone()).await {
            Ok(lookup) => {
                let found = answer(lookup.answers(), &asked, &[RecordType::MX]);
                let secure = dane.is_some() && found.secure;
                let mut mx: Vec<(u16, String)> = found
                    .records
                    .iter()
                    .filter_map(|r| match &r.data {
                        hickory_resolver::proto::rr::RData::MX(mx) => Some((
                            mx.preference,
                            // A-labels: what policies list and certificates name.
                            mx.exchange.to_ascii().trim_end_matches('.').to_string(),
                        )),
                        _ => None,
                    })
                    .collect();
                mx.sort();
                // RFC 7505 null MX: the domain accepts no mail.
                if mx.len() == 1 && mx[0].1.is_empty() {
                    return Err(DeliveryError {
                        permanent: true,
                        message: format!("{domain} accepts no mail (null MX)"),
                    });
                }
                Ok((
                    mx.into_iter()
                        .map(|(_, host)| format!("{host}:25"))
                        .collect(),
                    secure,
                ))
            }
            Err(e) => match absent(&e) {
                // The domain does not exist: nothing will ever take the mail.
                Some(Absent::NoDomain) => Err(DeliveryError {
                    permanent: true,
                    message: format!("{domain} does not exist (NXDOMAIN)"),
                }),
                // No MX, but the name exists: it is its own mail host (RFC 5321 §5.1),
                // a name from the address itself, so DANE may apply (RFC 7672 §2.2.1).
                Some(Absent::NoRecord) => Ok((vec![format!("{domain}:25")], dane.is_some())),
                // A timeout, a failing server or a bogus answer (RFC 7672 §2.1.1) says
                // nothing about the MX: try again later rather than deliver to whatever
                // the address record points at.
                None => {
                    if dane.is_some() && matches!(e, NetError::Dns(DnsError::DnssecBogus)) {
                        let policy_domain = super::tls_policy::policy_domain(domain);
                        self.count(
                            policy_domain.as_deref(),
                            &Guard::Dane(TlsaSet::default()),
                            "",
                            "",
                            "",
                            Outcome::DnssecInvalid,
                        );
                    }
                    Err(DeliveryError::temporary(format!(
                        "looking up the MX of {domain}: {}",
                        crate::dns::lookup_error::explain(&e)
                    )))
                }
            },
        }
    }

    async fn send_to(
        &self,
        host: &str,
        from: &str,
        to: &[String],
        copies: Copies<'_>,
        dsn: Option<DsnRequest<'_>>,
        terms: Terms<'_>,
    ) -> Result<Handed, DeliveryError> {
        let (name, port) = match host.rsplit_once(':') {
            Some((name, port)) => (name, port.parse::<u16>().unwrap_or(25)),
            None => (host, 25),
        };
        let (addresses, tlsa) = match terms.dane {
            Some(dane) => self.dane_terms(dane, name, port, terms.domain).await?,
            None => (self.addresses(name, port).await?, None),
        };
        // DANE, where the host publishes TLSA records, takes the place of MTA-STS for it
        // (RFC 8461 §2).
        let guard = match (tlsa, terms.policy) {
            // Records none of which can be used authenticate nothing (RFC 7672 §2.2): an
            // MTA-STS policy, which can, still holds.
            (Some(set), Some(p)) if set.usable().is_empty() => Guard::Sts(p),
            (Some(set), _) => Guard::Dane(set),
            (None, Some(p)) => Guard::Sts(p),
            (None, None) => Guard::Open,
        };
        if let Guard::Sts(p) = &guard
            && p.policy.mode == Mode::Enforce
            && !p.policy.allows(name)
        {
            return Err(DeliveryError::temporary(format!(
                "{name} is not an MX host {}'s MTA-STS policy (enforce, id {}) lists, and has no TLSA records (DANE) to vouch for it",
                p.domain, p.id
            )));
        }
        // REQUIRETLS: a certificate checked by DANE, else against the host name.
        let guard = match guard {
            Guard::Dane(set) if terms.required && set.usable().is_empty() => Guard::Pkix,
            Guard::Open if terms.required => Guard::Pkix,
            Guard::Sts(p) if terms.required && !p.policy.allows(name) => {
                return Err(DeliveryError::temporary(format!(
                    "the message asks for REQUIRETLS, and {name} is not an MX host {}'s MTA-STS policy lists",
                    p.domain
                )));
            }
            other => other,
        };
        let mut client = None;
        let mut last = String::new();
        // Every address of the host in turn (RFC 5321 §5.1), until one answers.
        for addr in addresses {
            match SmtpClient::connect(addr, self.timeout).await {
                Ok(c) => {
                    client = Some((c, addr));
                    break;
                }
                // The caller names the host; the address only when it says more.
                Err(e) => {
                    let why = match e {
                        mail_send::Error::Io(io) => io.to_string(),
                        other => other.to_string(),
                    };
                    last = if addr.to_string() == host {
                        format!("cannot connect: {why}")
                    } else {
                        format!("cannot connect to {addr}: {why}")
                    }
                }
            }
        }
        let (mut client, addr) = client.ok_or_else(|| DeliveryError::temporary(last))?;
        let enforce = guard.requires_tls() || terms.required;
        let sending_ip = client
            .stream
            .local_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        // How this session's TLS went, for the report to the policy domain.
        let count = |outcome: Outcome| {
            self.count(
                terms.domain,
                &guard,
                name,
                &addr.ip().to_string(),
                &sending_ip,
                outcome,
            )
        };
        // Under enforce, what comes before TLS may be an attacker's: a 5xx there defers
        // (and the next MX is tried) rather than bounce.
        let greeted = async {
            client.read().await?.assert_positive_completion()?;
            client.ehlo(&self.hostname).await
        }
        .await;
        let ehlo = greeted.map_err(|e| {
            let mut failed = DeliveryError::from(e);
            failed.permanent &= !enforce;
            failed
        })?;
        // What testing mode would have refused: said in the log, the delivery goes on.
        let mut noted: Option<String> = None;
        if let Guard::Sts(p) = guard
            && p.policy.mode == Mode::Testing
            && !p.policy.allows(name)
        {
            noted = Some(format!(
                "{}'s MTA-STS policy (testing, id {}) would refuse {name}: it is not one the policy lists",
                p.domain, p.id
            ));
        }
        // What the mail log says of how the certificate was checked, when it was.
        let mut checked: Option<&str> = None;
        if ehlo.has_capability(EXT_START_TLS) {
            let (connector, failure) = match &guard {
                // RFC 8461 §4.2: a certificate valid for the MX name, from a trusted root.
                Guard::Sts(_) | Guard::Pkix => super::tls_policy::verify::connector(enforce)
                    .map(|(c, f)| (c, Some(f)))
                    .map_err(DeliveryError::temporary)?,
                // RFC 7672 §3: the certificate one of the TLSA records names.
                Guard::Dane(set) if !set.usable().is_empty() => {
                    checked = Some("certificate matched by its TLSA records (DANE)");
                    (
                        super::tls_policy::dane_check::connector(set.usable(), set.target.clone()),
                        None,
                    )
                }
                // Opportunistic: certificates of MX hosts are rarely checkable (RFC 7435);
                // and TLSA records none of which is usable still ask for TLS (RFC 7672 §2.2).
                Guard::Dane(_) | Guard::Open => (
                    mail_send::smtp::tls::build_tls_connector(true)
                        .map_err(DeliveryError::temporary)?,
                    None,
                ),
            };
            let mut tls = client
                .start_tls(&connector, name)
                .await
                .inspect_err(|e| {
                    count(match e {
                        mail_send::Error::Tls(tls) => Outcome::of_certificate(tls),
                        _ => Outcome::ValidationFailure,
                    })
                })
                .map_err(|e| match &guard {
                    Guard::Sts(p) if enforce => DeliveryError::temporary(format!(
                        "{}'s MTA-STS policy (enforce, id {}) needs TLS with a certificate valid for {name}, and STARTTLS failed: {}",
                        p.domain,
                        p.id,
                        tls_failure(&e)
                    )),
                    Guard::Dane(_) => DeliveryError::temporary(format!(
                        "{name}'s TLSA records (DANE) need TLS with a certificate they name, and STARTTLS failed: {}",
                        tls_failure(&e)
                    )),
                    Guard::Pkix => DeliveryError::temporary(format!(
                        "the message asks for REQUIRETLS, which needs TLS with a certificate valid for {name}, and STARTTLS failed: {}",
                        tls_failure(&e)
                    )),
                    _ => e.into(),
                })?;
            let failed = failure.and_then(|f| f.lock().ok().and_then(|mut f| f.take()));
            count(match (&failed, &noted) {
                (Some((outcome, _)), _) => *outcome,
                (None, Some(_)) => Outcome::ValidationFailure,
                (None, None) => Outcome::Success,
            });
            if let Guard::Sts(p) = guard
                && let Some((_, why)) = failed
            {
                noted.get_or_insert(format!(
                    "{}'s MTA-STS policy (testing, id {}) would refuse {name}: {why}",
                    p.domain, p.id
                ));
            }
            let ehlo = tls.ehlo(&self.hostname).await?;
            // RFC 8689 §4.2.1: the next hop must carry the requirement on.
            if terms.required && !ehlo.has_capability(EXT_REQUIRE_TLS) {
                let _ = tls.quit().await;
                return Err(DeliveryError::temporary(format!(
                    "{NO_REQUIRETLS} {name} does not support REQUIRETLS, which the message asks for"
                )));
            }
            let transfer = Transfer {
                from,
                to,
                copies,
                dsn,
                require_tls: terms.required,
            };
            transaction(&mut tls, name, &transfer, &Offers::of(&ehlo)).await
        } else {
            count(Outcome::StarttlsNotSupported);
            match &guard {
                Guard::Sts(p) => {
                    let why = format!(
                        "{name} does not offer STARTTLS, which {}'s MTA-STS policy ({}, id {}) asks for",
                        p.domain, p.policy.mode, p.id
                    );
                    if enforce {
                        let _ = client.quit().await;
                        return Err(DeliveryError::temporary(why));
                    }
                    noted = Some(why);
                }
                Guard::Pkix => {
                    let _ = client.quit().await;
                    return Err(DeliveryError::temporary(format!(
                        "the message asks for REQUIRETLS, and {name} does not offer STARTTLS"
                    )));
                }
                Guard::Dane(_) => {
                    let _ = client.quit().await;
                    return Err(DeliveryError::temporary(format!(
                        "{name} publishes TLSA records (DANE), so it must be reached over TLS, and it does not offer STARTTLS"
                    )));
                }
                Guard::Open => {}
            }
            let transfer = Transfer {
                from,
                to,
                copies,
                dsn,
                require_tls: false,
            };
            transaction(&mut client, name, &transfer, &Offers::of(&ehlo)).await
        }
        .map(|(dsn_passed_on, reply)| {
            // The address only when the name does not already say it.
            let to = if addr.to_string() == host {
                host.to_string()
            } else {
                format!("{host} ({addr})")
            };
            if let Some(why) = &noted {
                tracing::warn!(host = %to, "{why}");
            }
            Handed {
                dsn_passed_on,
                reply: match (noted, checked) {
                    (Some(why), _) => format!("{to} said {reply} ({why})"),
                    (None, Some(how)) => format!("{to} said {reply} ({how})"),
                    (None, None) => format!("{to} said {reply}"),
                },
            }
        })
    }

    /// A host's addresses through DANE's validating resolver, and its TLSA records when
    /// DNSSEC proved those addresses (RFC 7672 §2.2.2). A lookup that fails or is bogus
    /// leaves the host unused for now: the next MX is tried.
    async fn dane_terms(
        &self,
        dane: &Dane,
        name: &str,
        port: u16,
        report_domain: Option<&str>,
    ) -> Result<(Vec<SocketAddr>, Option<TlsaSet>), DeliveryError> {
        let failed = |e: super::tls_policy::dane::DaneError| {
            if e.is_bogus() {
                self.count(
                    report_domain,
                    &Guard::Dane(TlsaSet::default()),
                    name,
                    "",
                    "",
                    Outcome::DnssecInvalid,
                );
            }
            DeliveryError::temporary(e.to_string())
        };
        let asked = fqdn(name)
            .ok_or_else(|| DeliveryError::temporary(format!("{name} is not a host name")))?;
        let found = dane
            .resolver()
            .lookup_ip(asked.clone())
            .await
            .map_err(|e| {
                failed(super::tls_policy::dane::DaneError::of(
                    &e,
                    format!("address of {name}"),
                ))
            })?;
        let found = answer(
            found.as_lookup().answers(),
            &asked,
            &[RecordType::A, RecordType::AAAA],
        );
        let addresses: Vec<SocketAddr> = found
            .records
            .iter()
            .filter_map(|r| r.data.ip_addr())
            .map(|ip| SocketAddr::new(ip, port))
            .collect();
        if addresses.is_empty() {
            return Err(DeliveryError::temporary(format!("{name} has no address")));
        }
        if !found.secure {
            return Ok((addresses, None));
        }
        // RFC 7672 §2.2.2: the TLSA records of the name the addresses are at (a CNAME's
        // target, when DNSSEC proved the chain), else of the name itself; a DANE-TA
        // certificate may name either.
        let target = found.name.to_ascii();
        let target = target.trim_end_matches('.');
        if !target.eq_ignore_ascii_case(name)
            && let Some(mut set) = dane.tlsa(target, port).await.map_err(&failed)?
        {
            set.target = Some(target.to_string());
            return Ok((addresses, Some(set)));
        }
        let tlsa = dane.tlsa(name, port).await.map_err(failed)?;
        Ok((addresses, tlsa))
    }

    /// Counts a session for the TLS report to `domain`, under the policy that held it.
    fn count(
        &self,
        domain: Option<&str>,
        guard: &Guard<'_>,
        mx_host: &str,
        receiving_ip: &str,
        sending_ip: &str,
        outcome: Outcome,
    ) {
        let (Some(tally), Some(domain)) = (&self.tally, domain) else {
            return;
        };
        let (policy_type, policy) = match guard {
            Guard::Sts(p) => ("sts", p.text.clone()),
            Guard::Dane(set) => ("tlsa", set.text()),
            Guard::Pkix | Guard::Open => ("no-policy-found", String::new()),
        };
        tally.count(SessionKey {
            day: super::tls_policy::tally::today(),
            domain: domain.to_string(),
            policy_type: policy_type.into(),
            policy,
            mx_host: mx_host.to_string(),
            receiving_ip: receiving_ip.to_string(),
            sending_ip: sending_ip.to_string(),
            outcome,
        });
    }

    /// The addresses of a mail host, through the spec's resolver when there is one (the
    /// system's resolver knows nothing of a `[dns] resolver`). An IP literal is itself.
    async fn addresses(&self, name: &str, port: u16) -> Result<Vec<SocketAddr>, DeliveryError> {
        let literal = name.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = literal.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let found: Vec<SocketAddr> = match &self.resolver {
            Some(resolver) => resolver
                .lookup_ip(format!("{name}."))
                .await
                .map_err(|e| {
                    DeliveryError::temporary(format!(
                        "looking up the address of {name}: {}",
                        crate::dns::lookup_error::explain(&e)
                    ))
                })?
                .iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect(),
            None => tokio::net::lookup_host((name, port))
                .await
                .map_err(|e| DeliveryError::temporary(format!("resolving {name}: {e}")))?
                .collect(),
        };
        if found.is_empty() {
            return Err(DeliveryError::temporary(format!("{name} has no address")));
        }
        Ok(found)
    }
}

/// How a host's failure for want of REQUIRETLS starts (RFC 8689's status code): when
/// every host fails so, the message bounces.
const NO_REQUIRETLS: &str = "5.7.30";

/// Marks a failure for want of an extension one MX host lacks (SIZE, SMTPUTF8, 8BITMIME
/// where no copy will do): the next host may have it, and only when every one lacks it
/// does the message fail, at once. Taken off before the reason is shown.
const NOT_OFFERED: &str = "[not offered] ";

/// What TLS a connection is held to: the MTA-STS policy (if any), the domain whose TLS
/// report counts the session, and DANE when DNSSEC proved the MX hosts.
#[derive(Clone, Copy)]
struct Terms<'a> {
    policy: Option<&'a Active>,
    domain: Option<&'a str>,
    dane: Option<&'a Dane>,
    /// REQUIRETLS: verified TLS whatever the policies say, to a host that offers REQUIRETLS.
    required: bool,
}

/// Whether the receiving domain's MTA-STS policy is looked up for a message.
fn policies_apply(tls: TlsRequest) -> bool {
    tls != TlsRequest::NotRequired
}

/// What holds one MX host's TLS: its TLSA records, else its domain's MTA-STS policy,
/// else nothing (opportunistic STARTTLS).
enum Guard<'a> {
    Dane(TlsaSet),
    Sts(&'a Active),
    /// REQUIRETLS where neither holds: a certificate from a trusted CA, valid for the host.
    Pkix,
    Open,
}

impl Guard<'_> {
    /// Whether the host must be reached over TLS: a refusal before TLS may be forged,
    /// so it defers rather than bounces.
    fn requires_tls(&self) -> bool {
        match self {
            Guard::Dane(_) => true,
            Guard::Sts(p) => p.policy.mode == Mode::Enforce,
            Guard::Pkix => true,
            Guard::Open => false,
        }
    }
}

/// The domain of a delivery's recipients (all at one domain).
fn domain_of(to: &[String]) -> &str {
    to.first()
        .and_then(|a| a.rsplit_once('@'))
        .map(|(_, d)| d)
        .unwrap_or_default()
}

/// Up to five names, then how many more: an error line stays readable whatever a
/// policy lists.
fn few<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    match names.len() {
        0..=5 => names.join(", "),
        n => format!("{} and {} more", names[..5].join(", "), n - 5),
    }
}

/// "mx.example.com" of "mx.example.com:25".
fn host_name(host: &str) -> &str {
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

/// A failed STARTTLS in words: the certificate's fault when it was one.
fn tls_failure(e: &mail_send::Error) -> String {
    match e {
        mail_send::Error::Tls(tls) => crate::error_chain::tls_words(tls),
        mail_send::Error::Io(io) => crate::error_chain::in_words(io),
        other => other.to_string(),
    }
}

/// What the original sender asked of delivery status notifications, passed on with a
/// forwarded copy (RFC 3461 §6.2: relayed with the message).
#[derive(Debug, Clone, Copy)]
pub struct DsnRequest<'a> {
    pub notify: u64,
    /// ORCPT for the next hop: the one we were given, else the recipient we accepted.
    pub orcpt: &'a str,
    pub ret_full: bool,
    pub envid: Option<&'a str>,
}

impl DsnRequest<'_> {
    fn mail_params(&self) -> Parameters<'static> {
        let mut params = Parameters::new();
        params.add((
            "RET".to_string(),
            if self.ret_full { "FULL" } else { "HDRS" }.to_string(),
        ));
        if let Some(envid) = self.envid {
            params.add(("ENVID".to_string(), xtext(envid)));
        }
        params
    }

    fn rcpt_params(&self) -> Parameters<'static> {
        let mut notify = Vec::new();
        for (flag, name) in [
            (RCPT_NOTIFY_NEVER, "NEVER"),
            (RCPT_NOTIFY_SUCCESS, "SUCCESS"),
            (RCPT_NOTIFY_FAILURE, "FAILURE"),
            (RCPT_NOTIFY_DELAY, "DELAY"),
        ] {
            if self.notify & flag != 0 {
                notify.push(name);
                if flag == RCPT_NOTIFY_NEVER {
                    break;
                }
            }
        }
        let mut params = Parameters::new();
        params.add(("NOTIFY".to_string(), notify.join(",")));
        params.add(("ORCPT".to_string(), format!("rfc822;{}", xtext(self.orcpt))));
        params
    }
}

/// RFC 3461 xtext: printable ASCII except "+" and "=", everything else as "+HH".
pub fn xtext(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

/// A message as it may leave: as it is, and its 7-bit copy (`mime::downgrade`, signed
/// and sealed as the original is) for a next hop that takes only that.
#[derive(Clone, Copy)]
pub struct Copies<'a> {
    pub original: &'a [u8],
    /// Ok(None) when the copy would be the original; Err when none can be made.
    pub seven_bit: Result<Option<&'a [u8]>, &'a Cannot>,
}

impl<'a> Copies<'a> {
    /// The copy a next hop with these offers can take; Err (marked NOT_OFFERED) when none:
    /// `send` tries the next host, and fails the message once every host lacks something.
    /// With it, what it needs of the host (its `Shape`).
    fn for_host(&self, name: &str, offers: &Offers) -> Result<(&'a [u8], Shape), DeliveryError> {
        let original = Shape::of(self.original);
        let takes = |shape: &Shape| {
            (!shape.eight_bit_body || offers.eight_bit_mime)
                && (!shape.utf8_header || offers.smtputf8)
        };
        // A line over 998 or a NUL is sent to nobody when a copy without it exists (RFC
        // 5321 §4.5.3.1.6, RFC 2045 §2.8); where none does, the host may still take it
        // (Postfix does).
        if takes(&original) && !original.must_change() {
            return Ok((self.original, original));
        }
        let copy = match self.seven_bit {
            Ok(Some(copy)) => Some((copy, Shape::of(copy))),
            _ => None,
        };
        if let Some((copy, shape)) = copy
            && takes(&shape)
        {
            return Ok((copy, shape));
        }
        if takes(&original) {
            return Ok((self.original, original));
        }
        let best = copy.as_ref().map_or(&original, |(_, shape)| shape);
        let message = if best.utf8_header {
            format!(
                "{NOT_OFFERED}553 5.6.7 {name} does not offer SMTPUTF8, which the message needs for UTF-8 in its header that cannot be encoded (an address or a trace field)"
            )
        } else {
            let why = match self.seven_bit {
                Err(why) => format!(": {why}"),
                Ok(_) => String::new(),
            };
            format!(
                "{NOT_OFFERED}554 5.6.3 {name} does not offer 8BITMIME, and the message's 8-bit content cannot be converted to 7 bits{why}"
            )
        };
        Err(DeliveryError::temporary(message))
    }
}

/// One message to one host, as the transaction sends it.
struct Transfer<'a> {
    from: &'a str,
    to: &'a [String],
    copies: Copies<'a>,
    dsn: Option<DsnRequest<'a>>,
    require_tls: bool,
}

/// What the next hop offers in the EHLO that counts (after STARTTLS, when there is TLS).
struct Offers {
    dsn: bool,
    /// SIZE offered; with the largest message it takes, when it names one.
    size: Option<Option<usize>>,
    eight_bit_mime: bool,
    smtputf8: bool,
}

impl Offers {
    fn of(ehlo: &smtp_proto::EhloResponse<String>) -> Offers {
        Offers {
            dsn: ehlo.has_capability(EXT_DSN),
            // RFC 1870 §4: SIZE without a number, or 0, names no limit.
            size: ehlo
                .has_capability(EXT_SIZE)
                .then_some((ehlo.size > 0).then_some(ehlo.size)),
            eight_bit_mime: ehlo.has_capability(EXT_8BIT_MIME),
            smtputf8: ehlo.has_capability(EXT_SMTP_UTF8),
        }
    }
}

/// One transaction; Ok(whether a DSN request went along, the reply to the message).
async fn transaction<T: AsyncRead + AsyncWrite + Unpin>(
    client: &mut SmtpClient<T>,
    name: &str,
    t: &Transfer<'_>,
    offers: &Offers,
) -> Result<(bool, String), DeliveryError> {
    let (body, shape) = match t.copies.for_host(name, offers) {
        Ok(chosen) => chosen,
        Err(e) => {
            let _ = client.cmd(b"QUIT\r\n").await;
            return Err(e);
        }
    };
    // RFC 1870: a message larger than the host takes is not sent, and waiting will not
    // make it fit: it fails now, with the host's limit in the notice.
    if let Some(Some(limit)) = offers.size
        && body.len() > limit
    {
        let _ = client.cmd(b"QUIT\r\n").await;
        return Err(DeliveryError {
            permanent: false,
            message: format!(
                "{NOT_OFFERED}552 5.3.4 {name} takes messages of {limit} bytes at the most (SIZE in its EHLO), and this one is {} bytes",
                body.len()
            ),
        });
    }
    // RFC 6531 §3.2: a UTF-8 address cannot be downgraded; a host without SMTPUTF8
    // cannot take it, however long the message waits.
    let utf8_envelope = !t.from.is_ascii() || t.to.iter().any(|a| !a.is_ascii());
    if !offers.smtputf8 && utf8_envelope {
        let _ = client.cmd(b"QUIT\r\n").await;
        return Err(DeliveryError {
            permanent: false,
            message: format!(
                "{NOT_OFFERED}553 5.6.7 {name} does not offer SMTPUTF8, which the message's UTF-8 addresses need"
            ),
        });
    }
    // RFC 3461 §4: the request goes on only to a host that supports DSN.
    let dsn = t.dsn.filter(|_| offers.dsn);
    let (mut mail, rcpt) = match &dsn {
        Some(request) => (request.mail_params(), request.rcpt_params()),
        None => (Parameters::default(), Parameters::default()),
    };
    if offers.size.is_some() {
        mail.add(("SIZE".to_string(), body.len().to_string()));
    }
    // RFC 6152 and 6531: the host is told what the message is, where it says it takes it.
    if offers.eight_bit_mime && (shape.eight_bit_body || shape.utf8_header) {
        mail.add(("BODY".to_string(), "8BITMIME".to_string()));
    }
    // RFC 6531 §3.4: a UTF-8 address in the envelope, or UTF-8 in the header section.
    if offers.smtputf8 && (utf8_envelope || shape.utf8_header) {
        mail.add("SMTPUTF8");
    }
    if t.require_tls {
        mail.add("REQUIRETLS");
    }
    client.mail_from(t.from, &mail).await?;
    for address in t.to {
        client.rcpt_to(address, &rcpt).await?;
    }
    // As `SmtpClient::data`, keeping the final reply: its queue id is what the
    // receiving side's log can be searched for.
    client.cmd(b"DATA\r\n").await?.assert_code(354)?;
    let timeout = client.timeout;
    let reply = tokio::time::timeout(timeout, async {
        // Not mail-send's `write_message`: it puts a CRLF before the end mark even after
        // the message's own last CRLF, so every copy arrived with a blank line added.
        client
            .stream
            .write_all(&crate::smtp::dot::stuffed(body))
            .await?;
        client.stream.flush().await?;
        client.read().await
    })
    .await
    .map_err(|_| mail_send::Error::Timeout)??;
    if !reply.is_positive_completion() {
        return Err(mail_send::Error::UnexpectedReply(reply).into());
    }
    let _ = client.rset().await;
    Ok((dsn.is_some(), quoted(&reply)))
}

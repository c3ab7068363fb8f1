//! Checks on arrival with mail-auth: SPF, DKIM, ARC and DMARC, recorded in an
//! Authentication-Results header; SPF hard fails and DMARC `p=reject` failures flagged.

use std::net::IpAddr;

use mail_auth::common::headers::HeaderWriter;
use mail_auth::dmarc::Policy;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, AuthenticationResults, DmarcResult, MessageAuthenticator, SpfResult,
};

/// Which check says the message must be refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// SPF hard fail (`-all` matched): 550 5.7.23.
    Spf(String),
    /// DMARC failed and the sender domain publishes `p=reject`: 550 5.7.1.
    Dmarc(String),
}

/// What the checks concluded.
pub struct Verdict {
    /// The Authentication-Results header, CRLF-terminated.
    pub header: String,
    pub refuse: Option<Refusal>,
}

/// Runs every check on one message. `enforce` is false for allowlisted senders.
pub async fn check(
    authenticator: &MessageAuthenticator,
    hostname: &str,
    ip: IpAddr,
    helo: &str,
    mail_from: &str,
    message: &[u8],
) -> Verdict {
    let spf_params = if mail_from.is_empty() {
        SpfParameters::verify_ehlo(ip, helo, hostname)
    } else {
        SpfParameters::verify_mail_from(ip, helo, hostname, mail_from)
    };
    let spf = authenticator.verify_spf(spf_params).await;
    let mail_from_domain = mail_from.rsplit_once('@').map(|(_, d)| d).unwrap_or(helo);

    let Some(parsed) = AuthenticatedMessage::parse(message) else {
        let header = AuthenticationResults::new(hostname)
            .with_spf_mailfrom_result(&spf, ip, mail_from, helo)
            .to_header();
        return Verdict {
            header,
            refuse: None,
        };
    };
    let dkim = authenticator.verify_dkim(&parsed).await;
    let arc = authenticator.verify_arc(&parsed).await;
    let dmarc = authenticator
        .verify_dmarc(DmarcParameters::new(&parsed, &dkim, mail_from_domain, &spf))
        .await;

    let header = AuthenticationResults::new(hostname)
        .with_dkim_results(&dkim, parsed.from())
        .with_spf_mailfrom_result(&spf, ip, mail_from, helo)
        .with_arc_result(&arc, ip)
        .with_dmarc_result(&dmarc)
        .to_header();

    let refuse = if spf.result() == SpfResult::Fail {
        Some(Refusal::Spf(format!(
            "SPF: {mail_from_domain} does not allow {ip} to send its mail"
        )))
    } else if dmarc.policy() == Policy::Reject
        && matches!(dmarc.spf_result(), DmarcResult::Fail(_) | DmarcResult::None)
        && matches!(
            dmarc.dkim_result(),
            DmarcResult::Fail(_) | DmarcResult::None
        )
        && dmarc.dmarc_record().is_some()
    {
        Some(Refusal::Dmarc(format!(
            "DMARC: the policy of {} rejects this message",
            dmarc.domain()
        )))
    } else {
        None
    };
    Verdict { header, refuse }
}

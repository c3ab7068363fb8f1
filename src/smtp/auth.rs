//! Checks on arrival with mail-auth: SPF, DKIM, ARC and DMARC, recorded in an
//! Authentication-Results header; SPF hard fails and DMARC `p=reject` failures flagged;
//! the ARC set each forwarding domain adds to its copies.

use std::net::IpAddr;

use mail_auth::ArcOutput;
use mail_auth::arc::ArcSealer;
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dmarc::Policy;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, AuthenticationResults, DmarcResult, MessageAuthenticator, SpfResult,
};

use crate::dkim::signing::SharedKey;

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
    /// ARC sets (ARC-Seal, ARC-Message-Signature, ARC-Authentication-Results) by the
    /// forwarding aliases, for the copies they forward.
    pub arc_sets: Vec<ArcSet>,
    /// Forwarded copies must carry a friendly From: the author's domain enforces DMARC
    /// and no aligned DKIM signature would survive to vouch for it.
    pub friendly_from: bool,
    /// SPF failed, or DMARC did: the envelope sender is probably forged, and a notice
    /// sent to it would be backscatter.
    pub sender_unverified: bool,
    /// What the author domain's DMARC aggregate report will say of the message, when it
    /// asks for reports.
    pub dmarc_facts: Option<crate::queue::dmarc_report::Facts>,
}

impl Verdict {
    /// No checks made (submitted mail, or no resolver): nothing to add or refuse.
    pub fn none() -> Verdict {
        Verdict {
            header: String::new(),
            refuse: None,
            arc_sets: Vec::new(),
            friendly_from: false,
            sender_unverified: false,
            dmarc_facts: None,
        }
    }
}

/// One forwarding alias's ARC sets: over the copy as it leaves, and over its 7-bit copy
/// (`mime::downgrade`) when that differs, for a next hop that takes only that. The seal
/// needs the results of these checks, so both are made now, not at delivery.
pub struct ArcSet {
    pub alias: String,
    pub set: String,
    /// Empty when there is no 7-bit copy, or it could not be sealed.
    pub set_7bit: String,
}

/// An alias that forwards this message, sealing with one of its domain's DKIM keys.
pub struct Sealer {
    pub alias: String,
    pub domain: String,
    pub selector: String,
    /// The parsed key (shared, see dkim::signing).
    pub key: SharedKey,
}

/// Headers the ARC-Message-Signature covers. Not DKIM-Signature: the seal is made on
/// arrival and the forwarding DKIM signature is added above it at delivery, and a listed
/// header that appears later would break the signature.
const ARC_HEADERS: [&str; 6] = ["From", "To", "Cc", "Subject", "Date", "Message-ID"];

fn seal(
    sealer: &Sealer,
    message: &AuthenticatedMessage<'_>,
    results: &AuthenticationResults<'_>,
    arc: &ArcOutput<'_>,
) -> Option<String> {
    let set = ArcSealer::from_key(sealer.key.clone())
        .domain(&sealer.domain)
        .selector(&sealer.selector)
        .headers(ARC_HEADERS)
        .seal(message, results, arc);
    match set {
        Ok(set) => Some(set.to_header()),
        Err(e) => {
            tracing::debug!(domain = %sealer.domain, error = %e, "not ARC-sealed");
            None
        }
    }
}

/// What a check is to make besides its verdict.
pub struct Wants<'a> {
    /// The ARC sets of these forwarding aliases.
    pub sealers: &'a [Sealer],
    /// The message's facts for DMARC aggregate reports (only when they are sent: a row
    /// costs per message).
    pub dmarc_facts: bool,
}

/// Runs every check on one message. `enforce` is false for allowlisted senders.
pub async fn check(
    authenticator: &MessageAuthenticator,
    hostname: &str,
    ip: IpAddr,
    helo: &str,
    mail_from: &str,
    message: &[u8],
    wants: Wants<'_>,
) -> Verdict {
    let Wants {
        sealers,
        dmarc_facts: count_dmarc,
    } = wants;
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
            arc_sets: Vec::new(),
            friendly_from: false,
            sender_unverified: spf.result() == SpfResult::Fail,
            dmarc_facts: None,
        };
    };
    let dkim = authenticator.verify_dkim(&parsed).await;
    let arc = authenticator.verify_arc(&parsed).await;
    let dmarc = authenticator
        .verify_dmarc(DmarcParameters::new(&parsed, &dkim, mail_from_domain, &spf))
        .await;

    let results = AuthenticationResults::new(hostname)
        .with_dkim_results(&dkim, parsed.from())
        .with_spf_mailfrom_result(&spf, ip, mail_from, helo)
        .with_arc_result(&arc, ip)
        .with_dmarc_result(&dmarc);
    let header = results.to_header();
    let friendly_from = dmarc.dmarc_record().is_some()
        && matches!(dmarc.policy(), Policy::Reject | Policy::Quarantine)
        && dmarc.dkim_result() != &DmarcResult::Pass;
    let mut arc_sets = Vec::new();
    // The 7-bit copy of the message as it came, made once for every alias that forwards
    // it unchanged (a message of many megabytes can take a while: off the worker thread).
    let seven_bit = if sealers.is_empty() || friendly_from {
        Ok(None)
    } else {
        crate::blocking::run(|| crate::mime::downgrade::downgrade(message))
    };
    for sealer in sealers {
        // The seal covers the copy as it will leave: with the friendly From if it needs one.
        let rewritten =
            friendly_from.then(|| crate::queue::rewrite::friendly_from(message, &sealer.alias));
        let set = match rewritten.as_deref().map(AuthenticatedMessage::parse) {
            Some(Some(copy)) => seal(sealer, &copy, &results, &arc),
            Some(None) => None,
            None => seal(sealer, &parsed, &results, &arc),
        };
        let Some(set) = set else {
            continue;
        };
        let own_copy = rewritten
            .as_deref()
            .map(|r| crate::blocking::run(|| crate::mime::downgrade::downgrade(r)));
        let set_7bit = match own_copy.as_ref().unwrap_or(&seven_bit) {
            Ok(Some(copy)) => AuthenticatedMessage::parse(copy)
                .and_then(|copy| seal(sealer, &copy, &results, &arc))
                .unwrap_or_default(),
            _ => String::new(),
        };
        arc_sets.push(ArcSet {
            alias: sealer.alias.clone(),
            set,
            set_7bit,
        });
    }

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
    let dmarc_failed = dmarc.dmarc_record().is_some()
        && matches!(dmarc.spf_result(), DmarcResult::Fail(_) | DmarcResult::None)
        && matches!(
            dmarc.dkim_result(),
            DmarcResult::Fail(_) | DmarcResult::None
        );
    Verdict {
        header,
        sender_unverified: spf.result() == SpfResult::Fail || dmarc_failed,
        refuse,
        arc_sets,
        friendly_from,
        dmarc_facts: count_dmarc
            .then(|| crate::queue::dmarc_report::facts(ip, mail_from_domain, &dkim, &spf, &dmarc))
            .flatten(),
    }
}

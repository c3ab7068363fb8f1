//! A day's DMARC aggregate reports sent (RFC 7489 §7.2.1): gzipped XML mailed to the
//! `rua` addresses an author domain names that may take them (§7.1), once per domain and day.

use std::sync::Arc;

use mail_auth::MessageAuthenticator;
use mail_auth::common::cache::NoCache;

use super::KIND;
use super::report::{Reporter, reports};
use crate::queue::report_mail::{Outgoing, Submitter, outgoing};
use crate::queue::{Queue, QueueError};

/// What a run queued, and whether every domain was dealt with (a failed DNS lookup
/// leaves one for the next run).
#[derive(Default)]
pub struct Sent {
    pub mails: Vec<Outgoing>,
    pub complete: bool,
}

/// The reports for `day` ("YYYY-MM-DD"), one mail per author domain with rows that day,
/// to the addresses of its record that are its own or whose domain agrees to take its
/// reports (a `DOMAIN._report._dmarc` record). Each domain is claimed in the store first,
/// so no node (or `queue dmarc-report --send`) sends it twice.
pub async fn send_reports(
    queue: Arc<dyn Queue>,
    authenticator: &MessageAuthenticator,
    submitter: &Submitter<'_>,
    day: &str,
) -> Result<Sent, QueueError> {
    let (q, d) = (queue.clone(), day.to_string());
    let rows = tokio::task::spawn_blocking(move || q.report_rows(KIND, &d))
        .await
        .map_err(|e| QueueError::Data(e.to_string()))??;
    let reporter = Reporter {
        organization: submitter.hostname,
        contact: submitter.from,
    };
    let mut out = Sent {
        mails: Vec::new(),
        complete: true,
    };
    let (policy_domains, complete) = policy_domains(authenticator, &rows).await;
    out.complete = complete;
    for made in reports(day, &rows, &policy_domains, &reporter) {
        let domain = made.domain.as_str();
        let Some(allowed) = authenticator
            .verify_dmarc_report_address(domain, &made.rua, None::<&NoCache<_, _>>)
            .await
        else {
            tracing::warn!(
                domain,
                "DMARC report not sent: the DNS lookups that authorise its addresses failed; trying again later"
            );
            out.complete = false;
            continue;
        };
        let to: Vec<String> = allowed.into_iter().cloned().collect();
        for refused in made.rua.iter().filter(|a| !to.contains(a)) {
            tracing::info!(
                domain,
                address = refused,
                "not sending a DMARC report to an address whose domain does not agree to take it (RFC 7489 §7.1)"
            );
        }
        if to.is_empty() {
            continue;
        }
        let (q, d, dom) = (queue.clone(), day.to_string(), domain.to_string());
        let claimed = tokio::task::spawn_blocking(move || q.claim_report(KIND, &d, &dom))
            .await
            .map_err(|e| QueueError::Data(e.to_string()))??;
        if !claimed {
            continue;
        }
        let body = made
            .report
            .to_rfc5322(
                submitter.hostname,
                submitter.from,
                to.iter().map(String::as_str),
            )
            .map_err(|e| QueueError::Data(format!("writing the DMARC report: {e}")))?;
        tracing::info!(
            domain,
            day,
            messages = made.messages,
            rua = to.join(", "),
            "DMARC report queued"
        );
        out.mails.push(outgoing(submitter, &to, body.into_bytes()));
    }
    Ok(out)
}

/// The policy domain of each author domain with rows, and whether every lookup answered
/// (one that failed leaves its rows for the next run).
pub async fn policy_domains(
    authenticator: &MessageAuthenticator,
    rows: &[super::Counted],
) -> (std::collections::HashMap<String, String>, bool) {
    let mut found = std::collections::HashMap::new();
    let mut complete = true;
    for row in rows {
        if found.contains_key(&row.row.domain) {
            continue;
        }
        match policy_domain(authenticator, &row.row.domain).await {
            Some(domain) => {
                found.insert(row.row.domain.clone(), domain);
            }
            None => complete = false,
        }
    }
    (found, complete)
}

/// Names asked for a DMARC record at the most, from the author domain up (RFC 9989's
/// tree walk stops at eight too).
const MAX_WALK: usize = 8;

/// The domain whose DMARC record applies to mail from `author`: the first of it and its
/// parents (below the top-level domain) to publish one. Reports are about that domain and
/// go to its addresses (a subdomain's mail is in its organisation's report). None when a
/// lookup failed: the domain waits for the next run.
pub async fn policy_domain(authenticator: &MessageAuthenticator, author: &str) -> Option<String> {
    use mail_auth::common::cache::NoCache;
    use mail_auth::dmarc::Dmarc;
    let labels: Vec<&str> = author.split('.').filter(|l| !l.is_empty()).collect();
    for start in 0..labels.len().saturating_sub(1).min(MAX_WALK) {
        let name = labels[start..].join(".");
        match authenticator
            .txt_lookup::<Dmarc>(format!("_dmarc.{name}."), None::<&NoCache<_, _>>)
            .await
        {
            Ok(_) => return Some(name),
            Err(mail_auth::Error::Dns(mail_auth::DnsError::Resolver(_))) => return None,
            Err(_) => continue,
        }
    }
    // None found now (the record went since): reported under the author's name.
    Some(author.to_string())
}

//! A day's SMTP TLS reports sent as RFC 8460 §5.3 asks: gzipped JSON in a
//! multipart/report mail to each `mailto:` the domain's `_smtp._tls` record names, once per domain and day.

use std::io::Write;
use std::sync::Arc;

use base64::Engine;
use hickory_resolver::TokioResolver;

use super::report::{Report, Reporter, reports};
use crate::queue::report_mail::{Outgoing, Submitter, outgoing};
use crate::queue::{Queue, QueueError};

/// A day's reports: the mails to queue, and the `https:` addresses posted to.
#[derive(Default)]
pub struct Sent {
    pub mails: Vec<Outgoing>,
    pub posted: Vec<String>,
}

/// The reports for `day` ("YYYY-MM-DD"), one per domain with sessions that day and a
/// `_smtp._tls` record: mails for its `mailto:` addresses, posted now to its `https:`
/// ones (RFC 8460 §3). Each domain is claimed in the store first, so no node (or `queue
/// tls-report --send`) sends it twice.
pub async fn send_reports(
    queue: Arc<dyn Queue>,
    resolver: &TokioResolver,
    submitter: &Submitter<'_>,
    day: &str,
) -> Result<Sent, QueueError> {
    let (q, d) = (queue.clone(), day.to_string());
    let sessions = tokio::task::spawn_blocking(move || q.tls_sessions(&d))
        .await
        .map_err(|e| QueueError::Data(e.to_string()))??;
    let reporter = Reporter {
        organization: submitter.hostname,
        contact: submitter.from,
    };
    let http = super::fetch::client(Some(resolver.clone()))
        .map_err(|e| QueueError::Data(e.to_string()))?;
    let mut out = Sent::default();
    for report in reports(day, &sessions, &reporter) {
        let Some(domain) = report
            .policies
            .first()
            .map(|p| p.policy.policy_domain.clone())
        else {
            continue;
        };
        let (to, urls) = match rua(resolver, &domain).await {
            Ok((to, urls)) if !to.is_empty() || !urls.is_empty() => (to, urls),
            Ok(_) => continue,
            Err(why) => {
                tracing::warn!(domain, why, "no TLS report sent");
                continue;
            }
        };
        let (q, d, dom) = (queue.clone(), day.to_string(), domain.clone());
        let claimed = tokio::task::spawn_blocking(move || q.claim_report("tlsrpt", &d, &dom))
            .await
            .map_err(|e| QueueError::Data(e.to_string()))??;
        if !claimed {
            continue;
        }
        let gzipped = gzip(&report);
        for url in urls {
            match post(&http, &url, &gzipped).await {
                Ok(()) => {
                    tracing::info!(domain, day, url, "TLS report posted");
                    out.posted.push(url);
                }
                Err(why) => tracing::warn!(domain, day, url, why, "TLS report not posted"),
            }
        }
        if !to.is_empty() {
            tracing::info!(domain, day, rua = to.join(", "), "TLS report queued");
            out.mails
                .push(mail(submitter, &domain, day, &report, &gzipped, &to));
        }
    }
    Ok(out)
}

/// RFC 8460 §5.4: the gzipped report as the body of a POST.
async fn post(http: &reqwest::Client, url: &str, gzipped: &[u8]) -> Result<(), String> {
    let response = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/tlsrpt+gzip")
        .body(gzipped.to_vec())
        .send()
        .await
        .map_err(|e| crate::error_chain::http(&e))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("{url} answered {}", response.status()))
    }
}

fn gzip(report: &Report) -> Vec<u8> {
    let json = serde_json::to_vec(report).unwrap_or_default();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let written = gz.write_all(&json).and_then(|()| gz.try_finish());
    written.map(|()| gz.get_ref().clone()).unwrap_or_default()
}

/// The mailto addresses and https URLs of a domain's TLS reporting record (RFC 8460 §3).
async fn rua(resolver: &TokioResolver, domain: &str) -> Result<(Vec<String>, Vec<String>), String> {
    use mail_auth::common::parse::TxtRecordParser;
    use mail_auth::mta_sts::{ReportUri, TlsRpt};
    let found = match resolver.txt_lookup(format!("_smtp._tls.{domain}.")).await {
        Ok(found) => found,
        Err(e) if e.is_nx_domain() || e.is_no_records_found() => return Ok(Default::default()),
        Err(e) => {
            return Err(format!(
                "looking up _smtp._tls.{domain}: {}",
                crate::dns::lookup_error::explain(&e)
            ));
        }
    };
    let records: Vec<String> = crate::dns::rdata::txt_texts(found.answers())
        .into_iter()
        .filter(|t| t.starts_with("v=TLSRPTv1"))
        .collect();
    // RFC 8460 §3: several records, or one that does not parse, is no record.
    let [one] = records.as_slice() else {
        return Ok(Default::default());
    };
    let Ok(record) = TlsRpt::parse(one.as_bytes()) else {
        return Ok(Default::default());
    };
    let (mut to, mut urls) = (Vec::new(), Vec::new());
    for uri in record.rua {
        match uri {
            ReportUri::Mail(address) if crate::address::Address::parse(&address).is_ok() => {
                to.push(address)
            }
            ReportUri::Http(url) if url.starts_with("https://") => urls.push(url),
            _ => {}
        }
    }
    Ok((to, urls))
}

/// The mail of RFC 8460 §5.3: the gzipped report as an application/tlsrpt+gzip part,
/// named `submitter!domain!begin!end!id.json.gz`, with TLS-Report-Domain and
/// TLS-Report-Submitter headers. Sent from the null sender, like other reports: nothing
/// bounces back to a report.
fn mail(
    submitter: &Submitter<'_>,
    domain: &str,
    day: &str,
    report: &Report,
    gzipped: &[u8],
    to: &[String],
) -> Outgoing {
    let begin = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp())
        .unwrap_or_default();
    let end = begin + 86_399;
    let host = submitter.hostname;
    let boundary = format!("tlsrpt-{begin}-{}", crate::queue::now_unix());
    let encoded = base64::engine::general_purpose::STANDARD.encode(gzipped);
    let mut body = String::new();
    body.push_str(&format!("From: {}\r\n", submitter.from));
    body.push_str(&format!("To: {}\r\n", to.join(", ")));
    body.push_str(&format!(
        "Subject: Report Domain: {domain} Submitter: {host} Report-ID: <{}>\r\n",
        report.report_id
    ));
    body.push_str(&format!("Date: {}\r\n", chrono::Utc::now().to_rfc2822()));
    body.push_str(&format!("Message-ID: <tlsrpt.{day}.{domain}@{host}>\r\n"));
    body.push_str(&format!("TLS-Report-Domain: {domain}\r\n"));
    body.push_str(&format!("TLS-Report-Submitter: {host}\r\n"));
    body.push_str("Auto-Submitted: auto-generated\r\n");
    // A report of TLS failing must get through where TLS fails (RFC 8689 §5).
    body.push_str("TLS-Required: No\r\n");
    body.push_str("MIME-Version: 1.0\r\n");
    body.push_str(&format!(
        "Content-Type: multipart/report; report-type=\"tlsrpt\"; boundary=\"{boundary}\"\r\n\r\n"
    ));
    body.push_str(&format!(
        "--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    ));
    body.push_str(&format!(
        "The SMTP TLS report (RFC 8460) of {host} for mail to {domain} on {day} (UTC) is attached.\r\n\r\n"
    ));
    body.push_str(&format!(
        "--{boundary}\r\nContent-Type: application/tlsrpt+gzip\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"{host}!{domain}!{begin}!{end}!{day}.json.gz\"\r\n\r\n"
    ));
    for line in encoded.as_bytes().chunks(76) {
        body.push_str(&String::from_utf8_lossy(line));
        body.push_str("\r\n");
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    outgoing(submitter, to, body.into_bytes())
}

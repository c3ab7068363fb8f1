//! Reports that arrive for this server's domains (DMARC aggregate, RFC 7489 §7.2; SMTP
//! TLS, RFC 8460), read from the mail that brings them and kept for the admin's pages.

use mail_auth::report::Report;
use mail_auth::report::tlsrpt::TlsReport;
use serde::{Deserialize, Serialize};

/// Largest report once uncompressed: a big receiver's day for a big domain fits.
const MAX_UNCOMPRESSED: usize = 20 * 1024 * 1024;
/// Days a received report is kept.
pub const KEEP_DAYS: i64 = 90;
/// A report kept at the most, as JSON: anyone can send one, and the admin's page reads
/// them whole. A big receiver's day for a small organisation is a few kilobytes.
pub const MAX_KEPT_BYTES: usize = 256 * 1024;
/// Reports kept about one domain in a day at the most, and their bytes: a domain hears
/// from tens of receivers a day, and a sender of forged reports is stopped here.
pub const MAX_PER_DAY: u64 = 1_000;
pub const MAX_BYTES_PER_DAY: u64 = 16 * 1024 * 1024;

/// A report as kept: what it is about, who sent it, and the report itself (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Received {
    /// A digest of kind, reporter and report id: a report sent twice is kept once.
    pub id: String,
    /// "dmarc" or "tlsrpt".
    pub kind: String,
    /// The domain the report is about.
    pub domain: String,
    /// Who reports (the receiver's or sender's organisation).
    pub org: String,
    pub report_id: String,
    /// The days it covers (Unix seconds).
    pub begin: i64,
    pub end: i64,
    pub received_at: i64,
    /// mail-auth's model of the report, as JSON; empty where only the summaries were read.
    pub body: String,
    /// What the admin's page shows of it, worked out once as it arrives.
    pub summary: Summary,
}

/// Sending addresses a summary names at the most, busiest first; the rest are added up
/// under an empty address, so a report of thousands of rows makes a small summary.
const SOURCES_KEPT: usize = 20;
/// Characters kept of a reporter's name and a report id: senders write them, the admin's
/// page repeats them.
const NAME_KEPT: usize = 200;

/// `text` cut to NAME_KEPT characters.
fn bounded(text: &str) -> String {
    text.chars().take(NAME_KEPT).collect()
}

/// What a report says, in the few numbers the admin's page adds up: the page reads these,
/// not the reports, so its cost does not grow with what senders put in them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// DMARC: (sending address, messages that passed, that failed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<(String, u64, u64)>,
    /// TLS: sessions that succeeded, that failed, and failed ones by result type.
    #[serde(default)]
    pub sessions: u64,
    #[serde(default)]
    pub failed_sessions: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<(String, u64)>,
}

impl Summary {
    fn of_dmarc(report: &Report) -> Summary {
        let mut sources: std::collections::HashMap<String, (u64, u64)> = Default::default();
        for record in report.records() {
            let n = u64::from(record.count());
            let evaluated = &record.row.policy_evaluated;
            let pass = evaluated.dkim == mail_auth::report::DmarcResult::Pass
                || evaluated.spf == mail_auth::report::DmarcResult::Pass;
            let source = record
                .source_ip()
                .map(|ip| ip.to_string())
                .unwrap_or_default();
            let (p, f) = sources.entry(source).or_default();
            if pass {
                *p += n;
            } else {
                *f += n;
            }
        }
        let mut sources: Vec<(String, u64, u64)> =
            sources.into_iter().map(|(s, (p, f))| (s, p, f)).collect();
        sources.sort_by(|a, b| (b.1 + b.2).cmp(&(a.1 + a.2)).then(a.0.cmp(&b.0)));
        if sources.len() > SOURCES_KEPT {
            let rest = sources.split_off(SOURCES_KEPT - 1);
            let (p, f) = rest.iter().fold((0, 0), |(p, f), r| (p + r.1, f + r.2));
            sources.push((String::new(), p, f));
        }
        Summary {
            sources,
            ..Summary::default()
        }
    }

    /// The sessions of the report's policies for `domain` (a report may cover others).
    fn of_tls(report: &TlsReport, domain: &str) -> Summary {
        let mut summary = Summary::default();
        let mut failures: std::collections::BTreeMap<String, u64> = Default::default();
        for policy in report
            .policies
            .iter()
            .filter(|p| p.policy.policy_domain.eq_ignore_ascii_case(domain))
        {
            summary.sessions += policy.summary.total_success as u64;
            summary.failed_sessions += policy.summary.total_failure as u64;
            for f in &policy.failure_details {
                let kind = serde_json::to_value(f.result_type)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_else(|| format!("{:?}", f.result_type));
                *failures.entry(kind).or_default() += f.failed_session_count as u64;
            }
        }
        // Result types are a closed list in mail-auth's model: a few at the most.
        summary.failures = failures.into_iter().collect();
        summary
    }

    /// As kept in a store's text column; "" reads as an empty summary.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_text(text: &str) -> Summary {
        serde_json::from_str(text).unwrap_or_default()
    }
}

/// Why a message brought no report this server could read.
#[derive(Debug, thiserror::Error)]
#[error("not a DMARC or TLS report this server can read (DMARC: {dmarc}; TLS: {tls})")]
pub struct Unreadable {
    dmarc: String,
    tls: String,
}

/// The report a message brings: a DMARC aggregate report, else an SMTP TLS report.
pub fn read(message: &[u8], now: i64) -> Result<Received, Unreadable> {
    let dmarc = match Report::parse_rfc5322(message, MAX_UNCOMPRESSED) {
        Ok(report) => return Ok(of_dmarc(&report, now)),
        Err(e) => format!("{e:?}"),
    };
    let tls = match TlsReport::parse_rfc5322(message, MAX_UNCOMPRESSED) {
        Ok(report) => return Ok(of_tls(&report, now)),
        Err(e) => format!("{e:?}"),
    };
    Err(Unreadable { dmarc, tls })
}

fn of_dmarc(report: &Report, now: i64) -> Received {
    let org = bounded(report.org_name());
    let report_id = bounded(report.report_id());
    Received {
        id: digest("dmarc", &org, &report_id),
        kind: "dmarc".into(),
        domain: report.domain().to_ascii_lowercase(),
        org,
        report_id,
        begin: report.date_range_begin() as i64,
        end: report.date_range_end() as i64,
        received_at: now,
        body: serde_json::to_string(report).unwrap_or_default(),
        summary: Summary::of_dmarc(report),
    }
}

fn of_tls(report: &TlsReport, now: i64) -> Received {
    let org = bounded(report.organization_name.as_deref().unwrap_or_default());
    let domain = report
        .policies
        .first()
        .map(|p| p.policy.policy_domain.to_ascii_lowercase())
        .unwrap_or_default();
    Received {
        id: digest("tlsrpt", &org, &report.report_id),
        kind: "tlsrpt".into(),
        summary: Summary::of_tls(report, &domain),
        domain,
        org,
        report_id: bounded(&report.report_id),
        begin: report.date_range.start_datetime.to_timestamp(),
        end: report.date_range.end_datetime.to_timestamp(),
        received_at: now,
        body: serde_json::to_string(report).unwrap_or_default(),
    }
}

fn digest(kind: &str, org: &str, report_id: &str) -> String {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(format!("{kind}\n{org}\n{report_id}").as_bytes());
    hash[..12].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_auth::report::{DmarcResult, Record};

    #[test]
    fn a_summary_adds_up_sources_and_keeps_the_busiest() {
        let mut report = Report::new();
        // 60 addresses, one message each, and one with five (of which two fail).
        for i in 0..60u8 {
            report = report.with_record(
                Record::new()
                    .with_source_ip(std::net::IpAddr::from([192, 0, 2, i]))
                    .with_count(1)
                    .with_dmarc_dkim_result(DmarcResult::Pass),
            );
        }
        for (count, result) in [(3, DmarcResult::Pass), (2, DmarcResult::Fail)] {
            report = report.with_record(
                Record::new()
                    .with_source_ip(std::net::IpAddr::from([198, 51, 100, 7]))
                    .with_count(count)
                    .with_dmarc_dkim_result(result),
            );
        }
        let summary = Summary::of_dmarc(&report);
        assert_eq!(summary.sources.len(), SOURCES_KEPT);
        assert_eq!(summary.sources[0], ("198.51.100.7".into(), 3, 2));
        // The 42 smallest, added up under no address: nothing is lost from the totals.
        assert_eq!(summary.sources.last(), Some(&(String::new(), 42, 0)));
        let total: u64 = summary.sources.iter().map(|s| s.1 + s.2).sum();
        assert_eq!(total, 65);
        assert_eq!(Summary::from_text(&summary.to_text()), summary);
        assert_eq!(Summary::from_text(""), Summary::default());
    }
}

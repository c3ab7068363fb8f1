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
    /// mail-auth's model of the report, as JSON.
    pub body: String,
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
    let org = report.org_name().to_string();
    let report_id = report.report_id().to_string();
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
    }
}

fn of_tls(report: &TlsReport, now: i64) -> Received {
    let org = report.organization_name.clone().unwrap_or_default();
    let domain = report
        .policies
        .first()
        .map(|p| p.policy.policy_domain.to_ascii_lowercase())
        .unwrap_or_default();
    Received {
        id: digest("tlsrpt", &org, &report.report_id),
        kind: "tlsrpt".into(),
        domain,
        org,
        report_id: report.report_id.clone(),
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

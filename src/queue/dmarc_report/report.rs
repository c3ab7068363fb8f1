//! A day's DMARC rows as aggregate reports: one per author domain, its rows with their
//! counts, in RFC 9990's XML as mail-auth writes it.

use std::collections::{BTreeMap, HashMap};

use mail_auth::report::Report;

use super::{Counted, Detail};

/// Who reports: the organisation's name and an address to write to about the reports.
pub struct Reporter<'a> {
    pub organization: &'a str,
    pub contact: &'a str,
}

/// One author domain's report, and the addresses its DMARC record names.
pub struct DomainReport {
    pub domain: String,
    pub rua: Vec<String>,
    /// Messages the report counts.
    pub messages: u64,
    pub report: Report,
}

/// One report per policy domain with rows on `day` ("YYYY-MM-DD"), in domain order: the
/// rows of each author domain `policy_domains` names go into its policy domain's report
/// (those it does not name are left for later).
pub fn reports(
    day: &str,
    rows: &[Counted],
    policy_domains: &HashMap<String, String>,
    reporter: &Reporter<'_>,
) -> Vec<DomainReport> {
    let begin = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp().max(0) as u64)
        .unwrap_or_default();
    let mut by_domain: BTreeMap<&str, Vec<(Detail, u64)>> = BTreeMap::new();
    for c in rows.iter().filter(|c| c.row.day == day) {
        let Some(domain) = policy_domains.get(&c.row.domain) else {
            continue;
        };
        // A row this version cannot read (written by another) is left out, not fatal.
        if let Ok(mut detail) = serde_json::from_str::<Detail>(&c.row.detail) {
            detail.policy.domain = domain.clone();
            by_domain.entry(domain).or_default().push((detail, c.count));
        }
    }
    by_domain
        .into_iter()
        .filter_map(|(domain, details)| {
            let mut rua: Vec<String> = Vec::new();
            for (detail, _) in &details {
                for address in &detail.rua {
                    if !rua.contains(address) {
                        rua.push(address.clone());
                    }
                }
            }
            let policy = details.last()?.0.policy.clone();
            let messages = details.iter().map(|(_, n)| n).sum();
            let mut report = Report::new()
                .with_version(1.0)
                .with_org_name(reporter.organization)
                .with_email(reporter.contact)
                .with_report_id(format!("{day}.{domain}@{}", reporter.organization))
                .with_date_range_begin(begin)
                .with_date_range_end(begin + 86_399)
                .with_generator(concat!("ferrymail ", env!("CARGO_PKG_VERSION")))
                .with_policy_published(policy);
            for (detail, count) in details {
                let count = u32::try_from(count).unwrap_or(u32::MAX);
                report = report.with_record(detail.record.with_count(count));
            }
            Some(DomainReport {
                domain: domain.to_string(),
                rua,
                messages,
                report,
            })
        })
        .collect()
}

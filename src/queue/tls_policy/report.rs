//! A day's outbound TLS sessions as SMTP TLS reports (RFC 8460 §4): one JSON report per
//! policy domain, its sessions summed per policy and its failures per kind and host.

use std::collections::BTreeMap;

use serde::Serialize;

use super::tally::Sessions;

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Report {
    pub organization_name: String,
    pub date_range: DateRange,
    pub contact_info: String,
    pub report_id: String,
    pub policies: Vec<PolicyReport>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct DateRange {
    pub start_datetime: String,
    pub end_datetime: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct PolicyReport {
    pub policy: PolicyDetails,
    pub summary: Summary,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failure_details: Vec<FailureDetails>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct PolicyDetails {
    pub policy_type: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policy_string: Vec<String>,
    pub policy_domain: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mx_host: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Summary {
    pub total_successful_session_count: u64,
    pub total_failure_session_count: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct FailureDetails {
    pub result_type: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub sending_mta_ip: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub receiving_mx_hostname: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub receiving_ip: String,
    pub failed_session_count: u64,
}

/// Who reports: the organisation's name and an address to write to about the reports.
pub struct Reporter<'a> {
    pub organization: &'a str,
    pub contact: &'a str,
}

/// One report per domain with sessions on `day` ("YYYY-MM-DD"), in domain order.
pub fn reports(day: &str, sessions: &[Sessions], reporter: &Reporter<'_>) -> Vec<Report> {
    // domain → (policy type, policy text) → sessions
    let mut by_domain: BTreeMap<&str, BTreeMap<(&str, &str), Vec<&Sessions>>> = BTreeMap::new();
    for s in sessions.iter().filter(|s| s.key.day == day) {
        by_domain
            .entry(&s.key.domain)
            .or_default()
            .entry((&s.key.policy_type, &s.key.policy))
            .or_default()
            .push(s);
    }
    by_domain
        .into_iter()
        .map(|(domain, policies)| Report {
            organization_name: reporter.organization.to_string(),
            date_range: DateRange {
                start_datetime: format!("{day}T00:00:00Z"),
                end_datetime: format!("{day}T23:59:59Z"),
            },
            contact_info: reporter.contact.to_string(),
            report_id: format!("{day}_{domain}@{}", reporter.organization),
            policies: policies
                .into_iter()
                .map(|((policy_type, text), sessions)| {
                    policy_report(domain, policy_type, text, &sessions)
                })
                .collect(),
        })
        .collect()
}

fn policy_report(
    domain: &str,
    policy_type: &str,
    text: &str,
    sessions: &[&Sessions],
) -> PolicyReport {
    let mut summary = Summary::default();
    let mut failures: BTreeMap<(&str, &str, &str, &str), u64> = BTreeMap::new();
    for s in sessions {
        match s.key.outcome.result_type() {
            None => summary.total_successful_session_count += s.count,
            Some(kind) => {
                summary.total_failure_session_count += s.count;
                *failures
                    .entry((kind, &s.key.sending_ip, &s.key.mx_host, &s.key.receiving_ip))
                    .or_default() += s.count;
            }
        }
    }
    // §4.4: the policy as published, one string per line, and the MX patterns it lists.
    let policy_string: Vec<String> = text
        .lines()
        .map(|l| l.trim_end_matches('\r').to_string())
        .filter(|l| !l.is_empty())
        .collect();
    let mx_host = super::Policy::parse(text.as_bytes())
        .map(|p| p.mx)
        .unwrap_or_default();
    PolicyReport {
        policy: PolicyDetails {
            policy_type: policy_type.to_string(),
            policy_string,
            policy_domain: domain.to_string(),
            mx_host,
        },
        summary,
        failure_details: failures
            .into_iter()
            .map(|((kind, sending, mx, receiving), count)| FailureDetails {
                result_type: kind.to_string(),
                sending_mta_ip: sending.to_string(),
                receiving_mx_hostname: mx.to_string(),
                receiving_ip: receiving.to_string(),
                failed_session_count: count,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tally::{Outcome, SessionKey};
    use super::*;

    fn session(domain: &str, policy: &str, mx: &str, outcome: Outcome, count: u64) -> Sessions {
        Sessions {
            key: SessionKey {
                day: "2026-12-05".into(),
                domain: domain.into(),
                policy_type: if policy.is_empty() {
                    "no-policy-found"
                } else {
                    "sts"
                }
                .into(),
                policy: policy.into(),
                mx_host: mx.into(),
                receiving_ip: if mx.is_empty() { "" } else { "192.0.2.25" }.into(),
                sending_ip: if mx.is_empty() { "" } else { "198.51.100.1" }.into(),
                outcome,
            },
            count,
        }
    }

    #[test]
    fn a_day_becomes_one_report_per_domain_in_rfc_8460s_shape() {
        let policy =
            "version: STSv1\r\nmode: enforce\r\nmx: *.mail.company-y.example\r\nmax_age: 86400\r\n";
        let sessions = [
            session(
                "company-y.example",
                policy,
                "mx1.mail.company-y.example",
                Outcome::Success,
                5326,
            ),
            session(
                "company-y.example",
                policy,
                "mx1.mail.company-y.example",
                Outcome::CertificateExpired,
                100,
            ),
            session(
                "company-y.example",
                policy,
                "mx2.mail.company-y.example",
                Outcome::StarttlsNotSupported,
                200,
            ),
            session(
                "company-y.example",
                policy,
                "mx2.mail.company-y.example",
                Outcome::StarttlsNotSupported,
                3,
            ),
            session("other.example", "", "mx.other.example", Outcome::Success, 7),
        ];
        let made = reports(
            "2026-12-05",
            &sessions,
            &Reporter {
                organization: "mx.example.net",
                contact: "postmaster@example.net",
            },
        );
        assert_eq!(made.len(), 2);
        let json = serde_json::to_value(&made[0]).unwrap();
        assert_eq!(json["organization-name"], "mx.example.net");
        assert_eq!(json["date-range"]["start-datetime"], "2026-12-05T00:00:00Z");
        assert_eq!(json["date-range"]["end-datetime"], "2026-12-05T23:59:59Z");
        let p = &json["policies"][0];
        assert_eq!(p["policy"]["policy-type"], "sts");
        assert_eq!(p["policy"]["policy-domain"], "company-y.example");
        assert_eq!(p["policy"]["policy-string"][1], "mode: enforce");
        assert_eq!(p["policy"]["mx-host"][0], "*.mail.company-y.example");
        assert_eq!(p["summary"]["total-successful-session-count"], 5326);
        assert_eq!(p["summary"]["total-failure-session-count"], 303);
        let failures = p["failure-details"].as_array().unwrap();
        assert_eq!(failures.len(), 2);
        assert_eq!(failures[1]["result-type"], "starttls-not-supported");
        assert_eq!(failures[1]["failed-session-count"], 203);
        assert_eq!(
            failures[1]["receiving-mx-hostname"],
            "mx2.mail.company-y.example"
        );
        // No policy: the type says so, and there is no policy text or MX list.
        let none = serde_json::to_value(&made[1]).unwrap();
        assert_eq!(
            none["policies"][0]["policy"]["policy-type"],
            "no-policy-found"
        );
        assert!(none["policies"][0]["policy"].get("policy-string").is_none());
        assert!(none["policies"][0].get("failure-details").is_none());
    }
}

//! The reports other mail servers send about this server's domains: who sends mail as
//! them and whether it passes DMARC, and how TLS to their MX hosts went, per day.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use maud::html;

use super::pages::page;
use super::{AdminViewer, charts, html as respond};
use crate::http::AppState;
use crate::queue::dmarc_report::received::Received;

/// Days of reports the page shows.
const DAYS: i64 = 30;
/// Sources listed per domain, most messages first.
const SOURCES: usize = 50;
/// Rows a domain's tables add up at the most (sources, reporters); what comes after is
/// added up under "others": senders choose how many there are.
const KEPT: usize = 1_000;
/// Reports listed, newest first (the charts and tables add up all of them).
const LISTED: usize = 200;

/// What the reports say of one domain.
#[derive(Default)]
struct Domain {
    /// Day → (passed, failed) messages.
    days: BTreeMap<String, (u64, u64)>,
    /// (source address, reporter) → (passed, failed).
    sources: BTreeMap<(String, String), (u64, u64)>,
    /// Reporter → (successful sessions, failed, failure kinds).
    tls: BTreeMap<String, Sessions>,
}

fn summarise(reports: &[Received]) -> BTreeMap<String, Domain> {
    let mut domains: BTreeMap<String, Domain> = BTreeMap::new();
    for r in reports {
        let domain = domains.entry(r.domain.clone()).or_default();
        match r.kind.as_str() {
            "dmarc" => {
                let day = crate::queue::tls_policy::tally::day_of(r.begin);
                let (p, f) = domain.days.entry(day).or_default();
                for (source, passed, failed) in &r.summary.sources {
                    *p += passed;
                    *f += failed;
                    // A report's smallest sources are added up under no address, and
                    // past KEPT rows a domain's further ones under no address either.
                    let mut key = (source.as_str(), r.org.as_str());
                    if source.is_empty()
                        || (domain.sources.len() >= KEPT
                            && !domain.sources.contains_key(&(key.0.into(), key.1.into())))
                    {
                        key = ("others", "");
                    }
                    let (sp, sf) = domain
                        .sources
                        .entry((key.0.to_string(), key.1.to_string()))
                        .or_default();
                    *sp += passed;
                    *sf += failed;
                }
            }
            "tlsrpt" => {
                let org = if domain.tls.len() >= KEPT && !domain.tls.contains_key(&r.org) {
                    "others"
                } else {
                    r.org.as_str()
                };
                let (ok, failed, kinds) = domain.tls.entry(org.to_string()).or_default();
                *ok += r.summary.sessions;
                *failed += r.summary.failed_sessions;
                for (kind, n) in &r.summary.failures {
                    *kinds.entry(kind.clone()).or_default() += n;
                }
            }
            _ => {}
        }
    }
    domains
}

/// The sending addresses with the most messages first, at most `SOURCES`: (address,
/// reporter, passed, failed).
fn busiest(sources: &BTreeMap<(String, String), (u64, u64)>) -> Vec<(&str, &str, u64, u64)> {
    let mut list: Vec<(&str, &str, u64, u64)> = sources
        .iter()
        .map(|((address, org), (p, f))| (address.as_str(), org.as_str(), *p, *f))
        .collect();
    list.sort_by_key(|(_, _, p, f)| std::cmp::Reverse(p + f));
    list.truncate(SOURCES);
    list
}

/// The reporters with the most sessions first, at most `SOURCES`.
type Sessions = (u64, u64, BTreeMap<String, u64>);
fn busiest_reporters(tls: &BTreeMap<String, Sessions>) -> Vec<(&String, &Sessions)> {
    let mut list: Vec<(&String, &Sessions)> = tls.iter().collect();
    list.sort_by_key(|(_, (ok, failed, _))| std::cmp::Reverse(ok + failed));
    list.truncate(SOURCES);
    list
}

/// A bar for each of the last `DAYS` days (the reports' days in it), oldest first, so a
/// day without reports shows as one.
fn last_days(days: &BTreeMap<String, (u64, u64)>) -> Vec<(String, u64, u64)> {
    let now = crate::queue::now_unix();
    (0..DAYS)
        .rev()
        .map(|back| {
            let day = crate::queue::tls_policy::tally::day_of(now - back * 86_400);
            let (p, f) = days.get(&day).copied().unwrap_or_default();
            (day, p, f)
        })
        .collect()
}

/// `GET /admin/reports`: the last 30 days of reports received, per domain, with the
/// list of reports behind them.
pub async fn reports(State(state): State<AppState>, AdminViewer(viewer): AdminViewer) -> Response {
    let db = state.admin.queue.clone();
    let since = crate::queue::now_unix() - DAYS * 86_400;
    let Ok(Ok(found)) = tokio::task::spawn_blocking(move || db.received_reports(since)).await
    else {
        return axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let domains = summarise(&found);
    let body = html! {
        @if found.is_empty() {
            p.muted { "No reports received in the last " (DAYS) " days. They arrive at the address a domain's " code { "dmarc_reports" } " names, when that address is at one of this server's domains." }
        }
        @for (name, d) in &domains {
            h2 { (name) }
            @if !d.days.is_empty() {
                @let days = last_days(&d.days);
                (charts::dmarc_days(&format!("Mail sent as {name}, as receivers judged it"), &days))
                @let sources = busiest(&d.sources);
                table.rows {
                    tr { th { "Sending address" } th { "Reported by" } th { "Messages" } th { "DMARC pass" } th { "DMARC fail" } }
                    @for (source, org, p, f) in &sources {
                        tr {
                            td data-label="Sending address" { (source) }
                            td data-label="Reported by" { (org) }
                            td data-label="Messages" { (p + f) }
                            td data-label="DMARC pass" { (p) }
                            @if *f > 0 { td.bad data-label="DMARC fail" { (f) } } @else { td data-label="DMARC fail" { "0" } }
                        }
                    }
                }
            }
            @if !d.tls.is_empty() {
                h3 { "TLS to " (name) "'s MX hosts, as senders saw it" }
                table.rows {
                    tr { th { "Reported by" } th { "Sessions" } th { "Failed" } th { "Failures" } }
                    @for (org, (ok, failed, kinds)) in busiest_reporters(&d.tls) {
                        tr {
                            td data-label="Reported by" { (org) }
                            td data-label="Sessions" { (ok + failed) }
                            @if *failed > 0 { td.bad data-label="Failed" { (failed) } } @else { td data-label="Failed" { "0" } }
                            td data-label="Failures" {
                                @for (kind, n) in kinds { (kind) " " (n) " " }
                            }
                        }
                    }
                }
            }
        }
        @if found.len() == crate::queue::RECEIVED_REPORTS_LISTED {
            p.muted { "The figures above add up the newest " (found.len()) " reports only." }
        }
        @if !found.is_empty() {
            h2 { "Reports received" }
            @if found.len() > LISTED {
                p.muted { "The newest " (LISTED) " of " (found.len()) " reports." }
            }
            table.rows {
                tr { th { "Received" } th { "Kind" } th { "Domain" } th { "From" } th { "Covers" } }
                @for r in found.iter().take(LISTED) {
                    tr {
                        td data-label="Received" { a href={ "/admin/reports/" (r.id) } { (crate::backup::rfc3339(r.received_at)) } }
                        td data-label="Kind" { (if r.kind == "dmarc" { "DMARC" } else { "TLS" }) }
                        td data-label="Domain" { (r.domain) }
                        td data-label="From" { (r.org) }
                        td data-label="Covers" { (crate::queue::tls_policy::tally::day_of(r.begin)) }
                    }
                }
            }
        }
    };
    respond(page(&viewer, "Reports", body))
}

/// `GET /admin/reports/{id}`: one report as received, in full.
pub async fn report(
    State(state): State<AppState>,
    AdminViewer(viewer): AdminViewer,
    Path(id): Path<String>,
) -> Response {
    let db = state.admin.queue.clone();
    let Ok(Ok(found)) = tokio::task::spawn_blocking(move || db.received_report(&id)).await else {
        return axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let Some(r) = found else {
        return axum::http::StatusCode::NOT_FOUND.into_response();
    };
    let pretty = serde_json::from_str::<serde_json::Value>(&r.body)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or(r.body.clone());
    let body = html! {
        p { (if r.kind == "dmarc" { "DMARC aggregate report" } else { "SMTP TLS report" }) " about " strong { (r.domain) } " from " (r.org) ", id " code { (r.report_id) } "." }
        pre { (pretty) }
    };
    respond(page(&viewer, "Report", body))
}

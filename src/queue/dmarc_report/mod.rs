//! DMARC aggregate reports (RFC 7489 §7.2, RFC 9990): each arriving message's DMARC result,
//! counted per author domain and day, sent each night as gzipped XML to the domain's `rua`.

pub mod received;
pub mod report;
pub mod send;

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use mail_auth::report::{
    ActionDisposition, PolicyOverride, PolicyOverrideReason, PolicyPublished, Record,
    SPFDomainScope,
};
use mail_auth::{DkimOutput, DmarcOutput, SpfOutput};
use serde::{Deserialize, Serialize};

use crate::queue::Queue;
use crate::queue::tls_policy::tally::today;

/// What the reports count the rows of, in the store.
pub const KIND: &str = "dmarc";

/// One message's evaluation as a report row, without its count.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Row {
    /// UTC day, "2026-12-05".
    pub day: String,
    /// The author (RFC5322.From) domain the report is about (lower-case).
    pub domain: String,
    /// What the report says of the message (`Detail` as JSON): equal texts add up.
    pub detail: String,
}

/// The policy that applied and the record of the message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Detail {
    /// The `rua` addresses of the DMARC record (mailto: taken off).
    pub rua: Vec<String>,
    pub policy: PolicyPublished,
    pub record: Record,
}

/// `rua` addresses kept per row: RFC 7489 §6.2 asks reporters to take at least two.
const MAX_RUA: usize = 5;
/// DKIM results kept per row: a message can carry any number of signatures.
const MAX_DKIM_RESULTS: usize = 10;
/// A row's text at most; a larger one (long addresses, long names) is not counted.
const MAX_DETAIL_BYTES: usize = 4096;

/// What the checks learnt of a message from a domain that asks for aggregate reports,
/// before what became of the message is known.
pub struct Facts {
    domain: String,
    detail: Detail,
}

/// The facts of a message whose author domain asks for aggregate reports; None when it
/// has no DMARC record or the record names no `rua`.
pub fn facts(
    ip: IpAddr,
    mail_from_domain: &str,
    dkim: &[DkimOutput<'_>],
    spf: &SpfOutput,
    dmarc: &DmarcOutput,
) -> Option<Facts> {
    let record = dmarc.dmarc_record()?;
    let rua: Vec<String> = record
        .rua
        .iter()
        .map(|u| u.uri().trim_start_matches("mailto:").to_ascii_lowercase())
        .take(MAX_RUA)
        .collect();
    if rua.is_empty() {
        return None;
    }
    let domain = dmarc.domain().to_ascii_lowercase();
    let mut entry = Record::new()
        .with_source_ip(ip)
        .with_header_from(domain.clone())
        .with_envelope_from(mail_from_domain.to_ascii_lowercase())
        .with_dkim_output(&dkim[..dkim.len().min(MAX_DKIM_RESULTS)])
        .with_spf_output(spf, SPFDomainScope::MailFrom)
        .with_dmarc_output(dmarc);
    // The checks' words vary message by message; rows of the same outcome must add up.
    for d in &mut entry.auth_results.dkim {
        d.human_result = None;
    }
    for s in &mut entry.auth_results.spf {
        s.human_result = None;
    }
    Some(Facts {
        detail: Detail {
            rua,
            policy: PolicyPublished::from_record(domain.clone(), record),
            record: entry,
        },
        domain,
    })
}

impl Facts {
    /// The message's row, now that its fate is known. The disposition is what this
    /// server did, not what the policy asked: it refuses only where the recipient's
    /// domain says so, and quarantines never (RFC 7489 §7.2: local_policy).
    pub fn row(mut self, refused: bool) -> Option<Row> {
        let evaluated = &mut self.detail.record.row.policy_evaluated;
        if evaluated.disposition != ActionDisposition::Pass {
            let asked = evaluated.disposition;
            evaluated.disposition = if refused {
                ActionDisposition::Reject
            } else {
                ActionDisposition::None
            };
            if asked != evaluated.disposition && asked != ActionDisposition::None {
                evaluated
                    .reason
                    .push(PolicyOverrideReason::new(PolicyOverride::LocalPolicy));
            }
        }
        let detail = serde_json::to_string(&self.detail).ok()?;
        (detail.len() <= MAX_DETAIL_BYTES).then(|| Row {
            day: today(),
            domain: self.domain,
            detail,
        })
    }
}

/// Rows as the store returns them: one per distinct row of a day, with its count.
#[derive(Debug, Clone)]
pub struct Counted {
    pub row: Row,
    pub count: u64,
}

/// Distinct rows one node counts in a day. Senders choose what a row holds (their
/// domains, addresses and results), so without a bound they could fill memory and the
/// store; a small organisation's mail makes a few thousand a day.
pub const MAX_ROWS_PER_DAY: usize = 50_000;
/// Distinct rows of one author domain in a day: one sender cannot use up the others'.
pub const MAX_ROWS_PER_DOMAIN: usize = 2_000;

/// Rows counted in memory by the SMTP sessions, written to the store each minute.
#[derive(Default)]
pub struct Tally {
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    rows: HashMap<Row, u64>,
    /// The day counted, and the digests of its distinct rows so far (flushed or not):
    /// a row seen before always counts, a new one only within the bounds.
    day: String,
    seen: HashSet<u64>,
    per_domain: HashMap<String, usize>,
    /// Whether a bound was reached today (warned once).
    full: bool,
}

impl Tally {
    pub fn count(&self, row: Row) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if counts.day != row.day {
            counts.day = row.day.clone();
            counts.seen.clear();
            counts.per_domain.clear();
            counts.full = false;
        }
        let digest = {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            row.hash(&mut h);
            h.finish()
        };
        if !counts.seen.contains(&digest) {
            let of_domain = counts.per_domain.get(&row.domain).copied().unwrap_or(0);
            if counts.seen.len() >= MAX_ROWS_PER_DAY || of_domain >= MAX_ROWS_PER_DOMAIN {
                if !counts.full {
                    counts.full = true;
                    tracing::warn!(
                        domain = row.domain,
                        "DMARC results: today's distinct report rows reached their bound ({MAX_ROWS_PER_DAY} in all, {MAX_ROWS_PER_DOMAIN} per domain); new ones are not counted until tomorrow"
                    );
                }
                return;
            }
            counts.seen.insert(digest);
            *counts.per_domain.entry(row.domain.clone()).or_default() += 1;
        }
        *counts.rows.entry(row).or_default() += 1;
    }

    /// Adds what was counted since the last flush to the store; kept for the next try
    /// when the store fails.
    pub fn flush(&self, queue: &dyn Queue) {
        let taken: Vec<Counted> = {
            let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
            counts
                .rows
                .drain()
                .map(|(row, count)| Counted { row, count })
                .collect()
        };
        if taken.is_empty() {
            return;
        }
        if let Err(e) = queue.add_report_rows(KIND, &taken) {
            tracing::warn!(error = %e, "keeping the DMARC results failed; trying again in a minute");
            let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
            for c in taken {
                *counts.rows.entry(c.row).or_default() += c.count;
            }
        }
    }

    /// Flushes every minute, and once more at shutdown.
    pub async fn run(
        self: Arc<Self>,
        queue: Arc<dyn Queue>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        crate::queue::counts::flush_each_minute(queue, shutdown, move |queue, kept_from| {
            self.flush(queue);
            if let Err(e) = queue.forget_report_rows(KIND, kept_from) {
                tracing::warn!(error = %e, "forgetting old DMARC results");
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_days_distinct_rows_are_bounded_and_known_ones_still_count() {
        let tally = Tally::default();
        let row = |day: &str, domain: usize, n: usize| Row {
            day: day.into(),
            domain: format!("d{domain}.example"),
            detail: format!("{n}"),
        };
        // One domain's rows stop at its bound; another's still count.
        for n in 0..MAX_ROWS_PER_DOMAIN + 10 {
            tally.count(row("2026-12-05", 0, n));
        }
        tally.count(row("2026-12-05", 1, 0));
        assert_eq!(
            tally.counts.lock().unwrap().rows.len(),
            MAX_ROWS_PER_DOMAIN + 1
        );
        // After a flush, a row seen before still counts; a new one past the bound not.
        tally.counts.lock().unwrap().rows.clear();
        tally.count(row("2026-12-05", 0, 0));
        tally.count(row("2026-12-05", 0, MAX_ROWS_PER_DOMAIN + 20));
        {
            let counts = tally.counts.lock().unwrap();
            assert_eq!(counts.rows.len(), 1);
            assert_eq!(counts.rows[&row("2026-12-05", 0, 0)], 1);
        }
        // The day's bound over all domains.
        let mut n = 0;
        while tally.counts.lock().unwrap().seen.len() < MAX_ROWS_PER_DAY {
            tally.count(row("2026-12-05", 2 + n / MAX_ROWS_PER_DOMAIN, n));
            n += 1;
        }
        tally.count(row("2026-12-05", 999_999, 0));
        assert!(
            !tally
                .counts
                .lock()
                .unwrap()
                .rows
                .contains_key(&row("2026-12-05", 999_999, 0))
        );
        // A new day starts afresh.
        tally.count(row("2026-12-06", 0, 0));
        assert_eq!(tally.counts.lock().unwrap().seen.len(), 1);
    }
}

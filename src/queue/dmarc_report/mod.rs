//! DMARC aggregate reports (RFC 7489 §7.2, RFC 9990): each arriving message's DMARC result,
//! counted per author domain and day, sent each night as gzipped XML to the domain's `rua`.

pub mod report;
pub mod send;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use mail_auth::report::{PolicyPublished, Record, SPFDomainScope};
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

/// The row of a message whose author domain asks for aggregate reports; None when it has
/// no DMARC record or the record names no `rua`.
pub fn row(
    ip: IpAddr,
    mail_from_domain: &str,
    dkim: &[DkimOutput<'_>],
    spf: &SpfOutput,
    dmarc: &DmarcOutput,
) -> Option<Row> {
    let record = dmarc.dmarc_record()?;
    let rua: Vec<String> = record
        .rua
        .iter()
        .map(|u| u.uri().trim_start_matches("mailto:").to_string())
        .collect();
    if rua.is_empty() {
        return None;
    }
    let domain = dmarc.domain().to_ascii_lowercase();
    let mut entry = Record::new()
        .with_source_ip(ip)
        .with_header_from(domain.clone())
        .with_envelope_from(mail_from_domain.to_ascii_lowercase())
        .with_dkim_output(dkim)
        .with_spf_output(spf, SPFDomainScope::MailFrom)
        .with_dmarc_output(dmarc);
    // The checks' words vary message by message; rows of the same outcome must add up.
    for d in &mut entry.auth_results.dkim {
        d.human_result = None;
    }
    for s in &mut entry.auth_results.spf {
        s.human_result = None;
    }
    let detail = Detail {
        rua,
        policy: PolicyPublished::from_record(domain.clone(), record),
        record: entry,
    };
    Some(Row {
        day: today(),
        domain,
        detail: serde_json::to_string(&detail).ok()?,
    })
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

/// Rows counted in memory by the SMTP sessions, written to the store each minute.
#[derive(Default)]
pub struct Tally {
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    rows: HashMap<Row, u64>,
    /// The day counted, and the distinct rows flushed on it (each may be new to the store).
    day: String,
    flushed_today: usize,
    /// Whether the day's bound was reached (warned once).
    full: bool,
}

impl Tally {
    pub fn count(&self, row: Row) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if counts.day != row.day {
            counts.day = row.day.clone();
            counts.flushed_today = 0;
            counts.full = false;
        }
        let distinct = counts.rows.len() + counts.flushed_today;
        if let Some(n) = counts.rows.get_mut(&row) {
            *n += 1;
        } else if distinct < MAX_ROWS_PER_DAY {
            counts.rows.insert(row, 1);
        } else if !counts.full {
            counts.full = true;
            tracing::warn!(
                rows = MAX_ROWS_PER_DAY,
                "DMARC results: today's distinct report rows reached their bound; further new ones are not counted until tomorrow"
            );
        }
    }

    /// Adds what was counted since the last flush to the store; kept for the next try
    /// when the store fails.
    pub fn flush(&self, queue: &dyn Queue) {
        let taken: Vec<Counted> = {
            let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
            let taken: Vec<Counted> = counts
                .rows
                .drain()
                .map(|(row, count)| Counted { row, count })
                .collect();
            counts.flushed_today += taken.len();
            taken
        };
        if taken.is_empty() {
            return;
        }
        if let Err(e) = queue.add_report_rows(KIND, &taken) {
            tracing::warn!(error = %e, "keeping the DMARC results failed; trying again in a minute");
            let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
            counts.flushed_today = counts.flushed_today.saturating_sub(taken.len());
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
        let row = |day: &str, n: usize| Row {
            day: day.into(),
            domain: format!("d{n}.example"),
            detail: String::new(),
        };
        for n in 0..MAX_ROWS_PER_DAY + 10 {
            tally.count(row("2026-12-05", n));
        }
        tally.count(row("2026-12-05", 0));
        {
            let counts = tally.counts.lock().unwrap();
            assert_eq!(counts.rows.len(), MAX_ROWS_PER_DAY);
            assert_eq!(counts.rows[&row("2026-12-05", 0)], 2);
            assert!(
                !counts
                    .rows
                    .contains_key(&row("2026-12-05", MAX_ROWS_PER_DAY))
            );
        }
        // Rows flushed count against the day too; a new day starts afresh.
        let taken = tally.counts.lock().unwrap().rows.drain().count();
        tally.counts.lock().unwrap().flushed_today = taken;
        tally.count(row("2026-12-05", MAX_ROWS_PER_DAY + 1));
        assert!(tally.counts.lock().unwrap().rows.is_empty());
        tally.count(row("2026-12-06", 1));
        assert_eq!(tally.counts.lock().unwrap().rows.len(), 1);
    }
}

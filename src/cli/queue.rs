//! `ferrymail queue list | retry ID | remove ID`: the messages waiting in the queue, and
//! each delivery of them; ID is the message's (SMTP's "Queued as 8") or one delivery's (8/10).

use std::path::Path;
use std::process::ExitCode;

use crate::queue::now_unix;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Every delivery waiting, with its attempts and last error.
    List {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Try a message's deliveries again now (held ones too): ID is the message's, as
    /// SMTP's "Queued as 8" and the log's msg_id=8 give it, or 8/10 for one delivery.
    Retry { id: QueueId },
    /// Drop a message's deliveries, or one delivery (8/10); no bounce is sent.
    Remove { id: QueueId },
    /// The SMTP TLS reports (RFC 8460) a day's outbound sessions make, as JSON: one per
    /// receiving domain, with its MTA-STS policy or DANE records, successes and failures by kind.
    TlsReport {
        /// The UTC day, YYYY-MM-DD; today (so far) by default.
        #[arg(long)]
        day: Option<String>,
        /// Queue the day's reports for the domains that ask for them (from `[reports]
        /// from`), as the server does each day for the day before; a domain's report for
        /// a day is sent once, whoever sends it.
        #[arg(long)]
        send: bool,
    },
    /// The DMARC aggregate reports (RFC 7489 §7.2) a day's arriving mail makes: a line per
    /// sender domain that asks for them, or with --domain that domain's report as XML.
    DmarcReport {
        /// The UTC day, YYYY-MM-DD; today (so far) by default.
        #[arg(long)]
        day: Option<String>,
        /// Print this domain's report, as the XML it is sent as.
        #[arg(long)]
        domain: Option<String>,
        /// Queue the day's reports (from `[reports] from`; yesterday's unless --day says),
        /// as the server does each night; a domain's report for a day is sent once,
        /// whoever sends it.
        #[arg(long)]
        send: bool,
    },
    /// The mail log: accepted, rejected, delivered, deferred and bounced messages.
    Log {
        /// How many records, newest first.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// What `retry` and `remove` act on: a message (every delivery of it still queued), or
/// one delivery of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueId {
    Message(i64),
    Delivery { message: i64, delivery: i64 },
}

impl std::str::FromStr for QueueId {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "{text:?}: expected a message id (8, as in \"Queued as 8\") or one delivery of it (8/10)"
            )
        };
        let number = |t: &str| t.trim().parse::<i64>().map_err(|_| bad());
        let text = text.trim().trim_start_matches('#');
        match text.split_once('/') {
            Some((message, delivery)) => Ok(QueueId::Delivery {
                message: number(message)?,
                delivery: number(delivery)?,
            }),
            None => Ok(QueueId::Message(number(text)?)),
        }
    }
}

impl QueueId {
    /// "Message 8" or "Delivery 8/10", to begin a sentence.
    fn title(&self) -> String {
        match self {
            QueueId::Message(m) => format!("Message {m}"),
            QueueId::Delivery { message, delivery } => format!("Delivery {message}/{delivery}"),
        }
    }
}

impl std::fmt::Display for QueueId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueueId::Message(m) => write!(f, "message {m}"),
            QueueId::Delivery { message, delivery } => write!(f, "delivery {message}/{delivery}"),
        }
    }
}

/// A runtime for a command's few network calls (DNS, report posts).
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

/// The reports a `--send` sends.
#[derive(Clone, Copy, PartialEq)]
enum Reports {
    Tls,
    Dmarc,
}

/// `queue tls-report --send` and `queue dmarc-report --send`: the day's reports, into the
/// queue the server delivers from (TLS reports to `https:` addresses are posted at once).
fn send_reports(
    loaded: &crate::spec::LoadedSpec,
    db: std::sync::Arc<dyn crate::queue::Queue>,
    day: &str,
    kind: Reports,
) -> anyhow::Result<ExitCode> {
    let (from, name) = match kind {
        Reports::Tls => (loaded.spec.reports.tls_rpt_from(), "TLS"),
        Reports::Dmarc => (loaded.spec.reports.dmarc_from(), "DMARC"),
    };
    let Some(from) = from else {
        anyhow::bail!("no [reports] from in the spec: reports need an address to come from");
    };
    let runtime = runtime()?;
    let (mails, posted, complete) = runtime.block_on(async {
        let resolver = crate::dns::resolver(loaded.spec.dns.resolver)?;
        let submitter = crate::queue::report_mail::Submitter {
            from,
            hostname: &loaded.spec.server.hostname,
        };
        anyhow::Ok(match kind {
            Reports::Tls => {
                let sent = crate::queue::tls_policy::send::send_reports(
                    db.clone(),
                    &resolver,
                    &submitter,
                    day,
                )
                .await?;
                (sent.mails, sent.posted, true)
            }
            Reports::Dmarc => {
                let authenticator = mail_auth::MessageAuthenticator(resolver);
                let sent = crate::queue::dmarc_report::send::send_reports(
                    db.clone(),
                    &authenticator,
                    &submitter,
                    day,
                )
                .await?;
                (sent.mails, Vec::new(), sent.complete)
            }
        })
    })?;
    for url in &posted {
        println!("posted the {name} report for {day} to {url}");
    }
    for (_, _, deliveries) in &mails {
        let to: Vec<&str> = deliveries.iter().map(|d| d.target.as_str()).collect();
        println!("queued a {name} report for {day} to {}", to.join(", "));
    }
    if mails.is_empty() && posted.is_empty() {
        println!("no {name} report to send for {day} (none asked for, or sent already)");
    }
    if !complete {
        println!("some domains' reports wait for DNS lookups that failed: run it again later");
    }
    db.commit(&mails, &[])?;
    Ok(ExitCode::SUCCESS)
}

/// The queued deliveries `id` names (none when it names nothing queued).
/// Deliveries `queue list` prints: a page a person can still read or grep.
const LIST_AT_MOST: usize = 10_000;

fn not_queued(id: QueueId) -> anyhow::Error {
    anyhow::anyhow!(
        "no {id} in the queue: `ferrymail queue list` shows what waits, `ferrymail queue log` what became of the rest"
    )
}

pub fn run(spec: &Path, command: Command) -> anyhow::Result<ExitCode> {
    // A broken spec must not hide the server's state.
    let loaded = crate::spec::load_unchecked(spec)?;
    let db = super::open_queue(&loaded, None, "cli")?;
    match command {
        Command::TlsReport { day, send } => {
            use crate::queue::tls_policy::{report, tally};
            let day = day.unwrap_or_else(tally::today);
            if chrono::NaiveDate::parse_from_str(&day, "%Y-%m-%d").is_err() {
                anyhow::bail!("--day {day:?}: expected a day as YYYY-MM-DD");
            }
            let sessions = db.tls_sessions(&day)?;
            let host = &loaded.spec.server.hostname;
            let contact = format!("postmaster@{host}");
            let reporter = report::Reporter {
                organization: host,
                contact: &contact,
            };
            if send {
                return send_reports(&loaded, db, &day, Reports::Tls);
            }
            let made = report::reports(&day, &sessions, &reporter);
            println!("{}", serde_json::to_string_pretty(&made)?);
        }
        Command::DmarcReport { day, domain, send } => {
            use crate::queue::dmarc_report::{KIND, report};
            use crate::queue::tls_policy::tally::{day_of, today};
            // Sent, a day's report is claimed: today's would leave the rest of the day out.
            let day = day.unwrap_or_else(|| match send {
                true => day_of(now_unix() - 86_400),
                false => today(),
            });
            if send && day >= today() {
                eprintln!(
                    "note: {day} is not over; its report is claimed now, and what arrives later today is not reported"
                );
            }
            if chrono::NaiveDate::parse_from_str(&day, "%Y-%m-%d").is_err() {
                anyhow::bail!("--day {day:?}: expected a day as YYYY-MM-DD");
            }
            if send {
                return send_reports(&loaded, db, &day, Reports::Dmarc);
            }
            let rows = db.report_rows(KIND, &day)?;
            let host = &loaded.spec.server.hostname;
            let contact = loaded
                .spec
                .reports
                .from
                .clone()
                .unwrap_or_else(|| format!("postmaster@{host}"));
            let reporter = report::Reporter {
                organization: host,
                contact: &contact,
            };
            // Grouped as they are sent: under the domain whose DMARC record applies.
            let mut policy_domains = runtime()?
                .block_on(async {
                    let resolver = crate::dns::resolver(loaded.spec.dns.resolver).ok()?;
                    let authenticator = mail_auth::MessageAuthenticator(resolver);
                    let (found, _) =
                        crate::queue::dmarc_report::send::policy_domains(&authenticator, &rows)
                            .await;
                    Some(found)
                })
                .unwrap_or_default();
            for r in &rows {
                policy_domains
                    .entry(r.row.domain.clone())
                    .or_insert_with(|| r.row.domain.clone());
            }
            let made = report::reports(&day, &rows, &policy_domains, &reporter);
            match domain {
                Some(domain) => {
                    let wanted = domain.trim_end_matches('.').to_ascii_lowercase();
                    let Some(found) = made.iter().find(|r| r.domain == wanted) else {
                        anyhow::bail!("no DMARC results of {domain} counted on {day}");
                    };
                    print!("{}", found.report.to_xml());
                }
                None if made.is_empty() => {
                    println!(
                        "No DMARC results counted on {day} for a domain that asks for reports."
                    )
                }
                None => {
                    for r in &made {
                        println!(
                            "{}  {} message(s) in {} row(s), to {}",
                            r.domain,
                            r.messages,
                            r.report.records().len(),
                            r.rua.join(", ")
                        );
                    }
                }
            }
        }
        Command::List { json } => {
            let entries = db.list(LIST_AT_MOST)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
                return Ok(ExitCode::SUCCESS);
            }
            if entries.is_empty() {
                println!("The queue is empty.");
            }
            let now = now_unix();
            // A message (the id SMTP's 250 and the log give), then each of its deliveries.
            let mut entries = entries;
            entries.sort_by_key(|e| (e.message_id, e.id));
            let mut shown = None;
            for e in &entries {
                if shown != Some(e.message_id) {
                    shown = Some(e.message_id);
                    let from = if e.mail_from.is_empty() {
                        "<>"
                    } else {
                        &e.mail_from
                    };
                    println!("#{}  from {from}, {} bytes", e.message_id, e.size);
                }
                let next = match &e.held {
                    Some(_) => "HELD (processing failed)".to_string(),
                    None => format!("next in {}s", (e.next_attempt_at - now).max(0)),
                };
                println!(
                    "    #{}/{}  {:?} {}  {} attempt(s), {next}{}",
                    e.message_id,
                    e.id,
                    e.kind,
                    e.target,
                    e.attempts,
                    e.last_error
                        .as_deref()
                        .map(|x| format!(": {x}"))
                        .unwrap_or_default()
                );
            }
            if entries.len() == LIST_AT_MOST {
                println!(
                    "… the first {LIST_AT_MOST} deliveries of {} queued are shown; `queue retry` and `queue remove` reach every one.",
                    db.pending()?
                );
            }
        }
        Command::Retry { id } => {
            let tried = each_delivery(db.as_ref(), id, |d| db.retry_now(d))?;
            println!(
                "{}: {tried} deliver{} will be tried now (by the running server).",
                id.title(),
                if tried == 1 { "y" } else { "ies" }
            );
        }
        Command::Log { limit, json } => {
            let log = super::open_mail_log(&loaded, None, "cli")?;
            let entries = log.recent(limit)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
                return Ok(ExitCode::SUCCESS);
            }
            for e in entries {
                let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(e.at.max(0) as u64);
                let from = if e.mail_from.is_empty() {
                    "<>"
                } else {
                    &e.mail_from
                };
                println!(
                    "{}  {:<9} {}{} → {}  {}",
                    humantime::format_rfc3339_seconds(at),
                    format!("{:?}", e.event).to_lowercase(),
                    e.message_id.map(|id| format!("#{id} ")).unwrap_or_default(),
                    from,
                    e.rcpt,
                    e.detail
                );
            }
        }
        Command::Remove { id } => {
            let removed = each_delivery(db.as_ref(), id, |d| db.remove(d))?;
            println!(
                "{}: removed {removed} deliver{} (no bounce is sent).",
                id.title(),
                if removed == 1 { "y" } else { "ies" }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Does `act` to each queued delivery `id` names; how many it did, or an error saying
/// where to look when `id` names nothing queued.
fn each_delivery(
    db: &dyn crate::queue::Queue,
    id: QueueId,
    act: impl Fn(i64) -> Result<bool, crate::queue::QueueError>,
) -> anyhow::Result<usize> {
    let (message, only) = match id {
        QueueId::Message(m) => (m, None),
        QueueId::Delivery { message, delivery } => (message, Some(delivery)),
    };
    let mut done = 0;
    for delivery in db.deliveries_of(message)? {
        if only.is_none_or(|d| d == delivery) {
            done += usize::from(act(delivery)?);
        }
    }
    if done == 0 {
        return Err(not_queued(id));
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_a_message_or_one_delivery_of_it() {
        assert_eq!("8".parse(), Ok(QueueId::Message(8)));
        assert_eq!("#8".parse(), Ok(QueueId::Message(8)));
        assert_eq!(
            "#8/10".parse(),
            Ok(QueueId::Delivery {
                message: 8,
                delivery: 10
            })
        );
        assert!("eight".parse::<QueueId>().is_err());
        assert!("8/".parse::<QueueId>().is_err());
    }
}

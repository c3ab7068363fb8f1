//! `ferrymail queue list | retry ID | remove ID`: the deliveries waiting in the queue.

use std::path::Path;
use std::process::ExitCode;

use anyhow::bail;

use crate::queue::now_unix;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Every delivery waiting, with its attempts and last error.
    List {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Try a delivery again now (a held one too).
    Retry { id: i64 },
    /// Drop a delivery (no bounce is sent).
    Remove { id: i64 },
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

pub fn run(spec: &Path, command: Command) -> anyhow::Result<ExitCode> {
    // A broken spec must not hide the server's state.
    let loaded = crate::spec::load_unchecked(spec)?;
    let db = super::open_queue(&loaded, None, "cli")?;
    match command {
        Command::List { json } => {
            let entries = db.list(10_000)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
                return Ok(ExitCode::SUCCESS);
            }
            if entries.is_empty() {
                println!("The queue is empty.");
            }
            let now = now_unix();
            for e in &entries {
                let next = match &e.held {
                    Some(_) => "HELD (processing failed)".to_string(),
                    None => format!("next in {}s", (e.next_attempt_at - now).max(0)),
                };
                println!(
                    "{:>6}  {:?}  {} → {}  {} bytes, {} attempt(s), {next}{}",
                    e.id,
                    e.kind,
                    if e.mail_from.is_empty() {
                        "<>"
                    } else {
                        &e.mail_from
                    },
                    e.target,
                    e.size,
                    e.attempts,
                    e.last_error
                        .as_deref()
                        .map(|x| format!(": {x}"))
                        .unwrap_or_default()
                );
            }
        }
        Command::Retry { id } => {
            if !db.retry_now(id)? {
                bail!("no delivery {id} in the queue");
            }
            println!("Delivery {id} will be tried now (by the running server).");
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
            if !db.remove(id)? {
                bail!("no delivery {id} in the queue");
            }
            println!("Removed delivery {id}.");
        }
    }
    Ok(ExitCode::SUCCESS)
}

//! The report mails this server sends (SMTP TLS reports, DMARC aggregate reports): from the
//! null sender, DKIM-signed as the `[reports] from` address, queued like any forward, nightly.

use std::sync::Arc;

use hickory_resolver::TokioResolver;

use crate::queue::{Dsn, Envelope, NewDelivery, Queue};

/// Who sends the reports.
pub struct Submitter<'a> {
    /// The From address, at a domain whose DKIM key signs the mail.
    pub from: &'a str,
    /// This server's name, which reports name as their submitter.
    pub hostname: &'a str,
}

/// A report mail, ready for the queue.
pub type Outgoing = (Envelope, Vec<u8>, Vec<NewDelivery>);

/// `body` queued for each of `to`: from the null sender (nothing bounces back to a
/// report), signed by the From address's domain, asking for no delivery notices.
pub fn outgoing(submitter: &Submitter<'_>, to: &[String], body: Vec<u8>) -> Outgoing {
    let envelope = Envelope {
        mail_from: String::new(),
        rcpt_to: to.to_vec(),
        remote_ip: "127.0.0.1".into(),
        helo: submitter.hostname.to_string(),
        tls: false,
        ret_full: false,
        envid: None,
        no_notices: true,
        require_tls: false,
    };
    let deliveries = to
        .iter()
        .map(|address| NewDelivery {
            kind: crate::queue::DeliveryKind::Forward,
            target: address.clone(),
            // The From address's domain signs it (DKIM), as mail it sends.
            alias: submitter.from.to_string(),
            prefix: String::new(),
            from_rewrite: String::new(),
            prefix_7bit: String::new(),
            folder: String::new(),
            dsn: Dsn {
                rcpt: address.clone(),
                notify: smtp_proto::RCPT_NOTIFY_NEVER,
                orcpt: None,
            },
        })
        .collect();
    (envelope, body, deliveries)
}

/// Runs a day's DMARC reports get when some domain's DNS lookups fail (ten minutes apart).
const DMARC_RUNS: u32 = 3;

/// Which reports go out each night.
#[derive(Debug, Clone, Copy)]
pub struct Kinds {
    pub tls: bool,
    pub dmarc: bool,
}

/// Sends the day before's reports once a day, after ten past midnight UTC (by then every
/// node has added that day's counts to the store); the store's claims keep them to one.
pub async fn daily(
    queue: Arc<dyn Queue>,
    spool: crate::queue::Spool,
    resolver: TokioResolver,
    from: String,
    hostname: String,
    kinds: Kinds,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(600));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let authenticator = mail_auth::MessageAuthenticator(resolver.clone());
    let (mut tls_sent_for, mut dmarc_sent_for) = (String::new(), String::new());
    // Runs of the day's DMARC reports that left a domain for later (its DNS failed): a
    // domain whose lookups keep failing is given up after a few, not retried all day.
    let mut dmarc_runs = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let now = crate::queue::now_unix();
        let yesterday = super::tls_policy::tally::day_of(now - 86_400);
        if now.rem_euclid(86_400) < 600 {
            continue;
        }
        let submitter = Submitter {
            from: &from,
            hostname: &hostname,
        };
        if kinds.tls && yesterday != tls_sent_for {
            let sent = super::tls_policy::send::send_reports(
                queue.clone(),
                &resolver,
                &submitter,
                &yesterday,
            )
            .await;
            match sent {
                Ok(sent) => {
                    queue_all(&spool, sent.mails, "TLS report").await;
                    tls_sent_for = yesterday.clone();
                }
                Err(e) => {
                    tracing::warn!(error = %e, day = yesterday, "TLS reports not sent; trying again in ten minutes")
                }
            }
        }
        if kinds.dmarc && yesterday != dmarc_sent_for {
            let sent = super::dmarc_report::send::send_reports(
                queue.clone(),
                &authenticator,
                &submitter,
                &yesterday,
            )
            .await;
            match sent {
                Ok(sent) => {
                    queue_all(&spool, sent.mails, "DMARC report").await;
                    dmarc_runs += 1;
                    if sent.complete || dmarc_runs >= DMARC_RUNS {
                        dmarc_sent_for = yesterday;
                        dmarc_runs = 0;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, day = yesterday, "DMARC reports not sent; trying again in ten minutes")
                }
            }
        }
    }
}

async fn queue_all(spool: &crate::queue::Spool, mails: Vec<Outgoing>, what: &str) {
    for (envelope, body, deliveries) in mails {
        if let Err(e) = spool.enqueue(envelope, body, deliveries).await {
            tracing::error!(error = %e, "could not queue a {what}");
        }
    }
}

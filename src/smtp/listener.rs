//! The MX listener: accepts connections (bounded per client IP), runs a session on each,
//! upgrades on STARTTLS, and drains sessions on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::listen::tls_handshake;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::session::{Outcome, Session};
use crate::queue::Spool;
use crate::routing::srs::Srs;
use crate::snapshot::SnapshotHandle;

/// How long shutdown waits for sessions in progress.
const DRAIN: Duration = Duration::from_secs(30);

/// What every MX session shares.
pub struct MxContext {
    pub hostname: String,
    pub snapshot: Arc<SnapshotHandle>,
    pub spool: Spool,
    pub tls: Option<Arc<ServerConfig>>,
    pub srs: Srs,
    pub max_message_size: u64,
    pub log: Arc<crate::queue::log::MailLog>,
    /// Rate limits and greylisting.
    pub cache: Arc<dyn crate::cache::Cache>,
    /// Connections per client IP: new ones per minute and open ones.
    pub limits: Arc<crate::listen::Limits>,
    /// The forwarding domains' parsed keys, for ARC sealing.
    pub signing: Arc<crate::dkim::signing::SigningKeys>,
    /// SPF/DKIM/ARC/DMARC checks; None when no DNS resolver could be set up.
    pub authenticator: Option<mail_auth::MessageAuthenticator>,
    /// Set on a submission listener: logins for AUTH, and sessions follow RFC 6409.
    pub logins: Option<Arc<crate::login::Logins>>,
    /// The mailboxes, for quota checks before a message is taken.
    pub mailboxes: crate::mailbox::Mailboxes,
    /// Timeouts and refusal counts from the spec's `[limits]`.
    pub session_limits: crate::limits::Smtp,
    /// What every listener's sessions together may hold of messages being received.
    pub message_memory: Arc<crate::limits::MessageMemory>,
    /// The spam filter, when `[spam]` declares one.
    pub spam: Option<Arc<crate::spam::Filter>>,
    /// Counts each arriving message's DMARC result for aggregate reports, when they are sent.
    pub dmarc_tally: Option<Arc<crate::queue::dmarc_report::Tally>>,
}

impl MxContext {
    /// Bytes an account's mailbox uses and its quota, when it has one.
    pub fn quota(&self, account: &str) -> Option<(u64, u64)> {
        let quota = self.snapshot.get().accounts.get(account)?.quota?;
        if !self.mailboxes.exists(account) {
            return Some((0, quota));
        }
        let used =
            crate::blocking::run(|| self.mailboxes.open(account).and_then(|m| m.quota_used()));
        match used {
            Ok(used) => Some((used, quota)),
            Err(e) => {
                tracing::warn!(account, error = %e, "quota check failed");
                None
            }
        }
    }
}

/// Accepts MX connections until `shutdown`, then waits for open sessions to end.
pub async fn serve_mx(
    listener: TcpListener,
    ctx: Arc<MxContext>,
    implicit_tls: bool,
    shutdown: watch::Receiver<bool>,
) {
    crate::listen::accept_limited(
        listener,
        shutdown,
        DRAIN,
        ctx.limits.clone(),
        implicit_tls,
        |why| format!("421 4.7.0 {why}; try again later\r\n"),
        |stream, remote, admission| {
            Box::pin(session(
                stream,
                remote,
                ctx.clone(),
                admission,
                implicit_tls,
            ))
        },
    )
    .await;
}

async fn session(
    stream: TcpStream,
    remote: SocketAddr,
    ctx: Arc<MxContext>,
    admission: crate::listen::Admission,
    implicit_tls: bool,
) {
    let _ = stream.set_nodelay(true);
    if implicit_tls {
        // submissions (RFC 8314): TLS from the first byte.
        if let Some(tls) = tls_handshake(ctx.tls.as_ref(), stream, remote, "SMTP").await {
            let facts = crate::listen::tls_facts(&tls);
            let _ = Session::new(ctx, tls, remote, true)
                .with_tls_facts(facts)
                .with_admission(Some(admission))
                .run(true)
                .await;
        }
        return;
    }
    match Session::new(ctx.clone(), stream, remote, false)
        .with_admission(Some(admission))
        .run(true)
        .await
    {
        Outcome::Closed => {}
        Outcome::StartTls(stream, admission, refused) => {
            if let Some(tls) =
                tls_handshake(ctx.tls.as_ref(), stream, remote, "SMTP STARTTLS").await
            {
                let facts = crate::listen::tls_facts(&tls);
                let _ = Session::new(ctx, tls, remote, true)
                    .with_tls_facts(facts)
                    .with_admission(admission)
                    .with_refused(refused)
                    .run(false)
                    .await;
            }
        }
    }
}

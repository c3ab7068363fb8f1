//! The IMAP listeners: `imap` (STARTTLS) and `imaps` (TLS from the first byte); a session
//! per connection, drained on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::listen::tls_handshake;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::session::{Outcome, Session};
use crate::login::Logins;
use crate::mailbox::Mailboxes;
use crate::snapshot::SnapshotHandle;

/// How long shutdown waits for sessions (IMAP clients reconnect on their own).
const DRAIN: Duration = Duration::from_secs(5);

/// What every IMAP session shares.
pub struct ImapContext {
    pub hostname: String,
    pub snapshot: Arc<SnapshotHandle>,
    pub mailboxes: Mailboxes,
    pub logins: Arc<Logins>,
    pub tls: Option<Arc<ServerConfig>>,
    /// The largest APPEND (the largest message a domain of this server accepts), and so
    /// the largest literal a logged-in client may send.
    pub max_append: u32,
    /// Teaches the spam filter what users move into and out of Junk.
    pub learner: Option<crate::spam::Learner>,
}

/// Accepts connections until `shutdown`. `implicit_tls` is the imaps port.
pub async fn serve_imap(
    listener: TcpListener,
    ctx: Arc<ImapContext>,
    limits: Arc<crate::listen::Limits>,
    implicit_tls: bool,
    shutdown: watch::Receiver<bool>,
) {
    crate::listen::accept_limited(
        listener,
        shutdown,
        DRAIN,
        limits,
        implicit_tls,
        |why| format!("* BYE {why}\r\n"),
        |stream, remote, admission| {
            let ctx = ctx.clone();
            Box::pin(connection(
                stream,
                remote,
                ctx,
                implicit_tls,
                Arc::new(admission),
            ))
        },
    )
    .await;
}

async fn connection(
    stream: TcpStream,
    remote: SocketAddr,
    ctx: Arc<ImapContext>,
    implicit_tls: bool,
    admission: Arc<crate::listen::Admission>,
) {
    let _ = stream.set_nodelay(true);
    if implicit_tls {
        if let Some(tls) = tls_handshake(ctx.tls.as_ref(), stream, remote, "IMAPS").await {
            Session::new(ctx, tls, remote, true, true)
                .with_admission(admission)
                .run()
                .await;
        }
        return;
    }
    if let Outcome::StartTls(stream) = Session::new(ctx.clone(), stream, remote, false, true)
        .with_admission(admission.clone())
        .run()
        .await
        && let Some(tls) = tls_handshake(ctx.tls.as_ref(), stream, remote, "IMAP STARTTLS").await
    {
        Session::new(ctx, tls, remote, true, false)
            .with_admission(admission)
            .run()
            .await;
    }
}

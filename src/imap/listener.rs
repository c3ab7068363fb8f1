//! The IMAP listeners: `imap` (STARTTLS) and `imaps` (TLS from the first byte); a session
//! per connection, drained on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

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
}

/// Accepts connections until `shutdown`. `implicit_tls` is the imaps port.
pub async fn serve_imap(
    listener: TcpListener,
    ctx: Arc<ImapContext>,
    implicit_tls: bool,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, remote)) = accepted else { continue };
                sessions.spawn(connection(stream, remote, ctx.clone(), implicit_tls));
            }
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN, async {
        while sessions.join_next().await.is_some() {}
    })
    .await;
    sessions.abort_all();
}

async fn connection(
    stream: TcpStream,
    remote: SocketAddr,
    ctx: Arc<ImapContext>,
    implicit_tls: bool,
) {
    let _ = stream.set_nodelay(true);
    if implicit_tls {
        let Some(config) = ctx.tls.clone() else {
            return;
        };
        match TlsAcceptor::from(config).accept(stream).await {
            Ok(tls) => {
                Session::new(ctx, tls, remote, true, true).run().await;
            }
            Err(e) => tracing::debug!(%remote, error = %e, "IMAP TLS handshake failed"),
        }
        return;
    }
    if let Outcome::StartTls(stream) = Session::new(ctx.clone(), stream, remote, false, true)
        .run()
        .await
    {
        let Some(config) = ctx.tls.clone() else {
            return;
        };
        match TlsAcceptor::from(config).accept(stream).await {
            Ok(tls) => {
                Session::new(ctx, tls, remote, true, false).run().await;
            }
            Err(e) => tracing::debug!(%remote, error = %e, "IMAP STARTTLS handshake failed"),
        }
    }
}

//! The ManageSieve listener (port 4190, STARTTLS) and what its sessions share.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::session::{Outcome, Session};
use crate::listen::tls_handshake;
use crate::login::Logins;
use crate::mailbox::Mailboxes;

const DRAIN: Duration = Duration::from_secs(5);

pub struct ManageSieveContext {
    pub mailboxes: Mailboxes,
    pub logins: Arc<Logins>,
    /// None only in tests and fuzzing: then logins are taken in the clear.
    pub tls: Option<Arc<ServerConfig>>,
}

/// Accepts connections until `shutdown`.
pub async fn serve_managesieve(
    listener: TcpListener,
    ctx: Arc<ManageSieveContext>,
    limits: Arc<crate::listen::Limits>,
    shutdown: watch::Receiver<bool>,
) {
    crate::listen::accept_limited(
        listener,
        shutdown,
        DRAIN,
        limits,
        false,
        |why| format!("BYE \"{why}\"\r\n"),
        |stream, remote, admission| {
            let ctx = ctx.clone();
            Box::pin(connection(stream, remote, ctx, Arc::new(admission)))
        },
    )
    .await;
}

async fn connection(
    stream: TcpStream,
    remote: SocketAddr,
    ctx: Arc<ManageSieveContext>,
    admission: Arc<crate::listen::Admission>,
) {
    let _ = stream.set_nodelay(true);
    if let Outcome::StartTls(stream) = Session::new(ctx.clone(), stream, remote, false)
        .with_admission(admission.clone())
        .run(true)
        .await
        && let Some(tls) =
            tls_handshake(ctx.tls.as_ref(), stream, remote, "ManageSieve STARTTLS").await
    {
        // RFC 5804 §2.2: the capabilities again, now that TLS is up.
        Session::new(ctx, tls, remote, true)
            .with_admission(admission)
            .run(true)
            .await;
    }
}

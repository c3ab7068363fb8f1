//! The POP3 listeners and what their sessions share, including the maildrop locks.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::listen::tls_handshake;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::session::{Outcome, Session};
use crate::login::Logins;
use crate::mailbox::Mailboxes;

const DRAIN: Duration = Duration::from_secs(5);

pub struct Pop3Context {
    pub hostname: String,
    pub mailboxes: Mailboxes,
    pub logins: Arc<Logins>,
    pub tls: Option<Arc<ServerConfig>>,
    /// Accounts with a POP3 session in the transaction state (RFC 1939 maildrop lock).
    pub locked: Mutex<HashSet<String>>,
}

impl Pop3Context {
    /// Takes the maildrop lock of `account`; false when another session holds it.
    pub fn lock(&self, account: &str) -> bool {
        self.locked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(account.to_string())
    }

    pub fn unlock(&self, account: &str) {
        self.locked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(account);
    }
}

/// Accepts connections until `shutdown`. `implicit_tls` is the pop3s port.
pub async fn serve_pop3(
    listener: TcpListener,
    ctx: Arc<Pop3Context>,
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
        |why| format!("-ERR [SYS/TEMP] {why}\r\n"),
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
    ctx: Arc<Pop3Context>,
    implicit_tls: bool,
    admission: Arc<crate::listen::Admission>,
) {
    let _ = stream.set_nodelay(true);
    if implicit_tls {
        if let Some(tls) = tls_handshake(ctx.tls.as_ref(), stream, remote, "POP3S").await {
            Session::new(ctx, tls, remote, true)
                .with_admission(admission)
                .run(true)
                .await;
        }
        return;
    }
    if let Outcome::StartTls(stream) = Session::new(ctx.clone(), stream, remote, false)
        .with_admission(admission.clone())
        .run(true)
        .await
        && let Some(tls) = tls_handshake(ctx.tls.as_ref(), stream, remote, "POP3 STLS").await
    {
        Session::new(ctx, tls, remote, true)
            .with_admission(admission)
            .run(false)
            .await;
    }
}

//! The accept loop every listener shares: one task per connection; on shutdown, no new
//! connections, and open sessions get a grace period to finish before they are cut.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// What to run for one accepted connection.
pub type Connection = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Accepts on `listener` until `shutdown` turns, running `session(stream, remote)` for
/// each connection; then waits up to `drain` for the sessions in progress.
pub async fn accept_until(
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
    mut session: impl FnMut(TcpStream, SocketAddr) -> Connection,
) {
    let mut sessions = JoinSet::new();
    loop {
        let mut failed = false;
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    sessions.spawn(session(stream, remote));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    failed = true;
                }
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            _ = shutdown.changed() => break,
        }
        // Out of file descriptors, say: give connections time to close, do not spin.
        if failed {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(drain, async {
        while sessions.join_next().await.is_some() {}
    })
    .await;
    sessions.abort_all();
}

/// Connection limits per client IP for one listener: new connections per minute (through
/// the cache, so Redis can share them across nodes) and connections open at once.
pub struct Limits {
    /// Short name used in cache keys ("mx", "imap"...).
    name: &'static str,
    per_minute: u32,
    per_ip: u32,
    cache: std::sync::Arc<dyn crate::cache::Cache>,
    open: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

/// Why a connection was not admitted; the two limits are told apart so a client (and
/// its operator) can see which one it hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    TooFast,
    TooMany,
}

impl Refused {
    pub fn text(self) -> &'static str {
        match self {
            Refused::TooFast => "Too many new connections from your address; slow down",
            Refused::TooMany => "Too many open connections from your address",
        }
    }
}

impl Limits {
    /// `per_minute` = 0 turns the rate limit off.
    pub fn new(
        name: &'static str,
        per_minute: u32,
        per_ip: u32,
        cache: std::sync::Arc<dyn crate::cache::Cache>,
    ) -> std::sync::Arc<Limits> {
        std::sync::Arc::new(Limits {
            name,
            per_minute,
            per_ip,
            cache,
            open: Default::default(),
        })
    }

    /// Counts a new connection from `ip`, or says which limit refuses it.
    pub fn admit(self: &std::sync::Arc<Self>, ip: std::net::IpAddr) -> Result<Admission, Refused> {
        if self.per_minute != 0 {
            let key = format!("{}-connect:{ip}", self.name);
            if !self
                .cache
                .hit(&key, self.per_minute, Duration::from_secs(60))
            {
                return Err(Refused::TooFast);
            }
        }
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_default();
        if *n >= self.per_ip as usize {
            return Err(Refused::TooMany);
        }
        *n += 1;
        Ok(Admission {
            limits: self.clone(),
            ip,
        })
    }
}

/// One open connection in its IP's count; dropping it gives the place back.
pub struct Admission {
    limits: std::sync::Arc<Limits>,
    ip: std::net::IpAddr,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// `accept_until` behind `limits`: an admitted connection runs `session` (holding its
/// place until it ends or gives the admission back); a refused one is told
/// `refusal(why)`, in the clear, or on a TLS port (`implicit_tls`) simply closed, since
/// the client could not read it.
pub async fn accept_limited(
    listener: TcpListener,
    shutdown: watch::Receiver<bool>,
    drain: Duration,
    limits: std::sync::Arc<Limits>,
    implicit_tls: bool,
    refusal: fn(&str) -> String,
    mut session: impl FnMut(TcpStream, SocketAddr, Admission) -> Connection,
) {
    accept_until(listener, shutdown, drain, |stream, remote| {
        match limits.admit(remote.ip()) {
            Ok(admission) => session(stream, remote, admission),
            Err(why) => Box::pin(async move {
                if !implicit_tls {
                    use tokio::io::AsyncWriteExt;
                    let mut stream = stream;
                    let _ = stream.write_all(refusal(why.text()).as_bytes()).await;
                }
            }),
        }
    })
    .await;
}

/// A TLS handshake longer than this is dropped (a client that connects and stalls would
/// otherwise hold its place in the connection limits for good).
pub const TLS_HANDSHAKE: Duration = Duration::from_secs(15);

/// The handshake every listener does, at the first byte or after STARTTLS: `None` when
/// there is no certificate, or the client failed or stalled (its problem: logged at
/// debug, `what` says which listener).
pub async fn tls_handshake<S>(
    config: Option<&std::sync::Arc<rustls::ServerConfig>>,
    stream: S,
    remote: SocketAddr,
    what: &str,
) -> Option<tokio_rustls::server::TlsStream<S>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(config?.clone());
    match tokio::time::timeout(TLS_HANDSHAKE, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::debug!(%remote, error = %e, "{what} TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%remote, "{what} TLS handshake timed out");
            None
        }
    }
}

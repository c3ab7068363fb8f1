//! The accept loop every listener shares: one task per connection; on shutdown, no new
//! connections, and open sessions get a grace period to finish before they are cut.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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

/// Connection limits for one listener: per client IP, new connections per minute
/// (through the cache, so Redis can share them across nodes), connections open at once
/// and, where clients log in, connections not logged in yet; and open connections on
/// this listener and on all of them together, below the process's file descriptors.
pub struct Limits {
    /// Short name used in cache keys ("mx", "imap"...).
    name: &'static str,
    settings: Settings,
    cache: std::sync::Arc<dyn crate::cache::Cache>,
    open: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
    unauthenticated: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
    listener_open: AtomicUsize,
    global: std::sync::Arc<Global>,
}

/// A listener's limits, as the spec's `[limits]` sets them.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// New connections per IP per minute; 0 = no limit.
    pub per_minute: u32,
    /// Open connections per IP.
    pub per_ip: u32,
    /// Open connections per IP that have not logged in; 0 = not counted (the MX, where
    /// nobody logs in).
    pub unauthenticated_per_ip: u32,
    /// Open connections on this listener.
    pub listener_max: usize,
}

/// Open connections on every listener together.
pub struct Global {
    open: AtomicUsize,
    max: usize,
}

impl Global {
    pub fn new(max: usize) -> std::sync::Arc<Global> {
        std::sync::Arc::new(Global {
            open: AtomicUsize::new(0),
            max,
        })
    }
}

/// Why a connection was not admitted; the limits are told apart so a client (and its
/// operator) can see which one it hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    TooFast,
    TooMany,
    TooManyUnauthenticated,
    Busy,
}

impl Refused {
    pub fn text(self) -> &'static str {
        match self {
            Refused::TooFast => "Too many new connections from your address; slow down",
            Refused::TooMany => "Too many open connections from your address",
            Refused::TooManyUnauthenticated => {
                "Too many connections from your address that have not logged in"
            }
            Refused::Busy => "The server is busy; try again later",
        }
    }
}

/// The address limits count a client by: IPv4 (IPv4-mapped too) as is, IPv6 by its /64.
pub fn network_of(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip.to_canonical() {
        std::net::IpAddr::V6(v6) => {
            let s = v6.segments();
            std::net::IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// Takes one place in `count` if fewer than `max` are taken.
fn take(count: &AtomicUsize, max: usize) -> bool {
    count
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .is_ok()
}

fn give_back(
    map: &std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
    ip: std::net::IpAddr,
) {
    let mut open = map.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(n) = open.get_mut(&ip) {
        *n -= 1;
        if *n == 0 {
            open.remove(&ip);
        }
    }
}

impl Limits {
    /// Per-IP limits only (`per_minute` = 0 turns the rate limit off).
    pub fn new(
        name: &'static str,
        per_minute: u32,
        per_ip: u32,
        cache: std::sync::Arc<dyn crate::cache::Cache>,
    ) -> std::sync::Arc<Limits> {
        let settings = Settings {
            per_minute,
            per_ip,
            unauthenticated_per_ip: 0,
            listener_max: usize::MAX,
        };
        Limits::with(name, settings, Global::new(usize::MAX), cache)
    }

    pub fn with(
        name: &'static str,
        settings: Settings,
        global: std::sync::Arc<Global>,
        cache: std::sync::Arc<dyn crate::cache::Cache>,
    ) -> std::sync::Arc<Limits> {
        std::sync::Arc::new(Limits {
            name,
            settings,
            cache,
            open: Default::default(),
            unauthenticated: Default::default(),
            listener_open: AtomicUsize::new(0),
            global,
        })
    }

    /// Logs a refusal, once a minute per address, listener and reason (a flood must not
    /// flood the log too).
    pub fn log_refusal(&self, remote: SocketAddr, why: Refused) {
        let network = network_of(remote.ip());
        let key = format!("refusal-logged:{}:{network}:{why:?}", self.name);
        if self.cache.hit(&key, 1, Duration::from_secs(60)) {
            tracing::info!(listener = self.name, %remote, reason = why.text(), "connection refused");
        }
    }

    /// Counts a new connection from `ip`, or says which limit refuses it. An IPv6
    /// client counts by its /64: one host usually holds all of it.
    pub fn admit(self: &std::sync::Arc<Self>, ip: std::net::IpAddr) -> Result<Admission, Refused> {
        let ip = network_of(ip);
        let s = self.settings;
        // New connections count per address across every listener. An address that
        // logged in lately is not held to the rate: a client that reconnects often
        // (mbsync per folder, a phone on a flaky network) is not what the limit is for.
        if s.per_minute != 0
            && !self.cache.hit(
                &format!("connect:{ip}"),
                s.per_minute,
                Duration::from_secs(60),
            )
            && self.cache.recent(&logged_in_key(ip), LOGGED_IN_TRUST) == 0
        {
            return Err(Refused::TooFast);
        }
        // Checked and counted under the locks, so two connections at once cannot both
        // take the last place.
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let mut waiting = self
            .unauthenticated
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let counts_waiting = s.unauthenticated_per_ip != 0;
        if open.get(&ip).copied().unwrap_or(0) >= s.per_ip as usize {
            return Err(Refused::TooMany);
        }
        if counts_waiting
            && waiting.get(&ip).copied().unwrap_or(0) >= s.unauthenticated_per_ip as usize
        {
            return Err(Refused::TooManyUnauthenticated);
        }
        if !take(&self.listener_open, s.listener_max) {
            return Err(Refused::Busy);
        }
        if !take(&self.global.open, self.global.max) {
            self.listener_open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::Busy);
        }
        *open.entry(ip).or_default() += 1;
        if counts_waiting {
            *waiting.entry(ip).or_default() += 1;
        }
        Ok(Admission {
            limits: self.clone(),
            ip,
            unauthenticated: AtomicBool::new(counts_waiting),
        })
    }
}

/// How long an address that logged in is spared the new-connection rate.
const LOGGED_IN_TRUST: Duration = Duration::from_secs(10 * 60);

fn logged_in_key(network: std::net::IpAddr) -> String {
    format!("logged-in:{network}")
}

/// One open connection in its IP's counts; dropping it gives the places back.
pub struct Admission {
    limits: std::sync::Arc<Limits>,
    ip: std::net::IpAddr,
    unauthenticated: AtomicBool,
}

impl Admission {
    /// The client logged in: it no longer counts against its address's connections that
    /// have not.
    pub fn logged_in(&self) {
        if self.unauthenticated.swap(false, Ordering::AcqRel) {
            give_back(&self.limits.unauthenticated, self.ip);
            // Marked at most once per half of the trust (a sliding window keeps every
            // mark), so an address logging in all the time stays trusted at no cost.
            let key = logged_in_key(self.ip);
            let cache = &self.limits.cache;
            if cache.recent(&key, LOGGED_IN_TRUST / 2) == 0 {
                cache.hit(&key, u32::MAX, LOGGED_IN_TRUST);
            }
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if self.unauthenticated.swap(false, Ordering::AcqRel) {
            give_back(&self.limits.unauthenticated, self.ip);
        }
        give_back(&self.limits.open, self.ip);
        self.limits.listener_open.fetch_sub(1, Ordering::AcqRel);
        self.limits.global.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Raises the process's open-file limit to its hard limit (many connections each hold
/// one); returns the limit now in force.
pub fn raise_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
        }
    }
    limit.rlim_cur
}

/// Connections on all listeners together when the spec names no number: a quarter of
/// the file descriptors (a logged-in IMAP session also holds its mailbox's database,
/// WAL and shared-memory files; deliveries and the store need theirs), at most 10,000.
pub fn default_max_connections(file_descriptors: u64) -> usize {
    (file_descriptors.saturating_sub(256) / 4).clamp(16, 10_000) as usize
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
            Err(why) => {
                limits.log_refusal(remote, why);
                Box::pin(async move {
                    if !implicit_tls {
                        refuse(stream, &refusal(why.text())).await;
                    }
                })
            }
        }
    })
    .await;
}

/// Refused connections being closed gently at once, at most (each holds a file
/// descriptor no limit counts; past this, a flood's refusals are closed at once).
const GENTLE_CLOSES: usize = 256;

static CLOSING: AtomicUsize = AtomicUsize::new(0);

/// Says why to a refused client and closes gently: what it already sent is read
/// (briefly) before the close, or the kernel would answer it with a reset and the
/// client might never see the reason.
async fn refuse(mut stream: TcpStream, why: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if stream.write_all(why.as_bytes()).await.is_err() || stream.shutdown().await.is_err() {
        return;
    }
    if !take(&CLOSING, GENTLE_CLOSES) {
        return;
    }
    struct Closed;
    impl Drop for Closed {
        fn drop(&mut self) {
            CLOSING.fetch_sub(1, Ordering::AcqRel);
        }
    }
    let _closed = Closed;
    let mut sink = [0u8; 4096];
    let drain = async {
        let mut left: usize = 64 * 1024;
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(500), drain).await;
}

/// A TLS handshake longer than this is dropped (a client that connects and stalls would
/// otherwise hold its place in the connection limits for good).
pub const TLS_HANDSHAKE: Duration = Duration::from_secs(15);

/// The protocol version and cipher suite a TLS connection negotiated, as rspamd's
/// protocol writes them ("TLSv1.3", "TLS13_AES_256_GCM_SHA384").
pub fn tls_facts<S>(tls: &tokio_rustls::server::TlsStream<S>) -> Option<(String, String)> {
    let connection = tls.get_ref().1;
    let version = match connection.protocol_version()? {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_string(),
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_string(),
        other => format!("{other:?}"),
    };
    let cipher = connection.negotiated_cipher_suite()?.suite();
    Some((version, format!("{cipher:?}")))
}

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

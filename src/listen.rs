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
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, remote)) = accepted else { continue };
                sessions.spawn(session(stream, remote));
            }
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(drain, async {
        while sessions.join_next().await.is_some() {}
    })
    .await;
    sessions.abort_all();
}

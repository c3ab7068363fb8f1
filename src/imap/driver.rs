//! Moves bytes between a connection and imap-next's sans-I/O server: writes what it has
//! to say, reads when it needs more, and lets a mailbox change interrupt a wait (IDLE).

use imap_next::server::{Error as ProtocolError, Event, Server};
use imap_next::{Interrupt, Io, State};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

/// What came of driving the state machine.
pub enum Step {
    Event(Event),
    /// A protocol error the session answers and survives.
    Protocol(ProtocolError),
    /// The account's mailbox changed while the session waited (only when asked to watch).
    Changed,
    /// The client went away, or the connection failed.
    Closed,
}

/// How long a session may stay silent (RFC 3501 §5.4: at least 30 minutes, IDLE included).
pub const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// Output is gathered up to this size before it is written: a FETCH of many messages
/// goes out in a few large writes, not one per message.
const WRITE_BATCH: usize = 64 * 1024;

/// Writes what `pending` holds.
pub async fn flush<S: AsyncWrite + Unpin>(io: &mut S, pending: &mut Vec<u8>) -> bool {
    if pending.is_empty() {
        return true;
    }
    let ok = io.write_all(pending).await.is_ok() && io.flush().await.is_ok();
    pending.clear();
    ok
}

/// Drives `server` until it has an event. Output collects in `pending` and is written
/// before the session waits for input (or when it grows large); only the read races the
/// change notice, so a write is never cut in half.
pub async fn next<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    server: &mut Server,
    buf: &mut [u8],
    pending: &mut Vec<u8>,
    changes: Option<&mut watch::Receiver<u64>>,
) -> Step {
    let mut changes = changes;
    loop {
        match server.next() {
            Ok(event) => return Step::Event(event),
            Err(Interrupt::Io(Io::Output(bytes))) => {
                pending.extend_from_slice(&bytes);
                if pending.len() >= WRITE_BATCH && !flush(io, pending).await {
                    return Step::Closed;
                }
            }
            Err(Interrupt::Io(Io::NeedMoreInput)) => {
                if !flush(io, pending).await {
                    return Step::Closed;
                }
                let read = tokio::time::timeout(IDLE_TIMEOUT, io.read(buf));
                let changed = async {
                    match changes.as_deref_mut() {
                        Some(rx) => rx.changed().await.is_ok(),
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    n = read => match n {
                        Ok(Ok(n)) if n > 0 => server.enqueue_input(&buf[..n]),
                        _ => return Step::Closed,
                    },
                    true = changed => return Step::Changed,
                }
            }
            Err(Interrupt::Error(e)) => return Step::Protocol(e),
        }
    }
}

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
    /// Before login, the client sent (or announced a literal) past what one command may
    /// hold then, or stayed silent too long: the session says BYE and ends.
    PreAuthLimit(&'static str),
}

/// What a client that has not logged in may do: a few KB per command (Dovecot takes a
/// few KB before authentication), however it is split, and a short silence.
pub struct PreAuth {
    /// Bytes of the command in progress (those read since the last event).
    seen: Vec<u8>,
    /// When the connection (or its TLS session) began: logging in has a time budget,
    /// however the bytes trickle in.
    since: std::time::Instant,
}

impl PreAuth {
    pub fn new() -> PreAuth {
        PreAuth {
            seen: Vec::new(),
            since: std::time::Instant::now(),
        }
    }

    /// A command ended: what follows its last line feed is the next one's start.
    fn command_done(&mut self) {
        match self.seen.iter().rposition(|&b| b == b'\n') {
            Some(end) => {
                self.seen.drain(..=end);
            }
            None => self.seen.clear(),
        }
    }

    /// How long the next read may wait.
    fn wait(&self) -> std::time::Duration {
        crate::limits::LOGIN_SILENCE
            .min(crate::limits::LOGIN_BUDGET.saturating_sub(self.since.elapsed()))
    }

    /// Takes newly read bytes; an error says why the session must end.
    fn take(&mut self, bytes: &[u8]) -> Result<(), &'static str> {
        if self.seen.len() + bytes.len() > crate::limits::IMAP_PREAUTH_COMMAND {
            return Err("Command too long before login");
        }
        self.seen.extend_from_slice(bytes);
        if announced_literal(&self.seen) > crate::limits::IMAP_PREAUTH_COMMAND as u64 {
            return Err("Literal too long before login");
        }
        Ok(())
    }
}

impl Default for PreAuth {
    fn default() -> Self {
        PreAuth::new()
    }
}

/// The largest literal length (`{N}` or `{N+}` at a line end) in `bytes`.
fn announced_literal(bytes: &[u8]) -> u64 {
    let mut largest = 0;
    for line in bytes.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(inner) = line.strip_suffix(b"}") else {
            continue;
        };
        let Some(open) = inner.iter().rposition(|&b| b == b'{') else {
            continue;
        };
        let digits = &inner[open + 1..];
        let digits = digits.strip_suffix(b"+").unwrap_or(digits);
        let n = if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            0
        } else {
            std::str::from_utf8(digits)
                .ok()
                .and_then(|d| d.parse::<u64>().ok())
                .unwrap_or(u64::MAX)
        };
        largest = largest.max(n);
    }
    largest
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
    mut preauth: Option<&mut PreAuth>,
) -> Step {
    let mut changes = changes;
    loop {
        match server.next() {
            Ok(event) => {
                if let Some(p) = preauth.as_deref_mut() {
                    p.command_done();
                }
                return Step::Event(event);
            }
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
                let silence = preauth.as_deref().map_or(IDLE_TIMEOUT, PreAuth::wait);
                let read = tokio::time::timeout(silence, io.read(buf));
                let changed = async {
                    match changes.as_deref_mut() {
                        Some(rx) => rx.changed().await.is_ok(),
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    n = read => match n {
                        Ok(Ok(n)) if n > 0 => {
                            if let Some(p) = preauth.as_deref_mut()
                                && let Err(why) = p.take(&buf[..n])
                            {
                                return Step::PreAuthLimit(why);
                            }
                            server.enqueue_input(&buf[..n]);
                        }
                        Ok(Ok(_)) | Ok(Err(_)) => return Step::Closed,
                        Err(_) if preauth.is_some() => {
                            return Step::PreAuthLimit("Too slow to log in");
                        }
                        Err(_) => return Step::Closed,
                    },
                    true = changed => return Step::Changed,
                }
            }
            Err(Interrupt::Error(e)) => return Step::Protocol(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_announced_before_login_are_read_off_the_line() {
        assert_eq!(announced_literal(b"a LOGIN {66060288+}\r\n"), 66_060_288);
        assert_eq!(announced_literal(b"a LOGIN {5}\r\nalice {8}\r\n"), 8);
        assert_eq!(
            announced_literal(b"a LOGIN {99999999999999999999999}\r\n"),
            u64::MAX
        );
        assert_eq!(announced_literal(b"a LOGIN alice secret\r\n"), 0);
        let mut p = PreAuth::new();
        assert!(p.take(b"a LOGIN {5}\r\n").is_ok());
        assert!(p.take(b"a LOGIN {100000}\r\n").is_err());
        let mut p = PreAuth::new();
        assert!(p.take(&[b'x'; 9000]).is_err());
    }
}

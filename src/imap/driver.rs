//! Moves bytes between a connection and imap-next's sans-I/O server: writes what it has
//! to say, reads when it needs more, and lets a mailbox change interrupt a wait (IDLE).

use imap_next::server::{Error as ProtocolError, Event, ResponseHandle, Server};
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
    /// The client went past what one command may take (before login: its size, an
    /// announced literal, a silence or the time to log in; after: the time one command
    /// may take in all): the session says BYE and ends.
    Limit(&'static str),
}

/// What a client may do with its input: before login, a few KB per command (Dovecot
/// takes a few KB before authentication), however it is split, a short silence and a
/// few minutes in all; after, each command must be whole within `COMMAND_BUDGET`,
/// however slowly it trickles (IDLE waits between commands, not inside one).
pub struct Guard {
    logged_in: bool,
    /// Bytes of the command in progress before login (those read since the last event).
    seen: Vec<u8>,
    /// When the connection (or its TLS session) began.
    since: std::time::Instant,
    /// When the first byte of the command in progress came.
    command_since: Option<std::time::Instant>,
}

/// How long one command may take in all once logged in (an APPEND of the largest
/// message over a slow line included); no longer than the silence a session may keep.
pub const COMMAND_BUDGET: std::time::Duration = IDLE_TIMEOUT;

impl Guard {
    pub fn new() -> Guard {
        Guard {
            logged_in: false,
            seen: Vec::new(),
            since: std::time::Instant::now(),
            command_since: None,
        }
    }

    /// The client logged in: larger commands, longer silences.
    pub fn logged_in(&mut self) {
        self.logged_in = true;
        self.seen = Vec::new();
    }

    /// A command ended: what follows its last line feed is the next one's start.
    fn command_done(&mut self) {
        self.command_since = None;
        match self.seen.iter().rposition(|&b| b == b'\n') {
            Some(end) => {
                self.seen.drain(..=end);
            }
            None => self.seen.clear(),
        }
    }

    /// How long the next read may wait, and what to say when it has waited that long.
    fn wait(&self) -> (std::time::Duration, Option<&'static str>) {
        if !self.logged_in {
            return (
                crate::limits::silence_before_login(self.since),
                Some("Too slow to log in"),
            );
        }
        match self.command_since {
            Some(began) => (
                COMMAND_BUDGET.saturating_sub(began.elapsed()),
                Some("Command took too long"),
            ),
            None => (IDLE_TIMEOUT, None),
        }
    }

    /// Takes newly read bytes; an error says why the session must end.
    fn take(&mut self, bytes: &[u8]) -> Result<(), &'static str> {
        self.command_since
            .get_or_insert_with(std::time::Instant::now);
        if self.logged_in {
            return Ok(());
        }
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

impl Default for Guard {
    fn default() -> Self {
        Guard::new()
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

/// Responses encoded but not yet written, and the lines imap-codec cannot encode
/// (ESEARCH, LIST's extended data) waiting for their place in the queue.
#[derive(Default)]
pub struct Outbox {
    bytes: Vec<u8>,
    /// Where the last response imap-next encoded starts in `bytes`.
    last: usize,
    /// Each stands in for the placeholder response queued under its handle: when that
    /// placeholder is encoded, these bytes go out in its place, in order with the rest.
    substitutes: std::collections::VecDeque<(ResponseHandle, Vec<u8>)>,
}

impl Outbox {
    /// `bytes` go out instead of the response queued under `handle`.
    pub fn substitute(&mut self, handle: ResponseHandle, bytes: Vec<u8>) {
        self.substitutes.push_back((handle, bytes));
    }

    /// Bytes that need no placeholder: nothing of imap-next's is queued before them.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }

    fn encoded(&mut self, bytes: &[u8]) {
        self.last = self.bytes.len();
        self.bytes.extend_from_slice(bytes);
    }

    fn sent(&mut self, handle: ResponseHandle) {
        if self.substitutes.front().is_some_and(|(h, _)| *h == handle)
            && let Some((_, bytes)) = self.substitutes.pop_front()
        {
            self.bytes.truncate(self.last);
            self.bytes.extend_from_slice(&bytes);
        }
    }

    /// A placeholder may sit at the end until its event comes: large output is written
    /// early only when none is waiting.
    fn full(&self) -> bool {
        self.bytes.len() >= WRITE_BATCH && self.substitutes.is_empty()
    }
}

/// Writes what `out` holds.
pub async fn flush<S: AsyncWrite + Unpin>(io: &mut S, out: &mut Outbox) -> bool {
    if out.bytes.is_empty() {
        return true;
    }
    let ok = io.write_all(&out.bytes).await.is_ok() && io.flush().await.is_ok();
    out.bytes.clear();
    out.last = 0;
    ok
}

/// Drives `server` until it has an event. Output collects in `out` and is written
/// before the session waits for input (or when it grows large); only the read races the
/// change notice, so a write is never cut in half.
pub async fn next<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    server: &mut Server,
    buf: &mut [u8],
    out: &mut Outbox,
    changes: Option<&mut watch::Receiver<u64>>,
    guard: &mut Guard,
) -> Step {
    let mut changes = changes;
    loop {
        match server.next() {
            Ok(event) => {
                if let Event::ResponseSent { handle, .. } = &event {
                    out.sent(*handle);
                }
                if out.full() && !flush(io, out).await {
                    return Step::Closed;
                }
                guard.command_done();
                return Step::Event(event);
            }
            Err(Interrupt::Io(Io::Output(bytes))) => {
                out.encoded(&bytes);
                if out.full() && !flush(io, out).await {
                    return Step::Closed;
                }
            }
            Err(Interrupt::Io(Io::NeedMoreInput)) => {
                if !flush(io, out).await {
                    return Step::Closed;
                }
                let (silence, cut_off) = guard.wait();
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
                            if let Err(why) = guard.take(&buf[..n]) {
                                return Step::Limit(why);
                            }
                            server.enqueue_input(&buf[..n]);
                        }
                        Ok(Ok(_)) | Ok(Err(_)) => return Step::Closed,
                        Err(_) => return cut_off.map_or(Step::Closed, Step::Limit),
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
        let mut p = Guard::new();
        assert!(p.take(b"a LOGIN {5}\r\n").is_ok());
        assert!(p.take(b"a LOGIN {100000}\r\n").is_err());
        let mut p = Guard::new();
        assert!(p.take(&[b'x'; 9000]).is_err());
        // Split across reads after a finished command: still seen.
        let mut p = Guard::new();
        assert!(p.take(b"a NOOP\r\nb LOGIN {6606").is_ok());
        p.command_done();
        assert!(p.take(b"0288}\r\n").is_err());
        // Once logged in, only time limits apply.
        p.logged_in();
        assert!(p.take(b"c APPEND INBOX {66060288+}\r\n").is_ok());
    }
}

//! Every depth, size, count and timer that a stranger's input can reach, named in one
//! place; the ones an operator may tune are in the spec's `[limits]` (see SECURITY.md).

use std::time::Duration;

/// MIME parts nested deeper than this (multiparts and attached messages together) are
/// kept as opaque bodies: structure, FETCH and search stop there. Postfix's
/// `mime_nesting_limit` is 100; 50 keeps the cached structure within serde_json's
/// depth limit (128) and every walk over it within tokio's default 2 MiB stack even in
/// a debug build (the server's threads have 8 MiB). The parse itself is not recursive
/// (see `mime`).
pub const MIME_DEPTH: usize = 50;

/// Before login, an IMAP client may have this many bytes of one command in flight
/// (literals included); Dovecot takes a few KB before authentication.
pub const IMAP_PREAUTH_COMMAND: usize = 8 * 1024;

/// An IMAP or POP3 client that has not logged in may stay silent this long, and take
/// this long in all to log in (per connection, and again after STARTTLS).
pub const LOGIN_SILENCE: Duration = Duration::from_secs(60);
pub const LOGIN_BUDGET: Duration = Duration::from_secs(300);

/// How long a client that has not logged in may stay silent now, `since` its connection
/// began: `LOGIN_SILENCE`, within what is left of `LOGIN_BUDGET`.
pub fn silence_before_login(since: std::time::Instant) -> Duration {
    LOGIN_SILENCE.min(LOGIN_BUDGET.saturating_sub(since.elapsed()))
}

/// The most bytes one IMAP command may take once logged in, literals included (APPEND
/// of the largest message a domain accepts, and a margin).
pub const IMAP_MAX_LITERAL: u32 = 64 * 1024 * 1024;

/// Folder names longer than this (in characters) or with more levels are refused.
pub const FOLDER_NAME_CHARS: usize = 512;
pub const FOLDER_DEPTH: usize = 32;
/// Folders one account may have (Dovecot's mailbox_list_limit-like bound).
pub const FOLDERS_PER_ACCOUNT: usize = 10_000;

/// SMTP: how long a client may stay silent inside DATA (RFC 5321: 3 minutes per block).
pub const SMTP_DATA_SILENCE: Duration = Duration::from_secs(180);
/// SMTP: protocol errors tolerated before the session is closed.
pub const SMTP_MAX_ERRORS: u32 = 10;
/// SMTP: refused recipients after which each further refusal waits `Smtp::error_sleep`
/// (Postfix's smtpd_soft_error_limit and smtpd_error_sleep_time).
pub const SMTP_REFUSALS_BEFORE_SLEEP: u32 = 3;

/// The SMTP limits an operator may set (`[limits]` in the spec), as sessions read them.
#[derive(Debug, Clone, Copy)]
pub struct Smtp {
    /// One command line, from the end of the previous one (silence included).
    pub command_timeout: Duration,
    /// One message's DATA, or one BDAT chunk, in all.
    pub data_timeout: Duration,
    /// Refused recipients per session before 421.
    pub refused_recipients: u32,
    /// Refused recipients per client IP per hour (0: no limit).
    pub refused_recipients_per_hour: u32,
    /// How late each refusal past `SMTP_REFUSALS_BEFORE_SLEEP` is answered (a second).
    pub error_sleep: Duration,
    /// What a mailbox may send through submission unless it declares its own.
    pub sending: crate::spec::model::SendingLimits,
}

impl Default for Smtp {
    fn default() -> Self {
        Smtp {
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(30 * 60),
            refused_recipients: 10,
            refused_recipients_per_hour: 100,
            error_sleep: Duration::from_secs(1),
            sending: Default::default(),
        }
    }
}

/// Bytes of messages being received (DATA and BDAT bodies held until they are queued),
/// on every SMTP listener together (`[limits] message_memory`). DKIM, ARC and DMARC are
/// checked on the whole message and the queue stores it in one transaction, so each
/// message in flight is held; this bounds what all of them hold at once. A session that
/// would go past it is told 451 4.3.1 and its sender tries again later.
pub struct MessageMemory {
    used: std::sync::atomic::AtomicUsize,
    max: usize,
}

/// Reservations grow in steps of this much.
const MEMORY_STEP: usize = 256 << 10;

impl MessageMemory {
    pub fn new(max: u64) -> std::sync::Arc<MessageMemory> {
        std::sync::Arc::new(MessageMemory {
            used: Default::default(),
            max: usize::try_from(max).unwrap_or(usize::MAX),
        })
    }
}

/// One session's share of `MessageMemory`, given back when dropped or released.
pub struct Reservation {
    memory: std::sync::Arc<MessageMemory>,
    bytes: usize,
}

impl Reservation {
    pub fn new(memory: std::sync::Arc<MessageMemory>) -> Reservation {
        Reservation { memory, bytes: 0 }
    }

    /// Makes the share at least `bytes`; false when the budget has no room for it.
    pub fn cover(&mut self, bytes: usize) -> bool {
        use std::sync::atomic::Ordering;
        if bytes <= self.bytes {
            return true;
        }
        let want = bytes.div_ceil(MEMORY_STEP).saturating_mul(MEMORY_STEP);
        let more = want - self.bytes;
        let max = self.memory.max;
        let taken = self
            .memory
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(more).filter(|&n| n <= max)
            })
            .is_ok();
        if taken {
            self.bytes = want;
        }
        taken
    }

    pub fn release(&mut self) {
        self.memory
            .used
            .fetch_sub(self.bytes, std::sync::atomic::Ordering::AcqRel);
        self.bytes = 0;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.release();
    }
}

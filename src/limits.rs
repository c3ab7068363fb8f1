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

/// An IMAP or POP3 client that has not logged in may stay silent this long.
pub const LOGIN_SILENCE: Duration = Duration::from_secs(60);

/// The most bytes one IMAP command may take once logged in, literals included (APPEND
/// of the largest message a domain accepts, and a margin).
pub const IMAP_MAX_LITERAL: u32 = 64 * 1024 * 1024;

/// Folder names longer than this (in characters) or with more levels are refused.
pub const FOLDER_NAME_CHARS: usize = 512;
pub const FOLDER_DEPTH: usize = 32;

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
}

impl Default for Smtp {
    fn default() -> Self {
        Smtp {
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(30 * 60),
            refused_recipients: 10,
            refused_recipients_per_hour: 100,
            error_sleep: Duration::from_secs(1),
        }
    }
}

//! The POP3 server (`pop3` with STLS, `pop3s`): USER/PASS and SASL PLAIN, the INBOX with
//! STAT, LIST, UIDL, RETR, TOP, DELE and RSET, and one session per maildrop at a time.

mod listener;
mod session;

pub use listener::{Pop3Context, serve_pop3};
pub use session::Session;

//! The IMAP server (IMAP4rev1 with IDLE, MOVE, CONDSTORE, QRESYNC, SORT, THREAD, ESEARCH,
//! LIST-EXTENDED, QUOTA…) on imap-codec's grammar and imap-next's state machine, over the mailbox store.

mod compress;
mod convert;
mod driver;
mod extended;
mod fetch;
mod fetch_lines;
mod folders;
mod listener;
mod messages;
pub mod mutf7;
mod search;
mod selected;
mod session;
mod sort;
mod thread;

pub use listener::{ImapContext, serve_imap};
pub use session::Session;

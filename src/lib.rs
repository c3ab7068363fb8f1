//! ferrymail: a declarative, self-hosted mail server. A TOML spec says what must exist;
//! the reconciler (`plan`, `apply`) makes the live state match; servers read a Snapshot.

pub mod address;
pub mod backup;
pub mod blocking;
pub mod cache;
pub mod cli;
pub mod dkim;
pub mod dns;
pub mod http;
pub mod imap;
pub mod listen;
pub mod login;
pub mod mailbox;
pub mod password;
pub mod pop3;
pub mod private_file;
pub mod queue;
pub mod reconcile;
pub mod routing;
pub mod smtp;
pub mod snapshot;
pub mod source;
pub mod spec;
pub mod sqlite;
pub mod store;
pub mod systemd;
pub mod tls;

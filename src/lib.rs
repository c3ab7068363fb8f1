//! ferrymail: a declarative, self-hosted mail server. A TOML spec says what must exist;
//! the reconciler (`plan`, `apply`) makes the live state match; servers read a Snapshot.

/// The version `--version`, `status` and the node heartbeat show: the package's, and
/// the git commit it was built from (build.rs).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("FERRYMAIL_COMMIT"),
    ")"
);

/// `--version` (long form): the version and the optional parts built in (src/features.rs).
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("FERRYMAIL_COMMIT"),
    ")\nfeatures: ",
    env!("FERRYMAIL_FEATURES")
);

pub mod address;
pub mod backup;
pub mod blocking;
pub mod cache;
pub mod change;
pub mod cli;
pub mod clock;
pub mod collections;
pub mod dav;
pub mod dkim;
pub mod dns;
pub mod error_chain;
pub mod features;
pub mod http;
pub mod imap;
pub mod import;
pub mod limits;
pub mod listen;
pub mod log_budget;
pub mod login;
pub mod mailbox;
pub mod managesieve;
pub mod metrics;
pub mod mime;
#[cfg(feature = "mongodb")]
pub mod mongo;
/// Built without the `mongodb` feature there is never a connection: the type stays,
/// uninhabited, so code holding an `Option<Arc<Mongo>>` reads the same either way.
#[cfg(not(feature = "mongodb"))]
pub mod mongo {
    pub enum Mongo {}
}
pub mod password;
pub mod pop3;
pub mod private_file;
pub mod queue;
pub mod recent_log;
pub mod reconcile;
pub mod routing;
pub mod selfservice;
pub mod sieve;
pub mod smtp;
pub mod snapshot;
pub mod source;
pub mod spam;
pub mod spec;
pub mod sqlite;
pub mod store;
pub mod systemd;
pub mod tls;
pub mod trim;

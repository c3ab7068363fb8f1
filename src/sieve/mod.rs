//! Sieve filtering (RFC 5228) at final delivery: scripts compiled within this server's
//! limits, the declared vacation responder, and one delivery's run of them.

mod compile;
mod run;
pub mod store;
pub mod vacation;

pub use compile::{MAX_SCRIPT_SIZE, MAX_SCRIPTS, ScriptError, compile, compile_cached, extensions};
pub use run::{
    Facts, Interpreter, MAX_REDIRECTS, Outcome, Outgoing, RunError, Scripts, Store, Surroundings,
};
pub use sieve::{Sieve, SpamStatus};

/// Marks a redirected copy: one that comes back to the account it left is not
/// redirected again (inside the server no Received line is added to stop a loop).
/// Dovecot's header has the same name; scripts may not remove it, and the MX removes a
/// stranger's.
pub const REDIRECTED_FROM: &str = "X-Sieve-Redirected-From";

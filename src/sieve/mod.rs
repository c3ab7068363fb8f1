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

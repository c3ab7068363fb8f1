//! Sieve filtering (RFC 5228) at final delivery: scripts compiled within this server's
//! limits, the declared vacation responder, and one delivery's run of them.

mod compile;
mod run;
pub mod vacation;

pub use compile::{MAX_SCRIPT_SIZE, MAX_SCRIPTS, ScriptError, compile, extensions};
pub use run::{Facts, Interpreter, Outcome, Outgoing, RunError, Scripts, Store, Surroundings};
pub use sieve::Sieve;

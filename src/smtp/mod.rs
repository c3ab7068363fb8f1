//! SMTP: the session state machine on smtp-proto's grammar (one file per command
//! family) and the MX listener that accepts connections and upgrades them to TLS.

mod auth;
mod data;
pub mod dot;
mod ehlo;
mod envelope;
pub mod listener;
mod policy;
mod session;
mod spam;
mod submission;

pub use listener::{MxContext, serve_mx};
pub use session::{Outcome, Session};

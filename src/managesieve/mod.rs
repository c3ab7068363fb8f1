//! The ManageSieve server (RFC 5804, `managesieve` on port 4190): users list, upload,
//! check, activate, fetch, rename and delete their own Sieve scripts.

pub mod command;
mod listener;
mod session;

pub use listener::{ManageSieveContext, serve_managesieve};
pub use session::Session;

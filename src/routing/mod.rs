//! Where mail for an address goes: forward targets, the alias lookup order (exact, then
//! pattern, then catch-all, with +tag subaddressing) and forward-loop detection.

mod loops;
mod router;
pub mod srs;
mod target;

pub use loops::find_loops;
pub use router::{
    Action, DomainRoutes, Matched, Resolution, Router, Rule, compile as compile_pattern,
};
pub use target::{Target, TargetError, expand_placeholders_for_check};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How a rejected address answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RejectMode {
    /// Accept with 250 and drop the message.
    Quiet,
    /// 421: the sender retries later.
    Soft,
    /// 550: the sender bounces the message.
    Hard,
}

impl RejectMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectMode::Quiet => "quiet",
            RejectMode::Soft => "soft",
            RejectMode::Hard => "hard",
        }
    }
}

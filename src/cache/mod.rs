//! Short-lived state shared by the nodes: rate limits, greylisting, cluster-wide locks and
//! change notifications. The memory backend serves one node; Redis serves several.

pub mod cluster;
mod memory;
#[cfg(feature = "redis")]
mod redis;

use std::time::Duration;

pub use cluster::{Cluster, Held};
pub use memory::MemoryCache;
#[cfg(feature = "redis")]
pub use redis::RedisCache;

/// What greylisting says about a (client network, sender, recipient) triple.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Greylist {
    /// Seen before and the delay has passed (or allowlisted by an earlier pass).
    Pass,
    /// New, or retried too early: answer 450 and let the sender retry.
    Defer { retry_in: Duration },
}

/// The channel on which a node says "the store is at a new revision".
pub const REVISION_CHANNEL: &str = "revision";

pub trait Cache: Send + Sync {
    /// Counts one event for `key`; true while at most `limit` fell in the last `window`.
    fn hit(&self, key: &str, limit: u32, window: Duration) -> bool;

    /// Counts `count` events for `key` only if that keeps the last `window` at most
    /// `limit`, in one step (no other node counts in between); false counts nothing.
    fn take(&self, key: &str, count: u32, limit: u32, window: Duration) -> bool;

    /// How many events for `key` fell in the last `window` (counts nothing itself).
    fn recent(&self, key: &str, window: Duration) -> u32;

    /// Forgets `key`'s events (a success closes what failures opened).
    fn clear(&self, key: &str);

    /// Greylists a triple: the first attempt is deferred for `delay`; once a retry after
    /// the delay passes, the triple passes at once for `remember`.
    fn greylist(&self, key: &str, delay: Duration, remember: Duration) -> Greylist;

    /// Takes the lock `name` for `holder` for `ttl`, or extends it when `holder` has it
    /// already. Returns its fencing token (it grows with every new holder), or None when
    /// another holder has it. A holder that stops renewing loses it after `ttl`.
    fn lock(&self, name: &str, holder: &str, ttl: Duration) -> Option<u64>;

    /// Gives the lock back if `holder` has it.
    fn unlock(&self, name: &str, holder: &str);

    /// Who holds the lock `name` now.
    fn lock_holder(&self, name: &str) -> Option<String>;

    /// Tells every node subscribed to `channel` (this one included).
    fn publish(&self, channel: &str, message: &str);

    /// Messages published on `channel` by any node from now on; None when this backend
    /// has no other nodes to hear from.
    fn subscribe(&self, channel: &str) -> Option<tokio::sync::mpsc::UnboundedReceiver<String>>;

    /// "memory" or "redis", for status.
    fn kind(&self) -> &'static str;
}

//! Short-lived shared counters behind one trait: rate limits and greylisting. The memory
//! backend serves one node; Redis (several nodes) will implement the same trait.

mod memory;

use std::time::Duration;

pub use memory::MemoryCache;

/// What greylisting says about a (client network, sender, recipient) triple.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Greylist {
    /// Seen before and the delay has passed (or allowlisted by an earlier pass).
    Pass,
    /// New, or retried too early: answer 450 and let the sender retry.
    Defer { retry_in: Duration },
}

pub trait Cache: Send + Sync {
    /// Counts one event for `key`; true while at most `limit` fell in the last `window`.
    fn hit(&self, key: &str, limit: u32, window: Duration) -> bool;

    /// How many events for `key` fell in the last `window` (counts nothing itself).
    fn recent(&self, key: &str, window: Duration) -> u32;

    /// Forgets `key`'s events (a success closes what failures opened).
    fn clear(&self, key: &str);

    /// Greylists a triple: the first attempt is deferred for `delay`; once a retry after
    /// the delay passes, the triple passes at once for `remember`.
    fn greylist(&self, key: &str, delay: Duration, remember: Duration) -> Greylist;
}

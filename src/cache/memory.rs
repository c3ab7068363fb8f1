//! The in-process cache: sliding-window counters and greylist entries in hash maps,
//! pruned as they are touched and swept when they grow.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Cache, Greylist};

/// Above this many keys a map is swept of expired entries.
const SWEEP_AT: usize = 100_000;

#[derive(Default)]
pub struct MemoryCache {
    hits: Mutex<HashMap<String, Events>>,
    /// First seen, and passed-until once a retry came after the delay.
    grey: Mutex<HashMap<String, (Instant, Option<Instant>)>>,
    /// Lock name → (holder, expiry, fencing token).
    locks: Mutex<HashMap<String, (String, Instant, u64)>>,
    fences: std::sync::atomic::AtomicU64,
}

/// One key's events, and the longest window it was counted over: a sweep keeps what is
/// still inside that (a vacation's week-long memory is not swept by a minute's counter).
#[derive(Default)]
struct Events {
    window: Duration,
    at: VecDeque<Instant>,
}

/// The key's events inside `window`, made when missing; the map swept when it grew.
fn counted<'m>(
    map: &'m mut HashMap<String, Events>,
    key: &str,
    window: Duration,
    now: Instant,
) -> &'m mut Events {
    if map.len() > SWEEP_AT {
        map.retain(|_, e| {
            e.at.back()
                .is_some_and(|t| now.duration_since(*t) < e.window)
        });
    }
    let events = map.entry(key.to_string()).or_default();
    events.window = events.window.max(window);
    while events
        .at
        .front()
        .is_some_and(|t| now.duration_since(*t) >= window)
    {
        events.at.pop_front();
    }
    events
}

impl Cache for MemoryCache {
    fn hit(&self, key: &str, limit: u32, window: Duration) -> bool {
        let now = Instant::now();
        let mut map = self.hits.lock().unwrap_or_else(|p| p.into_inner());
        let events = counted(&mut map, key, window, now);
        events.at.push_back(now);
        events.at.len() <= limit as usize
    }

    fn take(&self, key: &str, count: u32, limit: u32, window: Duration) -> bool {
        let now = Instant::now();
        let mut map = self.hits.lock().unwrap_or_else(|p| p.into_inner());
        let events = counted(&mut map, key, window, now);
        if events.at.len() + count as usize > limit as usize {
            return false;
        }
        events.at.extend(std::iter::repeat_n(now, count as usize));
        true
    }

    fn recent(&self, key: &str, window: Duration) -> u32 {
        let now = Instant::now();
        let map = self.hits.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key).map_or(0, |e| {
            e.at.iter()
                .filter(|t| now.duration_since(**t) < window)
                .count() as u32
        })
    }

    fn clear(&self, key: &str) {
        self.hits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    fn greylist(&self, key: &str, delay: Duration, remember: Duration) -> Greylist {
        let now = Instant::now();
        let mut map = self.grey.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > SWEEP_AT {
            map.retain(|_, (first, passed)| {
                passed.map_or(now.duration_since(*first) < remember, |p| p > now)
            });
        }
        match map.get_mut(key) {
            Some((_, Some(until))) if *until > now => Greylist::Pass,
            Some((first, passed)) if now.duration_since(*first) >= delay => {
                *passed = Some(now + remember);
                Greylist::Pass
            }
            Some((first, _)) => Greylist::Defer {
                retry_in: delay - now.duration_since(*first),
            },
            None => {
                map.insert(key.to_string(), (now, None));
                Greylist::Defer { retry_in: delay }
            }
        }
    }

    fn lock(&self, name: &str, holder: &str, ttl: Duration) -> Option<u64> {
        let now = Instant::now();
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        match locks.get_mut(name) {
            Some((who, until, fence)) if *until > now => {
                if who != holder {
                    return None;
                }
                *until = now + ttl;
                Some(*fence)
            }
            _ => {
                let fence = self
                    .fences
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    + 1;
                locks.insert(name.to_string(), (holder.to_string(), now + ttl, fence));
                Some(fence)
            }
        }
    }

    fn unlock(&self, name: &str, holder: &str) {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        if locks.get(name).is_some_and(|(who, _, _)| who == holder) {
            locks.remove(name);
        }
    }

    fn lock_holder(&self, name: &str) -> Option<String> {
        let locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks
            .get(name)
            .filter(|(_, until, _)| *until > Instant::now())
            .map(|(who, _, _)| who.clone())
    }

    fn publish(&self, _channel: &str, _message: &str) {}

    fn subscribe(&self, _channel: &str) -> Option<tokio::sync::mpsc::UnboundedReceiver<String>> {
        None
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sweep keeps each key by its own window: a week-long memory outlives the
    /// minute-long counters that made the map grow.
    #[test]
    fn a_sweep_keeps_each_key_for_its_own_window() {
        let cache = MemoryCache::default();
        let week = Duration::from_secs(7 * 86_400);
        assert!(cache.take("answered", 1, 1, week));
        std::thread::sleep(Duration::from_millis(20));
        for n in 0..=SWEEP_AT {
            cache.hit(&format!("ip:{n}"), u32::MAX, Duration::from_millis(10));
        }
        assert_eq!(cache.recent("answered", week), 1);
        assert!(!cache.take("answered", 1, 1, week), "still remembered");
    }
}

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
    hits: Mutex<HashMap<String, VecDeque<Instant>>>,
    /// First seen, and passed-until once a retry came after the delay.
    grey: Mutex<HashMap<String, (Instant, Option<Instant>)>>,
}

impl Cache for MemoryCache {
    fn hit(&self, key: &str, limit: u32, window: Duration) -> bool {
        let now = Instant::now();
        let mut map = self.hits.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > SWEEP_AT {
            map.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < window));
        }
        let q = map.entry(key.to_string()).or_default();
        while q.front().is_some_and(|t| now.duration_since(*t) >= window) {
            q.pop_front();
        }
        q.push_back(now);
        q.len() <= limit as usize
    }

    fn recent(&self, key: &str, window: Duration) -> u32 {
        let now = Instant::now();
        let map = self.hits.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key).map_or(0, |q| {
            q.iter()
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_window_counts_and_forgets() {
        let cache = MemoryCache::default();
        let window = Duration::from_millis(200);
        assert!(cache.hit("ip", 2, window));
        assert!(cache.hit("ip", 2, window));
        assert!(!cache.hit("ip", 2, window));
        assert!(cache.hit("other", 2, window));
        assert_eq!(cache.recent("ip", window), 3);
        cache.clear("ip");
        assert_eq!(cache.recent("ip", window), 0);
        assert!(cache.hit("ip", 2, window));
        std::thread::sleep(window);
        assert!(cache.hit("ip", 2, window));
    }

    #[test]
    fn greylisting_defers_then_passes_after_the_delay() {
        let cache = MemoryCache::default();
        let (delay, remember) = (Duration::from_millis(100), Duration::from_secs(60));
        assert!(matches!(
            cache.greylist("t", delay, remember),
            Greylist::Defer { .. }
        ));
        assert!(matches!(
            cache.greylist("t", delay, remember),
            Greylist::Defer { .. }
        ));
        std::thread::sleep(delay);
        assert_eq!(cache.greylist("t", delay, remember), Greylist::Pass);
        assert_eq!(cache.greylist("t", delay, remember), Greylist::Pass);
    }
}

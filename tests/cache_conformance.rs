//! The cache conformance suite: rate limits, greylisting and locks written once against
//! the `Cache` trait and run on the in-process cache and on a real redis-server; then
//! what only a shared cache does: two nodes' instances count in one window, exclude each
//! other from a lock, hear each other's notices, and carry on when Redis goes away.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Process;
use ferrymail::cache::{Cache, Greylist, MemoryCache, RedisCache};

struct Backend {
    cache: Arc<dyn Cache>,
    _dir: Option<tempfile::TempDir>,
    _server: Option<Process>,
}

fn memory() -> Backend {
    Backend {
        cache: Arc::new(MemoryCache::default()),
        _dir: None,
        _server: None,
    }
}

fn redis() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let (server, url) = common::redis(dir.path());
    Backend {
        cache: Arc::new(RedisCache::connect(&url).unwrap()),
        _dir: Some(dir),
        _server: Some(server),
    }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod on_memory {
            $(#[test] fn $name() { super::$name(&super::memory()); })*
        }
        mod on_redis {
            $(#[test] fn $name() { super::$name(&super::redis()); })*
        }
    };
}

conformance!(
    sliding_window_counts_and_forgets,
    taking_several_counts_all_or_nothing,
    greylisting_defers_then_passes_after_the_delay,
    locks_have_one_holder_and_expire,
);

fn sliding_window_counts_and_forgets(b: &Backend) {
    let cache = b.cache.as_ref();
    let window = Duration::from_millis(300);
    assert!(cache.hit("ip", 2, window));
    assert!(cache.hit("ip", 2, window));
    assert!(!cache.hit("ip", 2, window));
    assert!(cache.hit("other", 2, window));
    assert_eq!(cache.recent("ip", window), 3);
    cache.clear("ip");
    assert_eq!(cache.recent("ip", window), 0);
    assert!(cache.hit("ip", 2, window));
    std::thread::sleep(window + Duration::from_millis(20));
    assert_eq!(cache.recent("ip", window), 0);
    assert!(cache.hit("ip", 2, window));
}

fn taking_several_counts_all_or_nothing(b: &Backend) {
    let cache = b.cache.as_ref();
    let window = Duration::from_millis(300);
    assert!(cache.take("sent", 2, 3, window));
    assert!(!cache.take("sent", 2, 3, window), "2 more would make 4");
    assert_eq!(
        cache.recent("sent", window),
        2,
        "a refused take counts nothing"
    );
    assert!(cache.take("sent", 1, 3, window));
    assert!(!cache.take("sent", 1, 3, window));
    assert!(
        !cache.take("big", 4, 3, window),
        "more than the limit at once"
    );
    std::thread::sleep(window + Duration::from_millis(20));
    assert!(cache.take("sent", 3, 3, window));
}

fn greylisting_defers_then_passes_after_the_delay(b: &Backend) {
    let cache = b.cache.as_ref();
    let (delay, remember) = (Duration::from_millis(200), Duration::from_secs(60));
    let Greylist::Defer { retry_in } = cache.greylist("t", delay, remember) else {
        panic!("a new triple passed");
    };
    assert!(retry_in <= delay && retry_in > Duration::from_millis(100));
    assert!(matches!(
        cache.greylist("t", delay, remember),
        Greylist::Defer { .. }
    ));
    std::thread::sleep(delay);
    assert_eq!(cache.greylist("t", delay, remember), Greylist::Pass);
    assert_eq!(cache.greylist("t", delay, remember), Greylist::Pass);
    assert!(matches!(
        cache.greylist("another", delay, remember),
        Greylist::Defer { .. }
    ));
}

fn locks_have_one_holder_and_expire(b: &Backend) {
    let cache = b.cache.as_ref();
    let ttl = Duration::from_millis(300);
    let fence = cache
        .lock("backup", "node-a", ttl)
        .expect("free lock taken");
    assert_eq!(cache.lock_holder("backup").as_deref(), Some("node-a"));
    // Renewing keeps the fence; another holder is refused.
    assert_eq!(cache.lock("backup", "node-a", ttl), Some(fence));
    assert_eq!(cache.lock("backup", "node-b", ttl), None);
    // A lock of another name is another lock.
    assert!(cache.lock("acme", "node-b", ttl).is_some());
    // Only the holder can give it back.
    cache.unlock("backup", "node-b");
    assert_eq!(cache.lock_holder("backup").as_deref(), Some("node-a"));
    cache.unlock("backup", "node-a");
    assert_eq!(cache.lock_holder("backup"), None);
    let second = cache
        .lock("backup", "node-b", ttl)
        .expect("released lock taken");
    assert!(second > fence, "fences grow: {second} after {fence}");
    // A holder that stops renewing loses it.
    std::thread::sleep(ttl + Duration::from_millis(50));
    let third = cache
        .lock("backup", "node-a", ttl)
        .expect("expired lock taken");
    assert!(third > second);
}

/// Two nodes, one Redis: one window, one lock, one channel.
#[test]
fn redis_is_shared_by_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = common::redis(dir.path());
    let a = RedisCache::connect(&url).unwrap();
    let b = RedisCache::connect(&url).unwrap();
    let window = Duration::from_secs(60);
    for _ in 0..3 {
        assert!(a.hit("mx-connect:192.0.2.1", 5, window));
    }
    assert!(b.hit("mx-connect:192.0.2.1", 5, window));
    assert!(b.hit("mx-connect:192.0.2.1", 5, window));
    assert!(!a.hit("mx-connect:192.0.2.1", 5, window));
    assert_eq!(b.recent("mx-connect:192.0.2.1", window), 6);

    assert!(a.lock("reconcile", "a", window).is_some());
    assert_eq!(b.lock("reconcile", "b", window), None);
    assert_eq!(b.lock_holder("reconcile").as_deref(), Some("a"));

    let mut heard = b.subscribe("revision").expect("redis subscribes");
    // The subscription is made on its own thread: publish until it is heard.
    let got = (0..50).find_map(|_| {
        a.publish("revision", "7");
        std::thread::sleep(Duration::from_millis(100));
        heard.try_recv().ok()
    });
    assert_eq!(got.as_deref(), Some("7"));
}

/// Redis going away must not stop mail: counters carry on per node, and nobody holds a
/// lock (work that must run on one node waits).
#[test]
fn without_redis_limits_count_locally_and_locks_wait() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, url) = common::redis(dir.path());
    let cache = RedisCache::connect(&url).unwrap();
    assert!(cache.hit("k", 1, Duration::from_secs(60)));
    server.kill_hard();
    let started = std::time::Instant::now();
    assert!(cache.hit("k", 1, Duration::from_secs(60)));
    assert!(!cache.hit("k", 1, Duration::from_secs(60)));
    assert_eq!(cache.lock("reconcile", "a", Duration::from_secs(5)), None);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "each call gives up quickly"
    );
    // A wrong address fails at start, with the address in the message.
    let err = RedisCache::connect(&url)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("127.0.0.1"), "{err}");
}

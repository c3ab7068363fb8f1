//! The shared cache: Redis holds every node's rate-limit windows, greylist triples,
//! cluster-wide locks and revision notices, each update one atomic Lua script.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use redis::{Connection, RedisResult, Script};

use super::{Cache, Greylist, MemoryCache};

/// Every key starts with this, so a Redis shared with other software stays tidy; a
/// second ferrymail cluster takes another database (`redis://host/1`).
const PREFIX: &str = "ferrymail:";
/// An operation waits this long for Redis before the node carries on without it.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Idle connections kept for reuse.
const POOL: usize = 16;
/// While Redis is unreachable, the warning is repeated at most this often.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Times come from Redis (`TIME`), not from each node's clock, so nodes whose clocks
/// disagree still count in one window.
const NOW_MS: &str =
    "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000)";

static HIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NOW_MS}
         redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]))
         redis.call('ZADD', KEYS[1], now, ARGV[3])
         redis.call('PEXPIRE', KEYS[1], ARGV[1])
         if redis.call('ZCARD', KEYS[1]) <= tonumber(ARGV[2]) then return 1 end
         return 0"
    ))
});

/// Adds ARGV[3] members (named ARGV[4]..i) only if the window then holds at most ARGV[2].
static TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NOW_MS}
         redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]))
         local count = tonumber(ARGV[3])
         if redis.call('ZCARD', KEYS[1]) + count > tonumber(ARGV[2]) then return 0 end
         for i = 1, count do redis.call('ZADD', KEYS[1], now, ARGV[4] .. ':' .. i) end
         redis.call('PEXPIRE', KEYS[1], ARGV[1])
         return 1"
    ))
});

static RECENT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NOW_MS}
         return redis.call('ZCOUNT', KEYS[1], '(' .. (now - tonumber(ARGV[1])), '+inf')"
    ))
});

static GREYLIST: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NOW_MS}
         local delay, remember = tonumber(ARGV[1]), tonumber(ARGV[2])
         local first = tonumber(redis.call('HGET', KEYS[1], 'first'))
         local passed = tonumber(redis.call('HGET', KEYS[1], 'until'))
         if passed and passed > now then return {{1, 0}} end
         if first and now - first >= delay then
           redis.call('HSET', KEYS[1], 'until', now + remember)
           redis.call('PEXPIRE', KEYS[1], remember)
           return {{1, 0}}
         end
         if first then return {{0, delay - (now - first)}} end
         redis.call('HSET', KEYS[1], 'first', now)
         redis.call('PEXPIRE', KEYS[1], math.max(delay, remember))
         return {{0, delay}}"
    ))
});

/// KEYS: the lock, its fence counter. ARGV: holder, ttl ms. The fence grows with every
/// new holder, so work stamped with an older fence can be told apart.
static LOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local who = redis.call('HGET', KEYS[1], 'holder')
         if who == ARGV[1] then
           redis.call('PEXPIRE', KEYS[1], ARGV[2])
           return tonumber(redis.call('HGET', KEYS[1], 'fence'))
         end
         if who then return -1 end
         local fence = redis.call('INCR', KEYS[2])
         redis.call('HSET', KEYS[1], 'holder', ARGV[1], 'fence', fence)
         redis.call('PEXPIRE', KEYS[1], ARGV[2])
         return fence",
    )
});

static UNLOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('HGET', KEYS[1], 'holder') == ARGV[1] then
           return redis.call('DEL', KEYS[1])
         end
         return 0",
    )
});

#[derive(Debug, thiserror::Error)]
#[error("Redis at {at}: {source}")]
pub struct CacheError {
    at: String,
    #[source]
    source: redis::RedisError,
}

pub struct RedisCache {
    client: redis::Client,
    /// host:port, never the password, for messages.
    at: String,
    idle: Mutex<Vec<Connection>>,
    /// Counters carry on per node while Redis is unreachable: a limit that holds per
    /// node is better than none, and better than refusing every client.
    fallback: MemoryCache,
    last_warning: Mutex<Option<Instant>>,
    /// Members of a sliding window must be unique across nodes: random per process, then
    /// a counter.
    member_prefix: String,
    members: AtomicU64,
}

impl RedisCache {
    /// Connects and checks that Redis answers; a wrong URL or password fails here, at
    /// start, not at the first client.
    pub fn connect(url: &str) -> Result<RedisCache, CacheError> {
        let client = redis::Client::open(url).map_err(|source| CacheError {
            at: "the URL in cache.url".into(),
            source,
        })?;
        let at = client.get_connection_info().addr().to_string();
        let mut random = [0u8; 8];
        let _ = aws_lc_rs::rand::fill(&mut random);
        let cache = RedisCache {
            client,
            at,
            idle: Mutex::new(Vec::new()),
            fallback: MemoryCache::default(),
            last_warning: Mutex::new(None),
            member_prefix: hex::encode(random),
            members: AtomicU64::new(0),
        };
        cache
            .with_conn(|c| redis::cmd("PING").query::<String>(c))
            .map_err(|source| CacheError {
                at: cache.at.clone(),
                source,
            })?;
        Ok(cache)
    }

    fn connection(&self) -> RedisResult<Connection> {
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        if let Some(c) = pooled {
            return Ok(c);
        }
        let c = self.client.get_connection_with_timeout(TIMEOUT)?;
        c.set_read_timeout(Some(TIMEOUT))?;
        c.set_write_timeout(Some(TIMEOUT))?;
        Ok(c)
    }

    /// Runs `work` on a pooled connection; a connection that failed is not reused.
    fn with_conn<T>(&self, work: impl FnOnce(&mut Connection) -> RedisResult<T>) -> RedisResult<T> {
        crate::blocking::run(|| {
            let mut c = self.connection()?;
            let out = work(&mut c)?;
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < POOL {
                idle.push(c);
            }
            Ok(out)
        })
    }

    fn degraded(&self, what: &str, e: &redis::RedisError) {
        let mut last = self.last_warning.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            *last = Some(Instant::now());
            tracing::warn!(
                redis = %self.at,
                error = %e,
                "Redis unreachable ({what}): rate limits and greylisting count on this node alone until it is back"
            );
        }
    }

    fn key(kind: &str, key: &str) -> String {
        format!("{PREFIX}{kind}:{key}")
    }
}

impl RedisCache {
    /// A name for a new event in a window's sorted set: unique across nodes and calls.
    fn next_member(&self) -> String {
        format!(
            "{}-{}",
            self.member_prefix,
            self.members.fetch_add(1, Ordering::Relaxed)
        )
    }
}

fn ms(d: Duration) -> u64 {
    (d.as_millis().min(u64::MAX as u128) as u64).max(1)
}

impl Cache for RedisCache {
    fn hit(&self, key: &str, limit: u32, window: Duration) -> bool {
        let member = self.next_member();
        let outcome = self.with_conn(|c| {
            HIT.key(Self::key("hits", key))
                .arg(ms(window))
                .arg(limit)
                .arg(&member)
                .invoke::<i64>(c)
        });
        match outcome {
            Ok(ok) => ok == 1,
            Err(e) => {
                self.degraded("rate limit", &e);
                self.fallback.hit(key, limit, window)
            }
        }
    }

    fn take(&self, key: &str, count: u32, limit: u32, window: Duration) -> bool {
        let member = self.next_member();
        let outcome = self.with_conn(|c| {
            TAKE.key(Self::key("hits", key))
                .arg(ms(window))
                .arg(limit)
                .arg(count)
                .arg(&member)
                .invoke::<i64>(c)
        });
        match outcome {
            Ok(ok) => ok == 1,
            Err(e) => {
                self.degraded("rate limit", &e);
                self.fallback.take(key, count, limit, window)
            }
        }
    }

    fn recent(&self, key: &str, window: Duration) -> u32 {
        let outcome = self.with_conn(|c| {
            RECENT
                .key(Self::key("hits", key))
                .arg(ms(window))
                .invoke::<u32>(c)
        });
        match outcome {
            Ok(n) => n,
            Err(e) => {
                self.degraded("rate limit", &e);
                self.fallback.recent(key, window)
            }
        }
    }

    fn clear(&self, key: &str) {
        self.fallback.clear(key);
        if let Err(e) = self.with_conn(|c| {
            redis::cmd("DEL")
                .arg(Self::key("hits", key))
                .query::<i64>(c)
        }) {
            self.degraded("rate limit", &e);
        }
    }

    fn greylist(&self, key: &str, delay: Duration, remember: Duration) -> Greylist {
        let outcome = self.with_conn(|c| {
            GREYLIST
                .key(Self::key("grey", key))
                .arg(ms(delay))
                .arg(ms(remember))
                .invoke::<(i64, i64)>(c)
        });
        match outcome {
            Ok((1, _)) => Greylist::Pass,
            Ok((_, retry_ms)) => Greylist::Defer {
                retry_in: Duration::from_millis(retry_ms.max(0) as u64),
            },
            Err(e) => {
                self.degraded("greylisting", &e);
                self.fallback.greylist(key, delay, remember)
            }
        }
    }

    fn lock(&self, name: &str, holder: &str, ttl: Duration) -> Option<u64> {
        let outcome = self.with_conn(|c| {
            LOCK.key(Self::key("lock", name))
                .key(Self::key("fence", name))
                .arg(holder)
                .arg(ms(ttl))
                .invoke::<i64>(c)
        });
        match outcome {
            Ok(fence) => u64::try_from(fence).ok(),
            // Unreachable, nobody can be sure to hold it: the work waits for Redis
            // rather than run on two nodes at once.
            Err(e) => {
                self.degraded("lock", &e);
                None
            }
        }
    }

    fn unlock(&self, name: &str, holder: &str) {
        if let Err(e) = self.with_conn(|c| {
            UNLOCK
                .key(Self::key("lock", name))
                .arg(holder)
                .invoke::<i64>(c)
        }) {
            self.degraded("lock", &e);
        }
    }

    fn lock_holder(&self, name: &str) -> Option<String> {
        self.with_conn(|c| {
            redis::cmd("HGET")
                .arg(Self::key("lock", name))
                .arg("holder")
                .query::<Option<String>>(c)
        })
        .ok()
        .flatten()
    }

    fn publish(&self, channel: &str, message: &str) {
        if let Err(e) = self.with_conn(|c| {
            redis::cmd("PUBLISH")
                .arg(Self::key("channel", channel))
                .arg(message)
                .query::<i64>(c)
        }) {
            self.degraded("notify", &e);
        }
    }

    fn subscribe(&self, channel: &str) -> Option<tokio::sync::mpsc::UnboundedReceiver<String>> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let client = self.client.clone();
        let channel = Self::key("channel", channel);
        let at = self.at.clone();
        let spawned = std::thread::Builder::new()
            .name("ferrymail-redis-sub".into())
            .spawn(move || listen(client, &channel, &at, tx));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "could not start the Redis subscriber");
            return None;
        }
        Some(rx)
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}

/// Forwards `channel`'s messages to `tx` until its receiver is gone, reconnecting after
/// a failure. After a reconnect it sends "reconnected": messages may have been missed,
/// so the listener should look for itself.
fn listen(
    client: redis::Client,
    channel: &str,
    at: &str,
    tx: tokio::sync::mpsc::UnboundedSender<String>,
) {
    let mut first = true;
    while !tx.is_closed() {
        let connected = client
            .get_connection_with_timeout(TIMEOUT)
            .and_then(|mut c| {
                let mut pubsub = c.as_pubsub();
                pubsub.subscribe(channel)?;
                // Wake up now and then to notice a receiver that went away.
                pubsub.set_read_timeout(Some(Duration::from_secs(1)))?;
                if !first && tx.send("reconnected".into()).is_err() {
                    return Ok(());
                }
                first = false;
                loop {
                    match pubsub.get_message() {
                        Ok(msg) => {
                            let text: String = msg.get_payload().unwrap_or_default();
                            if tx.send(text).is_err() {
                                return Ok(());
                            }
                        }
                        Err(e) if e.is_timeout() => {
                            if tx.is_closed() {
                                return Ok(());
                            }
                        }
                        Err(e) => return Err(e),
                    }
                }
            });
        if let Err(e) = connected {
            tracing::warn!(redis = %at, error = %e, "Redis subscription lost; reconnecting");
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

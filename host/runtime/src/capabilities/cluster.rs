//! Cluster-wide counters in Redis, for `consistency: cluster`.
//!
//! One round trip per check: a Lua script increments the window's key only if the result
//! stays within the limit, and sets its expiry on first use. Windows are the same fixed,
//! epoch-aligned windows as the local counters, so every gateway node and Redis agree on
//! them. When Redis does not answer within the timeout, the check falls back to the node's
//! local counters, Redis is left alone for a second, and the outage is logged once (then
//! every 30 s) until it answers again; a request never fails because Redis is down.
//!
//! The import is synchronous (plugins that count are called synchronously, see `pool.rs`), so
//! the round trip runs in `block_in_place`: the Tokio worker hands its other tasks to another
//! thread while this one waits (bounded by the timeout).

use crate::bindings::wasmgate::plugin::counters::WindowCount;
use redis::aio::MultiplexedConnection;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

const CHECK_AND_INCREMENT: &str = r"
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
local delta, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
if count + delta > limit then
  return {0, count}
end
count = redis.call('INCRBY', KEYS[1], delta)
if count == delta then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return {1, count}
";

/// After a failure, Redis is not asked again for this long.
const RETRY_AFTER_MS: u64 = 1_000;
/// While Redis stays down, the outage is logged again this often.
const LOG_EVERY_MS: u64 = 30_000;

pub struct ClusterCounters {
    client: redis::Client,
    connection: Mutex<Option<MultiplexedConnection>>,
    script: redis::Script,
    handle: tokio::runtime::Handle,
    timeout: Duration,
    down: AtomicBool,
    retry_at_ms: AtomicU64,
    logged_at_ms: AtomicU64,
}

impl ClusterCounters {
    /// `url` like `redis://127.0.0.1:6379`. Connects on first use, so the gateway starts
    /// (and counts locally) even when Redis is down.
    pub fn new(
        url: &str,
        timeout: Duration,
        handle: tokio::runtime::Handle,
    ) -> Result<Self, redis::RedisError> {
        Ok(ClusterCounters {
            client: redis::Client::open(url)?,
            connection: Mutex::new(None),
            script: redis::Script::new(CHECK_AND_INCREMENT),
            handle,
            timeout,
            down: AtomicBool::new(false),
            retry_at_ms: AtomicU64::new(0),
            logged_at_ms: AtomicU64::new(0),
        })
    }

    /// Check and count in Redis; `None` when Redis cannot answer now (count locally instead).
    pub fn increment(
        &self,
        key: &str,
        delta: u32,
        limit: u64,
        window_ms: u64,
        now_ms: u64,
    ) -> Option<WindowCount> {
        if self.down.load(Ordering::Relaxed) && now_ms < self.retry_at_ms.load(Ordering::Relaxed) {
            return None;
        }
        let window_ms = window_ms.max(1);
        let start = now_ms - now_ms % window_ms;
        let redis_key = format!("wasmgate:{key}:{start}");
        // The key outlives its window a little, for clocks a little apart.
        let ttl_ms = window_ms + 1_000;
        let cached = self.connection.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let result = tokio::task::block_in_place(|| {
            self.handle.block_on(tokio::time::timeout(self.timeout, async {
                let mut conn = match cached {
                    Some(c) => c,
                    None => {
                        let c = self.client.get_multiplexed_async_connection().await?;
                        *self.connection.lock().unwrap_or_else(|e| e.into_inner()) = Some(c.clone());
                        c
                    }
                };
                self.script
                    .key(&redis_key)
                    .arg(delta)
                    .arg(limit)
                    .arg(ttl_ms)
                    .invoke_async::<(i64, i64)>(&mut conn)
                    .await
            }))
        });
        match result {
            Ok(Ok((allowed, count))) => {
                if self.down.swap(false, Ordering::Relaxed) {
                    tracing::info!("redis answers again: cluster counting resumed");
                }
                Some(WindowCount {
                    allowed: allowed == 1,
                    count: count.max(0) as u64,
                    reset_ms: start + window_ms - now_ms,
                })
            }
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no answer within {} ms", self.timeout.as_millis()),
                };
                *self.connection.lock().unwrap_or_else(|e| e.into_inner()) = None;
                self.retry_at_ms.store(now_ms + RETRY_AFTER_MS, Ordering::Relaxed);
                let was_down = self.down.swap(true, Ordering::Relaxed);
                let logged = self.logged_at_ms.load(Ordering::Relaxed);
                if !was_down || now_ms >= logged + LOG_EVERY_MS {
                    self.logged_at_ms.store(now_ms, Ordering::Relaxed);
                    tracing::warn!(error = %why, "redis unavailable: counting on this node until it answers");
                }
                None
            }
        }
    }
}

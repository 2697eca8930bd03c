//! `wasmgate:plugin/counters`: fixed-window counters, checked and incremented atomically.
//!
//! Windows are aligned to multiples of their length since the Unix epoch, so every node
//! (and Redis, when the cluster mode lands) agrees on where a window starts. A fixed window
//! can admit up to 2× the limit across one window boundary; that bound is the price of one
//! atomic operation per check.

use crate::HostState;
use crate::bindings::wasmgate::plugin::counters::{Consistency, Host, WindowCount};
use dashmap::DashMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Expired windows are swept every this many increments, so memory stays bounded by the
/// keys active in the current windows.
const SWEEP_EVERY: u64 = 1 << 16;

#[derive(Default)]
pub struct LocalCounters {
    windows: DashMap<String, Window>,
    calls: AtomicU64,
}

struct Window {
    start_ms: u64,
    end_ms: u64,
    count: u64,
}

impl LocalCounters {
    pub fn increment(&self, key: &str, delta: u32, limit: u64, window_ms: u64, now_ms: u64) -> WindowCount {
        let window_ms = window_ms.max(1);
        let start_ms = now_ms - now_ms % window_ms;
        let end_ms = start_ms + window_ms;
        let count = |w: &mut Window| {
            if w.start_ms != start_ms {
                *w = Window { start_ms, end_ms, count: 0 };
            }
            let next = w.count + delta as u64;
            let allowed = next <= limit;
            if allowed {
                w.count = next;
            }
            WindowCount { allowed, count: w.count, reset_ms: end_ms - now_ms }
        };
        // A key seen before is counted without allocating; only a new key is copied in.
        let result = match self.windows.get_mut(key) {
            Some(mut w) => count(&mut w),
            None => count(&mut self.windows.entry(key.to_string()).or_insert(Window {
                start_ms,
                end_ms,
                count: 0,
            })),
        };
        if self.calls.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.windows.retain(|_, w| w.end_ms > now_ms);
        }
        result
    }

    pub fn len(&self) -> usize {
        self.windows.len()
    }

    /// The count of `key` in its window holding `now_ms`; 0 if there is none.
    pub fn count(&self, key: &str, now_ms: u64) -> u64 {
        let w = self.windows.get(key);
        w.filter(|w| w.start_ms <= now_ms && now_ms < w.end_ms).map_or(0, |w| w.count)
    }

    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }
}

impl Host for HostState {
    fn increment(
        &mut self,
        key: String,
        delta: u32,
        limit: u64,
        window_ms: u64,
        consistency: Consistency,
    ) -> WindowCount {
        let scope = &self.scopes[self.current as usize];
        scope.key_into(&key, &mut self.key_buf);
        let now = self.caps.clock.now_ms();
        // Cluster counting when Redis is configured and answering; this node's counters
        // otherwise (no Redis configured, or Redis down).
        if let (Consistency::Cluster, Some(cluster)) = (consistency, self.caps.cluster.get()) {
            let started = std::time::Instant::now();
            let counted = cluster.increment(&self.key_buf, delta, limit, window_ms, now);
            // Waiting on Redis is not the plugin's CPU time: the deadline gives it back, as
            // for outbound HTTP (a slow Redis under load turned into APIG.0502 before).
            self.net_wait += started.elapsed();
            if let Some(w) = counted {
                return w;
            }
        }
        self.caps.counters.increment(&self.key_buf, delta, limit, window_ms, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_up_to_the_limit_then_refuses_until_the_next_window() {
        let c = LocalCounters::default();
        let now = 10_000;
        for i in 1..=3 {
            let r = c.increment("k", 1, 3, 1000, now);
            assert!(r.allowed && r.count == i);
        }
        let r = c.increment("k", 1, 3, 1000, now + 999);
        assert!(!r.allowed && r.count == 3 && r.reset_ms == 1);
        let r = c.increment("k", 1, 3, 1000, now + 1000);
        assert!(r.allowed && r.count == 1);
    }

    #[test]
    fn expired_windows_are_swept() {
        let c = LocalCounters::default();
        for i in 0..SWEEP_EVERY - 1 {
            c.increment(&format!("k{i}"), 1, 10, 1000, 0);
        }
        assert_eq!(c.len() as u64, SWEEP_EVERY - 1);
        // The sweeping call comes after every earlier window has ended.
        c.increment("late", 1, 10, 1000, 5000);
        assert_eq!(c.len(), 1);
    }
}

//! `wasmgate:plugin/kv`: key-value state with TTL, shared by all instances of a binding on
//! this node (circuit-breaker state, authorizer caches), within a quota per binding.
//!
//! Each binding's namespace has one [`Space`]: its entries, their size and its limits. A
//! plugin writes what it likes into its own space, so the space is what bounds a hostile or
//! buggy plugin's memory (a loop writing 1 KiB values took a gateway to 2 GB before). Entries
//! with a TTL are a cache and are evicted least recently used first when a write needs room
//! (Redis's `volatile-lru`); entries without one are state the plugin relies on (a breaker's
//! phase) and are never evicted behind its back, so a write that needs their room fails.

use crate::HostState;
use crate::bindings::wasmgate::plugin::kv::{Host, KvError};
use hashlink::LruCache;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntGaugeVec, Opts};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// The longest key a plugin may use.
pub const MAX_KEY_BYTES: usize = 1024;
/// What an entry costs besides its key and value (the maps' slots, the value's header), so
/// a flood of tiny entries is bounded by bytes too, not only by count.
const ENTRY_OVERHEAD: usize = 64;

/// A binding's quota (`limits.kv_*` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvLimits {
    pub max_bytes: usize,
    pub max_entries: usize,
    pub max_value_bytes: usize,
}

impl Default for KvLimits {
    fn default() -> Self {
        KvLimits { max_bytes: 4 << 20, max_entries: 10_000, max_value_bytes: 64 << 10 }
    }
}

/// Every binding's space, by namespace. A space lives as long as a binding of the current
/// (or a still-running older) snapshot holds it, so state survives a reload that keeps the
/// binding and is freed when no snapshot has it.
#[derive(Default)]
pub struct KvStore {
    spaces: Mutex<HashMap<String, Weak<Space>>>,
    /// Whether [`KvMetrics`] reports the spaces (`gateway.metrics_enabled`).
    unreported: AtomicBool,
}

impl KvStore {
    /// The space of the binding with `namespace`. Its limits come with each call (the
    /// binding's, in the snapshot that makes the call), so a config that is refused changes
    /// nothing.
    pub fn space(&self, namespace: &str, api: &str, plugin: &str) -> Arc<Space> {
        let mut spaces = self.spaces.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(space) = spaces.get(namespace).and_then(Weak::upgrade) {
            return space;
        }
        spaces.retain(|_, s| s.strong_count() > 0);
        let space = Arc::new(Space {
            labels: [api.to_string(), plugin.to_string()],
            inner: Mutex::default(),
            refused: AtomicU64::new(0),
            warned: AtomicBool::new(false),
        });
        spaces.insert(namespace.to_string(), Arc::downgrade(&space));
        space
    }

    /// The space of `namespace` if a binding holds it (how the test harness reads state).
    pub fn get_space(&self, namespace: &str) -> Option<Arc<Space>> {
        self.spaces.lock().unwrap_or_else(|e| e.into_inner()).get(namespace).and_then(Weak::upgrade)
    }

    /// Report the spaces' usage as metrics, or not (`gateway.metrics_enabled`).
    pub fn report(&self, on: bool) {
        self.unreported.store(!on, Ordering::Relaxed);
    }

    fn live(&self) -> Vec<Arc<Space>> {
        self.spaces.lock().unwrap_or_else(|e| e.into_inner()).values().filter_map(Weak::upgrade).collect()
    }
}

pub struct Space {
    /// `api` and `plugin` of the binding that made it, for the metrics.
    labels: [String; 2],
    inner: Mutex<Inner>,
    /// Writes refused (too large, or full).
    refused: AtomicU64,
    /// Whether a refusal was logged yet: once per space, so a flood does not flood the log.
    warned: AtomicBool,
}

struct Inner {
    /// Entries with a TTL, least recently used first.
    volatile: LruCache<String, Value>,
    /// Entries without one.
    kept: HashMap<String, Value>,
    /// What all entries cost, and what the kept ones do.
    bytes: usize,
    kept_bytes: usize,
}

impl Default for Inner {
    fn default() -> Self {
        Inner { volatile: LruCache::new_unbounded(), kept: HashMap::new(), bytes: 0, kept_bytes: 0 }
    }
}

struct Value {
    bytes: Vec<u8>,
    expires: Option<Instant>,
}

impl Value {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|e| e > now)
    }
}

fn cost(key: &str, value: &[u8]) -> usize {
    key.len() + value.len() + ENTRY_OVERHEAD
}

impl Inner {
    fn entries(&self) -> usize {
        self.volatile.len() + self.kept.len()
    }

    fn remove(&mut self, key: &str) -> Option<Value> {
        let old = match self.kept.remove(key) {
            Some(old) => {
                self.kept_bytes -= cost(key, &old.bytes);
                old
            }
            None => self.volatile.remove(key)?,
        };
        self.bytes -= cost(key, &old.bytes);
        Some(old)
    }

    /// The live value at `key`; an expired one is removed.
    fn get(&mut self, key: &str, now: Instant) -> Option<&Value> {
        if self.kept.contains_key(key) {
            return self.kept.get(key);
        }
        if !self.volatile.get(key)?.live(now) {
            self.remove(key);
            return None;
        }
        self.volatile.peek(key)
    }

    /// Store `value` at `key`, evicting entries with a TTL (least recently used first) while
    /// it does not fit. When it cannot fit, nothing changes.
    fn put(&mut self, key: String, value: Vec<u8>, ttl_ms: Option<u64>, l: &KvLimits) -> Result<(), KvError> {
        if key.len() > MAX_KEY_BYTES || value.len() > l.max_value_bytes {
            return Err(KvError::TooLarge);
        }
        let need = cost(&key, &value);
        let old = self.remove(&key);
        let fits = |bytes: usize, entries: usize| bytes + need <= l.max_bytes && entries < l.max_entries;
        // Evicting every entry with a TTL would not make room: refuse before evicting any.
        if !fits(self.kept_bytes, self.kept.len()) {
            if let Some(old) = old {
                self.insert(key, old);
            }
            return Err(KvError::Full);
        }
        while !fits(self.bytes, self.entries()) {
            let (k, v) = self.volatile.remove_lru().expect("room is made by evicting volatile entries");
            self.bytes -= cost(&k, &v.bytes);
        }
        let expires = ttl_ms.map(|t| Instant::now() + Duration::from_millis(t));
        self.insert(key, Value { bytes: value, expires });
        Ok(())
    }

    fn insert(&mut self, key: String, value: Value) {
        let c = cost(&key, &value.bytes);
        self.bytes += c;
        if value.expires.is_some() {
            self.volatile.insert(key, value);
        } else {
            self.kept_bytes += c;
            self.kept.insert(key, value);
        }
    }
}

impl Space {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.lock().get(key, Instant::now()).map(|v| v.bytes.clone())
    }

    pub fn put(
        &self,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
        limits: &KvLimits,
    ) -> Result<(), KvError> {
        let result = self.lock().put(key, value, ttl_ms, limits);
        if let Err(e) = result {
            self.refused(e, limits);
        }
        result
    }

    pub fn delete(&self, key: &str) {
        self.lock().remove(key);
    }

    pub fn compare_and_swap(
        &self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
        ttl_ms: Option<u64>,
        limits: &KvLimits,
    ) -> bool {
        let mut inner = self.lock();
        let current = inner.get(&key, Instant::now()).map(|v| &v.bytes);
        if current != expected.as_ref() {
            return false;
        }
        let result = inner.put(key, new, ttl_ms, limits);
        drop(inner);
        match result {
            Ok(()) => true,
            Err(e) => {
                self.refused(e, limits);
                false
            }
        }
    }

    /// (bytes, entries) in use.
    pub fn usage(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.bytes, inner.entries())
    }

    fn refused(&self, e: KvError, limits: &KvLimits) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        if !self.warned.swap(true, Ordering::Relaxed) {
            let [api, plugin] = &self.labels;
            tracing::warn!(
                api,
                plugin,
                ?limits,
                "kv write refused ({}): the binding's kv quota (limits.kv_*) is taken; \
                 further refusals are counted in wasmgate_plugin_kv_refused_total",
                match e {
                    KvError::TooLarge => "key or value too large",
                    KvError::Full => "full of entries without a TTL",
                }
            );
        }
    }
}

/// The spaces' usage as Prometheus gauges, read when scraped (the request path only
/// touches the space it writes to).
pub struct KvMetrics {
    store: Arc<KvStore>,
    bytes: IntGaugeVec,
    entries: IntGaugeVec,
    refused: IntGaugeVec,
}

impl KvMetrics {
    pub fn new(store: Arc<KvStore>) -> Self {
        let gauge = |name: &str, help: &str| {
            IntGaugeVec::new(Opts::new(name, help), &["api", "plugin"]).expect("valid metric")
        };
        KvMetrics {
            store,
            bytes: gauge(
                "wasmgate_plugin_kv_bytes",
                "Bytes a binding's kv entries take (keys, values, overhead).",
            ),
            entries: gauge("wasmgate_plugin_kv_entries", "Entries in a binding's kv space."),
            refused: gauge(
                "wasmgate_plugin_kv_refused_total",
                "kv writes refused because the key or value was too large or the quota full.",
            ),
        }
    }
}

impl Collector for KvMetrics {
    fn desc(&self) -> Vec<&Desc> {
        [&self.bytes, &self.entries, &self.refused].into_iter().flat_map(|g| g.desc()).collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        for g in [&self.bytes, &self.entries, &self.refused] {
            g.reset();
        }
        if self.store.unreported.load(Ordering::Relaxed) {
            return Vec::new();
        }
        for space in self.store.live() {
            let (bytes, entries) = space.usage();
            let labels = [space.labels[0].as_str(), space.labels[1].as_str()];
            self.bytes.with_label_values(&labels).add(bytes as i64);
            self.entries.with_label_values(&labels).add(entries as i64);
            self.refused.with_label_values(&labels).add(space.refused.load(Ordering::Relaxed) as i64);
        }
        [&self.bytes, &self.entries, &self.refused].into_iter().flat_map(|g| g.collect()).collect()
    }
}

impl Host for HostState {
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        self.scope().kv.get(&key)
    }

    fn set(&mut self, key: String, value: Vec<u8>, ttl_ms: Option<u64>) {
        // Refusals are counted and logged by the space; 0.2.0 plugins have no way to hear.
        let scope = self.scope();
        let _ = scope.kv.put(key, value, ttl_ms, &scope.kv_limits);
    }

    fn put(&mut self, key: String, value: Vec<u8>, ttl_ms: Option<u64>) -> Result<(), KvError> {
        let scope = self.scope();
        scope.kv.put(key, value, ttl_ms, &scope.kv_limits)
    }

    fn delete(&mut self, key: String) {
        self.scope().kv.delete(&key)
    }

    fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> bool {
        let scope = self.scope();
        scope.kv.compare_and_swap(key, expected, new, ttl_ms, &scope.kv_limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A space and the limits its binding calls with.
    struct Bound(Arc<Space>, KvLimits);

    impl Bound {
        fn new(limits: KvLimits) -> Self {
            Bound(KvStore::default().space("ns", "api", "plugin"), limits)
        }
        fn put(&self, key: &str, value: Vec<u8>, ttl_ms: Option<u64>) -> Result<(), KvError> {
            self.0.put(key.into(), value, ttl_ms, &self.1)
        }
        fn cas(&self, key: &str, expected: Option<&[u8]>, new: &[u8]) -> bool {
            self.0.compare_and_swap(key.into(), expected.map(<[u8]>::to_vec), new.to_vec(), None, &self.1)
        }
    }

    #[test]
    fn values_expire_and_cas_sees_expired_as_absent() {
        let kv = Bound::new(KvLimits::default());
        kv.put("a", b"1".to_vec(), Some(0)).unwrap();
        assert_eq!(kv.0.get("a"), None);
        assert!(kv.cas("a", None, b"2"));
        assert!(!kv.cas("a", None, b"3"));
        assert!(kv.cas("a", Some(b"2"), b"3"));
        assert_eq!(kv.0.get("a"), Some(b"3".to_vec()));
        assert_eq!(kv.0.usage(), (1 + 1 + ENTRY_OVERHEAD, 1));
        kv.0.delete("a");
        assert_eq!(kv.0.usage(), (0, 0));
    }

    #[test]
    fn entries_with_a_ttl_are_evicted_least_recently_used_first() {
        let kv = Bound::new(KvLimits { max_entries: 3, ..KvLimits::default() });
        for k in ["a", "b", "c"] {
            kv.put(k, b"v".to_vec(), Some(60_000)).unwrap();
        }
        assert!(kv.0.get("a").is_some(), "a is now the most recently used");
        kv.put("d", b"v".to_vec(), Some(60_000)).unwrap();
        assert_eq!(kv.0.get("b"), None, "b was the least recently used");
        assert!(kv.0.get("a").is_some() && kv.0.get("c").is_some() && kv.0.get("d").is_some());
        assert_eq!(kv.0.usage().1, 3);
    }

    #[test]
    fn entries_without_a_ttl_are_never_evicted_and_a_full_quota_says_so() {
        let limits = KvLimits { max_bytes: 10 * (ENTRY_OVERHEAD + 1024 + 2), ..KvLimits::default() };
        let kv = Bound::new(limits);
        kv.put("t", vec![0; 1024], Some(60_000)).unwrap();
        for i in 0..9 {
            kv.put(&format!("k{i}"), vec![0; 1024], None).unwrap();
        }
        // The tenth kept entry needs the cached one's room: it is evicted.
        kv.put("k9", vec![0; 1024], None).unwrap();
        assert_eq!(kv.0.get("t"), None);
        // The eleventh has no room to be made.
        assert!(matches!(kv.put("kA", vec![0; 1024], None), Err(KvError::Full)));
        assert!(matches!(kv.put("kA", vec![0; 1024], Some(1000)), Err(KvError::Full)));
        assert!(!kv.cas("kA", None, &[0; 1024]));
        // Overwriting an entry in place still fits, and a refused overwrite keeps the old value.
        kv.put("k0", vec![1; 1024], None).unwrap();
        assert!(matches!(kv.put("k0", vec![2; 2048], None), Err(KvError::Full)));
        assert_eq!(kv.0.get("k0"), Some(vec![1; 1024]));
        assert!(kv.0.usage().0 <= limits.max_bytes);
        assert_eq!(kv.0.refused.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn oversized_keys_and_values_are_refused() {
        let kv = Bound::new(KvLimits { max_value_bytes: 100, ..KvLimits::default() });
        assert!(matches!(kv.put(&"a".repeat(MAX_KEY_BYTES + 1), vec![], None), Err(KvError::TooLarge)));
        assert!(matches!(kv.put("a", vec![0; 101], None), Err(KvError::TooLarge)));
        kv.put("a", vec![0; 100], None).unwrap();
    }

    #[test]
    fn a_space_outlives_a_reload_that_keeps_its_binding_and_goes_with_the_last_one() {
        let store = KvStore::default();
        let old = store.space("ns", "api", "p");
        old.put("k".into(), b"v".to_vec(), None, &KvLimits::default()).unwrap();
        let new = store.space("ns", "api", "p");
        drop(old);
        assert_eq!(new.get("k"), Some(b"v".to_vec()));
        drop(new);
        assert!(store.get_space("ns").is_none());
    }
}

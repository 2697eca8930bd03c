//! `wasmgate:plugin/kv`: key-value state with TTL, shared by all instances of a binding on
//! this node (circuit-breaker state, authorizer caches).

use crate::HostState;
use crate::bindings::wasmgate::plugin::kv::Host;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct KvStore {
    map: DashMap<String, Value>,
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

fn expiry(ttl_ms: Option<u64>) -> Option<Instant> {
    ttl_ms.map(|t| Instant::now() + Duration::from_millis(t))
}

impl KvStore {
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let now = Instant::now();
        let v = self.map.get(key)?;
        v.live(now).then(|| v.bytes.clone())
    }

    pub fn set(&self, key: String, bytes: Vec<u8>, ttl_ms: Option<u64>) {
        self.map.insert(key, Value { bytes, expires: expiry(ttl_ms) });
    }

    pub fn delete(&self, key: &str) {
        self.map.remove(key);
    }

    pub fn compare_and_swap(
        &self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> bool {
        let now = Instant::now();
        let value = Value { bytes: new, expires: expiry(ttl_ms) };
        match self.map.entry(key) {
            Entry::Occupied(mut e) => {
                let current = e.get().live(now).then_some(&e.get().bytes);
                if current == expected.as_ref() {
                    e.insert(value);
                    true
                } else {
                    false
                }
            }
            Entry::Vacant(e) => {
                if expected.is_none() {
                    e.insert(value);
                    true
                } else {
                    false
                }
            }
        }
    }
}

impl Host for HostState {
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        self.caps.kv.get(&self.scope().key(&key))
    }

    fn set(&mut self, key: String, value: Vec<u8>, ttl_ms: Option<u64>) {
        self.caps.kv.set(self.scope().key(&key), value, ttl_ms)
    }

    fn delete(&mut self, key: String) {
        self.caps.kv.delete(&self.scope().key(&key))
    }

    fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> bool {
        self.caps.kv.compare_and_swap(self.scope().key(&key), expected, new, ttl_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_expire_and_cas_sees_expired_as_absent() {
        let kv = KvStore::default();
        kv.set("a".into(), b"1".to_vec(), Some(0));
        assert_eq!(kv.get("a"), None);
        assert!(kv.compare_and_swap("a".into(), None, b"2".to_vec(), None));
        assert!(!kv.compare_and_swap("a".into(), None, b"3".to_vec(), None));
        assert!(kv.compare_and_swap("a".into(), Some(b"2".to_vec()), b"3".to_vec(), None));
        assert_eq!(kv.get("a"), Some(b"3".to_vec()));
    }
}

//! `wasmgate:plugin/clock`: wall-clock time with an offset tests can shift, so day-long
//! windows can be tested without waiting a day.

use crate::HostState;
use crate::bindings::wasmgate::plugin::clock::Host;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Default)]
pub struct Clock {
    offset_ms: AtomicI64,
    /// A fixed time (the test harness's clock), 0 when the clock runs.
    frozen_ms: AtomicU64,
}

impl Clock {
    pub fn now_ms(&self) -> u64 {
        let frozen = self.frozen_ms.load(Ordering::Relaxed);
        if frozen != 0 {
            return frozen;
        }
        let real = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        (real + self.offset_ms.load(Ordering::Relaxed)).max(0) as u64
    }

    /// Shift the plugins' clock (tests and operators' drills only).
    pub fn set_offset_ms(&self, offset: i64) {
        self.offset_ms.store(offset, Ordering::Relaxed);
    }

    /// Stop the plugins' clock at `ms` (tests), or let it run again (`None`).
    pub fn freeze_at(&self, ms: Option<u64>) {
        self.frozen_ms.store(ms.unwrap_or(0), Ordering::Relaxed);
    }
}

impl Host for HostState {
    fn now_ms(&mut self) -> u64 {
        self.caps.clock.now_ms()
    }
}

//! What the criterion benches share: their configuration, and timing a call with cold caches.

use criterion::{Bencher, Criterion};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Short runs: these benches compare shapes and plugins, not nanoseconds.
pub fn config() -> Criterion {
    Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3))
}

/// Other data touched before each timed call, as the rest of a request does to the caches
/// in the gateway: 2 MiB, beyond this machine's L2.
pub struct ColdCaches(Vec<u8>);

impl ColdCaches {
    pub fn new() -> Self {
        ColdCaches(vec![0u8; 2 << 20])
    }

    /// Time only `call`, each time after touching the other data.
    pub fn time<T>(&mut self, b: &mut Bencher, mut call: impl FnMut() -> T) {
        b.iter_custom(|iters| {
            let mut took = Duration::ZERO;
            for _ in 0..iters {
                for i in (0..self.0.len()).step_by(64) {
                    self.0[i] = self.0[i].wrapping_add(1);
                }
                black_box(&self.0);
                let t = Instant::now();
                black_box(call());
                took += t.elapsed();
            }
            took
        })
    }
}

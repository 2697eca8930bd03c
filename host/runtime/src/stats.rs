//! Boundary crossings per plugin and phase: what a call costs in the unit that matters.
//!
//! Each entry into the guest (the export itself, every `realloc` the canonical ABI makes to
//! lower a string or list into it, `post-return`) and each entry into the host (an import)
//! costs ~0.2–1 µs of machinery, more than most policy code. wasmtime reports every such
//! transition to a store's call hook; with `gateway.plugin_stats` on, each new instance gets
//! a hook that counts them, and a successful call adds its counts to its plugin's totals.
//! Off (the default), no hook is set and wasmtime skips it with one branch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use wasmgate_proxy::metrics::Phase;
use wasmtime::CallHook;

/// Transitions counted on one store since the last call began.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Crossings {
    /// Host → guest: the export, each `realloc`, `post-return`.
    pub into_guest: u64,
    /// Guest → host: imports (capabilities, WASI).
    pub into_host: u64,
}

impl Crossings {
    /// What the store's call hook does with one transition.
    pub(crate) fn count(&mut self, hook: CallHook) {
        match hook {
            CallHook::CallingWasm => self.into_guest += 1,
            CallHook::CallingHost => self.into_host += 1,
            CallHook::ReturningFromWasm | CallHook::ReturningFromHost => {}
        }
    }
}

/// One plugin's totals for one phase.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PhaseTotals {
    /// Successful calls counted.
    pub calls: u64,
    pub crossings: Crossings,
}

#[derive(Default)]
struct PhaseCounters {
    calls: AtomicU64,
    into_guest: AtomicU64,
    into_host: AtomicU64,
}

/// A plugin's counters, shared by its pools and kept across reloads.
#[derive(Default)]
pub(crate) struct PluginStats([PhaseCounters; 3]);

impl PluginStats {
    pub(crate) fn record(&self, phase: Phase, c: Crossings) {
        let p = &self.0[phase as usize];
        p.calls.fetch_add(1, Ordering::Relaxed);
        p.into_guest.fetch_add(c.into_guest, Ordering::Relaxed);
        p.into_host.fetch_add(c.into_host, Ordering::Relaxed);
    }

    fn totals(&self) -> [PhaseTotals; 3] {
        self.0.each_ref().map(|p| PhaseTotals {
            calls: p.calls.load(Ordering::Relaxed),
            crossings: Crossings {
                into_guest: p.into_guest.load(Ordering::Relaxed),
                into_host: p.into_host.load(Ordering::Relaxed),
            },
        })
    }
}

/// Every plugin's counters, by plugin name; empty while counting is off.
#[derive(Default)]
pub(crate) struct CallStats {
    on: AtomicBool,
    plugins: Mutex<HashMap<Arc<str>, Arc<PluginStats>>>,
}

impl CallStats {
    pub(crate) fn set_on(&self, on: bool) {
        self.on.store(on, Ordering::Relaxed);
    }

    /// The counters a new pool of `plugin` records into, if counting is on.
    pub(crate) fn for_plugin(&self, plugin: &Arc<str>) -> Option<Arc<PluginStats>> {
        if !self.on.load(Ordering::Relaxed) {
            return None;
        }
        let mut plugins = self.plugins.lock().unwrap_or_else(|e| e.into_inner());
        Some(plugins.entry(plugin.clone()).or_default().clone())
    }

    /// Totals by plugin (sorted by name), per phase in [`Phase`] order.
    pub(crate) fn totals(&self) -> Vec<(String, [PhaseTotals; 3])> {
        let plugins = self.plugins.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<_> = plugins.iter().map(|(name, s)| (name.to_string(), s.totals())).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

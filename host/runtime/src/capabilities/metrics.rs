//! `wasmgate:plugin/metrics`: gauges a plugin reports (a circuit breaker's state), exported
//! as `wasmgate_plugin_gauge{api, plugin, name}`. Names are checked and a binding has at most
//! [`MAX_PER_BINDING`] of them, so what plugins report cannot grow the number of series
//! without bound.

use crate::HostState;
use crate::bindings::wasmgate::plugin::metrics::Host;
use prometheus::{IntGaugeVec, Opts};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

pub const MAX_PER_BINDING: usize = 8;

pub struct PluginGauges {
    pub gauges: IntGaugeVec,
    /// The names each binding (by namespace) has set. Reports are rare (state changes), so a
    /// lock is fine here.
    names: Mutex<HashMap<String, HashSet<String>>>,
}

impl Default for PluginGauges {
    fn default() -> Self {
        let opts =
            Opts::new("wasmgate_plugin_gauge", "Values plugins report, such as a circuit breaker's state.");
        PluginGauges {
            gauges: IntGaugeVec::new(opts, &["api", "plugin", "name"]).expect("valid metric"),
            names: Mutex::default(),
        }
    }
}

fn valid(name: &str) -> bool {
    (1..=40).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl Host for HostState {
    fn set_gauge(&mut self, name: String, value: i64) {
        let scope = self.scope();
        let plugin_gauges = &self.caps.gauges;
        if !valid(&name) {
            tracing::warn!(api = %scope.api_id, plugin = %scope.plugin, name, "gauge name refused: 1-40 of a-z, 0-9, _");
            return;
        }
        let mut names = plugin_gauges.names.lock().unwrap_or_else(|e| e.into_inner());
        let mine = names.entry(scope.namespace.clone()).or_default();
        if !mine.contains(&name) {
            if mine.len() >= MAX_PER_BINDING {
                tracing::warn!(api = %scope.api_id, plugin = %scope.plugin, name, "gauge refused: a binding reports at most {MAX_PER_BINDING}");
                return;
            }
            mine.insert(name.clone());
        }
        plugin_gauges
            .gauges
            .with_label_values(&[scope.api_id.as_str(), &scope.plugin, name.as_str()])
            .set(value);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_short_lower_case_words() {
        assert!(super::valid("circuit_breaker_state"));
        for bad in ["", "Upper", "with space", "dash-ed", &"x".repeat(41)] {
            assert!(!super::valid(bad), "{bad}");
        }
    }
}

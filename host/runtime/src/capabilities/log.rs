//! `wasmgate:plugin/log`: plugin log lines go to `tracing`, tagged with API and plugin.

use crate::HostState;
use crate::bindings::wasmgate::plugin::log::{Host, Level};

impl Host for HostState {
    fn write(&mut self, level: Level, message: String) {
        let scope = self.scope();
        let (api, plugin) = (scope.api_id.as_str(), &*scope.plugin);
        match level {
            Level::Trace => tracing::trace!(target: "plugin", api, plugin, "{message}"),
            Level::Debug => tracing::debug!(target: "plugin", api, plugin, "{message}"),
            Level::Info => tracing::info!(target: "plugin", api, plugin, "{message}"),
            Level::Warn => tracing::warn!(target: "plugin", api, plugin, "{message}"),
            Level::Error => tracing::error!(target: "plugin", api, plugin, "{message}"),
        }
    }
}

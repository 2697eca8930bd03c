//! `wasmgate:plugin/log-sink`: its shape is fixed in WIT; no sinks are configured yet, so
//! every name is unknown.

use crate::HostState;
use crate::bindings::wasmgate::plugin::log_sink::{Host, PublishError};

impl Host for HostState {
    fn publish(
        &mut self,
        sink: String,
        _key: Option<Vec<u8>>,
        _payload: Vec<u8>,
    ) -> Result<(), PublishError> {
        Err(PublishError::UnknownSink(sink))
    }
}

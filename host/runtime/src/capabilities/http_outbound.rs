//! `wasmgate:plugin/http-outbound`: its shape is fixed in WIT; no binding can be granted
//! outbound access yet, so every call is refused the way an ungranted host will be.

use crate::HostState;
use crate::bindings::wasmgate::plugin::http_outbound::{Host, HttpError, OutboundRequest, OutboundResponse};

impl Host for HostState {
    fn send(&mut self, request: OutboundRequest) -> Result<OutboundResponse, HttpError> {
        tracing::warn!(api = %self.scope().api_id, plugin = %self.scope().plugin, url = %request.url, "outbound HTTP refused: not granted");
        Err(HttpError::NotGranted(request.url))
    }
}

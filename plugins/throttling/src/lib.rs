//! Request Throttling 2.0: API, user, app and IP limits, parameter rules, exclusions.

use wasmgate_sdk::prelude::*;
use wasmgate_throttling_engine::Throttling;

struct RequestThrottling2(Throttling);

impl Policy for RequestThrottling2 {
    fn configure(config: &str) -> Result<(Self, BindingInfo), ConfigError> {
        Throttling::request_throttling_2_0(config).map(|(t, info)| (RequestThrottling2(t), info))
    }

    fn on_request(&self, request: &Request) -> RequestAction {
        self.0.check(request)
    }
}

wasmgate_sdk::export_policy!(RequestThrottling2);

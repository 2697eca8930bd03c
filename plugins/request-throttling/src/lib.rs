//! Traditional request throttling: API, user, app and IP limits in one period.

use serde::Deserialize;
use wasmgate_sdk::prelude::*;
use wasmgate_throttling_engine::{Algorithm, Basic, Scope, THROTTLED, Throttling, Unit};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "wasmgate_throttling_engine::basic")]
    r#type: Scope,
    #[serde(default = "wasmgate_throttling_engine::one")]
    period: u64,
    #[serde(default = "wasmgate_throttling_engine::second")]
    unit: Unit,
    api_limit: u64,
    user_limit: Option<u64>,
    app_limit: Option<u64>,
    ip_limit: Option<u64>,
    #[serde(default = "wasmgate_throttling_engine::counter")]
    algorithm: Algorithm,
}

struct RequestThrottling(Throttling);

impl Policy for RequestThrottling {
    fn configure(config: &str) -> Result<(Self, BindingInfo), ConfigError> {
        let c: Config = parse_config(config)?;
        let basic = Basic {
            scope: c.r#type,
            period: c.period,
            unit: c.unit,
            api_limit: Some(c.api_limit),
            user_limit: c.user_limit,
            app_limit: c.app_limit,
            ip_limit: c.ip_limit,
            algorithm: c.algorithm,
        };
        Throttling::basic(basic, THROTTLED).map(|(t, info)| (RequestThrottling(t), info))
    }

    fn on_request(&self, request: &Request) -> RequestAction {
        self.0.check(request)
    }
}

wasmgate_sdk::export_policy!(RequestThrottling);

//! Credential quota: calls per credential (app) per minute, hour or day. Requests without an
//! authenticated app are not counted; put an authentication policy before this one.

use serde::Deserialize;
use wasmgate_sdk::prelude::*;
use wasmgate_throttling_engine::{Algorithm, Basic, Refusal, Scope, Throttling, Unit};

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum QuotaUnit {
    Minute,
    Hour,
    Day,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    limit: u64,
    unit: QuotaUnit,
    #[serde(default = "wasmgate_throttling_engine::one")]
    period: u64,
    #[serde(default = "wasmgate_throttling_engine::counter")]
    algorithm: Algorithm,
}

const QUOTA_USED_UP: Refusal =
    Refusal { code: "APIG.0310", message: "The credential quota has been used up" };

struct CredentialQuota(Throttling);

impl Policy for CredentialQuota {
    fn configure(config: &str) -> Result<(Self, BindingInfo), ConfigError> {
        let c: Config = parse_config(config)?;
        let unit = match c.unit {
            QuotaUnit::Minute => Unit::Minute,
            QuotaUnit::Hour => Unit::Hour,
            QuotaUnit::Day => Unit::Day,
        };
        // A quota belongs to the credential, whichever API it calls.
        let basic = Basic {
            scope: Scope::Shared,
            period: c.period,
            unit,
            api_limit: None,
            user_limit: None,
            app_limit: Some(c.limit),
            ip_limit: None,
            algorithm: c.algorithm,
        };
        Throttling::basic(basic, QUOTA_USED_UP).map(|(t, info)| (CredentialQuota(t), info))
    }

    fn on_request(&self, request: &Request) -> RequestAction {
        self.0.check(request)
    }
}

wasmgate_sdk::export_policy!(CredentialQuota);

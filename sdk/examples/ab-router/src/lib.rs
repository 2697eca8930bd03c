//! Header-based A/B router: a request whose `header` names one of `variants` goes to that
//! variant's backend; every response says which variant served it and how many requests
//! that variant has had in the current minute on this node (a host counter). The Python and
//! JavaScript examples in `sdk/python` and `sdk/js` are the same plugin, and pass the same
//! end-to-end test (`tests/sdk_languages.rs`).

use std::collections::BTreeMap;
use wasmgate_sdk::host::counters::{self, Consistency};
use wasmgate_sdk::prelude::*;
use wasmgate_sdk::{BackendTarget, HeaderOp};

#[derive(serde::Deserialize)]
struct Config {
    #[serde(default = "default_header")]
    header: String,
    variants: BTreeMap<String, String>,
}

fn default_header() -> String {
    "x-ab-group".into()
}

struct AbRouter(Config);

impl Policy for AbRouter {
    fn configure(config: &str) -> Result<(Self, BindingInfo), ConfigError> {
        // The schema (checked by the gateway first) has the shapes; this is what it cannot say.
        let config: Config = parse_config(config)?;
        for (variant, url) in &config.variants {
            if variant == "default" {
                return Err(ConfigError::new(
                    format!("variants.{variant}"),
                    "`default` names the API's own backend",
                ));
            }
            if url.split_once("://").is_none_or(|(_, rest)| rest.is_empty()) {
                return Err(ConfigError::new(format!("variants.{variant}"), format!("not a URL: {url}")));
            }
        }
        let mut info = BindingInfo::request_only();
        info.request_headers = HeaderSelection::Only(vec![config.header.clone()]);
        Ok((AbRouter(config), info))
    }

    fn on_request(&self, request: &Request) -> RequestAction {
        let asked = request.header(&self.0.header).filter(|v| self.0.variants.contains_key(*v));
        let variant = asked.unwrap_or("default");
        let counted =
            counters::increment(&format!("variant:{variant}"), 1, u64::MAX, 60_000, Consistency::Local);
        RequestAction::Continue(RequestChanges {
            response_headers: vec![
                HeaderOp::Set(("x-ab-variant".into(), variant.into())),
                HeaderOp::Set(("x-ab-count".into(), counted.count.to_string())),
            ],
            backend: asked.map(|v| BackendTarget { url: self.0.variants[v].clone(), timeout_ms: None }),
            ..Default::default()
        })
    }
}

wasmgate_sdk::export_policy!(AbRouter, schema = "schema.json");

//! HTTP response header management: up to 10 headers, each overridden, appended, deleted,
//! added as another line, or set only when the backend did not send it.

use serde::Deserialize;
use wasmgate_sdk::prelude::*;

const MAX_HEADERS: usize = 10;
const MAX_VALUE_LEN: usize = 1024;
/// Headers that describe the connection or the framing: a policy that changed them would
/// break the HTTP exchange, so they are refused at load.
const FORBIDDEN: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "proxy-connection",
];

#[derive(Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Action {
    Override,
    Append,
    Delete,
    Skip,
    Add,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderRule {
    name: String,
    #[serde(default)]
    value: String,
    action: Action,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    response_headers: Vec<HeaderRule>,
}

struct ResponseHeaders;

impl Policy for ResponseHeaders {
    fn configure(config: &str) -> Result<(Self, BindingInfo), ConfigError> {
        let mut c: Config = parse_config(config)?;
        if c.response_headers.len() > MAX_HEADERS {
            return Err(ConfigError::new(
                "response_headers",
                format!("{} headers given, at most {MAX_HEADERS} allowed", c.response_headers.len()),
            ));
        }
        for i in 0..c.response_headers.len() {
            let rule = &mut c.response_headers[i];
            rule.name = rule.name.trim().to_ascii_lowercase();
            let field = |f: &str| format!("response_headers[{i}].{f}");
            let name = rule.name.as_str();
            if name.is_empty()
                || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
            {
                return Err(ConfigError::new(field("name"), format!("`{name}` is not a valid header name")));
            }
            if FORBIDDEN.contains(&name) {
                return Err(ConfigError::new(
                    field("name"),
                    format!("`{name}` is a hop-by-hop or framing header and cannot be managed"),
                ));
            }
            if rule.value.len() > MAX_VALUE_LEN {
                return Err(ConfigError::new(
                    field("value"),
                    format!("{} characters, at most {MAX_VALUE_LEN} allowed", rule.value.len()),
                ));
            }
            if rule.value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                return Err(ConfigError::new(field("value"), "contains CR, LF or NUL"));
            }
            if c.response_headers[..i].iter().any(|r| r.name == c.response_headers[i].name) {
                return Err(ConfigError::new(
                    field("name"),
                    "this header is already managed by an earlier entry",
                ));
            }
        }
        // The effect does not depend on the request, so it is declared once here and applied
        // by the gateway to every response: no call into the plugin per request.
        let mut info = BindingInfo::new(Phases::empty());
        info.fixed_response_headers = c
            .response_headers
            .into_iter()
            .map(|r| match r.action {
                Action::Override => HeaderOp::Set((r.name, r.value)),
                Action::Append => HeaderOp::AppendValue((r.name, r.value)),
                Action::Delete => HeaderOp::Remove(r.name),
                Action::Skip => HeaderOp::SetIfAbsent((r.name, r.value)),
                Action::Add => HeaderOp::Append((r.name, r.value)),
            })
            .collect();
        Ok((ResponseHeaders, info))
    }
}

wasmgate_sdk::export_policy!(ResponseHeaders);

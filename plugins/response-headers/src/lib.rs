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

struct ResponseHeaders {
    rules: Vec<HeaderRule>,
}

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
        let mut info = BindingInfo::new(Phases::RESPONSE);
        info.response_headers =
            HeaderSelection::Only(c.response_headers.iter().map(|r| r.name.clone()).collect());
        Ok((ResponseHeaders { rules: c.response_headers }, info))
    }

    fn on_response(&self, _request: &Request, response: &Response) -> ResponseAction {
        let mut ops = Vec::with_capacity(self.rules.len());
        for r in &self.rules {
            let existing = || response.headers.iter().filter(|(n, _)| *n == r.name).map(|(_, v)| v.as_str());
            let set = |v: String| HeaderOp::Set((r.name.clone(), v));
            match r.action {
                Action::Override => ops.push(set(r.value.clone())),
                Action::Append => {
                    let mut values: Vec<&str> = existing().collect();
                    values.push(&r.value);
                    ops.push(set(values.join(", ")));
                }
                Action::Delete => ops.push(HeaderOp::Remove(r.name.clone())),
                Action::Skip => {
                    if existing().next().is_none() {
                        ops.push(set(r.value.clone()));
                    }
                }
                Action::Add => ops.push(HeaderOp::Append((r.name.clone(), r.value.clone()))),
            }
        }
        ResponseAction::Continue(ResponseChanges { status: None, headers: ops })
    }
}

wasmgate_sdk::export_policy!(ResponseHeaders);

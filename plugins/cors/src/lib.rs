//! CORS, as the managed gateways do it: preflights are answered here without calling the
//! backend, and actual requests get the CORS response headers.

use serde::Deserialize;
use wasmgate_sdk::prelude::*;

const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
const MAX_AGE_LIMIT: u32 = 86_400;

/// A list written either as a JSON array or as APIG's comma-separated string.
#[derive(Deserialize)]
#[serde(untagged)]
enum List {
    Items(Vec<String>),
    Joined(String),
}

impl List {
    fn items(self) -> Vec<String> {
        match self {
            List::Items(v) => v.into_iter().map(|s| s.trim().to_string()).collect(),
            List::Joined(s) => {
                s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    allow_origin: Option<List>,
    allow_methods: Option<List>,
    allow_headers: Option<List>,
    expose_headers: Option<List>,
    max_age: Option<i64>,
    #[serde(default)]
    allow_credentials: bool,
}

enum Allowed {
    Any,
    Only(Vec<String>),
}

impl Allowed {
    fn from_items(items: Vec<String>) -> Self {
        if items.iter().any(|i| i == "*") { Allowed::Any } else { Allowed::Only(items) }
    }
}

struct Cors {
    origins: Allowed,
    methods: Vec<String>,
    methods_header: String,
    headers: Allowed,
    headers_header: String,
    expose_header: String,
    max_age: String,
    credentials: bool,
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn check_origin(o: &str) -> bool {
    let Some((scheme, rest)) = o.split_once("://") else {
        return false;
    };
    !scheme.is_empty()
        && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        && !rest.is_empty()
        && !rest.contains('/')
        && !rest.bytes().any(|b| b.is_ascii_whitespace())
}

fn check_names(field: &str, items: &[String]) -> Result<(), ConfigError> {
    for (i, h) in items.iter().enumerate() {
        if h != "*" && !is_token(h) {
            return Err(ConfigError::new(
                format!("{field}[{i}]"),
                format!("`{h}` is not a valid header name"),
            ));
        }
    }
    Ok(())
}

impl Policy for Cors {
    fn configure(config: &str) -> Result<(Self, BindingInfo), ConfigError> {
        let c: Config = parse_config(config)?;

        let origins = c.allow_origin.map(List::items).unwrap_or_else(|| vec!["*".into()]);
        for (i, o) in origins.iter().enumerate() {
            if o != "*" && !check_origin(o) {
                return Err(ConfigError::new(
                    format!("allow_origin[{i}]"),
                    format!("`{o}` is not an origin like https://example.com[:port] or *"),
                ));
            }
        }

        let methods: Vec<String> = c
            .allow_methods
            .map(List::items)
            .unwrap_or_else(|| METHODS.iter().map(|m| m.to_string()).collect());
        let methods = if methods.iter().any(|m| m == "*") {
            METHODS.iter().map(|m| m.to_string()).collect()
        } else {
            methods
        };
        for (i, m) in methods.iter().enumerate() {
            if !METHODS.contains(&m.as_str()) {
                return Err(ConfigError::new(
                    format!("allow_methods[{i}]"),
                    format!("`{m}` is not one of {}", METHODS.join(", ")),
                ));
            }
        }

        let headers = c.allow_headers.map(List::items).unwrap_or_default();
        check_names("allow_headers", &headers)?;
        let expose = c.expose_headers.map(List::items).unwrap_or_default();
        check_names("expose_headers", &expose)?;

        let max_age = c.max_age.unwrap_or(MAX_AGE_LIMIT as i64);
        if !(0..=MAX_AGE_LIMIT as i64).contains(&max_age) {
            return Err(ConfigError::new(
                "max_age",
                format!("{max_age} is outside 0..={MAX_AGE_LIMIT} seconds"),
            ));
        }

        let cors = Cors {
            origins: Allowed::from_items(origins),
            methods_header: methods.join(", "),
            methods,
            headers_header: headers.join(", "),
            headers: Allowed::from_items(headers),
            expose_header: expose.join(", "),
            max_age: max_age.to_string(),
            credentials: c.allow_credentials,
        };
        // Request phase only: the headers for an actual request are known from its Origin,
        // so they are handed back as response headers instead of in a second call.
        let mut info = BindingInfo::new(Phases::REQUEST);
        info.request_headers = HeaderSelection::Only(vec![
            "origin".into(),
            "access-control-request-method".into(),
            "access-control-request-headers".into(),
        ]);
        Ok((cors, info))
    }

    fn on_request(&self, request: &Request) -> RequestAction {
        let (Some(origin), Some(method), true) = (
            request.header("origin"),
            request.header("access-control-request-method"),
            is_preflight(request),
        ) else {
            return RequestAction::Continue(self.actual_request(request));
        };
        let requested = request.header("access-control-request-headers").unwrap_or("");
        if !self.origin_allowed(origin)
            || !self.methods.iter().any(|m| m.eq_ignore_ascii_case(method.trim()))
            || !self.headers_allowed(requested)
        {
            // Refused preflights carry no CORS headers, so the browser blocks the call.
            return RequestAction::Respond(Reply::empty(403));
        }
        let mut headers = self.origin_headers(origin);
        headers.push(("access-control-allow-methods".into(), self.methods_header.clone()));
        let allow_headers = match self.headers {
            Allowed::Any => requested.to_string(),
            Allowed::Only(_) => self.headers_header.clone(),
        };
        if !allow_headers.is_empty() {
            headers.push(("access-control-allow-headers".into(), allow_headers));
        }
        headers.push(("access-control-max-age".into(), self.max_age.clone()));
        RequestAction::Respond(Reply { status: 200, headers, body: Vec::new() })
    }
}

fn is_preflight(request: &Request) -> bool {
    matches!(request.method, Method::Options)
        && request.header("origin").is_some()
        && request.header("access-control-request-method").is_some()
}

impl Cors {
    /// An actual (non-preflight) request: the CORS headers its response gets.
    fn actual_request(&self, request: &Request) -> RequestChanges {
        let mut changes = RequestChanges::default();
        if let Some(origin) = request.header("origin").filter(|o| self.origin_allowed(o)) {
            changes.response_headers = self
                .origin_headers(origin)
                .into_iter()
                .map(|(name, value)| {
                    if name == "vary" {
                        HeaderOp::Append((name, value))
                    } else {
                        HeaderOp::Set((name, value))
                    }
                })
                .collect();
            if !self.expose_header.is_empty() {
                changes.response_headers.push(HeaderOp::Set((
                    "access-control-expose-headers".into(),
                    self.expose_header.clone(),
                )));
            }
        }
        changes
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        match &self.origins {
            Allowed::Any => true,
            Allowed::Only(list) => list.iter().any(|o| o.eq_ignore_ascii_case(origin)),
        }
    }

    fn headers_allowed(&self, requested: &str) -> bool {
        match &self.headers {
            Allowed::Any => true,
            Allowed::Only(list) => requested
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .all(|h| list.iter().any(|a| a.eq_ignore_ascii_case(h))),
        }
    }

    /// `Access-Control-Allow-Origin` (+ credentials and `Vary`) for an allowed origin.
    fn origin_headers(&self, origin: &str) -> Vec<(String, String)> {
        // `*` may only be sent without credentials; with credentials or an explicit list the
        // browser needs its own origin echoed back.
        let echo = self.credentials || matches!(self.origins, Allowed::Only(_));
        let mut h = vec![(
            "access-control-allow-origin".to_string(),
            if echo { origin.to_string() } else { "*".to_string() },
        )];
        if self.credentials {
            h.push(("access-control-allow-credentials".into(), "true".into()));
        }
        h.push(("vary".into(), "Origin".into()));
        h
    }
}

wasmgate_sdk::export_policy!(Cors);

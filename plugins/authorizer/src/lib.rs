//! Third-party authorizer: asks an external HTTP(S) service whether each request may pass,
//! forwarding the identity sources (headers, query parameters) the config names.
//!
//! - `simple_authentication`: a 2xx answer allows. Otherwise the answer is JSON
//!   `{"status": "allow" | "deny", "context": {"user": ..., "app_id": ..., ...}}`; the
//!   context goes into the request context (`authorizer.<key>`) and `user` / `app_id` become
//!   the caller's identity for later policies.
//! - Denied: the authorizer's status and body go back to the client (401 when it said
//!   `deny` with a 2xx status). Unreachable, timed out or 5xx: 500 `APIG.0617`, unless
//!   `relaxed_mode` lets the request through.
//! - Allowed answers are cached per identity for `cache_seconds` (the key-value store's TTL).
//! - Brute force: after `brute_force.denials` denials within `brute_force.window` seconds
//!   for one client IP and identity, 429 for `brute_force.block` seconds without asking.

use serde::{Deserialize, Serialize};
use wasmgate_param_rules::{Matcher, ParameterConfig, Parameters, WhenConfig};
use wasmgate_sdk::host::http_outbound::{self, HttpError, OutboundRequest};
use wasmgate_sdk::host::{clock, counters, kv};
use wasmgate_sdk::prelude::*;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Identities {
    #[serde(default)]
    headers: Vec<String>,
    #[serde(default)]
    query: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BruteForce {
    #[serde(default = "five")]
    denials: u64,
    /// Seconds.
    #[serde(default = "sixty")]
    window: u64,
    /// Seconds.
    #[serde(default = "three_hundred")]
    block: u64,
}

fn five() -> u64 {
    5
}
fn sixty() -> u64 {
    60
}
fn three_hundred() -> u64 {
    300
}

impl Default for BruteForce {
    fn default() -> Self {
        BruteForce { denials: five(), window: sixty(), block: three_hundred() }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Bypass {
    when: WhenConfig,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The authorizer: `http://host:port/path`.
    url: String,
    #[serde(default = "get")]
    method: String,
    #[serde(default = "five_seconds")]
    timeout_ms: u32,
    #[serde(default)]
    identities: Identities,
    #[serde(default)]
    carry_body: bool,
    #[serde(default)]
    simple_authentication: bool,
    #[serde(default)]
    return_headers: Vec<String>,
    #[serde(default)]
    cache_seconds: u64,
    #[serde(default)]
    relaxed_mode: bool,
    #[serde(default)]
    brute_force: BruteForce,
    #[serde(default)]
    parameters: Vec<ParameterConfig>,
    #[serde(default)]
    bypass: Vec<Bypass>,
}

fn get() -> String {
    "GET".into()
}
fn five_seconds() -> u32 {
    5000
}

struct Authorizer {
    url: String,
    method: String,
    timeout_ms: u32,
    headers: Vec<String>,
    query: Vec<String>,
    carry_body: bool,
    simple: bool,
    return_headers: Vec<String>,
    cache_ms: u64,
    relaxed: bool,
    brute_force: BruteForce,
    params: Parameters,
    bypass: Vec<Matcher>,
}

/// Why the request may not pass.
struct Denial {
    status: u16,
    body: Vec<u8>,
}

/// What an allowing answer gives the request; cached as JSON of itself.
#[derive(Default, Serialize, Deserialize)]
struct Grant {
    headers: Vec<(String, String)>,
    user: Option<String>,
    app_id: Option<String>,
    context: Vec<(String, String)>,
}

const MAX_BODY: u32 = 1 << 20;

impl Policy for Authorizer {
    fn configure(config: &str) -> Result<(Self, BindingInfo), ConfigError> {
        let c: Config = parse_config(config)?;
        let Some(scheme_end) =
            ["http://", "https://"].iter().find(|p| c.url.starts_with(**p)).map(|p| p.len())
        else {
            return Err(ConfigError::new("url", format!("`{}` is not an http:// or https:// URL", c.url)));
        };
        let method = c.method.to_ascii_uppercase();
        if method != "GET" && method != "POST" {
            return Err(ConfigError::new("method", format!("`{}`: GET or POST", c.method)));
        }
        if !(1..=60_000).contains(&c.timeout_ms) {
            return Err(ConfigError::new("timeout_ms", format!("{} is outside 1..=60000", c.timeout_ms)));
        }
        if c.cache_seconds > 86_400 {
            return Err(ConfigError::new(
                "cache_seconds",
                format!("{} is outside 0..=86400", c.cache_seconds),
            ));
        }
        let bf = &c.brute_force;
        if bf.denials == 0 || bf.window == 0 || bf.block == 0 {
            return Err(ConfigError::new("brute_force", "denials, window and block must be at least 1"));
        }
        let mut info = BindingInfo::request_only();
        info.request_fields = RequestFields::REQUEST_ID
            | RequestFields::CLIENT_IP
            | RequestFields::QUERY
            | RequestFields::ROUTE;
        let headers: Vec<String> = c.identities.headers.iter().map(|h| h.to_ascii_lowercase()).collect();
        info.request_headers = HeaderSelection::Only(headers.clone());
        if c.carry_body {
            info.request_body = BodyNeed::Full(MAX_BODY);
        }
        let params = Parameters::compile(&c.parameters, "parameters", &mut info)?;
        let bypass = c
            .bypass
            .into_iter()
            .enumerate()
            .map(|(i, b)| params.matcher(b.when, &format!("bypass[{i}].when")))
            .collect::<Result<Vec<_>, _>>()?;
        // The grant: exactly the authorizer's origin.
        let origin_end = c.url[scheme_end..].find('/').map_or(c.url.len(), |i| i + scheme_end);
        info.http_grants = vec![c.url[..origin_end].to_string()];
        let me = Authorizer {
            url: c.url,
            method,
            timeout_ms: c.timeout_ms,
            headers,
            query: c.identities.query,
            carry_body: c.carry_body,
            simple: c.simple_authentication,
            return_headers: c.return_headers.iter().map(|h| h.to_ascii_lowercase()).collect(),
            cache_ms: c.cache_seconds * 1000,
            relaxed: c.relaxed_mode,
            brute_force: c.brute_force,
            params,
            bypass,
        };
        Ok((me, info))
    }

    fn on_request(&self, req: &Request) -> RequestAction {
        if self.bypass.iter().any(|m| self.params.matches(m, req)) {
            return RequestAction::Continue(RequestChanges::default());
        }
        let identity = self.identity(req);
        let block_key = format!("block|{}|{identity}", req.client_ip());
        let now = clock::now_ms();
        if let Some(until) = kv::get(&block_key).and_then(|v| String::from_utf8(v).ok()?.parse::<u64>().ok())
            && now < until
        {
            let mut r = Reply::error(
                429,
                "APIG.0618",
                "Too many failed authorizations; try again later",
                req.request_id(),
            );
            r.headers.push(("retry-after".into(), (until - now).div_ceil(1000).to_string()));
            return RequestAction::Respond(r);
        }
        let cache_key = format!("allow|{identity}");
        if self.cache_ms > 0
            && let Some(cached) = kv::get(&cache_key)
        {
            return RequestAction::Continue(Grant::decode(&cached).into_changes());
        }
        match self.ask(req) {
            Ok(Ok(grant)) => {
                if self.cache_ms > 0 {
                    // A grant that does not fit the binding's kv quota is asked for again.
                    let _ = kv::put(&cache_key, &grant.encode(), Some(self.cache_ms));
                }
                RequestAction::Continue(grant.into_changes())
            }
            Ok(Err(denial)) => {
                let bf = &self.brute_force;
                let key = format!("denials|{}|{identity}", req.client_ip());
                let w =
                    counters::increment(&key, 1, u64::MAX, bf.window * 1000, counters::Consistency::Local);
                if w.count >= bf.denials {
                    let _ = kv::put(
                        &block_key,
                        (now + bf.block * 1000).to_string().as_bytes(),
                        Some(bf.block * 1000),
                    );
                }
                let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
                if denial.body.is_empty() {
                    headers.clear();
                }
                RequestAction::Respond(Reply { status: denial.status, headers, body: denial.body })
            }
            Err(why) if self.relaxed => {
                log_warn(&format!("authorizer unavailable ({why}); relaxed mode lets the request through"));
                RequestAction::Continue(RequestChanges::default())
            }
            Err(why) => {
                log_warn(&format!("authorizer unavailable: {why}"));
                RequestAction::Respond(Reply::error(
                    500,
                    "APIG.0617",
                    "The authorizer is unavailable",
                    req.request_id(),
                ))
            }
        }
    }
}

fn log_warn(message: &str) {
    wasmgate_sdk::host::log::write(wasmgate_sdk::host::log::Level::Warn, message);
}

impl Authorizer {
    /// The identity sources' values: the cache and brute-force key.
    fn identity(&self, req: &Request) -> String {
        let mut id = String::new();
        for h in &self.headers {
            id.push_str(req.header(h).unwrap_or(""));
            id.push('\u{1f}');
        }
        for q in &self.query {
            id.push_str(req.query_param(q).unwrap_or(""));
            id.push('\u{1f}');
        }
        id
    }

    /// Ok(Ok): allowed; Ok(Err): denied; Err: no usable answer.
    fn ask(&self, req: &Request) -> Result<Result<Grant, Denial>, String> {
        let mut url = self.url.clone();
        let forwarded: Vec<String> =
            self.query.iter().filter_map(|q| req.query_param(q).map(|v| format!("{q}={v}"))).collect();
        if !forwarded.is_empty() {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(&forwarded.join("&"));
        }
        let headers =
            self.headers.iter().filter_map(|h| Some((h.clone(), req.header(h)?.to_string()))).collect();
        let body = if self.carry_body { req.body.unwrap_or_default().to_vec() } else { Vec::new() };
        let answer = http_outbound::send(&OutboundRequest {
            method: self.method.clone(),
            url,
            headers,
            body,
            timeout_ms: self.timeout_ms,
        })
        .map_err(|e| match e {
            HttpError::Timeout => "timed out".to_string(),
            other => format!("{other:?}"),
        })?;
        if answer.status >= 500 {
            return Err(format!("answered {}", answer.status));
        }
        if !(200..300).contains(&answer.status) {
            return Ok(Err(Denial { status: answer.status, body: answer.body }));
        }
        let mut grant = Grant {
            headers: answer
                .headers
                .iter()
                .filter(|(n, _)| self.return_headers.iter().any(|r| r.eq_ignore_ascii_case(n)))
                .cloned()
                .collect(),
            ..Default::default()
        };
        if self.simple {
            return Ok(Ok(grant));
        }
        let json: serde_json::Value =
            serde_json::from_slice(&answer.body).map_err(|e| format!("answer is not JSON: {e}"))?;
        if json["status"] != "allow" {
            return Ok(Err(Denial { status: 401, body: answer.body }));
        }
        if let Some(context) = json["context"].as_object() {
            for (k, v) in context {
                let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                match k.as_str() {
                    "user" => grant.user = Some(v.clone()),
                    "app_id" => grant.app_id = Some(v.clone()),
                    _ => {}
                }
                grant.context.push((format!("authorizer.{k}"), v));
            }
        }
        Ok(Ok(grant))
    }
}

impl Grant {
    fn into_changes(self) -> RequestChanges {
        let identity = (self.user.is_some() || self.app_id.is_some())
            .then_some(Identity { app_id: self.app_id, user: self.user });
        RequestChanges {
            headers: self.headers.into_iter().map(HeaderOp::Set).collect(),
            identity,
            context: self.context,
            ..Default::default()
        }
    }

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Straight into the struct: a cache hit is the hot path, and going through
    /// `serde_json::Value` copied every string twice.
    fn decode(bytes: &[u8]) -> Grant {
        serde_json::from_slice(bytes).unwrap_or_default()
    }
}

wasmgate_sdk::export_policy!(Authorizer);

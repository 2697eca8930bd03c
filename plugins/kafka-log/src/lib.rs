//! Kafka log push: one JSON message per call, built in the log phase (after the response has
//! been sent) and handed to the host's Kafka producer through `log-sink.publish`, which only
//! queues it. The message layout is in `docs/kafka-log.md`.

use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use wasmgate_sdk::host::{log, log_sink};
use wasmgate_sdk::prelude::*;
use wasmgate_sdk::{KafkaProtocol, KafkaSecurity, KafkaSink, LogSinkDecl, SaslCredentials, SaslMechanism};

/// A logged body is cut here (`body_truncated`).
const BODY_LIMIT: usize = 1024;
/// The whole message is kept under this by cutting fields.
const MESSAGE_LIMIT: usize = 4096;
const SINK: &str = "kafka";

/// The system fields, in the order they are documented; all on unless switched off.
const SYSTEM_FIELDS: [&str; 20] = [
    "start_time",
    "request_id",
    "client_ip",
    "api_id",
    "group_id",
    "environment",
    "app_id",
    "user",
    "auth_type",
    "method",
    "scheme",
    "host",
    "uri",
    "user_agent",
    "status",
    "request_size",
    "response_size",
    "total_latency_ms",
    "backend_latency_ms",
    "backend_outcome",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    brokers: Vec<String>,
    topic: String,
    /// A literal key, or `$field` for a system field's value; no key when absent.
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    retries: u8,
    /// Seconds.
    #[serde(default = "one")]
    retry_interval: u32,
    #[serde(default)]
    security: Security,
    /// `{user_agent: false}` switches a system field off.
    #[serde(default)]
    system_fields: BTreeMap<String, bool>,
    /// Header names to log (`["*"]`: all).
    #[serde(default)]
    request_headers: Vec<String>,
    /// Query parameter names to log (`["*"]`: all).
    #[serde(default)]
    query_strings: Vec<String>,
    #[serde(default)]
    request_body: bool,
    #[serde(default)]
    response_body: bool,
}

fn one() -> u32 {
    1
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Security {
    #[serde(default)]
    protocol: Protocol,
    mechanism: Option<Mechanism>,
    username: Option<String>,
    password: Option<String>,
    /// PEM, for SASL_SSL.
    ca_certificate: Option<String>,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq)]
enum Protocol {
    #[default]
    #[serde(rename = "PLAINTEXT")]
    Plaintext,
    #[serde(rename = "SASL_PLAINTEXT")]
    SaslPlaintext,
    #[serde(rename = "SASL_SSL")]
    SaslSsl,
}

#[derive(Deserialize, Clone, Copy)]
enum Mechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

enum Key {
    None,
    Literal(Vec<u8>),
    Field(&'static str),
}

/// Which names to log: all, or these (lower-cased for headers).
enum Pick {
    All,
    Only(Vec<String>),
}

impl Pick {
    fn new(names: Vec<String>) -> Option<Pick> {
        match names.as_slice() {
            [] => None,
            [all] if all == "*" => Some(Pick::All),
            _ => Some(Pick::Only(names)),
        }
    }

    fn wants(&self, name: &str) -> bool {
        match self {
            Pick::All => true,
            Pick::Only(names) => names.iter().any(|n| n.eq_ignore_ascii_case(name)),
        }
    }
}

struct KafkaLog {
    key: Key,
    fields: Vec<&'static str>,
    headers: Option<Pick>,
    query: Option<Pick>,
    request_body: bool,
    response_body: bool,
}

fn known_field(name: &str, at: &str) -> Result<&'static str, ConfigError> {
    SYSTEM_FIELDS.iter().find(|f| **f == name).copied().ok_or_else(|| {
        ConfigError::new(at, format!("unknown system field `{name}` ({})", SYSTEM_FIELDS.join(", ")))
    })
}

/// Kafka's topic name rules: 1–249 of `[A-Za-z0-9._-]`, not `.` or `..`.
fn valid_topic(t: &str) -> bool {
    (1..=249).contains(&t.len())
        && t != "."
        && t != ".."
        && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn sink(c: &Config) -> Result<KafkaSink, ConfigError> {
    if c.brokers.is_empty() {
        return Err(ConfigError::new("brokers", "at least one broker (host:port) is needed"));
    }
    for (i, b) in c.brokers.iter().enumerate() {
        let ok =
            b.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
        if !ok {
            return Err(ConfigError::new(format!("brokers[{i}]"), format!("`{b}` is not host:port")));
        }
    }
    if !valid_topic(&c.topic) {
        return Err(ConfigError::new(
            "topic",
            format!("`{}` is not a Kafka topic name (1-249 of A-Z a-z 0-9 . _ -)", c.topic),
        ));
    }
    if c.retries > 5 {
        return Err(ConfigError::new("retries", format!("{} is outside 0..=5", c.retries)));
    }
    if !(1..=10).contains(&c.retry_interval) {
        return Err(ConfigError::new(
            "retry_interval",
            format!("{} is outside 1..=10 (seconds)", c.retry_interval),
        ));
    }
    let s = &c.security;
    let sasl = match (s.protocol, &s.username, &s.password) {
        (Protocol::Plaintext, None, None) if s.mechanism.is_none() => None,
        (Protocol::Plaintext, ..) => {
            return Err(ConfigError::new("security", "PLAINTEXT takes no mechanism, username or password"));
        }
        (_, Some(username), Some(password)) if !username.is_empty() => Some(SaslCredentials {
            mechanism: match s.mechanism.unwrap_or(Mechanism::Plain) {
                Mechanism::Plain => SaslMechanism::Plain,
                Mechanism::ScramSha512 => SaslMechanism::ScramSha512,
            },
            username: username.clone(),
            password: password.clone(),
        }),
        _ => return Err(ConfigError::new("security", "SASL protocols need a username and a password")),
    };
    if s.ca_certificate.is_some() && s.protocol != Protocol::SaslSsl {
        return Err(ConfigError::new("security.ca_certificate", "only used with SASL_SSL"));
    }
    if let Some(ca) = &s.ca_certificate
        && !ca.contains("-----BEGIN CERTIFICATE-----")
    {
        return Err(ConfigError::new("security.ca_certificate", "not a PEM certificate"));
    }
    Ok(KafkaSink {
        brokers: c.brokers.clone(),
        topic: c.topic.clone(),
        security: KafkaSecurity {
            protocol: match s.protocol {
                Protocol::Plaintext => KafkaProtocol::Plaintext,
                Protocol::SaslPlaintext => KafkaProtocol::SaslPlaintext,
                Protocol::SaslSsl => KafkaProtocol::SaslSsl,
            },
            sasl,
            ca_pem: s.ca_certificate.clone(),
        },
        retries: c.retries,
        retry_interval_ms: c.retry_interval * 1000,
    })
}

impl Policy for KafkaLog {
    fn configure(config: &str) -> Result<(Self, BindingInfo), ConfigError> {
        let c: Config = parse_config(config)?;
        let kafka = sink(&c)?;
        for name in c.system_fields.keys() {
            known_field(name, &format!("system_fields.{name}"))?;
        }
        let fields = SYSTEM_FIELDS.into_iter().filter(|f| c.system_fields.get(*f) != Some(&false)).collect();
        let key = match c.key.as_deref() {
            None | Some("") => Key::None,
            Some(k) => match k.strip_prefix('$') {
                Some(field) => Key::Field(known_field(field, "key")?),
                None => Key::Literal(k.as_bytes().to_vec()),
            },
        };
        let mut info = BindingInfo::new(Phases::LOG);
        info.request_fields = RequestFields::REQUEST_ID
            | RequestFields::ROUTE
            | RequestFields::HOST
            | RequestFields::PATH
            | RequestFields::QUERY
            | RequestFields::CLIENT_IP
            | RequestFields::IDENTITY
            | RequestFields::CONTEXT;
        let headers = Pick::new(c.request_headers);
        info.request_headers = match &headers {
            Some(Pick::All) => HeaderSelection::All,
            Some(Pick::Only(names)) => {
                let mut names: Vec<String> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
                names.push("user-agent".into());
                HeaderSelection::Only(names)
            }
            None => HeaderSelection::Only(vec!["user-agent".into()]),
        };
        if c.request_body {
            info.request_body = BodyNeed::Prefix(BODY_LIMIT as u32);
        }
        if c.response_body {
            info.response_body = BodyNeed::Prefix(BODY_LIMIT as u32);
        }
        info.log_sinks = vec![LogSinkDecl { name: SINK.into(), kafka }];
        let me = KafkaLog {
            key,
            fields,
            headers,
            query: Pick::new(c.query_strings),
            request_body: c.request_body,
            response_body: c.response_body,
        };
        Ok((me, info))
    }

    fn on_log(&self, entry: &LogEntry) {
        let message = self.message(entry);
        let key = match &self.key {
            Key::None => None,
            Key::Literal(k) => Some(k.clone()),
            Key::Field(f) => Some(match system_field(entry, f) {
                Value::String(s) => s.into_bytes(),
                other => other.to_string().into_bytes(),
            }),
        };
        if let Err(e) = log_sink::publish(SINK, key.as_deref(), message.as_bytes()) {
            log::write(log::Level::Warn, &format!("log message not queued: {e:?}"));
        }
    }
}

fn system_field(entry: &LogEntry, name: &str) -> Value {
    let (req, resp) = (&entry.request, &entry.response);
    let identity = req.identity();
    match name {
        "start_time" => json!(entry.start_time_ms),
        "request_id" => json!(req.request_id()),
        "client_ip" => json!(req.client_ip()),
        "api_id" => json!(req.route().api_id),
        "group_id" => json!(req.route().group_id),
        "environment" => json!(req.route().environment),
        "app_id" => json!(identity.app_id),
        "user" => json!(identity.user),
        "auth_type" => json!(req.context("auth_type").unwrap_or("none")),
        "method" => json!(method(req)),
        "scheme" => json!(if matches!(req.scheme, wasmgate_sdk::Scheme::Https) { "https" } else { "http" }),
        "host" => json!(req.host()),
        "uri" => {
            let q = req.query();
            json!(if q.is_empty() { req.path().to_string() } else { format!("{}?{q}", req.path()) })
        }
        "user_agent" => json!(req.header("user-agent").unwrap_or("")),
        "status" => json!(resp.status),
        "request_size" => json!(entry.request_size),
        "response_size" => json!(entry.response_size),
        "total_latency_ms" => json!(entry.total_latency_ms),
        "backend_latency_ms" => json!(resp.backend_latency_ms),
        "backend_outcome" => json!(match resp.outcome {
            BackendOutcome::Responded => "responded",
            BackendOutcome::TimedOut => "timed-out",
            BackendOutcome::Failed => "failed",
            BackendOutcome::NotCalled => "not-called",
        }),
        _ => Value::Null,
    }
}

fn method(req: &Request) -> &str {
    match &req.method {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        Method::Options => "OPTIONS",
        Method::Patch => "PATCH",
        Method::Other(m) => m,
    }
}

/// Percent-decoding is left to the reader: values are logged as they arrived.
fn query_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query.split('&').filter(|p| !p.is_empty()).map(|p| p.split_once('=').unwrap_or((p, "")))
}

fn body_text(body: &Option<Vec<u8>>) -> String {
    let b = body.as_deref().unwrap_or_default();
    String::from_utf8_lossy(&b[..b.len().min(BODY_LIMIT)]).into_owned()
}

/// Cut `s` by at least `excess` bytes, on a character boundary; false when it was empty.
fn shorten(s: &mut String, excess: usize) -> bool {
    if s.is_empty() {
        return false;
    }
    let mut end = s.len().saturating_sub(excess);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    true
}

impl KafkaLog {
    fn message(&self, entry: &LogEntry) -> String {
        let mut m = Map::new();
        for f in &self.fields {
            m.insert((*f).to_string(), system_field(entry, f));
        }
        let req = &entry.request;
        if let Some(pick) = &self.headers {
            let headers: Map<String, Value> = req
                .headers
                .iter()
                .filter(|(n, _)| pick.wants(n))
                .map(|(n, v)| (n.clone(), json!(v)))
                .collect();
            m.insert("request_headers".into(), Value::Object(headers));
        }
        if let Some(pick) = &self.query {
            let query: Map<String, Value> = query_pairs(req.query())
                .filter(|(k, _)| pick.wants(k))
                .map(|(k, v)| (k.into(), json!(v)))
                .collect();
            m.insert("query_strings".into(), Value::Object(query));
        }
        let mut body_truncated = false;
        if self.request_body {
            m.insert("request_body".into(), json!(body_text(&req.body)));
            body_truncated |= entry.request_body_truncated;
        }
        if self.response_body {
            m.insert("response_body".into(), json!(body_text(&entry.response.body)));
            body_truncated |= entry.response_body_truncated;
        }
        if self.request_body || self.response_body {
            m.insert("body_truncated".into(), json!(body_truncated));
        }
        fit(&mut m)
    }
}

/// Keep the message under [`MESSAGE_LIMIT`] by cutting, in this order, the response body,
/// the request body, the logged headers and query values, the user agent and the URI.
fn fit(m: &mut Map<String, Value>) -> String {
    const CUTTABLE: [&str; 6] =
        ["response_body", "request_body", "request_headers", "query_strings", "user_agent", "uri"];
    loop {
        let text = serde_json::to_string(&*m).expect("a JSON map serialises");
        let len = text.len();
        if len <= MESSAGE_LIMIT {
            return text;
        }
        // Room for the flags added below.
        let excess = len - MESSAGE_LIMIT + 48;
        let cut = CUTTABLE.iter().find_map(|name| {
            let done = match m.get_mut(*name)? {
                Value::String(s) => shorten(s, excess),
                // Longest value first; an emptied entry goes.
                Value::Object(o) => {
                    let longest = o.iter().max_by_key(|(_, v)| v.as_str().map_or(0, str::len))?.0.clone();
                    let shortened = match o.get_mut(&longest) {
                        Some(Value::String(s)) => shorten(s, excess),
                        _ => false,
                    };
                    if !shortened {
                        o.remove(&longest);
                    }
                    true
                }
                _ => false,
            };
            done.then_some(*name)
        });
        let Some(name) = cut else { return text };
        if name.ends_with("_body") {
            m.insert("body_truncated".into(), json!(true));
        }
        m.insert("message_truncated".into(), json!(true));
    }
}

wasmgate_sdk::export_policy!(KafkaLog);

//! Kafka log push: one JSON message per call, built in the log phase (after the response has
//! been sent) and handed to the host's Kafka producer through `log-sink.publish`, which only
//! queues it. The message layout is in `docs/kafka-log.md`.

mod message;

use message::{BODY_LIMIT, FIELDS, Field, Message, Pairs, body_text};
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::BTreeMap;
use wasmgate_sdk::host::{log, log_sink};
use wasmgate_sdk::prelude::*;
use wasmgate_sdk::{KafkaProtocol, KafkaSecurity, KafkaSink, LogSinkDecl, SaslCredentials, SaslMechanism};

const SINK: &str = "kafka";

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
    Field(Field),
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
    /// System fields switched off.
    off: Vec<Field>,
    headers: Option<Pick>,
    query: Option<Pick>,
    request_body: bool,
    response_body: bool,
}

fn known_field(name: &str, at: &str) -> Result<Field, ConfigError> {
    FIELDS.iter().find(|(_, n)| *n == name).map(|(f, _)| *f).ok_or_else(|| {
        let names: Vec<&str> = FIELDS.iter().map(|(_, n)| *n).collect();
        ConfigError::new(at, format!("unknown system field `{name}` ({})", names.join(", ")))
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
        let mut off = Vec::new();
        for (name, on) in &c.system_fields {
            let field = known_field(name, &format!("system_fields.{name}"))?;
            if !on {
                off.push(field);
            }
        }
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
            off,
            headers,
            query: Pick::new(c.query_strings),
            request_body: c.request_body,
            response_body: c.response_body,
        };
        Ok((me, info))
    }

    fn on_log(&self, entry: &LogEntry) {
        let mut m = Message::system(entry);
        let key = match &self.key {
            Key::None => None,
            Key::Literal(k) => Some(Cow::Borrowed(k.as_slice())),
            Key::Field(f) => Some(Cow::Owned(m.text(*f).into_bytes())),
        };
        for f in &self.off {
            m.switch_off(*f);
        }
        let req = &entry.request;
        if let Some(pick) = &self.headers {
            let headers = req.headers.iter().filter(|(n, _)| pick.wants(n));
            m.request_headers = Some(Pairs(headers.map(|(n, v)| (n, Cow::Borrowed(v))).collect()));
        }
        if let Some(pick) = &self.query {
            let query = req.query_pairs().filter(|(k, _)| pick.wants(k));
            m.query_strings = Some(Pairs(query.map(|(k, v)| (k, Cow::Borrowed(v))).collect()));
        }
        if self.request_body {
            m.request_body = Some(body_text(req.body));
        }
        if self.response_body {
            m.response_body = Some(body_text(entry.response.body));
        }
        if self.request_body || self.response_body {
            let cut = (self.request_body && entry.request_body_truncated)
                || (self.response_body && entry.response_body_truncated);
            m.body_truncated = Some(cut);
        }
        let message = m.into_json();
        if let Err(e) = log_sink::publish(SINK, key.as_deref(), message.as_bytes()) {
            log::write(log::Level::Warn, &format!("log message not queued: {e:?}"));
        }
    }
}

wasmgate_sdk::export_policy!(KafkaLog);

//! Kafka log push end to end: a real Kafka-protocol broker (tansu) on loopback, the gateway
//! pushing through its rdkafka producer, and the test reading the topic back.

mod common;

use common::{Gateway, HttpClient, Kafka, Upstream, config_header_with, validate};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn credentials() -> String {
    format!("credentials: [{{id: app-1, key: ak-1, secret: {SECRET}, apis: [a, b, c]}}]\n")
}

/// APIs `a`, `b`, `c` on the upstream, each logging to Kafka with `kafka_configs[i]` (YAML
/// flow mappings merged into the binding's config); `a` also authenticates with Basic.
fn apis(kafka: &Kafka, upstream: &Upstream, kafka_configs: [&str; 3]) -> String {
    let brokers = kafka.brokers();
    let mut yaml = format!("{}groups:\n- id: g\n  apis:\n", credentials());
    for (id, extra) in ["a", "b", "c"].iter().zip(kafka_configs) {
        let auth = if *id == "a" { "    - {plugin: app-auth, config: {modes: [basic]}}\n" } else { "" };
        yaml += &format!(
            "  - id: {id}\n    path: /{id}\n    match: prefix\n    backend: {{http: {{url: '{}'}}}}\n    policies:\n{auth}    - plugin: kafka-log\n      config: {{brokers: ['{brokers}'], {extra}}}\n",
            upstream.url()
        );
    }
    yaml
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

#[tokio::test]
async fn every_field_is_logged_as_configured() {
    let kafka = Kafka::start();
    kafka.create_topic("api-logs").await;
    kafka.create_topic("other-logs").await;
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&apis(
        &kafka,
        &upstream,
        [
            "topic: api-logs, key: $api_id, request_headers: [X-Trace], query_strings: [q], request_body: true, response_body: true",
            "topic: api-logs, key: fixed-key, system_fields: {user_agent: false, client_ip: false}, request_body: true",
            "topic: other-logs, request_headers: ['*']",
        ],
    ));
    let http = HttpClient::default();
    let basic = format!("Basic {}", base64_encode(&format!("ak-1:{SECRET}")));
    let before = now_ms();
    let r = http
        .send(
            "POST",
            &gw.url("/a/items?q=1&r=2"),
            &[
                ("authorization", &basic),
                ("x-trace", "t-1"),
                ("x-other", "no"),
                ("user-agent", "test-agent/1.0"),
            ],
            "hello",
        )
        .await;
    assert_eq!(r.status, 200);
    let got = kafka.consume("api-logs", 1, Duration::from_secs(10));
    assert_eq!(got.len(), 1, "{got:?}");
    let (key, m) = &got[0];
    assert_eq!(key.as_deref(), Some("a"));
    let start = m["start_time"].as_u64().unwrap();
    assert!(start >= before - 1000 && start <= now_ms(), "{m}");
    assert_eq!(m["request_id"], r.header("x-request-id").unwrap());
    assert_eq!(m["client_ip"], "127.0.0.1");
    assert_eq!(
        (m["api_id"].as_str(), m["group_id"].as_str(), m["environment"].as_str()),
        (Some("a"), Some("g"), Some("RELEASE"))
    );
    assert_eq!(
        (m["app_id"].as_str(), m.get("user"), m["auth_type"].as_str()),
        (Some("app-1"), Some(&serde_json::Value::Null), Some("basic"))
    );
    assert_eq!((m["method"].as_str(), m["scheme"].as_str()), (Some("POST"), Some("http")));
    assert_eq!(m["host"], gw.addr.ip().to_string());
    assert_eq!(m["uri"], "/a/items?q=1&r=2");
    assert_eq!(m["user_agent"], "test-agent/1.0");
    assert_eq!(m["status"], 200);
    assert_eq!(m["request_size"], 5);
    assert_eq!(m["response_size"], r.body.len());
    assert!(m["total_latency_ms"].as_u64().is_some() && m["backend_latency_ms"].as_u64().is_some(), "{m}");
    assert_eq!(m["backend_outcome"], "responded");
    assert_eq!(m["request_headers"], serde_json::json!({"x-trace": "t-1"}));
    assert_eq!(m["query_strings"], serde_json::json!({"q": "1"}));
    assert_eq!(m["request_body"], "hello");
    assert_eq!(m["response_body"].as_str().unwrap().as_bytes(), &r.body[..r.body.len().min(1024)]);
    assert_eq!(m["body_truncated"], r.body.len() > 1024);
    assert!(m.get("message_truncated").is_none());

    // b: switched-off fields are absent, the key is the literal, a 3 KB body is cut at 1 KB.
    let big = "x".repeat(3000);
    assert_eq!(http.send("POST", &gw.url("/b"), &[], &big).await.status, 200);
    let got = kafka.consume("api-logs", 2, Duration::from_secs(10));
    let (key, m) = got.iter().find(|(_, m)| m["api_id"] == "b").expect("b's message");
    assert_eq!(key.as_deref(), Some("fixed-key"));
    assert!(m.get("user_agent").is_none() && m.get("client_ip").is_none(), "{m}");
    assert_eq!(m["request_body"].as_str().unwrap().len(), 1024);
    assert_eq!(m["body_truncated"], true);
    assert_eq!(m["request_size"], 3000);
    assert!(m.get("response_body").is_none() && m.get("request_headers").is_none());

    // c: its own topic; every header, and the message kept under 4 KB with valid JSON.
    let long = "v".repeat(1500);
    let headers: Vec<(&str, &str)> =
        ["x-h1", "x-h2", "x-h3", "x-h4"].iter().map(|n| (*n, long.as_str())).collect();
    assert_eq!(http.send("GET", &gw.url("/c"), &headers, "").await.status, 200);
    let got = kafka.consume("other-logs", 1, Duration::from_secs(10));
    assert_eq!(got.len(), 1);
    let (key, m) = &got[0];
    assert_eq!(key, &None);
    assert!(m.to_string().len() <= 4096, "{} bytes", m.to_string().len());
    assert_eq!(m["message_truncated"], true);
    assert_eq!(m["api_id"], "c");
    assert!(m["request_headers"].as_object().unwrap().len() >= 2, "{m}");
    // Both bindings reach the same brokers: one producer.
    assert_eq!(gw.log().matches("Kafka producer started").count(), 1, "{}", gw.log());
}

fn base64_encode(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Requests while the broker is down keep their status and latency; what was logged
/// meanwhile arrives once it is back.
#[tokio::test]
async fn a_broker_outage_delays_nothing_and_loses_nothing_within_the_buffer() {
    let mut kafka = Kafka::start();
    kafka.create_topic("logs").await;
    let upstream = Upstream::start().await;
    let mut gw = Gateway::start(&apis(&kafka, &upstream, ["topic: logs", "topic: logs", "topic: logs"]));
    let http = HttpClient::default();
    assert_eq!(http.get(&gw.url("/b/warm"), &[]).await.status, 200);
    assert_eq!(kafka.consume("logs", 1, Duration::from_secs(10)).len(), 1);

    kafka.stop();
    let mut ids = Vec::new();
    let mut slowest = Duration::ZERO;
    for i in 0..50 {
        let t = Instant::now();
        let r = http.get(&gw.url(&format!("/b/{i}")), &[]).await;
        slowest = slowest.max(t.elapsed());
        assert_eq!(r.status, 200);
        ids.push(r.header("x-request-id").unwrap().to_string());
    }
    assert!(slowest < Duration::from_millis(500), "a request took {slowest:?} while the broker was down");

    kafka.restart(); // empty: memory storage
    kafka.create_topic("logs").await;
    let got = kafka.consume("logs", 50, Duration::from_secs(20));
    let mut logged: Vec<String> =
        got.iter().map(|(_, m)| m["request_id"].as_str().unwrap().to_string()).collect();
    logged.sort();
    ids.sort();
    assert_eq!(logged, ids, "every message logged during the outage arrives once");

    // On shutdown the producer reports what it did.
    gw.signal("TERM");
    assert!(gw.wait().success());
    gw.expect_log("log sink totals").await;
    assert!(gw.log().contains("delivered=51 dropped=0 rejected=0"), "{}", gw.log());
}

/// Over the buffer, the oldest waiting messages are dropped and the drop is counted.
#[tokio::test]
async fn over_the_buffer_the_oldest_are_dropped_and_counted() {
    let mut kafka = Kafka::start();
    kafka.create_topic("logs").await;
    let upstream = Upstream::start().await;
    let header = config_header_with("log_buffer: {max_messages: 100}");
    let body = apis(&kafka, &upstream, ["topic: logs", "topic: logs", "topic: logs"]);
    let gw = Gateway::start_whole(&format!("{header}{body}"));
    let http = HttpClient::default();
    assert_eq!(http.get(&gw.url("/b/warm"), &[]).await.status, 200);
    assert_eq!(kafka.consume("logs", 1, Duration::from_secs(10)).len(), 1);

    kafka.stop();
    let mut ids = Vec::new();
    for i in 0..160 {
        let r = http.get(&gw.url(&format!("/b/{i}")), &[]).await;
        assert_eq!(r.status, 200);
        ids.push(r.header("x-request-id").unwrap().to_string());
    }
    gw.expect_log("dropped_total=60").await;
    kafka.restart();
    kafka.create_topic("logs").await;
    let got = kafka.consume("logs", 100, Duration::from_secs(20));
    let logged: std::collections::HashSet<&str> =
        got.iter().map(|(_, m)| m["request_id"].as_str().unwrap()).collect();
    assert_eq!(logged.len(), 100, "the buffer's 100 messages arrive");
    // The first 12 (an eighth of the buffer) had been handed to the Kafka client (in flight:
    // not droppable); of the messages waiting behind them, the oldest 60 went. The Kafka
    // client may hand back an in-flight message early (it is then waiting again, oldest of
    // all), which moves the line by a message or two.
    let kept =
        |range: std::ops::Range<usize>| ids[range].iter().filter(|id| logged.contains(id.as_str())).count();
    let (first, older, newest) = (kept(0..12), kept(12..72), kept(80..160));
    assert!(first >= 10 && older <= 2 && newest == 80, "kept {first}/12, {older}/60, {newest}/80");
}

#[test]
fn bad_kafka_configs_are_refused_at_load() {
    let one = |config: &str| {
        format!(
            "groups:\n- id: g\n  apis:\n  - id: a\n    path: /a\n    backend: {{mock: {{}}}}\n    policies:\n    - plugin: kafka-log\n      config: {config}\n"
        )
    };
    let cases = [
        ("{brokers: [], topic: t}", "config.brokers: at least one broker"),
        ("{brokers: ['k:9092'], topic: 'bad topic'}", "config.topic: `bad topic` is not a Kafka topic name"),
        ("{brokers: ['k:9092'], topic: t, retries: 6}", "config.retries: 6 is outside 0..=5"),
        (
            "{brokers: ['k:9092'], topic: t, retry_interval: 11}",
            "config.retry_interval: 11 is outside 1..=10",
        ),
        ("{brokers: ['k'], topic: t}", "config.brokers[0]: `k` is not host:port"),
        (
            "{brokers: ['k:9092'], topic: t, security: {protocol: SASL_SSL}}",
            "config.security: SASL protocols need",
        ),
        (
            "{brokers: ['k:9092'], topic: t, system_fields: {nope: false}}",
            "config.system_fields.nope: unknown system field",
        ),
        ("{brokers: ['k:9092'], topic: t, key: $nope}", "config.key: unknown system field `nope`"),
    ];
    for (config, expected) in cases {
        let (ok, out) = validate(&one(config));
        assert!(!ok && out.contains(expected), "{config}: expected `{expected}`, got:\n{out}");
    }
    let (ok, out) = validate(&one(
        "{brokers: ['k:9092'], topic: t, retries: 5, retry_interval: 10, security: {protocol: SASL_PLAINTEXT, mechanism: SCRAM-SHA-512, username: u, password: p}}",
    ));
    assert!(ok, "{out}");
}

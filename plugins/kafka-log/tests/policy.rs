//! Kafka log push run by the gateway's runtime (`wasmgate-test`), its sink captured instead
//! of sent: one JSON message per request, with the fields the config asks for.

use serde_json::json;
use wasmgate_test::{Plugin, TestRequest, TestResponse};

#[test]
fn each_request_is_published_once_to_the_configured_topic() {
    let plugin = Plugin::load(wasmgate_test::build_with_profile(env!("CARGO_MANIFEST_DIR"), "plugin"));
    let binding = plugin
        .bind(json!({"brokers": ["127.0.0.1:9092"], "topic": "access", "request_headers": ["x-tenant"], "query_strings": ["page"]}))
        .unwrap();
    assert!(binding.info().phases.log && !binding.info().phases.request);

    let request =
        TestRequest::get("/orders?page=2&secret=x").header("x-tenant", "acme").header("cookie", "c=1");
    binding.on_log(&request, &TestResponse::new(201)).unwrap();
    let published = plugin.published();
    assert_eq!(published.len(), 1);
    assert_eq!((published[0].sink.as_str(), published[0].topic.as_str()), ("kafka", "access"));
    let message: serde_json::Value = serde_json::from_slice(&published[0].payload).unwrap();
    assert_eq!(message["status"], 201, "{message}");
    assert_eq!(message["request_headers"], json!({"x-tenant": "acme"}), "only the headers asked for");
    assert_eq!(message["query_strings"], json!({"page": "2"}));
    assert!(plugin.published().is_empty(), "taken");

    let e = plugin.bind(json!({"brokers": ["127.0.0.1:9092"], "topic": "no spaces"})).err().unwrap();
    assert!(e.starts_with("config.topic: "), "{e}");
}

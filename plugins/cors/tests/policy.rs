//! CORS run by the gateway's runtime (`wasmgate-test`): preflights answered by the plugin,
//! simple requests given their headers without a response-phase call.

use serde_json::json;
use wasmgate_test::{HeaderOp, Plugin, RequestActionExt, TestRequest, header_set};

fn cors() -> Plugin {
    Plugin::load(wasmgate_test::build_with_profile(env!("CARGO_MANIFEST_DIR"), "plugin"))
}

#[test]
fn a_preflight_from_an_allowed_origin_is_answered_by_the_plugin() {
    let plugin = cors();
    let binding = plugin
        .bind(json!({"allow_origin": ["https://shop.example"], "allow_methods": ["GET", "POST"], "max_age": 600}))
        .unwrap();
    let preflight = TestRequest::new(http::Method::OPTIONS, "/orders")
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "POST");
    let reply = binding.on_request(&preflight).unwrap().reply();
    let header = |name: &str| reply.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.to_str().unwrap());
    assert_eq!(header("access-control-allow-origin"), Some("https://shop.example"));
    assert_eq!(header("access-control-allow-methods"), Some("GET, POST"));
    assert_eq!(header("access-control-max-age"), Some("600"));

    let simple = TestRequest::get("/orders").header("origin", "https://shop.example");
    let changes = binding.on_request(&simple).unwrap().changes();
    assert_eq!(
        header_set(&changes.response_headers, "access-control-allow-origin"),
        Some("https://shop.example")
    );
    assert!(!binding.info().phases.response, "headers decided in the request phase: no response call");
}

#[test]
fn other_origins_get_no_cors_headers_and_bad_configs_name_the_field() {
    let plugin = cors();
    let binding = plugin.bind(json!({"allow_origin": ["https://shop.example"]})).unwrap();
    let evil = TestRequest::new(http::Method::OPTIONS, "/")
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "GET");
    let reply = binding.on_request(&evil).unwrap().reply();
    assert_eq!(reply.status, 403);
    assert!(!reply.headers.iter().any(|(n, _)| n.as_str().starts_with("access-control-")));
    let changes = binding
        .on_request(&TestRequest::get("/").header("origin", "https://evil.example"))
        .unwrap()
        .changes();
    let allow = |op: &HeaderOp| matches!(op, HeaderOp::Set(n, _) if n == "access-control-allow-origin");
    assert!(!changes.response_headers.iter().any(allow), "{:?}", changes.response_headers);
    let e = plugin.bind(json!({"allow_origin": ["*"], "max_age": "soon"})).err().unwrap();
    assert!(e.starts_with("config.max_age: "), "{e}");
}

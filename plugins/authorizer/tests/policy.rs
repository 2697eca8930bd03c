//! The third-party authorizer run by the gateway's runtime (`wasmgate-test`), its outbound
//! HTTP answered by the test: allowed identities go on with the authorizer's context,
//! denials are passed through, answers are cached.

use bytes::Bytes;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use wasmgate_test::{Plugin, RequestActionExt, TestRequest};

#[test]
fn the_authorizer_decides_and_its_allow_is_cached() {
    let plugin = Plugin::load(wasmgate_test::build_with_profile(env!("CARGO_MANIFEST_DIR"), "plugin"));
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    plugin.answer_outbound(move |req| {
        seen.fetch_add(1, Ordering::SeqCst);
        assert_eq!(req.uri().to_string(), "http://authz.internal:9000/check");
        let token = req.headers().get("authorization").map(|v| v.to_str().unwrap().to_string());
        let (status, body) = match token.as_deref() {
            Some("Bearer good") => (200, r#"{"status":"allow","context":{"user":"alice"}}"#),
            _ => (403, r#"{"msg":"not you"}"#),
        };
        Ok(http::Response::builder().status(status).body(Bytes::from(body)).unwrap())
    });
    let binding = plugin
        .bind(json!({"url": "http://authz.internal:9000/check", "identities": {"headers": ["Authorization"]}, "cache_seconds": 60}))
        .unwrap();

    let good = TestRequest::get("/orders").header("authorization", "Bearer good");
    for _ in 0..3 {
        let changes = binding.on_request(&good).unwrap().changes();
        assert_eq!(changes.identity.and_then(|i| i.user).as_deref(), Some("alice"), "{:?}", changes.context);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "an allowed identity is cached");

    let reply =
        binding.on_request(&TestRequest::get("/").header("authorization", "Bearer bad")).unwrap().reply();
    assert_eq!((reply.status.as_u16(), reply.body.as_ref()), (403, br#"{"msg":"not you"}"#.as_ref()));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

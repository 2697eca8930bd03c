//! The circuit breaker run by the gateway's runtime (`wasmgate-test`) on a clock the test
//! moves: it opens at the threshold, refuses while open, lets one probe through after the
//! recovery time and closes on its success, reporting each state as a gauge.

use serde_json::json;
use std::time::Duration;
use wasmgate_test::{Plugin, RequestActionExt, TestRequest, TestResponse};

#[test]
fn opens_at_the_threshold_and_closes_after_a_good_probe() {
    let plugin = Plugin::load(wasmgate_test::build_with_profile(env!("CARGO_MANIFEST_DIR"), "plugin"));
    plugin.set_now_ms(1_800_000_000_000);
    let breaker = plugin
        .bind(json!({"breaker": {"type": "condition", "status_codes": [500], "threshold": 2, "recovery_time": 10}}))
        .unwrap();
    // One request through both phases, as the gateway runs them.
    let call = |status: u16| {
        let mut request = TestRequest::get("/orders");
        let changes = breaker.on_request(&request).unwrap().changes();
        request.apply(&changes);
        breaker.on_response(&request, &TestResponse::new(status)).unwrap();
    };
    call(500);
    assert_eq!(breaker.gauge("circuit_breaker_0_state"), 0, "one failure: still closed");
    call(500);
    assert_eq!(breaker.gauge("circuit_breaker_0_state"), 1, "open");
    let reply = breaker.on_request(&TestRequest::get("/orders")).unwrap().reply();
    assert_eq!(reply.status, 503);
    assert!(String::from_utf8_lossy(&reply.body).contains("APIG.0206"));

    plugin.advance(Duration::from_secs(9));
    assert_eq!(breaker.on_request(&TestRequest::get("/orders")).unwrap().reply().status, 503);
    plugin.advance(Duration::from_secs(1));
    call(200); // the probe
    assert_eq!(breaker.gauge("circuit_breaker_0_state"), 0, "closed again");
    breaker.on_request(&TestRequest::get("/orders")).unwrap().changes();
}

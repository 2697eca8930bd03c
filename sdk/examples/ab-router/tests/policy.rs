//! The A/B router run by the gateway's runtime with a fake host (`wasmgate-test`).

use serde_json::json;
use wasmgate_test::{Plugin, RequestActionExt, TestRequest, header_set};

fn plugin() -> Plugin {
    Plugin::load(wasmgate_test::build_with_profile(env!("CARGO_MANIFEST_DIR"), "plugin"))
}

#[test]
fn a_named_variant_goes_to_its_backend_and_is_counted() {
    let plugin = plugin();
    plugin.set_now_ms(1_800_000_000_000);
    let router =
        plugin.bind(json!({"header": "x-group", "variants": {"beta": "http://10.0.0.2:8080"}})).unwrap();

    let changes = router.on_request(&TestRequest::get("/").header("x-group", "beta")).unwrap().changes();
    assert_eq!(changes.backend.map(|b| b.url).as_deref(), Some("http://10.0.0.2:8080"));
    assert_eq!(header_set(&changes.response_headers, "x-ab-variant"), Some("beta"));
    assert_eq!(header_set(&changes.response_headers, "x-ab-count"), Some("1"));

    let changes = router.on_request(&TestRequest::get("/").header("x-group", "gamma")).unwrap().changes();
    assert!(changes.backend.is_none(), "an unknown variant stays on the API's backend");
    assert_eq!(header_set(&changes.response_headers, "x-ab-variant"), Some("default"));
    assert_eq!((router.counter("variant:beta"), router.counter("variant:default")), (1, 1));

    // Counts are per minute of the plugin's clock.
    plugin.advance(std::time::Duration::from_secs(60));
    assert_eq!(router.counter("variant:beta"), 0);
}

#[test]
fn configs_are_checked_by_the_schema_then_by_the_plugin() {
    let plugin = plugin();
    assert_eq!(plugin.info().name.as_deref(), Some("ab-router"));
    assert!(plugin.info().config_schema.is_some());
    let e = plugin.bind(json!({"variants": {"beta": "ftp://x"}})).err().unwrap();
    assert!(e.starts_with("config.variants.beta: ") && e.contains("the plugin's config schema"), "{e}");
    let e = plugin.bind(json!({"variants": {}})).err().unwrap();
    assert!(e.starts_with("config.variants: ") && e.contains("schema"), "{e}");
    // Beyond what the schema says: the plugin's own check.
    let e = plugin.bind(json!({"variants": {"default": "http://x"}})).err().unwrap();
    assert_eq!(e, "config.variants.default: `default` names the API's own backend");
}

//! Outbound HTTP from plugins (the `http-outbound` import): only to granted origins, with
//! timeouts, a response cap, and network waits kept out of the CPU deadline.

mod common;

use common::{Gateway, HttpClient, Upstream, fixture, validate};
use std::time::{Duration, Instant};

fn gateway(grant: &str, limits: &str) -> Gateway {
    Gateway::start(&format!(
        "plugins:\n  outbound: {{path: '{}'}}\ngroups:\n- id: g\n  apis:\n  - id: a\n    path: /a\n    backend: {{mock: {{}}}}\n    policies:\n    - plugin: outbound\n      config: {{grant: [{grant}]}}\n      limits: {limits}\n",
        fixture("outbound").display()
    ))
}

async fn call(gw: &Gateway, target: &str, timeout_ms: u32) -> common::Reply {
    let timeout = timeout_ms.to_string();
    HttpClient::default().get(&gw.url("/a"), &[("x-target", target), ("x-timeout-ms", &timeout)]).await
}

#[tokio::test]
async fn granted_origins_are_called_and_others_refused() {
    let (granted, other) = (Upstream::start().await, Upstream::start().await);
    let gw = gateway(&format!("'{}'", granted.url()), "{}");
    let r = call(&gw, &format!("{}/echo?q=1", granted.url()), 2000).await;
    assert_eq!((r.status, r.header("x-outbound-status")), (200, Some("200")), "{:?}", r.body);
    let echo = r.json();
    assert_eq!((echo["path"].as_str(), echo["query"].as_str()), (Some("/echo"), Some("q=1")));
    assert_eq!(echo["headers"]["x-from"], "plugin", "the plugin's headers went out");

    let r = call(&gw, &format!("{}/echo", other.url()), 2000).await;
    let refused = format!("HttpError::NotGranted(\"http://{}\")", other.addr);
    assert_eq!((r.status, String::from_utf8_lossy(&r.body).as_ref()), (502, refused.as_str()));
    assert_eq!(other.hits(), 0);
    gw.expect_log("outbound HTTP refused: not granted").await;
}

#[tokio::test]
async fn network_waits_do_not_count_against_the_cpu_deadline_but_the_wall_cap_does() {
    let up = Upstream::start().await;
    let gw = gateway(&format!("'{}'", up.url()), "{cpu_ms: 20, wall_ms: 600}");
    // 300 ms waiting is far past a 20 ms CPU deadline, and fine.
    let r = call(&gw, &format!("{}/slow/300", up.url()), 2000).await;
    assert_eq!((r.status, r.header("x-outbound-status")), (200, Some("200")), "{:?}", r.body);
    // The plugin asks for 5 s; the call's wall-clock cap of 600 ms ends the wait and the call.
    let t = Instant::now();
    let r = call(&gw, &format!("{}/slow/3000", up.url()), 5000).await;
    assert_eq!((r.status, r.error_code().as_str()), (500, "APIG.0502"));
    assert!(
        t.elapsed() > Duration::from_millis(500) && t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn timeouts_and_the_response_cap_reach_the_plugin_as_errors() {
    let up = Upstream::start().await;
    let gw = gateway(&format!("'{}'", up.url()), "{}");
    let t = Instant::now();
    let r = call(&gw, &format!("{}/slow/2000", up.url()), 100).await;
    assert_eq!((r.status, &r.body[..]), (502, &b"HttpError::Timeout"[..]));
    assert!(t.elapsed() < Duration::from_millis(1000), "{:?}", t.elapsed());
    let r = call(&gw, &format!("{}/bytes/2000000", up.url()), 2000).await;
    assert_eq!((r.status, &r.body[..]), (502, &b"HttpError::ResponseTooLarge"[..]));
    let r = call(&gw, &format!("{}/bytes/1000", up.url()), 2000).await;
    assert_eq!((r.status, r.body.len()), (200, 1000));
}

#[test]
fn grants_and_wall_limits_are_checked_at_load() {
    let body = |grant: &str, limits: &str| {
        format!(
            "plugins:\n  outbound: {{path: '{}'}}\ngroups:\n- id: g\n  apis:\n  - id: a\n    path: /a\n    backend: {{mock: {{}}}}\n    policies:\n    - plugin: outbound\n      config: {{grant: ['{grant}']}}\n      limits: {limits}\n",
            fixture("outbound").display()
        )
    };
    let (ok, out) = validate(&body("https://auth.example", "{}"));
    assert!(!ok && out.contains("http grant `https://auth.example`: https is not supported yet"), "{out}");
    let (ok, out) = validate(&body("auth.example", "{}"));
    assert!(!ok && out.contains("http grant `auth.example`"), "{out}");
    let (ok, out) = validate(&body("http://auth.example:8080", "{cpu_ms: 100, wall_ms: 50}"));
    assert!(!ok && out.contains("limits.wall_ms: 50 is outside cpu_ms..=120000"), "{out}");
    let (ok, out) = validate(&body("http://auth.example:8080", "{cpu_ms: 100, wall_ms: 5000}"));
    assert!(ok, "{out}");
}

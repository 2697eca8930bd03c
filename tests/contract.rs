//! The WIT contract end to end, through the `inspector` fixture: bodies, identity and
//! context across phases, backend override, counters, key-value and the log phase.

mod common;
use common::*;
use std::time::{Duration, Instant};

fn config(up: &Upstream, other: &Upstream) -> String {
    let inspector = fixture("inspector").display().to_string();
    let (u, o) = (up.url(), other.url());
    format!(
        r#"
plugins:
  inspector: {{path: "{inspector}", grants: {{backends: ["{o}"]}}}}
groups:
  - id: g
    apis:
      - id: full
        path: /full
        match: prefix
        backend: {{http: {{url: "{u}"}}}}
        policies: [{{plugin: inspector, config: {{request_body: {{full: 16}}, response_body: {{prefix: 5}}}}}}]
      - id: prefix
        path: /prefix
        match: prefix
        backend: {{http: {{url: "{u}"}}}}
        policies: [{{plugin: inspector, config: {{request_body: {{prefix: 8}}, reroute_to: "{o}"}}}}]
      - id: limited
        path: /limited
        match: prefix
        backend: {{mock: {{body: ok}}}}
        policies: [{{plugin: inspector, config: {{limit: 3}}}}]
      - id: limited-too
        path: /limited-too
        backend: {{mock: {{body: ok}}}}
        policies: [{{plugin: inspector, config: {{limit: 3}}}}]
      - id: down
        path: /down
        backend: {{http: {{url: "http://127.0.0.1:1"}}}}
        policies: [{{plugin: inspector}}]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_body_is_seen_within_the_cap_and_refused_over_it() {
    let (up, other) = (Upstream::start().await, Upstream::start().await);
    let gw = Gateway::start(&config(&up, &other));
    let c = HttpClient::default();
    let r = c.send("POST", &gw.url("/full"), &[], "sixteen bytes!!!").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body"], "sixteen bytes!!!");
    assert_eq!(r.json()["headers"]["x-seen-body"], "sixteen bytes!!!");
    // The response body prefix the binding asked for, while the client gets all of it.
    assert_eq!(r.header("x-response-prefix"), Some(std::str::from_utf8(&r.body[..5]).unwrap()));
    assert!(r.body.len() > 5);
    assert_eq!(r.header("x-saw-content-type"), Some("application/json"));

    let r = c.send("POST", &gw.url("/full"), &[], "seventeen bytes!!").await;
    assert_eq!((r.status, r.error_code().as_str()), (413, "APIG.0204"));
    assert_eq!(up.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_is_seen_and_the_whole_body_still_streams_to_the_backend() {
    let (up, other) = (Upstream::start().await, Upstream::start().await);
    let gw = Gateway::start(&config(&up, &other));
    let big: String = (0..200_000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let r = HttpClient::default().send("PUT", &gw.url("/prefix"), &[], &big).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["headers"]["x-seen-body"], "abcdefgh");
    assert_eq!(r.json()["body"].as_str().unwrap().len(), big.len());
    assert!(r.json()["body"] == big.as_str());
    assert_eq!(r.header("x-response-prefix"), Some("<none>"), "this binding asked for no response body");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_and_context_set_in_the_request_phase_reach_later_phases() {
    let (up, other) = (Upstream::start().await, Upstream::start().await);
    let gw = Gateway::start(&config(&up, &other));
    let r = HttpClient::default().get(&gw.url("/full"), &[("x-app", "app-7")]).await;
    assert_eq!(r.header("x-app-id"), Some("app-7"));
    assert_eq!(r.header("x-context"), Some("yes"));
    assert_eq!(r.header("x-outcome"), Some("responded"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_can_send_the_request_to_another_backend() {
    let (up, other) = (Upstream::start().await, Upstream::start().await);
    let gw = Gateway::start(&config(&up, &other));
    let c = HttpClient::default();
    let r = c.get(&gw.url("/prefix/x"), &[("x-reroute", "1")]).await;
    assert_eq!(r.json()["path"], "/prefix/x");
    assert_eq!((up.hits(), other.hits()), (0, 1));
    c.get(&gw.url("/prefix/x"), &[]).await;
    assert_eq!((up.hits(), other.hits()), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_failures_reach_the_response_phase() {
    let (up, other) = (Upstream::start().await, Upstream::start().await);
    let gw = Gateway::start(&config(&up, &other));
    let r = HttpClient::default().get(&gw.url("/down"), &[]).await;
    assert_eq!((r.status, r.header("x-outcome")), (502, Some("failed")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_are_exact_and_private_to_each_binding() {
    let (up, other) = (Upstream::start().await, Upstream::start().await);
    let gw = Gateway::start(&config(&up, &other));
    let c = HttpClient::default();
    let statuses = concurrent_gets(&gw.url("/limited/a"), 10).await;
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 3, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 7, "{statuses:?}");
    let r = c.get(&gw.url("/limited/a"), &[]).await;
    assert_eq!((r.status, r.error_code().as_str(), r.header("x-count")), (429, "APIG.0308", Some("3")));
    // Same plugin, other API: its own counter.
    assert_eq!(c.get(&gw.url("/limited-too"), &[]).await.status, 200);
}

/// `n` GETs at once, each on its own connection; their statuses.
async fn concurrent_gets(url: &str, n: usize) -> Vec<u16> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let url = url.to_string();
        tasks.push(tokio::spawn(async move { HttpClient::default().get(&url, &[]).await.status }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_phase_runs_after_each_response_with_sizes_and_identity() {
    let (up, other) = (Upstream::start().await, Upstream::start().await);
    let gw = Gateway::start(&config(&up, &other));
    let c = HttpClient::default();
    for _ in 0..4 {
        c.send("POST", &gw.url("/full/item"), &[("x-app", "app-9")], "0123456789").await;
    }
    let started = Instant::now();
    loop {
        let r = c.get(&gw.url("/full/stats"), &[]).await;
        // Log phases run after the responses were sent, so the count catches up a little later.
        if r.header("x-logged") == Some("4") {
            let last = r.json();
            assert_eq!(last["path"], "/full/item");
            assert_eq!(last["status"], 200);
            assert_eq!(last["request_size"], 10);
            assert!(last["response_size"].as_u64().unwrap() > 100, "{last}");
            assert_eq!(last["app_id"], "app-9");
            assert!(last["start_time_ms"].as_u64().unwrap() > 1_700_000_000_000);
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "log phase count: {:?}", r.header("x-logged"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

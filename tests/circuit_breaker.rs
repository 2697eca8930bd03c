//! Circuit breaker end to end: a real upstream whose behaviour the test switches (healthy,
//! failing with 500, slow, down), the real gateway, a real client.

mod common;

use bytes::Bytes;
use common::{Gateway, HttpClient, Reply, Upstream, validate};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const HEALTHY: u8 = 0;
const FAILING: u8 = 1;
/// Answers after 1 s: past the API's 300 ms backend timeout.
const SLOW: u8 = 2;
/// Drops the connection without answering.
const DOWN: u8 = 3;
/// Answers 200 after 300 ms (for the API with a long timeout).
const DELAYED: u8 = 4;

/// An upstream whose behaviour the test sets, counting the requests that reach it.
struct Switch {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    hits: Arc<AtomicUsize>,
}

impl Switch {
    async fn start() -> Switch {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mode, hits) = (Arc::new(AtomicU8::new(HEALTHY)), Arc::new(AtomicUsize::new(0)));
        let (m, h) = (mode.clone(), hits.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (m, h) = (m.clone(), h.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |_req| {
                        let (m, h) = (m.clone(), h.clone());
                        async move {
                            h.fetch_add(1, Ordering::SeqCst);
                            let (status, delay) = match m.load(Ordering::SeqCst) {
                                FAILING => (500, 0),
                                SLOW => (200, 1000),
                                DOWN => return Err("down"),
                                DELAYED => (200, 300),
                                _ => (200, 0),
                            };
                            tokio::time::sleep(Duration::from_millis(delay)).await;
                            let resp = hyper::Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from("from the backend")));
                            Ok::<_, &str>(resp.unwrap())
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Switch { addr, mode, hits }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// One API `a` at `/a` on `switch` (backend timeout `timeout_ms`) with a circuit breaker.
fn one_api(switch: &Switch, timeout_ms: u32, breaker_config: &str) -> String {
    format!(
        "groups:\n- id: g\n  apis:\n  - id: a\n    path: /a\n    backend: {{http: {{url: 'http://{}', timeout_ms: {timeout_ms}}}}}\n    policies:\n    - plugin: circuit-breaker\n      config: {breaker_config}\n",
        switch.addr
    )
}

async fn get(http: &HttpClient, gw: &Gateway, path: &str) -> Reply {
    http.get(&gw.url(path), &[]).await
}

fn assert_open(r: &Reply) {
    assert_eq!((r.status, r.error_code().as_str()), (503, "APIG.0206"), "{:?}", r.body);
    assert_eq!(r.header("x-wasmgate-circuit"), Some("open"));
}

#[tokio::test]
async fn count_mode_opens_exactly_at_the_threshold() {
    let switch = Switch::start().await;
    let gw = Gateway::start(&one_api(
        &switch,
        2000,
        "{breaker: {type: condition, status_codes: [500, 503], threshold: 3, time_window: 60, recovery_time: 60}}",
    ));
    let http = HttpClient::default();
    for _ in 0..2 {
        assert_eq!(get(&http, &gw, "/a").await.status, 200); // successes do not count
    }
    switch.set(FAILING);
    for i in 1..=3 {
        let r = get(&http, &gw, "/a").await;
        assert_eq!(r.status, 500, "failure {i} still reaches the backend");
        assert_eq!(r.header("x-wasmgate-circuit"), None);
    }
    assert_eq!(switch.hits(), 5);
    for _ in 0..3 {
        assert_open(&get(&http, &gw, "/a").await);
    }
    assert_eq!(switch.hits(), 5, "an open breaker does not call the backend");
    gw.expect_log("opened: 3 failures in the time window").await;
}

#[tokio::test]
async fn percentage_mode_needs_both_the_calls_and_the_ratio() {
    let switch = Switch::start().await;
    let gw = Gateway::start(&one_api(
        &switch,
        2000,
        "{breaker: {type: condition, status_codes: [500], mechanism: percentage, threshold: 4, percentage: 50}}",
    ));
    let http = HttpClient::default();
    // ok, fail, fail: 67% but only 3 calls; then ok: 4 calls, 50%: open.
    for (mode, status) in [(HEALTHY, 200), (FAILING, 500), (FAILING, 500), (HEALTHY, 200)] {
        switch.set(mode);
        assert_eq!(get(&http, &gw, "/a").await.status, status);
    }
    assert_open(&get(&http, &gw, "/a").await);
    assert_eq!(switch.hits(), 4);
    gw.expect_log("opened: 2 failures in 4 calls").await;
}

#[tokio::test]
async fn timeout_breakers_count_timeouts_and_no_request_waits_past_the_backend_timeout() {
    let switch = Switch::start().await;
    let gw = Gateway::start(&one_api(
        &switch,
        300,
        "{breaker: {type: timeout, threshold: 2, fallback: {mock: {status: 200, headers: {X-From: cache}, body: cached}}}}",
    ));
    let http = HttpClient::default();
    switch.set(SLOW);
    for _ in 0..2 {
        let t = Instant::now();
        let r = get(&http, &gw, "/a").await;
        assert_eq!(r.status, 504);
        assert!(t.elapsed() < Duration::from_millis(900), "waited {:?}", t.elapsed());
    }
    let t = Instant::now();
    let r = get(&http, &gw, "/a").await;
    assert!(t.elapsed() < Duration::from_millis(200), "the fallback took {:?}", t.elapsed());
    assert_eq!((r.status, &r.body[..]), (200, &b"cached"[..]));
    assert_eq!((r.header("x-from"), r.header("x-wasmgate-circuit")), (Some("cache"), Some("open")));
    assert_eq!(switch.hits(), 2);

    // A backend that is down (connection dropped) fails the same way.
    let switch = Switch::start().await;
    switch.set(DOWN);
    let gw = Gateway::start(&one_api(&switch, 300, "{breaker: {type: timeout, threshold: 1}}"));
    assert_eq!(get(&http, &gw, "/a").await.status, 502);
    assert_open(&get(&http, &gw, "/a").await);
}

#[tokio::test]
async fn half_open_lets_one_probe_through_success_closes_failure_reopens() {
    let switch = Switch::start().await;
    let gw = Gateway::start(&one_api(
        &switch,
        2000,
        "{breaker: {type: condition, status_codes: [500], threshold: 1, recovery_time: 1}}",
    ));
    let http = HttpClient::default();
    switch.set(FAILING);
    assert_eq!(get(&http, &gw, "/a").await.status, 500);
    assert_open(&get(&http, &gw, "/a").await);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(get(&http, &gw, "/a").await.status, 500, "the probe reaches the backend");
    assert_open(&get(&http, &gw, "/a").await); // and its failure opens the breaker again
    assert_eq!(switch.hits(), 2);
    gw.expect_log("probe failed: open again").await;

    tokio::time::sleep(Duration::from_millis(1100)).await;
    switch.set(DELAYED);
    // Three calls at once: one is the probe, the others get the breaker's answer.
    let (r1, r2, r3) = tokio::join!(get(&http, &gw, "/a"), get(&http, &gw, "/a"), get(&http, &gw, "/a"));
    let mut statuses = vec![r1.status, r2.status, r3.status];
    statuses.sort();
    assert_eq!(statuses, vec![200, 503, 503]);
    assert_eq!(switch.hits(), 3, "one probe at a time");
    gw.expect_log("probe succeeded: closed").await;
    switch.set(HEALTHY);
    for _ in 0..3 {
        assert_eq!(get(&http, &gw, "/a").await.status, 200);
    }
    assert_eq!(switch.hits(), 6);
}

#[tokio::test]
async fn fallback_to_another_backend_or_through_to_the_same_one() {
    let switch = Switch::start().await;
    let spare = Upstream::start().await;
    let breaker = |fallback: &str| {
        format!(
            "{{breaker: {{type: condition, status_codes: [500], threshold: 1, recovery_time: 60, fallback: {fallback}}}}}"
        )
    };
    let http = HttpClient::default();

    let gw = Gateway::start(&one_api(
        &switch,
        2000,
        &breaker(&format!("{{backend: {{url: '{}', timeout_ms: 1000}}}}", spare.url())),
    ));
    switch.set(FAILING);
    assert_eq!(get(&http, &gw, "/a").await.status, 500);
    let r = get(&http, &gw, "/a").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["path"], "/a", "served by the spare backend (it echoes)");
    assert_eq!(r.header("x-wasmgate-circuit"), Some("open"));
    assert_eq!((switch.hits(), spare.hits()), (1, 1));

    let gw = Gateway::start(&one_api(&switch, 2000, &breaker("passthrough")));
    assert_eq!(get(&http, &gw, "/a").await.status, 500);
    for _ in 0..3 {
        let r = get(&http, &gw, "/a").await;
        // Still the backend's answer, marked; and not counted against the breaker.
        assert_eq!((r.status, r.header("x-wasmgate-circuit")), (500, Some("open")));
    }
    assert_eq!(switch.hits(), 5);
}

#[tokio::test]
async fn shared_scope_is_one_breaker_for_every_api_of_the_policy() {
    let switch = Switch::start().await;
    let breaker = |scope: &str| {
        format!(
            "{{plugin: circuit-breaker, config: {{scope: {scope}, breaker: {{type: condition, status_codes: [500], threshold: 2}}}}}}"
        )
    };
    let apis: String = ["a", "b", "c", "d"]
        .iter()
        .map(|id| {
            let policy = if *id < "c" { "shared-cb" } else { "api-cb" };
            format!("  - {{id: {id}, path: /{id}, backend: {{http: {{url: 'http://{}'}}}}, policies: [{{policy: {policy}}}]}}\n", switch.addr)
        })
        .collect();
    let gw = Gateway::start(&format!(
        "policies:\n  shared-cb: {}\n  api-cb: {}\ngroups:\n- id: g\n  apis:\n{apis}",
        breaker("shared"),
        breaker("api")
    ));
    let http = HttpClient::default();
    switch.set(FAILING);
    // Shared: a's failure and b's failure open the one breaker for both.
    assert_eq!(get(&http, &gw, "/a").await.status, 500);
    assert_eq!(get(&http, &gw, "/b").await.status, 500);
    assert_open(&get(&http, &gw, "/a").await);
    assert_open(&get(&http, &gw, "/b").await);
    // Per API: c's two failures open c's breaker only.
    assert_eq!(get(&http, &gw, "/c").await.status, 500);
    assert_eq!(get(&http, &gw, "/c").await.status, 500);
    assert_open(&get(&http, &gw, "/c").await);
    switch.set(HEALTHY);
    assert_eq!(get(&http, &gw, "/d").await.status, 200);
}

#[tokio::test]
async fn rules_choose_their_own_breaker() {
    let switch = Switch::start().await;
    let gw = Gateway::start(&one_api(
        &switch,
        2000,
        "{breaker: {type: condition, status_codes: [500], threshold: 1}, parameters: [{name: tier, from: header, key: X-Tier}], rules: [{name: gold, when: {all: [{param: tier, op: '==', value: gold}]}, breaker: {threshold: 3}}]}",
    ));
    let http = HttpClient::default();
    switch.set(FAILING);
    assert_eq!(get(&http, &gw, "/a").await.status, 500);
    assert_open(&get(&http, &gw, "/a").await);
    let gold = [("x-tier", "gold")];
    for _ in 0..3 {
        assert_eq!(
            http.get(&gw.url("/a"), &gold).await.status,
            500,
            "gold calls have a breaker of their own"
        );
    }
    assert_open(&http.get(&gw.url("/a"), &gold).await);
}

#[test]
fn bad_breaker_configs_are_refused_at_load() {
    let one = |config: &str| {
        format!(
            "groups:\n- id: g\n  apis:\n  - id: a\n    path: /a\n    backend: {{mock: {{}}}}\n    policies:\n    - plugin: circuit-breaker\n      config: {config}\n"
        )
    };
    let cases = [
        ("{breaker: {type: condition}}", "config.breaker.status_codes: a condition breaker needs"),
        (
            "{breaker: {type: timeout, status_codes: [500]}}",
            "config.breaker.type: status_codes and latency_ms need",
        ),
        (
            "{breaker: {type: condition, status_codes: [99]}}",
            "config.breaker.status_codes: 99 is not an HTTP status",
        ),
        (
            "{breaker: {mechanism: percentage}}",
            "config.breaker.percentage: needed with `mechanism: percentage`",
        ),
        (
            "{breaker: {mechanism: percentage, percentage: 101}}",
            "config.breaker.percentage: 101 is outside 1..=100",
        ),
        ("{breaker: {threshold: 0}}", "config.breaker.threshold: 0 is outside"),
        ("{breaker: {recovery_time: 0}}", "config.breaker.recovery_time: 0 is outside 1..=3600"),
        ("{breaker: {time_window: 4000}}", "config.breaker.time_window: 4000 is outside 1..=3600"),
        (
            "{breaker: {fallback: {backend: {url: 'ftp://x'}}}}",
            "config.breaker.fallback.backend.url: `ftp://x` is not an http:// URL",
        ),
        ("{breaker: {}, scope: everywhere}", "unknown variant `everywhere`"),
        (
            "{breaker: {}, rules: [{when: {all: [{param: nope, op: '==', value: x}]}, breaker: {}}]}",
            "config.rules[0].when.all[0].param: `nope` is not one of `parameters`",
        ),
        (
            "{breaker: {}, rules: [{when: {all: []}, breaker: {threshold: 0}}]}",
            "config.rules[0].when: needs exactly one of",
        ),
    ];
    for (config, expected) in cases {
        let (ok, out) = validate(&one(config));
        assert!(!ok && out.contains(expected), "{config}: expected `{expected}`, got:\n{out}");
    }
    let (ok, out) = validate(&one(
        "{breaker: {type: condition, status_codes: [502, 503], latency_ms: 1500, mechanism: percentage, threshold: 10, percentage: 40, time_window: 30, recovery_time: 15, fallback: {mock: {status: 503, body: busy}}}}",
    ));
    assert!(ok, "{out}");
}

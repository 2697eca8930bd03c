//! Request Throttling 2.0 (`throttling` plugin), local counting.

mod common;
use common::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// An API at `path` whose caller identity comes from `x-app` / `x-user` (set by the inspector
/// fixture, standing in for an auth policy), throttled with `throttling` (YAML flow map).
fn api(id: &str, path: &str, throttling: &str) -> String {
    format!(
        "      - id: {id}\n        path: {path}\n        match: prefix\n        backend: {{mock: {{body: ok}}}}\n        policies:\n          - {{plugin: inspector}}\n          - {{plugin: throttling, config: {throttling}}}\n"
    )
}

fn gateway(apis: &[String]) -> Gateway {
    Gateway::start(&format!(
        "plugins: {{inspector: {{path: '{}'}}}}\ngroups:\n  - id: g\n    apis:\n{}",
        fixture("inspector").display(),
        apis.concat()
    ))
}

async fn statuses(c: &HttpClient, url: &str, headers: &[(&str, &str)], n: usize) -> Vec<u16> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(c.get(url, headers).await.status);
    }
    out
}

fn ok_then_429(ok: usize, total: usize) -> Vec<u16> {
    (0..total).map(|i| if i < ok { 200 } else { 429 }).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_mode_admits_exactly_the_limit_in_each_window_under_concurrent_load() {
    let gw = gateway(&[api("a", "/a", "{api_limit: 25, period: 1, unit: second, algorithm: local}")]);
    let (ok, limited, other) = hammer_three_windows(&[gw.url("/a")]).await;
    assert_eq!(other, 0);
    assert!(limited > 100, "the load did not saturate the limit");
    assert_eq!(ok, 3 * 25, "2xx over three full windows");
}

/// Eight clients (spread over `urls`) send requests from just after a one-second window
/// boundary (windows are aligned to the epoch) until just before the end of the third window,
/// so every admitted request belongs to one of three windows. Returns (2xx, 429, other).
async fn hammer_three_windows(urls: &[String]) -> (usize, usize, usize) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    tokio::time::sleep(Duration::from_millis(1000 - now % 1000 + 30)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let counts: Arc<[AtomicUsize; 3]> = Arc::new(Default::default());
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (stop, counts, url) = (stop.clone(), counts.clone(), urls[i % urls.len()].clone());
        tasks.push(tokio::spawn(async move {
            let c = HttpClient::default();
            while !stop.load(Ordering::Relaxed) {
                let slot = match c.get(&url, &[]).await.status {
                    200 => 0,
                    429 => 1,
                    _ => 2,
                };
                counts[slot].fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(2900)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let [ok, limited, other] = &*counts;
    (ok.load(Ordering::Relaxed), limited.load(Ordering::Relaxed), other.load(Ordering::Relaxed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_request_gets_429_with_code_retry_after_and_rate_limit_headers() {
    let gw = gateway(&[api("a", "/a", "{api_limit: 2, period: 1, unit: hour, algorithm: local}")]);
    let c = HttpClient::default();
    let first = c.get(&gw.url("/a"), &[]).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-ratelimit-limit"), Some("2"));
    assert_eq!(first.header("x-ratelimit-remaining"), Some("1"));
    let reset: u64 = first.header("x-ratelimit-reset").unwrap().parse().unwrap();
    assert!((1..=3600).contains(&reset), "{reset}");
    assert_eq!(c.get(&gw.url("/a"), &[]).await.header("x-ratelimit-remaining"), Some("0"));

    let r = c.get(&gw.url("/a"), &[]).await;
    assert_eq!((r.status, r.error_code().as_str()), (429, "APIG.0308"));
    assert_eq!(r.json()["error_msg"], "The throttling threshold has been reached");
    assert_eq!(r.json()["request_id"].as_str(), r.header("x-request-id"));
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=3600).contains(&retry));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_denies_all() {
    let gw = gateway(&[api("a", "/a", "{api_limit: 0, algorithm: local}")]);
    assert_eq!(HttpClient::default().get(&gw.url("/a"), &[]).await.status, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_app_and_ip_limits_count_each_caller_separately_and_exclusions_override() {
    let cfg = "{api_limit: 100, user_limit: 3, app_limit: 4, unit: hour, algorithm: local, exclusions: {apps: [{id: vip, limit: 6}], users: [{name: root, limit: 1}]}}";
    let gw = gateway(&[
        api("a", "/a", cfg),
        api("ip", "/ip", "{api_limit: 100, ip_limit: 2, unit: hour, algorithm: local}"),
    ]);
    let c = HttpClient::default();
    let url = gw.url("/a");
    assert_eq!(statuses(&c, &url, &[("x-user", "alice")], 5).await, ok_then_429(3, 5));
    assert_eq!(statuses(&c, &url, &[("x-user", "bob")], 4).await, ok_then_429(3, 4));
    assert_eq!(statuses(&c, &url, &[("x-app", "app-1")], 6).await, ok_then_429(4, 6));
    assert_eq!(statuses(&c, &url, &[("x-app", "vip")], 8).await, ok_then_429(6, 8));
    assert_eq!(statuses(&c, &url, &[("x-user", "root")], 3).await, ok_then_429(1, 3));
    // No identity: only the API limit applies.
    assert_eq!(statuses(&c, &url, &[], 5).await, ok_then_429(5, 5));
    assert_eq!(statuses(&c, &gw.url("/ip"), &[], 4).await, ok_then_429(2, 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameter_rules_match_in_order_with_each_operator() {
    let cfg = r#"{api_limit: 1, unit: hour, algorithm: local,
      parameters: [{name: tier, from: header, key: X-Tier}, {name: plan, from: query, key: plan},
                   {name: path, from: system, key: reqPath}, {name: method, from: system, key: method},
                   {name: id, from: path, key: id}],
      rules: [
        {name: gold, when: {all: [{param: tier, op: "==", value: gold}, {param: method, op: "==", value: GET}]}, limit: 5},
        {name: plans, when: {any: [{param: plan, op: in, value: [pro, team]}, {param: id, op: "==", value: "42"}]}, limit: 3},
        {name: reports, when: {all: [{param: path, op: "~~", value: "/r/reports/[0-9]+"}]}, limit: 2}]}"#;
    let gw = Gateway::start(&format!(
        "groups:\n  - id: g\n    apis:\n      - id: r\n        path: '/r/{{id}}'\n        backend: {{mock: {{body: ok}}}}\n        policies: [{{plugin: throttling, config: {cfg}}}]\n      - id: reports\n        path: '/r/reports/{{id}}'\n        backend: {{mock: {{body: ok}}}}\n        policies: [{{plugin: throttling, config: {cfg}}}]\n"
    ));
    let c = HttpClient::default();
    // Rule 1 (AND): gold and GET.
    assert_eq!(statuses(&c, &gw.url("/r/1"), &[("x-tier", "gold")], 6).await, ok_then_429(5, 6));
    // Gold but POST does not match rule 1; rule 2 (OR) via `in`.
    let r = c.send("POST", &gw.url("/r/1?plan=team"), &[("x-tier", "gold")], "").await;
    assert_eq!((r.status, r.header("x-ratelimit-limit")), (200, Some("3")));
    // Rule 2 via the path parameter; same rule, same counter.
    assert_eq!(statuses(&c, &gw.url("/r/42"), &[], 3).await, ok_then_429(2, 3));
    // Rule 3 (regex) on the other API; its own counters (basic scope).
    assert_eq!(statuses(&c, &gw.url("/r/reports/7"), &[], 3).await, ok_then_429(2, 3));
    // No rule matches: the API limit (1).
    assert_eq!(statuses(&c, &gw.url("/r/5?plan=free"), &[], 2).await, ok_then_429(1, 2));
    // The regex is anchored: a longer path is not a match.
    assert_eq!(c.get(&gw.url("/r/reports/7x"), &[]).await.header("x-ratelimit-limit"), Some("1"));
}

#[test]
fn bad_throttling_configs_are_rejected_naming_the_field() {
    let rules: Vec<String> =
        (0..101).map(|_| "{when: {all: [{param: p, op: '==', value: x}]}, limit: 1}".to_string()).collect();
    let cases = [
        ("{api_limit: 10, user_limit: 11}".to_string(), "config.user_limit: 11 is above api_limit (10)"),
        ("{api_limit: 10, ip_limit: 20}".into(), "config.ip_limit"),
        (format!("{{api_limit: 10, parameters: [{{name: p, from: header, key: x}}], rules: [{}]}}", rules.join(",")), "config.rules: 101 given, at most 100"),
        ("{api_limit: 10, parameters: [{name: p, from: header, key: x}], rules: [{when: {all: [{param: p, op: '~~', value: '(unclosed'}]}, limit: 1}]}".into(), "config.rules[0].when.all[0].value: bad regular expression"),
        ("{api_limit: 10, rules: [{when: {any: [{param: nope, op: '==', value: x}]}, limit: 1}]}".into(), "config.rules[0].when.any[0].param: `nope` is not one of `parameters`"),
        ("{api_limit: 10, parameters: [{name: p, from: system, key: hostname}]}".into(), "config.parameters[0].key"),
        ("{api_limit: 10, period: 0}".into(), "config.period"),
        ("{api_limit: 10, unit: fortnight}".into(), "unknown variant `fortnight`"),
        ("{user_limit: 1}".into(), "missing field `api_limit`"),
    ];
    for (cfg, expected) in cases {
        let (ok, out) = validate(&one_binding("throttling", &cfg));
        assert!(!ok, "accepted: {cfg}");
        assert!(
            out.contains("policies[0] (throttling)") && out.contains(expected),
            "expected `{expected}` in:\n{out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_policy_counts_all_its_apis_together_and_a_basic_one_each_alone() {
    let gw = Gateway::start(
        "policies:\n  together: {plugin: throttling, config: {type: shared, api_limit: 3, unit: hour, algorithm: local}}\n  apart: {plugin: throttling, config: {type: basic, api_limit: 2, unit: hour, algorithm: local}}\ngroups:\n  - id: g\n    apis:\n      - {id: a, path: /a, backend: {mock: {}}, policies: [{policy: together}]}\n      - {id: b, path: /b, backend: {mock: {}}, policies: [{policy: together}]}\n      - {id: c, path: /c, backend: {mock: {}}, policies: [{policy: apart}]}\n      - {id: d, path: /d, backend: {mock: {}}, policies: [{policy: apart}]}\n      - {id: e, path: /e, backend: {mock: {}}, policies: [{plugin: throttling, config: {type: shared, api_limit: 1, unit: hour, algorithm: local}}]}\n",
    );
    let c = HttpClient::default();
    let mut shared = statuses(&c, &gw.url("/a"), &[], 2).await;
    shared.extend(statuses(&c, &gw.url("/b"), &[], 2).await);
    shared.extend(statuses(&c, &gw.url("/a"), &[], 1).await);
    assert_eq!(shared, ok_then_429(3, 5));
    assert_eq!(statuses(&c, &gw.url("/c"), &[], 3).await, ok_then_429(2, 3));
    assert_eq!(statuses(&c, &gw.url("/d"), &[], 3).await, ok_then_429(2, 3));
    // An inline binding is its own policy, even with type shared.
    assert_eq!(statuses(&c, &gw.url("/e"), &[], 2).await, ok_then_429(1, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_period_unit_sets_the_window_and_a_day_rolls_over_with_the_clock() {
    let body = |unit: &str| {
        format!(
            "groups:\n  - id: g\n    apis:\n      - {{id: a, path: /a, backend: {{mock: {{}}}}, policies: [{{plugin: throttling, config: {{api_limit: 2, period: 1, unit: {unit}, algorithm: local}}}}]}}\n"
        )
    };
    let c = HttpClient::default();
    for (unit, max_reset) in [("second", 1), ("minute", 60), ("hour", 3600), ("day", 86400)] {
        let gw = Gateway::start(&body(unit));
        let r = c.get(&gw.url("/a"), &[]).await;
        let reset: u64 = r.header("x-ratelimit-reset").unwrap().parse().unwrap();
        assert!((1..=max_reset).contains(&reset), "{unit}: reset {reset}");
        if unit == "day" {
            assert_eq!(statuses(&c, &gw.url("/a"), &[], 2).await, ok_then_429(1, 2));
            // A day later (the plugins' clock moved by the config), the window is new. The
            // counters survive the reload: only the clock makes the difference.
            gw.rewrite_config_whole(&format!(
                "{}{}",
                config_header_with("clock_offset_ms: 86400000"),
                body("day")
            ));
            gw.expect_log("config reloaded").await;
            assert_eq!(statuses(&c, &gw.url("/a"), &[], 3).await, ok_then_429(2, 3));
        }
    }
}

/// A gateway counting in `redis` with one API `/a` throttled by `throttling`.
fn cluster_gateway(redis: &Redis, throttling: &str) -> Gateway {
    Gateway::start_whole(&format!(
        "{}groups:\n  - id: g\n    apis:\n      - {{id: a, path: /a, backend: {{mock: {{body: ok}}}}, policies: [{{plugin: throttling, config: {throttling}}}]}}\n",
        config_header_with(&format!("redis: {{url: '{}', timeout_ms: 50}}", redis.url()))
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_mode_is_exact_across_two_gateways_sharing_redis() {
    let redis = Redis::start();
    let cfg = "{api_limit: 20, period: 1, unit: second, algorithm: counter}";
    let (a, b) = (cluster_gateway(&redis, cfg), cluster_gateway(&redis, cfg));
    let (ok, limited, other) = hammer_three_windows(&[a.url("/a"), b.url("/a")]).await;
    assert_eq!(other, 0);
    assert!(limited > 100, "the load did not saturate the limit");
    assert_eq!(ok, 3 * 20, "2xx over three full windows, both gateways together");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_means_local_counting_without_errors_and_recovery_when_it_returns() {
    let mut redis = Redis::start();
    let cfg = "{api_limit: 4, period: 1, unit: hour, algorithm: counter}";
    let (a, b) = (cluster_gateway(&redis, cfg), cluster_gateway(&redis, cfg));
    let c = HttpClient::default();
    // Shared in Redis: 2 + 2, then both gateways refuse.
    assert_eq!(statuses(&c, &a.url("/a"), &[], 2).await, [200, 200]);
    assert_eq!(statuses(&c, &b.url("/a"), &[], 3).await, [200, 200, 429]);

    redis.stop();
    // Each node now counts alone (its local counters are fresh); no request fails or stalls.
    for gw in [&a, &b] {
        let started = std::time::Instant::now();
        assert_eq!(statuses(&c, &gw.url("/a"), &[], 5).await, ok_then_429(4, 5));
        assert!(started.elapsed() < Duration::from_millis(1000), "{:?}", started.elapsed());
        gw.expect_log("redis unavailable: counting on this node").await;
    }

    redis.restart();
    // Redis is asked again a second after the failure; it starts empty.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(statuses(&c, &a.url("/a"), &[], 2).await, [200, 200]);
    assert_eq!(statuses(&c, &b.url("/a"), &[], 3).await, [200, 200, 429]);
    a.expect_log("redis answers again").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traditional_request_throttling_is_the_same_machinery_with_a_simpler_config() {
    let gw = Gateway::start(&format!(
        "plugins: {{inspector: {{path: '{}'}}}}\ngroups:\n  - id: g\n    apis:\n      - {{id: a, path: /a, backend: {{mock: {{}}}}, policies: [{{plugin: inspector}}, {{plugin: request-throttling, config: {{api_limit: 3, user_limit: 1, period: 1, unit: hour, algorithm: local}}}}]}}\n",
        fixture("inspector").display()
    ));
    let c = HttpClient::default();
    assert_eq!(statuses(&c, &gw.url("/a"), &[("x-user", "alice")], 2).await, [200, 429]);
    assert_eq!(statuses(&c, &gw.url("/a"), &[], 3).await, [200, 200, 429]);
    let (ok, out) = validate(&one_binding("request-throttling", "{api_limit: 3, rules: []}"));
    assert!(!ok && out.contains("unknown field `rules`"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_quota_counts_each_app_across_the_apis_of_the_policy() {
    let gw = Gateway::start(&format!(
        "plugins: {{inspector: {{path: '{}'}}}}\npolicies:\n  quota: {{plugin: credential-quota, config: {{limit: 2, unit: day, algorithm: local}}}}\ngroups:\n  - id: g\n    apis:\n      - {{id: a, path: /a, backend: {{mock: {{}}}}, policies: [{{plugin: inspector}}, {{policy: quota}}]}}\n      - {{id: b, path: /b, backend: {{mock: {{}}}}, policies: [{{plugin: inspector}}, {{policy: quota}}]}}\n",
        fixture("inspector").display()
    ));
    let c = HttpClient::default();
    let app1 = [("x-app", "app-1")];
    assert_eq!(c.get(&gw.url("/a"), &app1).await.status, 200);
    assert_eq!(c.get(&gw.url("/b"), &app1).await.status, 200);
    let r = c.get(&gw.url("/a"), &app1).await;
    assert_eq!((r.status, r.error_code().as_str()), (429, "APIG.0310"));
    assert!(r.header("retry-after").is_some());
    assert_eq!(statuses(&c, &gw.url("/b"), &[("x-app", "app-2")], 3).await, [200, 200, 429]);
    // No credential, no quota.
    assert_eq!(statuses(&c, &gw.url("/a"), &[], 4).await, [200; 4]);
    let (ok, out) = validate(&one_binding("credential-quota", "{limit: 5, unit: second}"));
    assert!(
        !ok && out.contains("policies[0] (credential-quota)") && out.contains("unknown variant `second`"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_on_a_slow_redis_does_not_count_against_the_plugins_cpu_deadline() {
    // A "Redis" that accepts connections and never answers: every check waits the whole
    // timeout (300 ms), six times the plugin's CPU deadline (50 ms), then counts locally.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    std::thread::spawn(move || {
        let held: Vec<_> = silent.incoming().collect();
        drop(held);
    });
    let gw = Gateway::start_whole(&format!(
        "{}groups:\n  - id: g\n    apis:\n      - {{id: a, path: /a, backend: {{mock: {{body: ok}}}}, policies: [{{plugin: throttling, config: {{api_limit: 2, unit: hour, algorithm: counter}}, limits: {{cpu_ms: 50}}}}]}}\n",
        config_header_with(&format!("redis: {{url: 'redis://{addr}', timeout_ms: 300}}"))
    ));
    let c = HttpClient::default();
    let started = std::time::Instant::now();
    let r = c.get(&gw.url("/a"), &[]).await;
    assert_eq!((r.status, &r.body[..]), (200, &b"ok"[..]), "{:?}", String::from_utf8_lossy(&r.body));
    assert!(started.elapsed() >= Duration::from_millis(300), "Redis was not waited for");
    gw.expect_log("redis unavailable: counting on this node").await;
    // Counted locally from then on (Redis is left alone for a second).
    assert_eq!(statuses(&c, &gw.url("/a"), &[], 2).await, [200, 429]);
}

//! Config validation, hot reload and graceful shutdown.

mod common;
use common::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn api(id: &str, body: &str) -> String {
    format!(
        "groups:\n  - id: g\n    apis:\n      - id: {id}\n        path: /hello\n        backend: {{mock: {{body: {body}}}}}\n        policies:\n          - plugin: response-headers\n            config: {{response_headers: [{{name: x-version, value: {body}, action: override}}]}}\n"
    )
}

#[test]
fn validate_accepts_a_good_config_and_names_the_place_of_each_error() {
    let (ok, out) = validate(&api("a", "v1"));
    assert!(ok, "{out}");
    assert!(out.contains("FILE: OK"), "{out}");
    // A backend path parameter a mapping sets is known.
    let mapped = "groups:\n  - id: g\n    apis:\n      - {id: a, path: '/users/{id}', backend: {http: {url: 'http://127.0.0.1:9', path: '/v2/users/{user}'}}, mapping: [{to: {in: path, name: user}, from: {in: path, name: id}}]}\n";
    let (ok, out) = validate(mapped);
    assert!(ok, "{out}");

    let trap = fixture("trap").display().to_string();
    let cases = [
        (
            "groups:\n  - id: g\n    apis:\n      - {id: a, path: /x, backend: {mock: {}}, colour: red}\n",
            "FILE: group `g` > api `a`: unknown field `colour`",
        ),
        (
            "groups:\n  - id: g\n    apis:\n      - {id: a, path: /x, backend: {http: {url: 'ftp://x'}}}\n",
            "FILE: group `g` > api `a` > backend.http.url",
        ),
        (
            "groups:\n  - id: g\n    apis:\n      - {id: a, path: '/x/{id}/{x+}/y', backend: {mock: {}}}\n",
            "FILE: group `g` > api `a` > path: `/x/{id}/{x+}/y`: {name+} must be the last segment",
        ),
        (
            "groups:\n  - id: g\n    apis:\n      - {id: a, path: /x, backend: {mock: {}}}\n      - {id: b, path: /x, backend: {mock: {}}}\n",
            "FILE: group `g` > api `b` > path: `/x` with method ANY is already routed",
        ),
        (
            "groups:\n  - id: g\n    apis:\n      - {id: a, path: '/users/{id}', backend: {http: {url: 'http://127.0.0.1:9', path: '/v2/users/{user_id}'}}}\n",
            "FILE: group `g` > api `a` > backend.http.path: `/v2/users/{user_id}` names {user_id}, which the API's path `/users/{id}` does not capture and no mapping sets",
        ),
        (
            "plugins: {mine: {path: /nonexistent/mine.wasm}}\ngroups:\n  - id: g\n    apis:\n      - {id: a, path: /x, backend: {mock: {}}, policies: [{plugin: mine}]}\n",
            "FILE: group `g` > api `a` > policies[0] (mine): cannot read plugin /nonexistent/mine.wasm",
        ),
        (
            &format!(
                "plugins: {{trap: {{path: '{trap}'}}}}\ngroups:\n  - id: g\n    apis:\n      - {{id: a, path: /x, backend: {{mock: {{}}}}, policies: [{{plugin: trap, config: {{reject: true}}}}]}}\n"
            ),
            "FILE: group `g` > api `a` > policies[0] (trap): config.reject: this fixture refuses reject=true",
        ),
    ];
    for (yaml, expected) in cases {
        let (ok, out) = validate(yaml);
        assert!(!ok, "accepted:\n{yaml}");
        assert!(out.contains(expected), "expected `{expected}` in:\n{out}");
        assert!(!out.to_lowercase().contains("backtrace"), "an error with a backtrace:\n{out}");
    }
}

#[test]
fn a_file_that_is_not_a_component_is_rejected_at_load() {
    let dir = temp_dir();
    let fake = dir.join("fake.wasm");
    std::fs::write(&fake, b"not wasm at all").unwrap();
    let (ok, out) = validate(&format!(
        "plugins: {{fake: {{path: '{}'}}}}\ngroups:\n  - id: g\n    apis:\n      - {{id: a, path: /x, backend: {{mock: {{}}}}, policies: [{{plugin: fake}}]}}\n",
        fake.display()
    ));
    assert!(!ok);
    assert!(out.contains("policies[0] (fake)") && out.contains("is not a valid plugin component"), "{out}");
}

#[test]
fn the_gateway_refuses_to_start_on_an_invalid_config() {
    let err = Gateway::try_start(
        "groups:\n  - id: g\n    apis:\n      - {id: a, path: nope, backend: {mock: {}}}\n",
    )
    .err()
    .expect("started");
    assert!(err.contains("group `g` > api `a` > path: `nope` must start with /"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_change_reloads_and_a_bad_change_keeps_the_old_config() {
    let gw = Gateway::start(&api("a", "v1"));
    let c = HttpClient::default();
    assert_eq!(c.get(&gw.url("/hello"), &[]).await.body, "v1");

    gw.rewrite_config(&api("a", "v2"));
    wait_for_body(&c, &gw.url("/hello"), "v2").await;
    assert_eq!(c.get(&gw.url("/hello"), &[]).await.header("x-version"), Some("v2"));

    // A broken plugin config is refused whole; v2 keeps serving.
    gw.rewrite_config(&api("a", "v3").replace("action: override", "action: explode"));
    gw.expect_log("config reload rejected").await;
    gw.expect_log("unknown variant `explode`").await;
    let r = c.get(&gw.url("/hello"), &[]).await;
    assert_eq!((r.status, &r.body[..], r.header("x-version")), (200, &b"v2"[..], Some("v2")));

    // A truncated file (`: > gateway.yaml`) is not a config with no APIs.
    std::fs::write(&gw.config, "").unwrap();
    gw.expect_log("the document is empty").await;
    assert_eq!(c.get(&gw.url("/hello"), &[]).await.body, "v2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads() {
    let gw = Gateway::start(&api("a", "v1"));
    let c = HttpClient::default();
    // Write without changing the file's name in its folder, then signal.
    std::fs::write(&gw.config, format!("{}{}", config_header(), api("a", "v9"))).unwrap();
    gw.signal("HUP");
    wait_for_body(&c, &gw.url("/hello"), "v9").await;
}

async fn wait_for_body(c: &HttpClient, url: &str, body: &str) {
    let started = Instant::now();
    while c.get(url, &[]).await.body != body {
        assert!(started.elapsed() < Duration::from_secs(10), "never saw {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_concurrent_load_fails_no_request() {
    let up = Upstream::start().await;
    let cfg = |v: &str| {
        format!(
            "groups:\n  - id: g\n    apis:\n      - id: a\n        path: /load\n        match: prefix\n        backend: {{http: {{url: '{}'}}}}\n        policies:\n          - plugin: cors\n          - plugin: response-headers\n            config: {{response_headers: [{{name: x-version, value: '{v}', action: override}}]}}\n",
            up.url()
        )
    };
    let gw = Gateway::start(&cfg("0"));
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (stop, done, failed, url) = (stop.clone(), done.clone(), failed.clone(), gw.url("/load/x"));
        clients.push(tokio::spawn(async move {
            let c = HttpClient::default();
            let mut versions = std::collections::BTreeSet::new();
            while !stop.load(Ordering::Relaxed) {
                let r = c.get(&url, &[("origin", "https://x.example")]).await;
                if r.status == 200 && r.header("access-control-allow-origin") == Some("*") {
                    done.fetch_add(1, Ordering::Relaxed);
                    versions.insert(r.header("x-version").unwrap_or("").to_string());
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            versions
        }));
    }
    for v in 1..=5 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        gw.rewrite_config(&cfg(&v.to_string()));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut seen = std::collections::BTreeSet::new();
    for c in clients {
        seen.extend(c.await.unwrap());
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert!(done.load(Ordering::Relaxed) > 100, "only {} requests", done.load(Ordering::Relaxed));
    assert!(seen.contains("0") && seen.contains("5"), "versions seen: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits() {
    let up = Upstream::start().await;
    let mut gw = Gateway::start(&format!(
        "groups:\n  - id: g\n    apis:\n      - {{id: slow, path: /slow, match: prefix, backend: {{http: {{url: '{}'}}}}}}\n",
        up.url()
    ));
    let url = gw.url("/slow/700");
    let in_flight = tokio::spawn(async move { HttpClient::default().get(&url, &[]).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    gw.signal("TERM");
    let r = in_flight.await.unwrap();
    assert_eq!(r.status, 200, "the in-flight request was cut off");
    assert!(gw.wait().success());
    // The listener is closed once draining starts.
    assert!(tokio::net::TcpStream::connect(gw.addr).await.is_err());
}

#[test]
fn compiled_plugins_are_cached_on_disk_and_reused() {
    let dir = temp_dir();
    let cache = dir.join("cache");
    let file = dir.join("gateway.yaml");
    let yaml = format!("gateway: {{plugin_cache_dir: '{}'}}\n{}", cache.display(), one_binding("cors", "{}"));
    std::fs::write(&file, yaml).unwrap();
    let run = || {
        let out = wasmgate().args(["validate", "-c"]).arg(&file).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    run();
    let entries: Vec<_> = std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let name = entries[0].file_name().unwrap().to_str().unwrap().to_string();
    // <sha-256 of the component>-<engine compatibility hash>.cwasm
    let (hash, rest) = name.split_once('-').unwrap();
    assert!(hash.len() == 64 && rest.len() == 16 + ".cwasm".len() && rest.ends_with(".cwasm"), "{name}");
    let written = std::fs::metadata(&entries[0]).unwrap().modified().unwrap();
    run();
    assert_eq!(
        std::fs::metadata(&entries[0]).unwrap().modified().unwrap(),
        written,
        "recompiled instead of reusing"
    );
}

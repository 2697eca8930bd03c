//! Micro benchmarks: a policy's cost per phase call on a warm instance and what a fresh
//! instance would cost instead, config validation per binding, and router lookup among
//! 10,000 routes. `cargo bench -p wasmgate-bench` (after scripts/build-plugins).

mod common;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use std::hint::black_box;
use std::time::Duration;
use wasmgate_bench::binding;
use wasmgate_proxy::policy::{BackendOutcome, Call, LogView, Policy, RequestView, ResponseView};
use wasmgate_runtime::PluginRuntime;

/// The outcome of a call to a plugin that never waits (all of these).
fn ready<T: Unpin>(call: Call<'_, T>) -> T {
    call.now_or_never().expect("synchronous plugins finish at once").expect("the call succeeds")
}

fn bench(c: &mut Criterion) {
    let runtime = PluginRuntime::new(None).unwrap();
    assert_eq!(wasmgate_bench::bindings(&runtime, "cors", "{}", 2).len(), 2);
    let cors = binding(
        &runtime,
        "cors",
        r#"{"allow_origin":["https://app.example.com"],"allow_credentials":true,"expose_headers":["x-a"]}"#,
    );
    let inspector = binding(&runtime, "fixture:inspector", "{}");
    let throttling = binding(
        &runtime,
        "throttling",
        r#"{"api_limit":1000000000,"ip_limit":1000000000,"period":1,"unit":"second","algorithm":"local"}"#,
    );

    let sample = wasmgate_bench::SampleRequest::new(&[
        ("host", "api.example.com"),
        ("user-agent", "bench/1.0"),
        ("accept", "*/*"),
        ("origin", "https://app.example.com"),
    ]);
    let request = sample.view();
    let req_headers = &sample.headers;
    let mut resp_headers = HeaderMap::new();
    for (n, v) in [("content-type", "application/json"), ("server", "upstream"), ("content-length", "1024")] {
        resp_headers.insert(n, HeaderValue::from_static(v));
    }
    let response = ResponseView {
        status: StatusCode::OK,
        headers: &resp_headers,
        outcome: BackendOutcome::Responded,
        backend_latency: Duration::from_micros(300),
        body: None,
    };

    let mut g = c.benchmark_group("warm call");
    g.bench_function("cors on_request, actual request", |b| {
        b.iter(|| black_box(ready(cors.on_request(black_box(&request)))))
    });
    // The same call with the caches as the rest of a request leaves them.
    let mut cold = common::ColdCaches::new();
    g.bench_function("cors on_request, actual request, cold", |b| {
        cold.time(b, || ready(cors.on_request(black_box(&request))))
    });
    let preflight_headers = {
        let mut h = req_headers.clone();
        h.insert("access-control-request-method", HeaderValue::from_static("GET"));
        h
    };
    let preflight = RequestView { method: &Method::OPTIONS, headers: &preflight_headers, ..request };
    g.bench_function("cors on_request, preflight", |b| {
        b.iter(|| black_box(ready(cors.on_request(black_box(&preflight)))))
    });
    g.bench_function("throttling on_request, API + IP limits, local counters", |b| {
        b.iter(|| black_box(ready(throttling.on_request(black_box(&request)))))
    });
    // AK/SK: a request signed now with a known credential, verified by the app-auth plugin.
    {
        use wasmgate_runtime::capabilities::credentials::{App, CredentialStore};
        let (key, secret) = ("bench-key", "bench-secret-0123456789abcdef");
        let mut store = CredentialStore::default();
        let app =
            App { id: "bench-app".into(), secret: secret.into(), apis: vec!["api".into()], groups: vec![] };
        store.insert(key.into(), None, app);
        runtime.capabilities().credentials.store(std::sync::Arc::new(store));
        let app_auth = binding(&runtime, "app-auth", "{}");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        use wasmgate_apig_signature::{self as sig, Native};
        let date = sig::format_sdk_date(now);
        let signed = ["host", "x-sdk-date"];
        let canonical = sig::canonical_request(
            "GET",
            "/users/42",
            "",
            &signed,
            |n| if n == "host" { Some("api.example.com") } else { Some(date.as_str()) },
            &sig::sha256_hex(&Native, b""),
        )
        .unwrap();
        let signature = sig::sign(&Native, secret, &sig::string_to_sign(&Native, &date, &canonical));
        let mut h = req_headers.clone();
        h.insert("x-sdk-date", HeaderValue::from_str(&date).unwrap());
        h.insert(
            "authorization",
            HeaderValue::from_str(&sig::authorization(key, &signed, &signature)).unwrap(),
        );
        let signed_request = RequestView { headers: &h, body: Some(b""), ..request };
        let action = ready(app_auth.on_request(&signed_request));
        assert!(
            matches!(action, wasmgate_proxy::policy::RequestAction::Continue(_)),
            "the signature must verify"
        );
        g.bench_function("app-auth on_request, AK/SK signature verified", |b| {
            b.iter(|| black_box(ready(app_auth.on_request(black_box(&signed_request)))))
        });
    }
    // The built-ins need no response or log phase; the inspector fixture has both.
    g.bench_function("inspector on_response", |b| {
        b.iter(|| black_box(ready(inspector.on_response(&request, &response))))
    });
    let log = LogView {
        request: RequestView { ..request },
        response: ResponseView { ..response },
        start_time: std::time::SystemTime::now(),
        total_latency: Duration::from_micros(500),
        request_size: 0,
        response_size: 1024,
        request_body_truncated: false,
        response_body_truncated: false,
    };
    g.bench_function("inspector on_log", |b| b.iter(|| ready(inspector.on_log(black_box(&log)))));
    // Builds the JSON message and queues it; no broker listens, so the producer's bounded
    // buffer fills and then drops the oldest, which is the steady state measured here.
    let kafka = binding(
        &runtime,
        "kafka-log",
        r#"{"brokers":["127.0.0.1:9"],"topic":"bench","request_headers":["user-agent"]}"#,
    );
    g.bench_function("kafka-log on_log (message built and queued)", |b| {
        b.iter(|| ready(kafka.on_log(black_box(&log))))
    });
    let breaker = binding(
        &runtime,
        "circuit-breaker",
        r#"{"breaker":{"type":"condition","status_codes":[500,502,503],"threshold":1000000}}"#,
    );
    g.bench_function("circuit-breaker on_request + on_response, closed", |b| {
        b.iter(|| {
            black_box(ready(breaker.on_request(black_box(&request))));
            black_box(ready(breaker.on_response(black_box(&request), black_box(&response))))
        })
    });
    // The authorizer imports outbound HTTP, so it is called on the async path; a cache hit
    // never waits. The fake answers the one miss without the network.
    runtime
        .capabilities()
        .outbound
        .fake(Box::new(|_| {
            Ok(http::Response::new(bytes::Bytes::from_static(
                br#"{"status":"allow","context":{"user":"u1"}}"#,
            )))
        }))
        .unwrap();
    let authorizer = binding(
        &runtime,
        "authorizer",
        r#"{"url":"http://auth.example/check","simple_authentication":true,"identities":{"headers":["origin"]},"cache_seconds":3600}"#,
    );
    g.bench_function("authorizer on_request, cache hit", |b| {
        b.iter(|| black_box(ready(authorizer.on_request(black_box(&request)))))
    });
    // The rest of the built-ins with a phase (response-headers declares its headers at load
    // and is never called).
    let access = binding(&runtime, "access-control", r#"{"ip":{"allow":["10.0.0.0/8","127.0.0.0/8"]}}"#);
    g.bench_function("access-control on_request, IP allowed", |b| {
        b.iter(|| black_box(ready(access.on_request(black_box(&request)))))
    });
    let app = wasmgate_proxy::policy::Identity { app_id: Some("bench-app".into()), user: Some("u1".into()) };
    let as_app = RequestView { identity: &app, ..request };
    let per_user = binding(
        &runtime,
        "request-throttling",
        r#"{"api_limit":1000000000,"user_limit":1000000000,"period":1,"unit":"second","algorithm":"local"}"#,
    );
    g.bench_function("request-throttling on_request, API + user limits, local counters", |b| {
        b.iter(|| black_box(ready(per_user.on_request(black_box(&as_app)))))
    });
    let quota =
        binding(&runtime, "credential-quota", r#"{"limit":1000000000,"unit":"day","algorithm":"local"}"#);
    g.bench_function("credential-quota on_request, app quota, local counter", |b| {
        b.iter(|| black_box(ready(quota.on_request(black_box(&as_app)))))
    });
    g.finish();

    let mut g = c.benchmark_group("fresh instance");
    g.bench_function("cors instantiate", |b| b.iter(|| cors.instantiate_fresh().unwrap()));
    g.finish();

    // Validation at load: the plugin parses and checks each binding's config. 100 bindings
    // per iteration on one new instance, so divide by 100 for one binding.
    let mut g = c.benchmark_group("config validation");
    g.bench_function("100 cors bindings", |b| {
        b.iter(|| {
            let config = r#"{"allow_origin":["https://a.example","https://b.example"],"allow_methods":"GET,POST","max_age":600}"#;
            let bindings = wasmgate_bench::bindings(&runtime, "cors", config, 100);
            assert_eq!(bindings.len(), 100);
        })
    });
    g.finish();

    let router = wasmgate_bench::router_with_routes(10_000);
    let mut g = c.benchmark_group("router, 10000 routes");
    let cases = [
        ("static", "/svc40/items", Some(40)),
        ("template", "/svc4241/items/123", Some(4241)),
        ("catch-all", "/svc9998/files/a/b/c.txt", Some(9998)),
        ("prefix", "/svc9999/anything/deeper", Some(9999)),
        ("miss", "/nowhere/at/all", None),
    ];
    for (name, path, expected) in cases {
        let found = router.find("any.example", &Method::GET, path).map(|m| *m.value);
        assert_eq!(found, expected, "{path}");
        g.bench_function(name, |b| {
            b.iter(|| black_box(router.find("any.example", &Method::GET, black_box(path))))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = bench
}
criterion_main!(benches);

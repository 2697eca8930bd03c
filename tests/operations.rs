//! Operations end to end: Prometheus metrics scraped and parsed (values move as requests
//! flow; labels bounded), and the access log's lines parsed, in JSON and in text.

mod common;

use common::{Gateway, HttpClient, Upstream, config_header_with, sample, scrape};
use std::time::{Duration, Instant};

fn config(upstream: &Upstream, extra_gateway: &str) -> String {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let kafka = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    format!(
        "{}channels:\n  pool:\n    members: [{{address: '{}'}}, {{address: '{dead}'}}]\n    health_check: {{interval_ms: 100, unhealthy_threshold: 1}}\ngroups:\n- id: g\n  apis:\n  - {{id: a, path: /a, backend: {{http: {{url: 'http://pool'}}}}}}\n  - {{id: t, path: /t, backend: {{mock: {{}}}}, policies: [{{plugin: throttling, config: {{api_limit: 1, unit: hour, algorithm: local}}}}]}}\n  - {{id: k, path: /k, backend: {{mock: {{}}}}, policies: [{{plugin: kafka-log, config: {{brokers: ['{kafka}'], topic: calls}}}}]}}\n  - {{id: cb, path: /cb, backend: {{http: {{url: 'http://{up}', path: /status/500}}}}, policies: [{{plugin: circuit-breaker, config: {{breaker: {{type: condition, status_codes: [500], threshold: 2}}}}}}]}}\n",
        config_header_with(&format!("metrics_listen: '127.0.0.1:0'{extra_gateway}")),
        upstream.addr,
        up = upstream.addr,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_scraped_and_move_as_requests_flow() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start_whole(&config(&upstream, ""));
    let c = HttpClient::default();
    // Wait for the health check to take the dead member out, so every /a call answers 200.
    let since = Instant::now();
    while sample(
        &scrape(&gw).await,
        &format!("wasmgate_upstream_member_up{{channel=\"pool\",member=\"{}\"}}", upstream.addr),
    ) != 1.0
        || scrape(&gw)
            .await
            .iter()
            .filter(|(s, v)| s.starts_with("wasmgate_upstream_member_up") && **v == 0.0)
            .count()
            != 1
    {
        assert!(since.elapsed() < Duration::from_secs(3), "the dead member is not reported down");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = scrape(&gw).await;
    for _ in 0..5 {
        assert_eq!(c.get(&gw.url("/a"), &[]).await.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(c.get(&gw.url("/nowhere/at/all?x=1"), &[]).await.status, 404);
    }
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(c.get(&gw.url("/t"), &[]).await.status);
    }
    assert_eq!(statuses, [200, 429, 429]);
    for _ in 0..4 {
        c.get(&gw.url("/k"), &[]).await;
    }
    let after = scrape(&gw).await;
    let delta = |series: &str| sample(&after, series) - sample(&before, series);

    // By exact status and method (bounded: the standard methods, statuses 100-599).
    assert_eq!(
        delta("wasmgate_requests_total{api=\"a\",code=\"200\",environment=\"RELEASE\",method=\"GET\"}"),
        5.0
    );
    assert_eq!(delta("wasmgate_request_duration_seconds_count{api=\"a\",environment=\"RELEASE\"}"), 5.0);
    assert_eq!(delta("wasmgate_backend_duration_seconds_count{api=\"a\",environment=\"RELEASE\"}"), 5.0);
    // Unmatched requests count under an empty API label: raw paths never become labels.
    assert_eq!(delta("wasmgate_requests_total{api=\"\",code=\"404\",environment=\"\",method=\"GET\"}"), 2.0);
    assert!(after.keys().all(|s| !s.contains("nowhere")));
    assert_eq!(
        delta("wasmgate_requests_total{api=\"t\",code=\"429\",environment=\"RELEASE\",method=\"GET\"}"),
        2.0
    );
    assert_eq!(
        delta("wasmgate_policy_rejections_total{code=\"APIG.0308\",plugin=\"throttling\",status=\"429\"}"),
        2.0
    );
    // The process and the build.
    assert!(sample(&after, "process_resident_memory_bytes") > 1e6);
    let build = after.keys().find(|k| k.starts_with("wasmgate_build_info{")).expect("wasmgate_build_info");
    let version = format!("version=\"{}\"", env!("CARGO_PKG_VERSION"));
    assert!(build.contains(&version) && build.contains("contract=\"wasmgate:plugin@"), "{build}");
    assert_eq!(after[build], 1.0);
    assert!(sample(&after, "wasmgate_config_loaded_timestamp_seconds") > 1.7e9);
    assert_eq!(delta("wasmgate_plugin_calls_total{phase=\"request\",plugin=\"throttling\"}"), 3.0);
    assert_eq!(
        delta("wasmgate_plugin_call_duration_seconds_count{phase=\"request\",plugin=\"throttling\"}"),
        3.0
    );
    assert_eq!(delta("wasmgate_plugin_errors_total{phase=\"request\",plugin=\"throttling\"}"), 0.0);
    // The Kafka sink's broker is down: the messages wait in its buffer.
    let brokers: Vec<&String> =
        after.keys().filter(|s| s.starts_with("wasmgate_log_sink_buffered_messages")).collect();
    assert_eq!(brokers.len(), 1, "{brokers:?}");
    assert!(after[brokers[0]] >= 1.0, "{brokers:?}: {}", after[brokers[0]]);
    // A circuit breaker reports its state: open after two failures.
    for _ in 0..3 {
        c.get(&gw.url("/cb"), &[]).await;
    }
    let state =
        "wasmgate_plugin_gauge{api=\"cb\",name=\"circuit_breaker_0_state\",plugin=\"circuit-breaker\"}";
    assert_eq!(sample(&scrape(&gw).await, state), 1.0, "{state}");
    // The health of each member.
    let up = |member: String| {
        sample(&after, &format!("wasmgate_upstream_member_up{{channel=\"pool\",member=\"{member}\"}}"))
    };
    assert_eq!(up(upstream.addr.to_string()), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_has_one_line_per_request_in_json_or_text() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start_whole(&config(&upstream, ", access_log: {enabled: true}"));
    let c = HttpClient::default();
    let r = c.get(&gw.url("/t?q=1"), &[("user-agent", "probe/1.0")]).await;
    let rid = r.header("x-request-id").unwrap().to_string();
    let second = c.get(&gw.url("/t"), &[]).await;
    gw.expect_log(&rid).await;
    gw.expect_log(second.header("x-request-id").unwrap()).await;
    let lines: Vec<serde_json::Value> = gw
        .log()
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let line = lines.iter().find(|l| l["request_id"] == rid.as_str()).expect("a line for the request");
    assert_eq!(line["target"], "access");
    assert_eq!(line["level"], "INFO");
    for (field, value) in [
        ("method", "GET"),
        ("path", "/t"),
        ("query", "q=1"),
        ("api", "t"),
        ("group", "g"),
        ("environment", "RELEASE"),
        ("client_ip", "127.0.0.1"),
        ("user_agent", "probe/1.0"),
        ("error_code", ""),
    ] {
        assert_eq!(line[field], value, "{field} in {line}");
    }
    assert_eq!(line["status"], 200);
    assert!(line["latency_ms"].as_f64().unwrap() > 0.0);
    // The second call was throttled: its line names the code.
    let throttled = lines.iter().find(|l| l["status"] == 429).expect("the throttled call's line");
    assert_eq!(throttled["error_code"], "APIG.0308");
    // Only the access lines are JSON; the gateway's own log stays text.
    assert_eq!(lines.iter().filter(|l| l["target"] == "access").count(), lines.len());

    // Text, after a reload.
    gw.rewrite_config_whole(&config(&upstream, ", access_log: {enabled: true, format: text, level: warn}"));
    gw.expect_log("config reloaded").await;
    let r = c.get(&gw.url("/t"), &[]).await;
    let rid = r.header("x-request-id").unwrap().to_string();
    gw.expect_log(&rid).await;
    let log = gw.log();
    let line = log.lines().find(|l| l.contains(&rid)).unwrap();
    assert!(line.contains("WARN") && line.contains("access:") && line.contains("status=429"), "{line}");
}

/// What the upstream saw of a GET /a (the dead member may fail a first request or two,
/// until the probe marks it).
async fn answered(c: &HttpClient, gw: &Gateway, headers: &[(&str, &str)]) -> serde_json::Value {
    for _ in 0..10 {
        let r = c.get(&gw.url("/a"), headers).await;
        if r.status == 200 {
            return r.json();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("/a never answered 200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traceparent_is_propagated_to_the_backend_or_created() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start_whole(&config(&upstream, ", access_log: {enabled: true}"));
    let c = HttpClient::default();
    let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let seen = answered(&c, &gw, &[("traceparent", caller), ("tracestate", "vendor=1")]).await;
    let sent = seen["headers"]["traceparent"].as_str().unwrap();
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!((parts[0], parts[1], parts[3]), ("00", "4bf92f3577b34da6a3ce929d0e0e4736", "01"), "{sent}");
    assert!(parts[2].len() == 16 && parts[2] != "00f067aa0ba902b7", "the gateway's own span: {sent}");
    assert_eq!(seen["headers"]["tracestate"], "vendor=1");
    gw.expect_log("4bf92f3577b34da6a3ce929d0e0e4736").await;

    // Without one, the gateway starts a trace.
    let seen = answered(&c, &gw, &[]).await;
    let sent = seen["headers"]["traceparent"].as_str().unwrap();
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!(
        (parts.len(), parts[0], parts[1].len(), parts[2].len(), parts[3]),
        (4, "00", 32, 16, "01"),
        "{sent}"
    );
    assert_ne!(parts[1], "0".repeat(32));
    gw.expect_log(&format!("\"trace_id\":\"{}\"", parts[1])).await;
}

/// Reloads are counted by result, and the time the served config was loaded moves only when
/// one is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_are_counted_by_result() {
    let header = config_header_with("metrics_listen: '127.0.0.1:0'");
    let api = |body: &str| {
        format!(
            "{header}groups:\n  - id: g\n    apis:\n      - {{id: a, path: /a, backend: {{mock: {{body: {body}}}}}}}\n"
        )
    };
    let gw = Gateway::start_whole(&api("one"));
    let c = HttpClient::default();
    let reloads = |samples: &std::collections::HashMap<String, f64>, result: &str| {
        sample(samples, &format!("wasmgate_config_reloads_total{{result=\"{result}\"}}"))
    };
    let before = scrape(&gw).await;
    let loaded = sample(&before, "wasmgate_config_loaded_timestamp_seconds");

    gw.rewrite_config_whole(&format!("{header}groups: [{{id: g, apis: [{{id: a, colour: red}}]}}]\n"));
    gw.expect_log("config reload rejected").await;
    let after = scrape(&gw).await;
    assert_eq!((reloads(&after, "rejected"), reloads(&after, "applied")), (1.0, 0.0));
    assert_eq!(sample(&after, "wasmgate_config_loaded_timestamp_seconds"), loaded);

    tokio::time::sleep(Duration::from_millis(1100)).await; // a new second for the timestamp
    gw.rewrite_config_whole(&api("two"));
    let since = Instant::now();
    while c.get(&gw.url("/a"), &[]).await.body != "two" {
        assert!(since.elapsed() < Duration::from_secs(5), "the good config was not applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = scrape(&gw).await;
    assert_eq!((reloads(&after, "rejected"), reloads(&after, "applied")), (1.0, 1.0));
    assert!(sample(&after, "wasmgate_config_loaded_timestamp_seconds") > loaded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_be_turned_off() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start_whole(&config(&upstream, ", metrics_enabled: false"));
    let c = HttpClient::default();
    for _ in 0..3 {
        c.get(&gw.url("/t"), &[]).await;
    }
    let samples = scrape(&gw).await;
    let recorded: Vec<&String> =
        samples.keys().filter(|s| s.contains("api=\"t\"") || s.contains("plugin=\"throttling\"")).collect();
    assert!(recorded.is_empty(), "{recorded:?}");
}

/// An OTLP/HTTP collector on loopback: the JSON bodies POSTed to it.
async fn collector() -> (std::net::SocketAddr, tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>) {
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let tx = tx.clone();
                    async move {
                        assert_eq!(req.uri().path(), "/v1/traces");
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let _ = tx.send(serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null));
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from_static(b"{}"),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp_in_the_callers_trace() {
    let upstream = Upstream::start().await;
    let (addr, mut bodies) = collector().await;
    let otlp = format!(", otlp: {{endpoint: 'http://{addr}/v1/traces', flush_ms: 100}}");
    let gw = Gateway::start_whole(&config(&upstream, &otlp));
    let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let seen = answered(&HttpClient::default(), &gw, &[("traceparent", caller)]).await;
    let told = seen["headers"]["traceparent"].as_str().unwrap().split('-').nth(2).unwrap().to_string();
    let since = Instant::now();
    let span = loop {
        let body =
            tokio::time::timeout(Duration::from_secs(5), bodies.recv()).await.expect("no export").unwrap();
        let spans =
            body["resourceSpans"][0]["scopeSpans"][0]["spans"].as_array().cloned().unwrap_or_default();
        if let Some(s) = spans.into_iter().find(|s| s["spanId"] == told.as_str()) {
            break s;
        }
        assert!(since.elapsed() < Duration::from_secs(10), "the span the backend was told about never came");
    };
    assert_eq!(span["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(span["parentSpanId"], "00f067aa0ba902b7");
    assert_eq!(span["name"], "GET a");
    assert_eq!(span["kind"], 2, "a server span");
    let attributes = span["attributes"].as_array().unwrap();
    let status = attributes.iter().find(|a| a["key"] == "http.response.status_code").unwrap();
    assert_eq!(status["value"]["intValue"], "200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_stats_count_each_calls_boundary_crossings() {
    let cors = "[{plugin: cors, config: {allow_origin: ['https://app.example']}}]";
    let yaml = |stats: &str| {
        format!(
            "{}groups:\n- id: g\n  apis:\n  - {{id: c, path: /c, backend: {{mock: {{}}}}, policies: {cors}}}\n",
            config_header_with(&format!("metrics_listen: '127.0.0.1:0'{stats}"))
        )
    };
    let c = HttpClient::default();
    let origin = [("origin", "https://app.example")];
    let gw = Gateway::start_whole(&yaml(", plugin_stats: true"));
    for _ in 0..4 {
        let r = c.get(&gw.url("/c"), &origin).await;
        assert_eq!(r.header("access-control-allow-origin"), Some("https://app.example"));
    }
    let samples = scrape(&gw).await;
    let series = |name: &str, labels: &str| {
        sample(&samples, &format!("{name}{{{labels}phase=\"request\",plugin=\"cors\"}}"))
    };
    assert_eq!(series("wasmgate_plugin_counted_calls_total", ""), 4.0);
    // Per call, into the guest: the export, `realloc` for the packed input and post-return:
    // 3, however many fields and headers the binding reads (contract 0.2; 0.1 made it 6
    // with one header). CORS imports nothing: 0 into the host.
    assert_eq!(series("wasmgate_plugin_crossings_total", "direction=\"guest\",") / 4.0, 3.0);
    assert_eq!(series("wasmgate_plugin_crossings_total", "direction=\"host\","), 0.0);

    // Off by default: no hook, no series.
    let gw = Gateway::start_whole(&yaml(""));
    c.get(&gw.url("/c"), &origin).await;
    let samples = scrape(&gw).await;
    assert!(samples.keys().all(|s| !s.starts_with("wasmgate_plugin_crossings_total")), "{samples:?}");
}

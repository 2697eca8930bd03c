//! Routing, backends and the headers the proxy core adds, through real sockets.

mod common;
use common::*;
use std::time::{Duration, Instant};

fn routes(upstream: &str) -> String {
    format!(
        r#"
groups:
  - id: shop
    domains: [shop.example]
    apis:
      - {{id: shop-home, method: GET, path: /, backend: {{mock: {{body: shop}}}}}}
  - id: main
    apis:
      - {{id: me, method: GET, path: /users/me, backend: {{mock: {{body: me}}}}}}
      - id: user
        method: [GET, PUT]
        path: /users/{{id}}
        backend: {{http: {{url: "{upstream}/base", path: "/v1/people/{{id}}"}}}}
      - {{id: users-prefix, method: ANY, path: /users, match: prefix, backend: {{mock: {{body: prefix}}}}}}
      - {{id: files, method: GET, path: "/files/{{rest+}}", backend: {{http: {{url: "{upstream}"}}}}}}
      - {{id: slow, path: /slow, match: prefix, backend: {{http: {{url: "{upstream}", timeout_ms: 300}}}}}}
      - {{id: down, path: /down, backend: {{http: {{url: "http://127.0.0.1:1"}}}}}}
      - {{id: teapot, path: /tea, backend: {{mock: {{status: 418, headers: {{x-mock: yes}}, body: short and stout}}}}}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_beats_template_beats_prefix_and_params_reach_the_backend() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&routes(&up.url()));
    let c = HttpClient::default();

    assert_eq!(c.get(&gw.url("/users/me"), &[]).await.body, "me");
    let r = c.get(&gw.url("/users/42?x=1&y=2"), &[]).await;
    assert_eq!(r.status, 200);
    let echo = r.json();
    assert_eq!(echo["path"], "/base/v1/people/42");
    assert_eq!(echo["query"], "x=1&y=2");
    assert_eq!(c.get(&gw.url("/users/42/orders"), &[]).await.body, "prefix");
    assert_eq!(c.send("DELETE", &gw.url("/users"), &[], "").await.body, "prefix");

    let r = c.get(&gw.url("/files/a/b/c.txt"), &[]).await;
    assert_eq!(r.json()["path"], "/files/a/b/c.txt");

    let r = c.get(&gw.url("/tea"), &[]).await;
    assert_eq!((r.status, r.header("x-mock"), &r.body[..]), (418, Some("yes"), &b"short and stout"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_get_404_with_error_code_and_request_id() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&routes(&up.url()));
    let c = HttpClient::default();
    for (method, path) in [("GET", "/nothing"), ("POST", "/files/a"), ("GET", "/tea/x"), ("GET", "/files")] {
        let r = c.send(method, &gw.url(path), &[], "").await;
        assert_eq!(r.status, 404, "{method} {path}");
        let body = r.json();
        assert_eq!(body["error_code"], "APIG.0101");
        assert_eq!(body["request_id"].as_str(), r.header("x-request-id"));
        assert!(!body["error_msg"].as_str().unwrap().is_empty());
    }
    assert_eq!(up.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_answer_on_their_own_domains() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&routes(&up.url()));
    let c = HttpClient::default();
    assert_eq!(c.get(&gw.url("/"), &[("host", "shop.example")]).await.body, "shop");
    assert_eq!(c.get(&gw.url("/"), &[("host", "SHOP.example:8080")]).await.body, "shop");
    // The shop domain only serves the shop group; other hosts reach the default group.
    assert_eq!(c.get(&gw.url("/users/me"), &[("host", "shop.example")]).await.status, 404);
    assert_eq!(c.get(&gw.url("/"), &[("host", "other.example")]).await.status, 404);
    assert_eq!(c.get(&gw.url("/users/me"), &[("host", "other.example")]).await.body, "me");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_and_request_id_are_added_and_hop_by_hop_dropped() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&routes(&up.url()));
    let c = HttpClient::default();
    let r = c
        .get(
            &gw.url("/users/7"),
            &[
                ("host", "api.example"),
                ("x-forwarded-for", "203.0.113.9"),
                ("connection", "keep-alive, x-drop-me"),
                ("x-drop-me", "1"),
                ("te", "trailers"),
                ("x-custom", "kept"),
            ],
        )
        .await;
    let h = &r.json()["headers"];
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "api.example");
    assert_eq!(h["host"], up.addr.to_string());
    assert_eq!(h["x-custom"], "kept");
    assert!(h.get("x-drop-me").is_none() && h.get("te").is_none(), "{h}");
    let rid = r.header("x-request-id").unwrap();
    assert_eq!(h["x-request-id"], rid);
    assert_eq!(rid.len(), 32);
    // The upstream's own hop-by-hop headers do not reach the client.
    assert!(r.header("x-upstream").is_none());

    let r = c.get(&gw.url("/users/7"), &[("x-request-id", "trace-abc-123")]).await;
    assert_eq!(r.header("x-request-id"), Some("trace-abc-123"));
    assert_eq!(r.json()["headers"]["x-request-id"], "trace-abc-123");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_backend_gets_504_at_its_timeout_and_dead_backend_502() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&routes(&up.url()));
    let c = HttpClient::default();
    let started = Instant::now();
    let r = c.get(&gw.url("/slow/2000"), &[]).await;
    let took = started.elapsed();
    assert_eq!((r.status, r.error_code().as_str()), (504, "APIG.0203"));
    assert!(took >= Duration::from_millis(280) && took < Duration::from_millis(1500), "{took:?}");
    assert_eq!(c.get(&gw.url("/slow/10"), &[]).await.status, 200);

    let r = c.get(&gw.url("/down"), &[]).await;
    assert_eq!((r.status, r.error_code().as_str()), (502, "APIG.0202"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_cleartext_clients_are_served() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&routes(&up.url()));
    let c = HttpClient::h2c();
    let r = c.get(&gw.url("/users/5"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["path"], "/base/v1/people/5");
    let r = c.send("PUT", &gw.url("/users/5"), &[], "payload").await;
    assert_eq!(r.json()["body"], "payload");
    assert_eq!(c.get(&gw.url("/nope"), &[]).await.status, 404);
}

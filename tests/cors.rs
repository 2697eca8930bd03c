//! The CORS plugin: preflights answered by the gateway, actual requests decorated.

mod common;
use common::*;

const ORIGIN: &str = "https://app.example.com";

fn config(upstream: &str) -> String {
    format!(
        r#"
groups:
  - id: g
    apis:
      - id: strict
        method: [GET, POST]
        path: /strict
        backend: {{http: {{url: "{upstream}"}}}}
        policies:
          - plugin: cors
            config:
              allow_origin: ["{ORIGIN}", "https://admin.example.com:8443"]
              allow_methods: [GET, POST]
              allow_headers: [content-type, x-token]
              expose_headers: [x-total, x-page]
              max_age: 600
              allow_credentials: true
      - id: open
        method: GET
        path: /open
        backend: {{http: {{url: "{upstream}"}}}}
        policies:
          - plugin: cors
            config: {{allow_origin: "*", allow_headers: "*"}}
      - id: plain
        method: GET
        path: /plain
        backend: {{http: {{url: "{upstream}"}}}}
"#
    )
}

fn preflight<'a>(origin: &'a str, method: &'a str, headers: Option<&'a str>) -> Vec<(&'a str, &'a str)> {
    let mut h = vec![("origin", origin), ("access-control-request-method", method)];
    if let Some(list) = headers {
        h.push(("access-control-request-headers", list));
    }
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_preflight_is_answered_by_the_gateway() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(&up.url()));
    let c = HttpClient::default();
    let r = c
        .send("OPTIONS", &gw.url("/strict"), &preflight(ORIGIN, "POST", Some("Content-Type, X-Token")), "")
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert_eq!(r.header("access-control-allow-origin"), Some(ORIGIN));
    assert_eq!(r.header("access-control-allow-methods"), Some("GET, POST"));
    assert_eq!(r.header("access-control-allow-headers"), Some("content-type, x-token"));
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(r.header_all("vary"), ["Origin"]);
    assert!(r.header("x-request-id").is_some());
    assert_eq!(up.hits(), 0, "a preflight must not reach the backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_preflights_get_403_without_cors_headers() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(&up.url()));
    let c = HttpClient::default();
    let cases = [
        preflight("https://evil.example", "GET", None),
        preflight(ORIGIN, "DELETE", None),
        preflight(ORIGIN, "GET", Some("x-token, x-secret")),
    ];
    for h in cases {
        let r = c.send("OPTIONS", &gw.url("/strict"), &h, "").await;
        assert_eq!(r.status, 403, "{h:?}");
        assert!(r.header("access-control-allow-origin").is_none(), "{h:?}");
        assert!(r.header("access-control-allow-methods").is_none(), "{h:?}");
    }
    assert_eq!(up.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actual_requests_get_origin_credentials_and_exposed_headers() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(&up.url()));
    let c = HttpClient::default();

    let r = c.get(&gw.url("/strict"), &[("origin", "https://admin.example.com:8443")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some("https://admin.example.com:8443"));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(r.header("access-control-expose-headers"), Some("x-total, x-page"));
    assert_eq!(r.header_all("vary"), ["Origin"]);
    assert_eq!(r.json()["headers"]["origin"], "https://admin.example.com:8443");

    // A refused origin still reaches the backend; the browser blocks it for lack of headers.
    let r = c.get(&gw.url("/strict"), &[("origin", "https://evil.example")]).await;
    assert_eq!(r.status, 200);
    assert!(r.header("access-control-allow-origin").is_none());
    assert!(r.header("access-control-allow-credentials").is_none());

    // No Origin: not a CORS request, nothing added.
    let r = c.get(&gw.url("/strict"), &[]).await;
    assert!(r.header("access-control-allow-origin").is_none());
    assert_eq!(up.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_origin_without_credentials_answers_star_and_echoes_requested_headers() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(&up.url()));
    let c = HttpClient::default();
    let r = c.get(&gw.url("/open"), &[("origin", "https://anyone.example")]).await;
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert!(r.header("access-control-allow-credentials").is_none());

    let r = c
        .send(
            "OPTIONS",
            &gw.url("/open"),
            &preflight("https://anyone.example", "GET", Some("x-whatever")),
            "",
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(r.header("access-control-allow-headers"), Some("x-whatever"));
    assert_eq!(r.header("access-control-max-age"), Some("86400"), "default max_age");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_on_an_api_without_cors_is_not_routed() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(&up.url()));
    let c = HttpClient::default();
    let r = c.send("OPTIONS", &gw.url("/plain"), &preflight(ORIGIN, "GET", None), "").await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "APIG.0101"));
    assert_eq!(up.hits(), 0);
}

#[test]
fn bad_cors_configs_are_rejected_naming_the_field() {
    let cases = [
        ("{max_age: 86401}", "max_age"),
        ("{max_age: -1}", "max_age"),
        ("{allow_origin: [not-an-origin]}", "allow_origin[0]"),
        ("{allow_methods: [GET, FETCH]}", "allow_methods[1]"),
        ("{allow_headers: ['bad header']}", "allow_headers[0]"),
        ("{allow_credentialz: true}", "allow_credentialz"),
        ("{allow_origin: 7}", "allow_origin"),
    ];
    for (cfg, field) in cases {
        let (ok, err) = validate(&one_binding("cors", cfg));
        assert!(!ok, "{cfg} was accepted");
        assert!(err.contains("group `g` > api `a` > policies[0] (cors)"), "{cfg}: {err}");
        // The field once (not `config.x.x`), and no position in the JSON the plugin was handed.
        assert!(err.contains(&format!("config.{field}: ")), "{cfg}: expected field {field} in: {err}");
        assert!(!err.contains(" at line "), "{cfg}: {err}");
    }
}

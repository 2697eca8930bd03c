//! The HTTP response header management plugin.

mod common;
use common::*;

fn config(upstream: &str) -> String {
    format!(
        r#"
groups:
  - id: g
    apis:
      - id: managed
        path: /status/200
        backend: {{http: {{url: "{upstream}"}}}}
        policies:
          - plugin: response-headers
            config:
              response_headers:
                - {{name: Content-Type, value: text/x-managed, action: override}}
                - {{name: x-new, value: fresh, action: override}}
                - {{name: server, value: gateway, action: append}}
                - {{name: x-appended-new, value: only, action: append}}
                - {{name: x-upstream-extra, action: delete}}
                - {{name: x-skip-existing, value: ours, action: skip}}
                - {{name: x-skip-missing, value: ours, action: skip}}
                - {{name: set-cookie, value: b=2, action: add}}
      - id: other
        path: /status/201
        backend: {{http: {{url: "{upstream}"}}}}
        policies:
          - plugin: response-headers
            config:
              response_headers:
                - {{name: x-new, value: other-api, action: override}}
                - {{name: server, action: delete}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_action_applies_to_the_backend_response() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(&up.url()));
    let r = HttpClient::default().get(&gw.url("/status/200"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header_all("content-type"), ["text/x-managed"]);
    assert_eq!(r.header("x-new"), Some("fresh"));
    assert_eq!(r.header_all("server"), ["test-upstream, gateway"]);
    assert_eq!(r.header("x-appended-new"), Some("only"));
    assert_eq!(r.header("x-skip-missing"), Some("ours"));
    assert_eq!(r.header_all("set-cookie"), ["b=2"]);
    // The body is untouched.
    assert_eq!(r.json()["path"], "/status/200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_keeps_the_backend_value_delete_removes_it_and_add_keeps_both() {
    let yaml = r#"
groups:
  - id: g
    apis:
      - id: mock
        path: /m
        backend:
          mock: {headers: {x-skip-existing: backend, x-upstream-extra: gone, set-cookie: a=1}}
        policies:
          - plugin: response-headers
            config:
              response_headers:
                - {name: x-upstream-extra, action: delete}
                - {name: x-skip-existing, value: ours, action: skip}
                - {name: set-cookie, value: b=2, action: add}
"#;
    let gw = Gateway::start(yaml);
    let r = HttpClient::default().get(&gw.url("/m"), &[]).await;
    assert_eq!(r.header_all("x-skip-existing"), ["backend"]);
    assert!(r.header("x-upstream-extra").is_none());
    assert_eq!(r.header_all("set-cookie"), ["a=1", "b=2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_apis_bound_to_the_same_plugin_behave_by_their_own_config() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(&up.url()));
    let c = HttpClient::default();
    let a = c.get(&gw.url("/status/200"), &[]).await;
    let b = c.get(&gw.url("/status/201"), &[]).await;
    assert_eq!(b.status, 201);
    assert_eq!(a.header("x-new"), Some("fresh"));
    assert_eq!(b.header("x-new"), Some("other-api"));
    assert!(b.header("server").is_none());
    assert!(a.header("server").is_some());
    // Interleaved calls keep using the right config on the shared warm instances.
    for _ in 0..20 {
        assert_eq!(c.get(&gw.url("/status/201"), &[]).await.header("x-new"), Some("other-api"));
        assert_eq!(c.get(&gw.url("/status/200"), &[]).await.header("x-new"), Some("fresh"));
    }
}

#[test]
fn bad_header_configs_are_rejected_naming_the_entry() {
    let eleven: Vec<String> = (0..11).map(|i| format!("{{name: x-h{i}, value: v, action: add}}")).collect();
    let long = "v".repeat(1025);
    let cases = [
        (format!("[{}]", eleven.join(", ")), "config.response_headers: 11 headers"),
        ("[{name: content-length, value: '1', action: override}]".into(), "config.response_headers[0].name"),
        (
            "[{name: Transfer-Encoding, value: chunked, action: add}]".into(),
            "config.response_headers[0].name",
        ),
        (
            "[{name: x-a, value: v, action: add}, {name: connection, action: delete}]".into(),
            "config.response_headers[1].name",
        ),
        (format!("[{{name: x-a, value: {long}, action: add}}]"), "config.response_headers[0].value"),
        ("[{name: x-a, value: v, action: replace}]".into(), "unknown variant `replace`"),
        (
            "[{name: x-a, value: v, action: add}, {name: X-A, value: w, action: add}]".into(),
            "config.response_headers[1].name",
        ),
    ];
    for (headers, expected) in cases {
        let (ok, err) =
            validate(&one_binding("response-headers", &format!("{{response_headers: {headers}}}")));
        assert!(!ok, "{headers} was accepted");
        assert!(err.contains("api `a` > policies[0] (response-headers)"), "{err}");
        assert!(err.contains(expected), "expected `{expected}` in: {err}");
    }
}

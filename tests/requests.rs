//! Request parameters end to end: every validation rule (400 `APIG.0207` naming the
//! parameter, before any policy), defaults, the mapping onto the backend request as the
//! upstream sees it, custom error responses per group, and configuration errors.

mod common;

use common::{Gateway, HttpClient, Upstream, validate};
use serde_json::Value;

const PARAMETERS: &str = "    parameters:
      - {name: id, in: path, type: integer, min: 1}
      - {name: limit, in: query, type: integer, max: 100, default: 20}
      - {name: x-tenant, in: header, required: true, pattern: '^[a-z]+$'}
      - {name: sort, in: query, enum: [asc, desc]}
      - {name: flag, in: query, type: boolean}
      - {name: code, in: query, min: 2, max: 4}
";

fn config(upstream: &Upstream) -> String {
    format!(
        "groups:
- id: g
  error_responses:
    APIG.0207: {{status: 422, body: '{{\"code\": \"$context.error.code\", \"why\": \"$context.error.message\", \"rid\": \"$context.requestId\"}}'}}
    APIG.0308: {{body: 'slow down ($context.requestId)', content_type: text/plain}}
  apis:
  - id: v
    path: /v/{{id}}
    backend: {{http: {{url: '{up}'}}}}
{PARAMETERS}    policies: [{{plugin: throttling, config: {{api_limit: 3, unit: hour, algorithm: local}}}}]
  - id: m
    path: /m/{{id}}
    backend: {{http: {{url: '{up}', path: /users}}}}
    mapping:
      - {{to: {{in: query, name: user_id}}, from: {{in: path, name: id}}}}
      - {{to: {{in: header, name: x-backend-tenant}}, from: {{in: header, name: X-Tenant}}}}
      - {{to: {{in: header, name: x-q}}, from: {{in: query, name: q}}}}
      - {{to: {{in: header, name: x-api-version}}, constant: 2}}
      - {{to: {{in: header, name: x-client-ip}}, system: client_ip}}
      - {{to: {{in: query, name: rid}}, system: request_id}}
      - {{to: {{in: header, name: x-api}}, system: api_id}}
      - {{to: {{in: header, name: x-app}}, system: app_id}}
- id: plain
  domains: [plain.example]
  apis:
  - {{id: p, path: /p, backend: {{http: {{url: 'http://127.0.0.1:9'}}}}, parameters: [{{name: n, in: query, required: true}}]}}
",
        up = upstream.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_are_checked_before_policies_and_defaults_filled_in() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&config(&upstream));
    let c = HttpClient::default();
    let tenant = [("x-tenant", "blue")];
    // Every rule, broken once: refused before the throttling policy counts the request.
    for (path, headers, named) in [
        ("/v/0", &tenant[..], "path parameter `id`: 0 is less than the minimum 1"),
        ("/v/x", &tenant[..], "path parameter `id`: `x` is not an integer"),
        ("/v/1?limit=500", &tenant[..], "query parameter `limit`: 500 is more than the maximum 100"),
        ("/v/1", &[][..], "header parameter `x-tenant`: is required"),
        (
            "/v/1",
            &[("x-tenant", "Blue1")][..],
            "header parameter `x-tenant`: `Blue1` does not match `^[a-z]+$`",
        ),
        ("/v/1?sort=up", &tenant[..], "query parameter `sort`: `up` is not one of asc, desc"),
        ("/v/1?flag=yes", &tenant[..], "query parameter `flag`: `yes` is not true or false"),
        ("/v/1?code=a", &tenant[..], "query parameter `code`: 1 characters is less than the minimum 2"),
    ] {
        let r = c.get(&gw.url(path), headers).await;
        // The group answers APIG.0207 its own way.
        assert_eq!(r.status, 422, "{path}: {:?}", r.body);
        let body = r.json();
        assert_eq!(body["code"], "APIG.0207");
        assert!(body["why"].as_str().unwrap().ends_with(named), "{path}: {body}");
        assert_eq!(body["rid"].as_str(), r.header("x-request-id"));
    }
    assert_eq!(upstream.hits(), 0);
    // Valid: the default is filled in; the throttling policy sees its first three requests.
    let r = c.get(&gw.url("/v/7?sort=asc&flag=true&code=ab%20c"), &tenant).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let seen: Value = r.json();
    assert_eq!(seen["query"], "sort=asc&flag=true&code=ab%20c&limit=20");
    for _ in 0..2 {
        assert_eq!(c.get(&gw.url("/v/7"), &tenant).await.status, 200);
    }
    // The fourth is throttled; the group rewrites that error too, as plain text.
    let r = c.get(&gw.url("/v/7"), &tenant).await;
    assert_eq!((r.status, r.header("content-type")), (429, Some("text/plain")));
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        format!("slow down ({})", r.header("x-request-id").unwrap())
    );
    // A group without custom errors answers with the default JSON.
    let r = c.get(&gw.url("/p"), &[("host", "plain.example")]).await;
    assert_eq!((r.status, r.error_code()), (400, "APIG.0207".to_string()));
    // An error the group has no answer for keeps the default JSON (the backend is down).
    let r = c.get(&gw.url("/p?n=1"), &[("host", "plain.example")]).await;
    assert_eq!((r.status, r.error_code()), (502, "APIG.0202".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mapping_moves_renames_and_adds_backend_parameters() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&config(&upstream));
    let r = HttpClient::default().get(&gw.url("/m/42?q=hello%20world&keep=1"), &[("x-tenant", "blue")]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let seen: Value = r.json();
    let rid = r.header("x-request-id").unwrap();
    assert_eq!(seen["path"], "/users");
    assert_eq!(seen["query"], format!("keep=1&user_id=42&rid={rid}"));
    let headers = &seen["headers"];
    assert_eq!(headers["x-backend-tenant"], "blue");
    assert_eq!(headers["x-q"], "hello world");
    assert_eq!(headers["x-api-version"], "2");
    assert_eq!(headers["x-client-ip"], "127.0.0.1");
    assert_eq!(headers["x-api"], "m");
    // Moved, not copied; no app authenticated, so no app id.
    assert!(headers.get("x-tenant").is_none() && headers.get("x-app").is_none(), "{headers}");
}

#[test]
fn parameter_and_error_response_mistakes_are_named_at_load() {
    let api = |extra: &str| {
        format!(
            "groups:\n- id: g\n  apis:\n  - id: a\n    path: /a/{{id}}\n    backend: {{mock: {{}}}}\n{extra}"
        )
    };
    for (yaml, expected) in [
        (api("    parameters: [{name: x, in: query, pattern: '(['}]\n"), "parameters[0] (x).pattern"),
        (
            api("    parameters: [{name: n, in: query, type: integer, max: 5, default: 9}]\n"),
            "`9` breaks its own rules",
        ),
        (api("    parameters: [{name: other, in: path}]\n"), "the path `/a/{id}` has no {other}"),
        (api("    parameters: [{name: x, in: query}, {name: x, in: query}]\n"), "declared twice"),
        (api("    parameters: [{name: x, in: cookie}]\n"), "unknown variant `cookie`"),
        (
            api("    mapping: [{to: {in: header, name: x-a}, constant: a, system: api_id}]\n"),
            "exactly one of `from`, `constant` or `system`",
        ),
        (
            "groups:\n- id: g\n  error_responses: {oops: {body: x}}\n  apis: []\n".to_string(),
            "error_responses.oops: not an error code",
        ),
    ] {
        let (ok, out) = validate(&yaml);
        assert!(!ok && out.contains(expected), "expected `{expected}` in:\n{out}");
    }
}

/// A chunked POST of `size` bytes over a raw connection; the status line's code.
async fn chunked_post(gw: &Gateway, size: usize) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let head = "POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
    s.write_all(head.as_bytes()).await.unwrap();
    for chunk in vec![b'x'; size].chunks(300) {
        let _ = s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).await;
        let _ = s.write_all(chunk).await;
        let _ = s.write_all(b"\r\n").await;
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer).await;
    let code = answer.get(9..12).unwrap_or("").parse().unwrap_or(0);
    (code, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_and_bodies_get_431_and_413() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start_whole(&format!(
        "{}groups:\n- id: g\n  apis:\n  - {{id: e, path: /echo, backend: {{http: {{url: '{}'}}}}}}\n",
        common::config_header_with("max_header_bytes: 2048, max_body_bytes: 1000"),
        upstream.url()
    ));
    let c = HttpClient::default();
    let big = "v".repeat(3000);
    let r = c.get(&gw.url("/echo"), &[("x-big", &big)]).await;
    assert_eq!((r.status, r.error_code()), (431, "APIG.0209".to_string()));
    let r = c.send("POST", &gw.url("/echo"), &[], &"b".repeat(2000)).await;
    assert_eq!((r.status, r.error_code()), (413, "APIG.0210".to_string()));
    assert_eq!(c.send("POST", &gw.url("/echo"), &[], &"b".repeat(900)).await.status, 200);
    // Without Content-Length the body is counted as it streams.
    let (code, answer) = chunked_post(&gw, 600).await;
    assert_eq!(code, 200, "{answer}");
    assert!(answer.contains(&"x".repeat(600)), "the upstream got the whole body: {answer}");
    let (code, answer) = chunked_post(&gw, 3000).await;
    assert_eq!(code, 413, "{answer}");
    assert!(answer.contains("APIG.0210"), "{answer}");
}

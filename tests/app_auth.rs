//! App authentication against the public APIG SDK signer (Python, an independent
//! implementation), AppCode and Basic; the authenticated app reaches later policies.

mod common;
use common::*;
use std::process::{Command, Stdio};

const KEY: &str = "4f5b1ad3c7e94a1a9d2c0b7e6f8a3d21";
const SECRET: &str = "Zt3v9QmX7pL2kW8rB5nY4cH6jD1sF0gA";
const OTHER_KEY: &str = "0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e";
const OTHER_SECRET: &str = "Qw8Er7Ty6Ui5Op4As3Df2Gh1Jk0Lz9Xc";
const APP_CODE: &str = "c0de1234c0de1234c0de1234c0de1234";

fn config() -> String {
    format!(
        r#"
plugins: {{inspector: {{path: '{inspector}'}}}}
credentials:
  - {{id: app-1, key: {KEY}, secret: {SECRET}, app_code: {APP_CODE}, apis: [signed]}}
  - {{id: app-2, key: {OTHER_KEY}, secret: {OTHER_SECRET}, groups: [elsewhere]}}
groups:
  - id: g
    apis:
      - id: signed
        path: /signed
        match: prefix
        backend: {{mock: {{body: ok}}}}
        policies:
          - {{plugin: app-auth, config: {{modes: [sdk-hmac-sha256, hmac, app-code, basic]}}}}
          - {{plugin: inspector}}
  - id: elsewhere
    apis:
      - {{id: other, path: /other, backend: {{mock: {{}}}}}}
"#,
        inspector = fixture("inspector").display()
    )
}

fn run_signer(input: &serde_json::Value) -> serde_json::Value {
    let mut child = Command::new("python3")
        .arg(repo_root().join("tests/sign.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), input.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the signer failed (scripts/setup installs apigateway-sdk-python)");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Headers and request target the Python signer produces for this request.
fn sign(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    key: &str,
    secret: &str,
) -> (Vec<(String, String)>, String) {
    let input = serde_json::json!({
        "method": method,
        "url": url,
        "headers": headers.iter().map(|(k, v)| (k.to_string(), serde_json::Value::from(*v))).collect::<serde_json::Map<_, _>>(),
        "body_hex": body.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        "key": key,
        "secret": secret,
    });
    let signed = run_signer(&input);
    let headers = signed["headers"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("content-length")) // the client sets it
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    (headers, signed["uri"].as_str().unwrap().to_string())
}

async fn send_signed(
    gw: &Gateway,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    key: &str,
    secret: &str,
) -> Reply {
    send_signed_with(&HttpClient::default(), gw, method, path_and_query, body, key, secret).await
}

async fn send_signed_with(
    client: &HttpClient,
    gw: &Gateway,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    key: &str,
    secret: &str,
) -> Reply {
    let url = format!("http://{}{path_and_query}", gw.addr);
    let (headers, uri) =
        sign(method, &url, &[("Content-Type", "application/octet-stream")], body, key, secret);
    // The client library sends the host itself (as `Host`, or as `:authority` over HTTP/2).
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("host"))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    client.send_bytes(method, &format!("http://{}{uri}", gw.addr), &headers, body.to_vec()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_signed_by_the_public_sdk_signer_are_accepted() {
    let gw = Gateway::start(&config());
    let binary: Vec<u8> = (0..=255u8).collect();
    let cases: [(&str, &str, &[u8]); 5] = [
        ("GET", "/signed/items", b""),
        ("GET", "/signed/with%20space/%E4%BD%A0%E5%A5%BD/x", b""),
        ("GET", "/signed/q?b=2&a=1&a=0&empty=&z=%2Fslash", b""),
        ("POST", "/signed/empty-body", b""),
        ("PUT", "/signed/binary", &binary),
    ];
    for (method, target, body) in cases {
        let r = send_signed(&gw, method, target, body, KEY, SECRET).await;
        assert_eq!(r.status, 200, "{method} {target}: {:?}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("x-app-id"), Some("app-1"), "identity for later policies");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_verify_over_http2_where_the_host_is_the_authority() {
    let gw = Gateway::start(&config());
    let r =
        send_signed_with(&HttpClient::h2c(), &gw, "POST", "/signed/h2?x=1", b"over h2", KEY, SECRET).await;
    assert_eq!(
        (r.status, r.header("x-app-id")),
        (200, Some("app-1")),
        "{:?}",
        String::from_utf8_lossy(&r.body)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signatures_unknown_keys_and_unauthorised_apps_are_refused() {
    let gw = Gateway::start(&config());
    let c = HttpClient::default();

    let r = send_signed(&gw, "GET", "/signed/x", b"", KEY, "not-the-secret-at-all-0123456789").await;
    assert_eq!((r.status, r.error_code().as_str()), (401, "APIG.0301"));
    let r = send_signed(&gw, "GET", "/signed/x", b"", "unknown-key-0000000000000000000", SECRET).await;
    assert_eq!((r.status, r.error_code().as_str()), (401, "APIG.0301"));
    let r = send_signed(&gw, "GET", "/signed/x", b"", OTHER_KEY, OTHER_SECRET).await;
    assert_eq!((r.status, r.error_code().as_str()), (403, "APIG.0303"));

    // Tampering with the body, the path or the query after signing breaks the signature.
    let url = format!("http://{}/signed/x?a=1", gw.addr);
    let (headers, _) = sign("POST", &url, &[], b"original", KEY, SECRET);
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    for (target, body) in
        [("/signed/x?a=1", "tampered"), ("/signed/y?a=1", "original"), ("/signed/x?a=2", "original")]
    {
        let r = c.send("POST", &gw.url(target), &headers, body).await;
        assert_eq!((r.status, r.error_code().as_str()), (401, "APIG.0301"), "{target} {body}");
    }
    assert_eq!(c.send("POST", &gw.url("/signed/x?a=1"), &headers, "original").await.status, 200);

    // Signed 20 minutes ago: outside the 15-minute window.
    let old = "20200101T000000Z";
    let (headers, uri) =
        sign("GET", &format!("http://{}/signed/x", gw.addr), &[("X-Sdk-Date", old)], b"", KEY, SECRET);
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = c.get(&gw.url(&uri), &headers).await;
    assert_eq!((r.status, r.error_code().as_str()), (401, "APIG.0304"));

    let r = c.get(&gw.url("/signed/x"), &[]).await;
    assert_eq!((r.status, r.error_code().as_str()), (401, "APIG.0301"));
    assert!(!String::from_utf8_lossy(&r.body).contains(SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_code_and_basic_authentication_identify_the_app() {
    let gw = Gateway::start(&config());
    let c = HttpClient::default();
    let r = c.get(&gw.url("/signed/x"), &[("x-apig-appcode", APP_CODE)]).await;
    assert_eq!((r.status, r.header("x-app-id")), (200, Some("app-1")));
    let r = c.get(&gw.url("/signed/x"), &[("x-apig-appcode", "wrong-code-wrong-code-wrong-code")]).await;
    assert_eq!((r.status, r.error_code().as_str()), (401, "APIG.0301"));

    use base64::Engine;
    let basic = |k: &str, s: &str| {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{k}:{s}")))
    };
    let r = c.get(&gw.url("/signed/x"), &[("authorization", &basic(KEY, SECRET))]).await;
    assert_eq!((r.status, r.header("x-app-id")), (200, Some("app-1")));
    let r = c.get(&gw.url("/signed/x"), &[("authorization", &basic(KEY, "wrong"))]).await;
    assert_eq!(r.status, 401);
    let r = c.get(&gw.url("/signed/x"), &[("authorization", &basic(OTHER_KEY, OTHER_SECRET))]).await;
    assert_eq!((r.status, r.error_code().as_str()), (403, "APIG.0303"));
}

#[test]
fn credential_configs_are_checked_and_secrets_stay_out_of_errors() {
    let api = "groups:\n  - id: g\n    apis:\n      - {id: a, path: /a, backend: {mock: {}}}\n";
    let cases = [
        (
            format!("credentials:\n  - {{id: x, key: k1, secret: short}}\n{api}"),
            "credentials[0] (x) > secret",
        ),
        (
            format!("credentials:\n  - {{id: x, key: k1, secret: {SECRET}, apis: [nope]}}\n{api}"),
            "no API has the id `nope`",
        ),
        (
            format!(
                "credentials:\n  - {{id: x, key: k1, secret: {SECRET}}}\n  - {{id: y, key: k1, secret: {SECRET}}}\n{api}"
            ),
            "credentials[1] (y) > key",
        ),
    ];
    for (yaml, expected) in cases {
        let (ok, out) = validate(&yaml);
        assert!(!ok && out.contains(expected), "expected `{expected}` in:\n{out}");
        assert!(!out.contains(SECRET), "a secret was printed:\n{out}");
    }
}

#[test]
fn generated_credentials_are_long_random_and_accepted_by_the_config() {
    let run = || {
        let out = wasmgate().args(["credential", "new-app"]).output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let (first, second) = (run(), run());
    assert_ne!(first, second);
    let field = |line: &str, name: &str| -> String {
        line.split(&format!("{name}: ")).nth(1).unwrap().split([',', '}']).next().unwrap().to_string()
    };
    let (key, secret, code) = (field(&first, "key"), field(&first, "secret"), field(&first, "app_code"));
    assert!(
        key.len() == 32 && key.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "{key}"
    );
    assert!(secret.len() == 40 && secret.bytes().all(|b| b.is_ascii_alphanumeric()), "{secret}");
    assert!(code.len() == 64 && code.bytes().all(|b| b.is_ascii_alphanumeric()), "{code}");
    let (ok, out) = validate(&format!(
        "credentials:\n{}groups:\n  - id: g\n    apis:\n      - {{id: a, path: /a, backend: {{mock: {{}}}}}}\n",
        first.replace("apis: []", "apis: [a]")
    ));
    assert!(ok, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hmac_signatures_in_the_apisix_style_are_verified() {
    let gw = Gateway::start(&config());
    let hmac = |key: &str, secret: &str, method: &str, target: &str, date: Option<&str>| {
        let mut headers = serde_json::json!({"x-custom": "  padded value "});
        if let Some(d) = date {
            headers["date"] = d.into();
        }
        run_signer(&serde_json::json!({
            "mode": "hmac", "method": method, "target": target, "headers": headers,
            "signed": ["@request-target", "date", "x-custom"], "key": key, "secret": secret,
        }))
    };
    let send = |signed: serde_json::Value, method: &'static str, target: &'static str| {
        let url = gw.url(target);
        async move {
            let (auth, date) = (
                signed["authorization"].as_str().unwrap().to_string(),
                signed["date"].as_str().unwrap().to_string(),
            );
            HttpClient::default()
                .send(
                    method,
                    &url,
                    &[("authorization", &auth), ("date", &date), ("x-custom", "  padded value ")],
                    "",
                )
                .await
        }
    };
    let r = send(hmac(KEY, SECRET, "GET", "/signed/h?x=1&y=2", None), "GET", "/signed/h?x=1&y=2").await;
    assert_eq!(
        (r.status, r.header("x-app-id")),
        (200, Some("app-1")),
        "{:?}",
        String::from_utf8_lossy(&r.body)
    );
    // Signed for another method or target, with the wrong secret, or long ago: refused.
    let r = send(hmac(KEY, SECRET, "GET", "/signed/h", None), "DELETE", "/signed/h").await;
    assert_eq!(r.status, 401);
    let r = send(hmac(KEY, SECRET, "GET", "/signed/other", None), "GET", "/signed/h").await;
    assert_eq!(r.status, 401);
    let r = send(hmac(KEY, "wrong-secret-wrong-secret-wrong", "GET", "/signed/h", None), "GET", "/signed/h")
        .await;
    assert_eq!((r.status, r.error_code().as_str()), (401, "APIG.0301"));
    let r = send(
        hmac(KEY, SECRET, "GET", "/signed/h", Some("Wed, 01 Jan 2020 00:00:00 GMT")),
        "GET",
        "/signed/h",
    )
    .await;
    assert_eq!((r.status, r.error_code().as_str()), (401, "APIG.0304"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_requests_carry_a_signature_the_public_signer_reproduces() {
    let up = Upstream::start().await;
    let (key, secret) = ("gateway-key", "gateway-secret-0123456789");
    let gw = Gateway::start(&format!(
        "groups:\n  - id: g\n    apis:\n      - {{id: s, path: /s, match: prefix, backend: {{http: {{url: '{}/base', signature_key: {{key: {key}, secret: {secret}}}}}}}}}\n",
        up.url()
    ));
    let r = HttpClient::default()
        .send(
            "POST",
            &gw.url("/s/a%20b?z=1&a=2&a=1"),
            &[("authorization", "client-credentials")],
            "streamed body",
        )
        .await;
    let echo = r.json();
    let seen = &echo["headers"];
    assert_eq!(echo["body"], "streamed body");
    assert_eq!(seen["x-sdk-content-sha256"], "UNSIGNED-PAYLOAD");
    // What the backend would do: sign the request it received with the shared key pair, using
    // the public signer, and compare.
    let date = seen["x-sdk-date"].as_str().unwrap();
    let url = format!("{}/base/s/a%20b?z=1&a=2&a=1", up.url());
    let (headers, _) = sign(
        "POST",
        &url,
        &[("X-Sdk-Date", date), ("x-sdk-content-sha256", "UNSIGNED-PAYLOAD"), ("host", &up.addr.to_string())],
        b"streamed body",
        key,
        secret,
    );
    let expected = headers.iter().find(|(k, _)| k == "Authorization").map(|(_, v)| v.as_str());
    assert_eq!(seen["authorization"].as_str(), expected);
    assert!(expected.unwrap().starts_with(
        "SDK-HMAC-SHA256 Access=gateway-key, SignedHeaders=host;x-sdk-content-sha256;x-sdk-date, Signature="
    ));
}

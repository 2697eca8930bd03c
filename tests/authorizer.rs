//! Third-party authorizer end to end: a real authorizer HTTP server on loopback that the test
//! controls, the real gateway calling it through the outbound-HTTP capability.

mod common;

use bytes::Bytes;
use common::{Gateway, HttpClient, Upstream, config_header_with, fixture};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ALLOW: u8 = 0;
const DENY: u8 = 1;
const ALLOW_JSON: u8 = 2;
const DENY_JSON: u8 = 3;
const SLOW: u8 = 4;
const BROKEN: u8 = 5;

struct Authz {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    calls: Arc<AtomicUsize>,
    /// The last request's `authorization` header and query.
    last: Arc<Mutex<(String, String)>>,
}

impl Authz {
    async fn start() -> Authz {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let a = Authz {
            addr,
            mode: Arc::new(AtomicU8::new(ALLOW)),
            calls: Arc::new(AtomicUsize::new(0)),
            last: Arc::new(Mutex::new(Default::default())),
        };
        let (mode, calls, last) = (a.mode.clone(), a.calls.clone(), a.last.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (mode, calls, last) = (mode.clone(), calls.clone(), last.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (mode, calls, last) = (mode.clone(), calls.clone(), last.clone());
                        async move {
                            calls.fetch_add(1, Ordering::SeqCst);
                            let auth =
                                req.headers().get("authorization").map(|v| v.to_str().unwrap().to_string());
                            *last.lock().unwrap() =
                                (auth.unwrap_or_default(), req.uri().query().unwrap_or("").into());
                            let r = hyper::Response::builder();
                            let (r, body) = match mode.load(Ordering::SeqCst) {
                                ALLOW => (r.status(200).header("x-user-id", "u-1").header("x-secret", "no"), "".to_string()),
                                DENY => (r.status(403), r#"{"msg":"not you"}"#.to_string()),
                                ALLOW_JSON => (
                                    r.status(200),
                                    r#"{"status":"allow","context":{"user":"alice","app_id":"app-9","tier":"gold"}}"#.into(),
                                ),
                                DENY_JSON => (r.status(200), r#"{"status":"deny"}"#.into()),
                                SLOW => {
                                    tokio::time::sleep(Duration::from_millis(1000)).await;
                                    (r.status(200), String::new())
                                }
                                _ => (r.status(503), "down".into()),
                            };
                            Ok::<_, hyper::Error>(r.body(Full::new(Bytes::from(body))).unwrap())
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        a
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

/// API `a` on `upstream` behind the authorizer (`extra` merged into its config), then the
/// inspector fixture, which shows the identity in `x-app-id`.
fn body(authz_url: &str, upstream: &Upstream, extra: &str) -> String {
    format!(
        "plugins:\n  inspector: {{path: '{}'}}\ngroups:\n- id: g\n  apis:\n  - id: a\n    path: /a\n    backend: {{http: {{url: '{}'}}}}\n    policies:\n    - plugin: authorizer\n      config: {{url: '{authz_url}/check', identities: {{headers: [Authorization], query: [token]}}, return_headers: [X-User-Id], {extra}}}\n    - plugin: inspector\n",
        fixture("inspector").display(),
        upstream.url()
    )
}

async fn call(gw: &Gateway, token: &str, extra: &[(&str, &str)]) -> common::Reply {
    let mut headers = vec![("authorization", token)];
    headers.extend_from_slice(extra);
    HttpClient::default().get(&gw.url(&format!("/a?token={token}&other=1")), &headers).await
}

#[tokio::test]
async fn simple_authentication_allows_on_2xx_and_passes_denials_through() {
    let (authz, up) = (Authz::start().await, Upstream::start().await);
    let gw = Gateway::start(&body(&format!("http://{}", authz.addr), &up, "simple_authentication: true"));
    let r = call(&gw, "t1", &[]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let seen = r.json();
    assert_eq!(seen["headers"]["x-user-id"], "u-1", "a returned header reached the backend");
    assert!(seen["headers"].get("x-secret").is_none(), "only return_headers are copied");
    assert_eq!(*authz.last.lock().unwrap(), ("t1".to_string(), "token=t1".to_string()));

    authz.set(DENY);
    let r = call(&gw, "t2", &[]).await;
    assert_eq!((r.status, &r.body[..]), (403, &br#"{"msg":"not you"}"#[..]));
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn a_json_answer_sets_the_identity_and_can_deny() {
    let (authz, up) = (Authz::start().await, Upstream::start().await);
    let gw = Gateway::start(&body(&format!("http://{}", authz.addr), &up, "simple_authentication: false"));
    authz.set(ALLOW_JSON);
    let r = call(&gw, "t1", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-app-id"), Some("app-9"), "later policies see the identity");
    authz.set(DENY_JSON);
    assert_eq!(call(&gw, "t1", &[]).await.status, 401);
}

#[tokio::test]
async fn unreachable_slow_or_failing_authorizers_are_500_unless_relaxed() {
    let (authz, up) = (Authz::start().await, Upstream::start().await);
    let down = "http://127.0.0.1:9"; // nothing listens on the discard port
    let strict = Gateway::start(&body(down, &up, "timeout_ms: 300"));
    let r = call(&strict, "t", &[]).await;
    assert_eq!((r.status, r.error_code().as_str()), (500, "APIG.0617"));
    let relaxed = Gateway::start(&body(down, &up, "relaxed_mode: true"));
    assert_eq!(call(&relaxed, "t", &[]).await.status, 200);

    let gw = Gateway::start(&body(&format!("http://{}", authz.addr), &up, "timeout_ms: 200"));
    authz.set(SLOW);
    let t = Instant::now();
    assert_eq!(call(&gw, "t", &[]).await.error_code(), "APIG.0617");
    assert!(t.elapsed() < Duration::from_millis(800), "{:?}", t.elapsed());
    authz.set(BROKEN);
    assert_eq!(call(&gw, "t", &[]).await.error_code(), "APIG.0617");
}

#[tokio::test]
async fn allowed_identities_are_cached_and_bypass_rules_skip_the_authorizer() {
    let (authz, up) = (Authz::start().await, Upstream::start().await);
    let gw = Gateway::start(&body(
        &format!("http://{}", authz.addr),
        &up,
        "simple_authentication: true, cache_seconds: 60, parameters: [{name: internal, from: header, key: X-Internal}], bypass: [{when: {all: [{param: internal, op: '==', value: 'yes'}]}}]",
    ));
    for _ in 0..3 {
        let r = call(&gw, "hot", &[]).await;
        assert_eq!((r.status, r.json()["headers"]["x-user-id"].as_str()), (200, Some("u-1")));
    }
    assert_eq!(authz.calls(), 1, "a hot identity is asked once");
    assert_eq!(call(&gw, "other", &[]).await.status, 200);
    assert_eq!(authz.calls(), 2);
    authz.set(DENY);
    assert_eq!(call(&gw, "new", &[("x-internal", "yes")]).await.status, 200);
    assert_eq!(authz.calls(), 2, "bypassed");
}

#[tokio::test]
async fn repeated_denials_block_the_caller_until_the_block_expires() {
    let (authz, up) = (Authz::start().await, Upstream::start().await);
    let config = body(&format!("http://{}", authz.addr), &up, "simple_authentication: true");
    let gw = Gateway::start(&config);
    authz.set(DENY);
    for _ in 0..5 {
        assert_eq!(call(&gw, "guess", &[]).await.status, 403);
    }
    let r = call(&gw, "guess", &[]).await;
    assert_eq!((r.status, r.error_code().as_str()), (429, "APIG.0618"));
    assert_eq!(authz.calls(), 5, "a blocked caller does not reach the authorizer");
    // Another identity from the same address is not blocked.
    assert_eq!(call(&gw, "other", &[]).await.status, 403);
    assert_eq!(authz.calls(), 6);
    // Five minutes later (the gateway's clock moved on), the authorizer is asked again.
    let header = config_header_with("clock_offset_ms: 301000");
    gw.rewrite_config_whole(&format!("{header}{config}"));
    gw.expect_log("config reloaded").await;
    authz.set(ALLOW);
    assert_eq!(call(&gw, "guess", &[]).await.status, 200);
    assert_eq!(authz.calls(), 7);
}

/// Threads of a process, from `/proc`.
fn threads(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Threads:")).unwrap();
    line["Threads:".len()..].trim().parse().unwrap()
}

#[tokio::test]
async fn calls_waiting_on_the_authorizer_hold_no_thread() {
    let (authz, up) = (Authz::start().await, Upstream::start().await);
    let mut config =
        body(&format!("http://{}", authz.addr), &up, "simple_authentication: true, timeout_ms: 5000");
    config.push_str(&format!("  - id: b\n    path: /b\n    backend: {{http: {{url: '{}'}}}}\n", up.url()));
    let gw = Gateway::start(&config);
    assert_eq!(call(&gw, "warm", &[]).await.status, 200);
    let before = threads(gw.pid());

    authz.set(SLOW);
    let started = Instant::now();
    let waiting: Vec<_> = (0..40)
        .map(|i| {
            let url = gw.url(&format!("/a?token=t{i}"));
            tokio::spawn(async move {
                let auth = format!("t{i}");
                HttpClient::default().get(&url, &[("authorization", auth.as_str())]).await.status
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(authz.calls(), 41, "every request is waiting on the authorizer at once");
    let during = threads(gw.pid());
    // The other API is served at once meanwhile.
    let t = Instant::now();
    assert_eq!(HttpClient::default().get(&gw.url("/b"), &[]).await.status, 200);
    assert!(t.elapsed() < Duration::from_millis(300), "{:?}", t.elapsed());
    for w in waiting {
        assert_eq!(w.await.unwrap(), 200);
    }
    // Forty one-second waits overlapped instead of queueing for threads.
    assert!(started.elapsed() < Duration::from_millis(2500), "{:?}", started.elapsed());
    assert!(during <= before + 4, "40 waiting calls took threads: {before} before, {during} during");
}

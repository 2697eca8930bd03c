//! Backends end to end: load-balance channels (weights, consistent hashing, active health
//! checks, passive ejection, all members down), retries on another member, and HTTPS to
//! backends with verification and a client certificate. Members are real HTTP(S) servers
//! on loopback that can be stopped (every connection closed) and started again.

mod common;

use common::certs::Ca;
use common::{Gateway, HttpClient, temp_dir};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// An upstream member answering its name (body and `x-member`), counting the requests that
/// are not health probes.
struct Member {
    name: &'static str,
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    stop: watch::Sender<bool>,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl Member {
    async fn start(name: &'static str) -> Member {
        Self::start_at(name, "127.0.0.1:0".parse().unwrap(), Arc::default(), None).await
    }

    async fn start_at(
        name: &'static str,
        addr: SocketAddr,
        hits: Arc<AtomicUsize>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Member {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = watch::channel(false);
        let (counter, acceptor) = (hits.clone(), tls.clone().map(tokio_rustls::TlsAcceptor::from));
        tokio::spawn(async move {
            let mut accept_stopped = stopped.clone();
            loop {
                let stream = tokio::select! {
                    accepted = listener.accept() => match accepted { Ok((s, _)) => s, Err(_) => continue },
                    _ = accept_stopped.changed() => return,
                };
                let (counter, acceptor, mut stopped) = (counter.clone(), acceptor.clone(), stopped.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        if req.uri().path() != "/health" {
                            counter.fetch_add(1, Ordering::SeqCst);
                        }
                        let answer = hyper::Response::builder()
                            .header("x-member", name)
                            .body(http_body_util::Full::new(bytes::Bytes::from(name)))
                            .unwrap();
                        async move { Ok::<_, Infallible>(answer) }
                    });
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    // Stopping drops the connection, which closes its socket.
                    match acceptor {
                        None => tokio::select! {
                            _ = builder.serve_connection(TokioIo::new(stream), svc) => {}
                            _ = stopped.changed() => {}
                        },
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(stream).await else { return };
                            tokio::select! {
                                _ = builder.serve_connection(TokioIo::new(stream), svc) => {}
                                _ = stopped.changed() => {}
                            }
                        }
                    }
                });
            }
        });
        Member { name, addr, hits, stop, tls }
    }

    fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Stopped and started again on the same port, keeping its count.
    async fn restart(&self) -> Member {
        self.stop();
        tokio::time::sleep(Duration::from_millis(50)).await;
        Member::start_at(self.name, self.addr, self.hits.clone(), self.tls.clone()).await
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A loopback port nothing listens on.
fn closed_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

fn gateway(channels: &str, apis: &str) -> Gateway {
    Gateway::start(&format!("channels:\n{channels}groups:\n- id: g\n  apis:\n{apis}"))
}

/// `n` GETs of `path`, `concurrency` at a time; the members that answered, in order.
async fn members_answering(gw: &Gateway, path: &str, headers: &[(&str, &str)], n: usize) -> Vec<String> {
    let (client, url) = (HttpClient::default(), gw.url(path));
    let mut answers = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(20) {
        let calls = chunk.iter().map(|_| client.get(&url, headers));
        for r in futures_util::future::join_all(calls).await {
            answers.push(match r.status {
                200 => String::from_utf8_lossy(&r.body).into_owned(),
                other => format!("{other} {}", r.error_code()),
            });
        }
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_round_robin_shares_requests_by_weight() {
    let (a, b, c) = (Member::start("a").await, Member::start("b").await, Member::start("c").await);
    let gw = gateway(
        &format!(
            "  pool:\n    members: [{{address: '{}', weight: 1}}, {{address: '{}', weight: 3}}, {{address: '{}', weight: 6}}]\n",
            a.addr, b.addr, c.addr
        ),
        "  - {id: w, path: /w, backend: {http: {url: 'http://pool'}}}\n",
    );
    let answers = members_answering(&gw, "/w", &[], 10_000).await;
    let mut counts: HashMap<&str, usize> = HashMap::new();
    answers.iter().for_each(|m| *counts.entry(m.as_str()).or_default() += 1);
    for (member, expected) in [("a", 1_000.0), ("b", 3_000.0), ("c", 6_000.0)] {
        let got = counts.get(member).copied().unwrap_or(0) as f64;
        assert!(
            (got - expected).abs() <= expected * 0.05,
            "{member}: {got} of 10000, expected {expected}: {counts:?}"
        );
    }
    assert_eq!(a.hits() + b.hits() + c.hits(), 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_take_a_dead_member_out_and_bring_it_back() {
    let (a, b) = (Member::start("a").await, Member::start("b").await);
    let gw = gateway(
        &format!(
            "  pool:\n    members: [{{address: '{}'}}, {{address: '{}'}}]\n    health_check: {{path: /health, interval_ms: 100, timeout_ms: 200, healthy_threshold: 2, unhealthy_threshold: 1}}\n",
            a.addr, b.addr
        ),
        "  - {id: h, path: /h, backend: {http: {url: 'http://pool'}}}\n",
    );
    let mixed = members_answering(&gw, "/h", &[], 20).await;
    assert!(mixed.contains(&"a".into()) && mixed.contains(&"b".into()), "{mixed:?}");

    // Until a probe notices, some requests may still fail on b; then only a answers.
    b.stop();
    let since = Instant::now();
    while members_answering(&gw, "/h", &[], 20).await.iter().any(|m| m != "a") {
        assert!(since.elapsed() < Duration::from_secs(3), "b is still sent requests");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.expect_log("member unhealthy").await;

    let b = b.restart().await;
    let since = Instant::now();
    while !members_answering(&gw, "/h", &[], 20).await.contains(&"b".into()) {
        assert!(since.elapsed() < Duration::from_secs(3), "b did not come back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.expect_log("member healthy again").await;

    // Every member down: the gateway's own 502.
    a.stop();
    b.stop();
    let since = Instant::now();
    loop {
        let answers = members_answering(&gw, "/h", &[], 5).await;
        if answers.iter().all(|m| m == "502 APIG.0208") {
            break;
        }
        assert!(since.elapsed() < Duration::from_secs(3), "{answers:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_go_to_another_member_and_passive_checks_eject() {
    let live = Member::start("live").await;
    let dead = closed_port();
    let pool = |name: &str, passive: &str| {
        format!("  {name}:\n    members: [{{address: '{dead}'}}, {{address: '{}'}}]\n{passive}", live.addr)
    };
    let gw = gateway(
        &format!(
            "{}{}",
            pool("pool", ""),
            pool("ejecting", "    passive: {consecutive_failures: 2, eject_ms: 60000}\n")
        ),
        "  - {id: once, path: /once, backend: {http: {url: 'http://pool'}}}\n  - {id: again, path: /again, backend: {http: {url: 'http://pool', retries: 2}}}\n  - {id: ej, path: /ej, backend: {http: {url: 'http://ejecting'}}}\n",
    );
    // Without retries, the requests sent to the dead member fail.
    let once = members_answering(&gw, "/once", &[], 10).await;
    assert_eq!(once.iter().filter(|m| *m == "502 APIG.0202").count(), 5, "{once:?}");
    // With retries, every idempotent request lands on the live member.
    let again = members_answering(&gw, "/again", &[], 10).await;
    assert!(again.iter().all(|m| m == "live"), "{again:?}");
    // A POST with a body is not retried: it may not be safe to send twice.
    let client = HttpClient::default();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(client.send("POST", &gw.url("/again"), &[], "once only").await.status);
    }
    assert_eq!(statuses.iter().filter(|s| **s == 502).count(), 2, "{statuses:?}");
    // The passive check takes the dead member out after two failures.
    let mut ej = Vec::new();
    for _ in 0..20 {
        ej.extend(members_answering(&gw, "/ej", &[], 1).await);
    }
    assert_eq!(ej.iter().filter(|m| *m != "live").count(), 2, "{ej:?}");
    gw.expect_log("member ejected after consecutive failures").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hashing_keeps_a_key_on_one_member() {
    let members = [Member::start("a").await, Member::start("b").await, Member::start("c").await];
    let list: Vec<String> = members.iter().map(|m| format!("{{address: '{}'}}", m.addr)).collect();
    let gw = gateway(
        &format!(
            "  users:\n    members: [{}]\n    balance: consistent_hash\n    hash_on: header\n    hash_on_header: x-user\n",
            list.join(", ")
        ),
        "  - {id: u, path: /u, backend: {http: {url: 'http://users'}}}\n",
    );
    let mut used = std::collections::HashSet::new();
    for user in 0..30 {
        let user = format!("user-{user}");
        let answers = members_answering(&gw, "/u", &[("x-user", &user)], 4).await;
        assert!(answers.iter().all(|m| *m == answers[0]), "{user}: {answers:?}");
        used.insert(answers[0].clone());
    }
    assert!(used.len() >= 2, "30 users all on {used:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_backends_are_verified_and_can_be_given_a_client_certificate() {
    let dir = temp_dir();
    let ca = Ca::new("backend CA");
    let server = ca.leaf(&["localhost"], "backend", "Wasmgate tests");
    let client = ca.leaf(&[], "gateway", "Wasmgate tests");
    client.write(&dir, "client");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(ca.roots()),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap();
    let (chain, key) = server.client_auth();
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    let member =
        Member::start_at("tls", "127.0.0.1:0".parse().unwrap(), Arc::default(), Some(Arc::new(tls))).await;
    let url = format!("https://localhost:{}", member.addr.port());
    let (ca, cert, key) = (ca_file.display(), dir.join("client.crt"), dir.join("client.key"));
    let (cert, key) = (cert.display(), key.display());
    let gw = Gateway::start(&format!(
        "groups:\n- id: g\n  apis:\n  - {{id: ok, path: /ok, backend: {{http: {{url: '{url}', tls: {{ca: '{ca}', client_cert: '{cert}', client_key: '{key}'}}}}}}}}\n  - {{id: unknown-ca, path: /unknown-ca, backend: {{http: {{url: '{url}', tls: {{client_cert: '{cert}', client_key: '{key}'}}}}}}}}\n  - {{id: no-cert, path: /no-cert, backend: {{http: {{url: '{url}', tls: {{ca: '{ca}'}}}}}}}}\n"
    ));
    let c = HttpClient::default();
    let ok = c.get(&gw.url("/ok"), &[]).await;
    assert_eq!((ok.status, &ok.body[..]), (200, &b"tls"[..]));
    // The backend's certificate is not from a CA the gateway trusts: not sent.
    let r = c.get(&gw.url("/unknown-ca"), &[]).await;
    assert_eq!((r.status, r.error_code()), (502, "APIG.0202".to_string()));
    // The backend wants a client certificate the gateway was not given.
    assert_eq!(c.get(&gw.url("/no-cert"), &[]).await.status, 502);
    assert_eq!(member.hits(), 1);
}

//! Outbound HTTP from plugins (the `http-outbound` import): only to granted origins, with
//! timeouts, a response cap, and network waits kept out of the CPU deadline.

mod common;

use common::{Gateway, HttpClient, Upstream, config_header_with, fixture, temp_dir, validate};
use std::time::{Duration, Instant};

fn gateway(grant: &str, limits: &str) -> Gateway {
    Gateway::start(&api(grant, limits))
}

fn api(grant: &str, limits: &str) -> String {
    format!(
        "plugins:\n  outbound: {{path: '{}', grants: {{outbound: [{grant}]}}}}\ngroups:\n- id: g\n  apis:\n  - id: a\n    path: /a\n    backend: {{mock: {{}}}}\n    policies:\n    - plugin: outbound\n      config: {{grant: [{grant}]}}\n      limits: {limits}\n",
        fixture("outbound").display()
    )
}

/// An HTTPS server on 127.0.0.1 with a certificate from a CA made here; returns its address
/// and the CA's PEM.
async fn https_server() -> (std::net::SocketAddr, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert =
        CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().signed_by(&key, &issuer).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else { return };
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, hyper::Error>(hyper::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from("over tls"),
                    )))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, ca_pem)
}

#[tokio::test]
async fn https_origins_are_called_with_the_configured_ca() {
    let (addr, ca_pem) = https_server().await;
    let target = format!("https://{addr}/x");
    let body = api(&format!("'https://{addr}'"), "{}");
    // Without the CA the certificate is unknown: the call fails and the plugin sees why.
    let gw = Gateway::start(&body);
    let r = call(&gw, &target, 2000).await;
    assert_eq!(r.status, 502);
    assert!(String::from_utf8_lossy(&r.body).contains("Connect"), "{:?}", r.body);
    drop(gw);
    let ca = temp_dir().join("outbound-ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let header = config_header_with(&format!("outbound_ca: '{}'", ca.display()));
    let gw = Gateway::start_whole(&format!("{header}{body}"));
    let r = call(&gw, &target, 2000).await;
    assert_eq!(
        (r.status, &r.body[..]),
        (200, &b"over tls"[..]),
        "{:?}\n{}",
        String::from_utf8_lossy(&r.body),
        gw.log()
    );
}

async fn call(gw: &Gateway, target: &str, timeout_ms: u32) -> common::Reply {
    let timeout = timeout_ms.to_string();
    HttpClient::default().get(&gw.url("/a"), &[("x-target", target), ("x-timeout-ms", &timeout)]).await
}

#[tokio::test]
async fn granted_origins_are_called_and_others_refused() {
    let (granted, other) = (Upstream::start().await, Upstream::start().await);
    let gw = gateway(&format!("'{}'", granted.url()), "{}");
    let r = call(&gw, &format!("{}/echo?q=1", granted.url()), 2000).await;
    assert_eq!((r.status, r.header("x-outbound-status")), (200, Some("200")), "{:?}", r.body);
    let echo = r.json();
    assert_eq!((echo["path"].as_str(), echo["query"].as_str()), (Some("/echo"), Some("q=1")));
    assert_eq!(echo["headers"]["x-from"], "plugin", "the plugin's headers went out");

    let r = call(&gw, &format!("{}/echo", other.url()), 2000).await;
    let refused = format!("HttpError::NotGranted(\"http://{}\")", other.addr);
    assert_eq!((r.status, String::from_utf8_lossy(&r.body).as_ref()), (502, refused.as_str()));
    assert_eq!(other.hits(), 0);
    gw.expect_log("outbound HTTP refused: not granted").await;
}

#[tokio::test]
async fn network_waits_do_not_count_against_the_cpu_deadline_but_the_wall_cap_does() {
    let up = Upstream::start().await;
    let gw = gateway(&format!("'{}'", up.url()), "{cpu_ms: 20, wall_ms: 600}");
    // 300 ms waiting is far past a 20 ms CPU deadline, and fine.
    let r = call(&gw, &format!("{}/slow/300", up.url()), 2000).await;
    assert_eq!((r.status, r.header("x-outbound-status")), (200, Some("200")), "{:?}", r.body);
    // The plugin asks for 5 s; the call's wall-clock cap of 600 ms ends the wait and the call.
    let t = Instant::now();
    let r = call(&gw, &format!("{}/slow/3000", up.url()), 5000).await;
    assert_eq!((r.status, r.error_code().as_str()), (500, "APIG.0502"));
    assert!(
        t.elapsed() > Duration::from_millis(500) && t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn timeouts_and_the_response_cap_reach_the_plugin_as_errors() {
    let up = Upstream::start().await;
    let gw = gateway(&format!("'{}'", up.url()), "{}");
    let t = Instant::now();
    let r = call(&gw, &format!("{}/slow/2000", up.url()), 100).await;
    assert_eq!((r.status, &r.body[..]), (502, &b"HttpError::Timeout"[..]));
    assert!(t.elapsed() < Duration::from_millis(1000), "{:?}", t.elapsed());
    let r = call(&gw, &format!("{}/bytes/2000000", up.url()), 2000).await;
    assert_eq!((r.status, &r.body[..]), (502, &b"HttpError::ResponseTooLarge"[..]));
    let r = call(&gw, &format!("{}/bytes/1000", up.url()), 2000).await;
    assert_eq!((r.status, r.body.len()), (200, 1000));
}

#[test]
fn grants_and_wall_limits_are_checked_at_load() {
    let body = |grant: &str, limits: &str| {
        format!(
            "plugins:\n  outbound: {{path: '{}', grants: {{outbound: ['http://auth.example:8080']}}}}\ngroups:\n- id: g\n  apis:\n  - id: a\n    path: /a\n    backend: {{mock: {{}}}}\n    policies:\n    - plugin: outbound\n      config: {{grant: ['{grant}']}}\n      limits: {limits}\n",
            fixture("outbound").display()
        )
    };
    let (ok, out) = validate(&body("ftp://auth.example", "{}"));
    assert!(!ok && out.contains("http grant `ftp://auth.example`: `ftp` is not http or https"), "{out}");
    let (ok, out) = validate(&body("auth.example", "{}"));
    assert!(!ok && out.contains("http grant `auth.example`"), "{out}");
    let (ok, out) = validate(&body("http://auth.example:8080", "{cpu_ms: 100, wall_ms: 50}"));
    assert!(!ok && out.contains("limits.wall_ms: 50 is outside cpu_ms..=120000"), "{out}");
    let (ok, out) = validate(&body("http://auth.example:8080", "{cpu_ms: 100, wall_ms: 5000}"));
    assert!(ok, "{out}");
}

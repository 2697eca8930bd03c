//! HTTPS listeners end to end: certificates per domain by SNI, TLS 1.2/1.3 only, HTTP/2 by
//! ALPN, mutual TLS with a client CA per domain, and certificates reloading with the config.
//! Certificates are made in the test with rcgen; the client is rustls + hyper.

mod common;

use bytes::Bytes;
use common::certs::{Ca, Leaf};
use common::{Gateway, HttpClient, Reply, Upstream, config_header, fixture, temp_dir, validate};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

fn client_config(
    roots: RootCertStore,
    client: Option<&Leaf>,
    alpn: &[&str],
    versions: &[&'static SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client {
        Some(leaf) => {
            let (chain, key) = leaf.client_auth();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(config)
}

const BOTH: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// What one request over a fresh TLS connection saw.
#[derive(Debug)]
struct Fetched {
    reply: Reply,
    alpn: Option<String>,
    version: rustls::ProtocolVersion,
    server_cert: CertificateDer<'static>,
}

/// Connect to `addr` naming `server_name` (a DNS name is sent as SNI, an IP address is not),
/// then GET `path` with `host` as the Host (HTTP/1.1) or `:authority` (HTTP/2).
async fn fetch(
    addr: SocketAddr,
    server_name: &str,
    host: &str,
    path: &str,
    config: Arc<ClientConfig>,
) -> Result<Fetched, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from(server_name.to_string()).unwrap();
    let tls = TlsConnector::from(config).connect(name, tcp).await.map_err(|e| format!("handshake: {e}"))?;
    let session = tls.get_ref().1;
    let alpn = session.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned());
    let version = session.protocol_version().unwrap();
    let server_cert = session.peer_certificates().unwrap()[0].clone();
    let io = TokioIo::new(tls);
    let req = hyper::Request::get(format!("https://{host}{path}"));
    let resp = if alpn.as_deref() == Some("h2") {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        sender.send_request(req.body(Empty::<Bytes>::new()).unwrap()).await
    } else {
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = req.uri(path).header("host", host).body(Empty::<Bytes>::new()).unwrap();
        sender.send_request(req).await
    };
    let (parts, body) = resp.map_err(|e| format!("request: {e}"))?.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    let reply = Reply { status: parts.status.as_u16(), headers: parts.headers, body };
    Ok(Fetched { reply, alpn, version, server_cert })
}

/// Two domains with certificates of their own, one of them with mutual TLS, a public one
/// without, and a plain HTTP listener beside the HTTPS one.
struct Setup {
    gw: Gateway,
    dir: PathBuf,
    ca: Ca,
    client_ca: Ca,
    upstream: Upstream,
}

fn config(dir: &Path, upstream: &Upstream) -> String {
    let header = config_header().replace(
        "listeners: [{address: '127.0.0.1:0'}]",
        "listeners: [{address: '127.0.0.1:0', tls: {default_certificate: ip}}, {address: '127.0.0.1:0'}]",
    );
    let d = dir.display();
    format!(
        "{header}certificates:
- {{name: shop, cert: {d}/shop.crt, key: {d}/shop.key}}
- {{name: secure, cert: {d}/secure.crt, key: {d}/secure.key}}
- {{name: ip, cert: {d}/ip.crt, key: {d}/ip.key}}
plugins:
  inspector: {{path: '{inspector}'}}
groups:
- id: shop
  domains: [{{name: shop.example, certificate: shop}}, plain.example]
  apis:
  - {{id: shop, path: /shop, backend: {{http: {{url: '{up}'}}}}}}
- id: secure
  domains: [{{name: secure.example, certificate: secure, client_ca: {d}/clients.pem}}]
  apis:
  - id: secure
    path: /secure
    backend: {{http: {{url: '{up}'}}}}
    policies: [{{plugin: inspector}}]
",
        inspector = fixture("inspector").display(),
        up = upstream.url(),
    )
}

async fn setup() -> Setup {
    let dir = temp_dir();
    let (ca, client_ca) = (Ca::new("Wasmgate test CA"), Ca::new("Wasmgate clients CA"));
    ca.leaf(&["shop.example"], "shop.example", "Shop").write(&dir, "shop");
    ca.leaf(&["secure.example"], "secure.example", "Secure").write(&dir, "secure");
    ca.leaf(&["127.0.0.1"], "gateway", "Default").write(&dir, "ip");
    std::fs::write(dir.join("clients.pem"), &client_ca.pem).unwrap();
    let upstream = Upstream::start().await;
    let gw = Gateway::start_whole(&config(&dir, &upstream));
    Setup { gw, dir, ca, client_ca, upstream }
}

fn read_leaf_der(path: &Path) -> CertificateDer<'static> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_file(path).unwrap()
}

#[tokio::test]
async fn each_domain_gets_its_certificate_by_sni_and_http2_by_alpn() {
    let s = setup().await;
    let https = s.gw.addrs[0];
    let h2 = client_config(s.ca.roots(), None, &["h2", "http/1.1"], BOTH);
    let shop = fetch(https, "shop.example", "shop.example", "/shop", h2.clone()).await.unwrap();
    assert_eq!(shop.reply.status, 200, "{:?}", shop.reply.body);
    assert_eq!(shop.server_cert, read_leaf_der(&s.dir.join("shop.crt")));
    assert_eq!(shop.alpn.as_deref(), Some("h2"));
    assert_eq!(shop.version, rustls::ProtocolVersion::TLSv1_3);
    let echo = shop.reply.json();
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https", "{echo}");
    assert_eq!(echo["path"], "/shop");

    // Another name, another certificate (the client checks it is valid for the name).
    let secure_cert = client_config(s.ca.roots(), Some(&s.client_ca.leaf(&[], "c", "o")), &["h2"], BOTH);
    let secure = fetch(https, "secure.example", "secure.example", "/secure", secure_cert).await.unwrap();
    assert_eq!(secure.server_cert, read_leaf_der(&s.dir.join("secure.crt")));

    // HTTP/1.1 when the client offers only that, and TLS 1.2 when it only speaks 1.2.
    let h1_tls12 = client_config(s.ca.roots(), None, &["http/1.1"], &[&rustls::version::TLS12]);
    let old = fetch(https, "shop.example", "shop.example", "/shop", h1_tls12).await.unwrap();
    assert_eq!((old.reply.status, old.alpn.as_deref()), (200, Some("http/1.1")));
    assert_eq!(old.version, rustls::ProtocolVersion::TLSv1_2);

    // No SNI (an IP address): the listener's default certificate.
    let by_ip = fetch(https, "127.0.0.1", "shop.example", "/shop", h2).await.unwrap();
    assert_eq!(by_ip.server_cert, read_leaf_der(&s.dir.join("ip.crt")));
    assert_eq!(by_ip.reply.status, 200);
}

#[tokio::test]
async fn a_name_without_certificate_and_no_default_fails_the_handshake() {
    let dir = temp_dir();
    let ca = Ca::new("CA");
    ca.leaf(&["shop.example"], "shop.example", "Shop").write(&dir, "shop");
    let yaml = format!(
        "{}certificates: [{{name: shop, cert: {d}/shop.crt, key: {d}/shop.key}}]
groups:
- id: g
  domains: [{{name: shop.example, certificate: shop}}, other.example]
  apis: [{{id: a, path: /a, backend: {{mock: {{}}}}}}]
",
        config_header().replace("address: '127.0.0.1:0'", "address: '127.0.0.1:0', tls: {}"),
        d = dir.display()
    );
    let gw = Gateway::start_whole(&yaml);
    let config = client_config(ca.roots(), None, &["h2"], BOTH);
    let ok = fetch(gw.addr, "shop.example", "shop.example", "/a", config.clone()).await.unwrap();
    assert_eq!(ok.reply.status, 200);
    for name in ["other.example", "127.0.0.1"] {
        let e = fetch(gw.addr, name, "shop.example", "/a", config.clone()).await.unwrap_err();
        assert!(e.starts_with("handshake"), "{name}: {e}");
    }
}

#[tokio::test]
async fn versions_before_tls_1_2_are_refused() {
    let s = setup().await;
    // A hand-made TLS 1.1 ClientHello: legacy version 3.2, no supported_versions extension.
    let name = b"shop.example";
    let mut sni = vec![0x00, 0x00];
    let entry_len = name.len() + 3;
    sni.extend_from_slice(&((entry_len + 2) as u16).to_be_bytes());
    sni.extend_from_slice(&(entry_len as u16).to_be_bytes());
    sni.push(0);
    sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni.extend_from_slice(name);
    let mut body = vec![0x03, 0x02];
    body.extend_from_slice(&[7u8; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&[0x00, 0x04, 0x00, 0x2f, 0xc0, 0x13]); // AES128-SHA, ECDHE-RSA-AES128-SHA
    body.extend_from_slice(&[0x01, 0x00]); // no compression
    body.extend_from_slice(&(sni.len() as u16).to_be_bytes());
    body.extend_from_slice(&sni);
    let mut handshake = vec![0x01, 0x00];
    handshake.extend_from_slice(&(body.len() as u16).to_be_bytes());
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);

    let mut tcp = TcpStream::connect(s.gw.addrs[0]).await.unwrap();
    tcp.write_all(&record).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
    // A fatal alert (rustls says handshake_failure, 40) and no ServerHello.
    assert_eq!(answer.first(), Some(&0x15), "not an alert: {answer:02x?}");
    assert!(answer[5] == 2 && [40, 70].contains(&answer[6]), "{answer:02x?}");
}

#[tokio::test]
async fn mutual_tls_domains_need_a_client_certificate_from_their_ca() {
    let s = setup().await;
    let https = s.gw.addrs[0];
    let good = s.client_ca.leaf(&[], "billing-app", "Example Corp");
    let stranger = s.ca.leaf(&[], "stranger", "Elsewhere"); // signed by a CA the domain does not trust

    let with = client_config(s.ca.roots(), Some(&good), &["h2"], BOTH);
    let ok = fetch(https, "secure.example", "secure.example", "/secure", with).await.unwrap();
    assert_eq!(ok.reply.status, 200);
    // The subject reached the policy through the request context.
    assert_eq!(ok.reply.header("x-client-cert-subject"), Some("CN=billing-app, O=Example Corp"));

    let hits = s.upstream.hits();
    for (client, label) in [(None, "no certificate"), (Some(&stranger), "a certificate from another CA")] {
        for versions in [&[&rustls::version::TLS13][..], &[&rustls::version::TLS12][..]] {
            let config = client_config(s.ca.roots(), client, &["h2"], versions);
            let e = fetch(https, "secure.example", "secure.example", "/secure", config).await;
            assert!(e.is_err(), "{label} over {versions:?} was served: {:?}", e.unwrap().reply);
        }
    }
    assert_eq!(s.upstream.hits(), hits, "a refused client reached the backend");

    // Domains without client_ca do not ask for one.
    let plain = client_config(s.ca.roots(), None, &["h2"], BOTH);
    let shop = fetch(https, "shop.example", "shop.example", "/shop", plain.clone()).await.unwrap();
    assert_eq!(shop.reply.status, 200);
    assert_eq!(shop.reply.header("x-client-cert-subject"), None);
    let hits = s.upstream.hits();

    // Shaking hands as the public domain and then asking for the secure one is refused,
    // and so is plain HTTP.
    let fronted = fetch(https, "shop.example", "secure.example", "/secure", plain).await.unwrap();
    assert_eq!((fronted.reply.status, fronted.reply.error_code().as_str()), (421, "APIG.0205"));
    let http = HttpClient::default();
    let r = http.get(&format!("http://{}/secure", s.gw.addrs[1]), &[("host", "secure.example")]).await;
    assert_eq!((r.status, r.error_code().as_str()), (421, "APIG.0205"));
    assert_eq!(s.upstream.hits(), hits);
}

#[tokio::test]
async fn certificates_reload_with_the_config_and_a_broken_one_keeps_the_old() {
    let s = setup().await;
    let https = s.gw.addrs[0];
    let config = client_config(s.ca.roots(), None, &["h2"], BOTH);
    let first = fetch(https, "shop.example", "shop.example", "/shop", config.clone()).await.unwrap();
    assert_eq!(first.server_cert, read_leaf_der(&s.dir.join("shop.crt")));

    // A renewed certificate: same name, new key. SIGHUP re-reads it.
    s.ca.leaf(&["shop.example"], "shop.example", "Shop renewed").write(&s.dir, "shop");
    let renewed = read_leaf_der(&s.dir.join("shop.crt"));
    assert_ne!(renewed, first.server_cert);
    s.gw.signal("HUP");
    s.gw.expect_log("config reloaded").await;
    let second = fetch(https, "shop.example", "shop.example", "/shop", config.clone()).await.unwrap();
    assert_eq!(second.server_cert, renewed);

    // A key that does not belong to the certificate: the reload is refused, naming it, and
    // the renewed certificate stays in service.
    let other = s.ca.leaf(&["shop.example"], "shop.example", "Other");
    std::fs::write(s.dir.join("shop.key"), &other.key_pem).unwrap();
    s.gw.signal("HUP");
    s.gw.expect_log("config reload rejected").await;
    assert!(s.gw.log().contains("certificates[0] (shop)"), "{}", s.gw.log());
    let third = fetch(https, "shop.example", "shop.example", "/shop", config).await.unwrap();
    assert_eq!(third.server_cert, renewed);
    assert_eq!(third.reply.status, 200);
}

#[test]
fn tls_config_errors_name_the_place() {
    let dir = temp_dir();
    let ca = Ca::new("CA");
    ca.leaf(&["a.example"], "a", "A").write(&dir, "a");
    ca.leaf(&["b.example"], "b", "B").write(&dir, "b");
    let d = dir.display();
    let cert = |key: &str| format!("certificates: [{{name: a, cert: {d}/a.crt, key: {d}/{key}}}]\n");
    let group = |domain: &str| {
        format!(
            "groups:\n- id: g\n  domains: [{domain}]\n  apis: [{{id: x, path: /x, backend: {{mock: {{}}}}}}]\n"
        )
    };
    let cases = [
        (
            format!("{}{}", cert("a.key"), group("{name: a.example, certificate: nope}")),
            "group `g` > domains[0] > certificate: no certificate is named `nope`",
        ),
        (
            format!("{}{}", cert("a.key"), group("{name: a.example, client_ca: ca.pem}")),
            "group `g` > domains[0] > client_ca: mutual TLS needs a `certificate` too",
        ),
        (
            format!("{}{}", cert("b.key"), group("{name: a.example, certificate: a}")),
            "certificates[0] (a): the key in",
        ),
        (
            format!("{}{}", cert("missing.key"), group("{name: a.example, certificate: a}")),
            "certificates[0] (a): cannot read",
        ),
        (
            format!(
                "{}{}",
                cert("a.key"),
                group(&format!("{{name: a.example, certificate: a, client_ca: {d}/a.key}}"))
            ),
            "group `g` > domains[0] (a.example) > client_ca: ",
        ),
    ];
    for (body, expected) in cases {
        let (ok, out) = validate(&body);
        assert!(!ok && out.contains(expected), "expected `{expected}`, got:\n{out}");
    }
    let listener = |tls: &str| {
        let file = dir.join("listener.yaml");
        let header =
            config_header().replace("address: '127.0.0.1:0'", &format!("address: '127.0.0.1:0', tls: {tls}"));
        std::fs::write(&file, format!("{header}{}{}", cert("a.key"), group("plain.example"))).unwrap();
        let out = common::wasmgate().args(["validate", "-c"]).arg(&file).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (ok, out) = listener("{}");
    assert!(!ok && out.contains("listeners[0].tls: no domain has a `certificate`"), "{out}");
    let (ok, out) = listener("{default_certificate: b}");
    assert!(
        !ok && out.contains("listeners[0].tls.default_certificate: no certificate is named `b`"),
        "{out}"
    );
    let (ok, out) = listener("{default_certificate: a}");
    assert!(ok, "{out}");
}

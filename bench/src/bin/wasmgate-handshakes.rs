//! Full TLS handshakes per second against an HTTPS listener.
//!
//! `wasmgate-handshakes cert DIR` writes a test CA (`ca.pem`) and a server certificate for
//! `bench.example` (`server.crt`, `server.key`, ECDSA P-256, as most CAs issue today).
//!
//! `wasmgate-handshakes ADDR --ca CA.pem [--name bench.example] [--duration S] [--connections C]`
//! keeps C connections in flight: each connects, completes a full handshake (no session
//! resumption: every handshake costs the server its key exchange and signature), sends one
//! `GET /bench` with `Connection: close` and reads the answer to the end. Prints one JSON line.

use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn write_cert(dir: &str) -> Result<(), Box<dyn std::error::Error>> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    std::fs::create_dir_all(dir)?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate()?;
    std::fs::write(format!("{dir}/ca.pem"), ca.self_signed(&ca_key)?.pem())?;
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate()?;
    let leaf = CertificateParams::new(vec!["bench.example".to_string(), "127.0.0.1".to_string()])?;
    std::fs::write(format!("{dir}/server.crt"), leaf.signed_by(&key, &issuer)?.pem())?;
    std::fs::write(format!("{dir}/server.key"), key.serialize_pem())?;
    Ok(())
}

struct Args {
    addr: String,
    ca: String,
    name: String,
    duration: Duration,
    connections: usize,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut addr, mut ca, mut name, mut duration, mut connections) =
        (None, None, "bench.example".to_string(), 5.0, 16);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--ca" => ca = Some(value()?),
            "--name" => name = value()?,
            "--duration" => duration = value()?.parse::<f64>().map_err(|e| e.to_string())?,
            "--connections" => {
                connections = value()?.parse().map_err(|e: std::num::ParseIntError| e.to_string())?
            }
            _ => addr = Some(a),
        }
    }
    Ok(Args {
        addr: addr.ok_or("an address is needed")?,
        ca: ca.ok_or("--ca is needed")?,
        name,
        duration: Duration::from_secs_f64(duration),
        connections,
    })
}

/// One connection: handshake, one request, the whole answer. Returns the handshake time.
async fn one(
    addr: &str,
    name: &ServerName<'static>,
    connector: &tokio_rustls::TlsConnector,
) -> Result<Duration, String> {
    let start = Instant::now();
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    let mut tls = connector.connect(name.clone(), tcp).await.map_err(|e| e.to_string())?;
    let handshake = start.elapsed();
    tls.write_all(b"GET /bench HTTP/1.1\r\nHost: bench.example\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    // The gateway closes without close_notify once the response is sent; that is fine here.
    let _ = tls.read_to_end(&mut answer).await;
    if !answer.starts_with(b"HTTP/1.1 200") {
        return Err(format!(
            "unexpected answer: {:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(40)])
        ));
    }
    Ok(handshake)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut argv = std::env::args().skip(1).peekable();
    if argv.peek().map(String::as_str) == Some("cert") {
        let dir = argv.nth(1).unwrap_or_else(|| {
            eprintln!("wasmgate-handshakes cert DIR");
            std::process::exit(2)
        });
        write_cert(&dir).unwrap_or_else(|e| panic!("cannot write the certificate: {e}"));
        return;
    }
    let args = parse_args(argv).unwrap_or_else(|e| {
        eprintln!("wasmgate-handshakes: {e}");
        std::process::exit(2)
    });
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(&args.ca).expect("the CA file") {
        roots.add(cert.expect("a PEM certificate")).expect("a CA certificate");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from(args.name.clone()).expect("a server name");

    let end = Instant::now() + args.duration;
    let mut workers = Vec::new();
    for _ in 0..args.connections {
        let (addr, name, connector) = (args.addr.clone(), name.clone(), connector.clone());
        workers.push(tokio::spawn(async move {
            let (mut times, mut errors, mut last_error) = (Vec::new(), 0usize, None);
            while Instant::now() < end {
                match one(&addr, &name, &connector).await {
                    Ok(t) => times.push(t),
                    Err(e) => {
                        errors += 1;
                        last_error = Some(e);
                    }
                }
            }
            (times, errors, last_error)
        }));
    }
    let started = Instant::now();
    let (mut times, mut errors, mut last_error) = (Vec::new(), 0, None);
    for w in workers {
        let (t, e, l) = w.await.unwrap();
        times.extend(t);
        errors += e;
        last_error = last_error.or(l);
    }
    let elapsed = started.elapsed().as_secs_f64();
    times.sort();
    let ms = |p: f64| {
        let i = ((times.len() as f64 * p).ceil() as usize).clamp(1, times.len().max(1)) - 1;
        times.get(i).map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "{{\"handshakes\": {}, \"per_second\": {:.1}, \"errors\": {}, \"handshake_p50_ms\": {:.3}, \"handshake_p99_ms\": {:.3}, \"last_error\": {:?}}}",
        times.len(),
        times.len() as f64 / elapsed,
        errors,
        ms(0.5),
        ms(0.99),
        last_error.unwrap_or_default()
    );
}

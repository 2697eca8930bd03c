//! `wasmgate-upstream [ADDR] [--body-bytes N]`: a backend for the demo and the benchmarks.
//! Without `--body-bytes` it answers every request with a JSON echo of it (method, path,
//! query, headers), so the demo shows what the gateway forwarded; with it, N bytes of `x`.
#![forbid(unsafe_code)]

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;

fn echo<B>(req: &Request<B>) -> Bytes {
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
        .collect();
    let body = serde_json::json!({
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "query": req.uri().query().unwrap_or(""),
        "headers": headers,
    });
    Bytes::from(body.to_string())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut addr = "127.0.0.1:9090".to_string();
    let mut fixed: Option<Bytes> = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--body-bytes" => {
                let n: usize =
                    args.next().ok_or_else(|| anyhow::anyhow!("--body-bytes needs a number"))?.parse()?;
                fixed = Some(Bytes::from(vec![b'x'; n]));
            }
            _ => addr = a,
        }
    }
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("wasmgate-upstream listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let fixed = fixed.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let body = fixed.clone().unwrap_or_else(|| echo(&req));
                let ct = if fixed.is_some() { "text/plain" } else { "application/json" };
                async move {
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("content-type", ct)
                            .body(Full::new(body))
                            .expect("static response"),
                    )
                }
            });
            let _ =
                auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

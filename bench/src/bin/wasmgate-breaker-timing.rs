//! `wasmgate-breaker-timing GATEWAY_BINARY [--rate R] [--threshold N] [--recovery S]`
//!
//! How fast the circuit breaker reacts, end to end: a gateway (the given binary) with one API
//! and a count-mode breaker in front of an upstream this program switches. Requests go out
//! at a fixed rate on one connection. The upstream starts healthy, then fails (500): the
//! time to the first 503 is "failure to open". At that moment it heals: the time to the
//! first 200 is "recovery to closed" (the recovery time, then the probe). Prints one JSON line.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(default)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let gateway = std::env::args().nth(1).expect("the gateway binary");
    let (rate, threshold, recovery_s) = (arg("--rate", 1000), arg("--threshold", 5), arg("--recovery", 2));

    let failing = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let f = failing.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let f = f.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req| {
                    let status = if f.load(Ordering::SeqCst) { 500 } else { 200 };
                    let resp =
                        hyper::Response::builder().status(status).body(Full::new(Bytes::from_static(b"ok")));
                    async move { Ok::<_, hyper::Error>(resp.unwrap()) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });

    let dir = std::env::temp_dir().join(format!("wasmgate-breaker-timing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("gateway.yaml");
    std::fs::write(
        &config,
        format!(
            "listeners: [{{address: '127.0.0.1:0'}}]\ngroups:\n- id: g\n  apis:\n  - id: a\n    path: /a\n    backend: {{http: {{url: 'http://{upstream}'}}}}\n    policies:\n    - plugin: circuit-breaker\n      config: {{breaker: {{type: condition, status_codes: [500], threshold: {threshold}, time_window: 10, recovery_time: {recovery_s}}}}}\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(&gateway)
        .args(["run", "-c"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the gateway starts");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr = line.trim().rsplit("://").next().unwrap().to_string();

    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let url: hyper::Uri = format!("http://{addr}/a").parse().unwrap();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut next = Instant::now();
    let (mut failed_at, mut opened_at, mut healed_at, mut closed_at) = (None, None, None, None);
    let mut failures_seen = 0;
    let start = Instant::now();
    while closed_at.is_none() && start.elapsed() < Duration::from_secs(recovery_s + 10) {
        tokio::time::sleep_until(next.into()).await;
        next += interval;
        if failed_at.is_none() && start.elapsed() > Duration::from_millis(500) {
            failing.store(true, Ordering::SeqCst);
            failed_at = Some(Instant::now());
        }
        let resp = client.get(url.clone()).await.expect("the gateway answers");
        let status = resp.status().as_u16();
        let _ = resp.into_body().collect().await;
        match (status, opened_at) {
            (500, None) => failures_seen += 1,
            (503, None) => {
                opened_at = Some(Instant::now());
                failing.store(false, Ordering::SeqCst);
                healed_at = opened_at;
            }
            (200, Some(_)) => closed_at = Some(Instant::now()),
            _ => {}
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    drop(stdout);
    let _ = std::fs::remove_dir_all(&dir);
    let ms = |a: Option<Instant>, b: Option<Instant>| match (a, b) {
        (Some(a), Some(b)) => format!("{:.1}", (b - a).as_secs_f64() * 1000.0),
        _ => "null".into(),
    };
    println!(
        "{{\"rate\": {rate}, \"threshold\": {threshold}, \"recovery_time_s\": {recovery_s}, \"failures_before_open\": {failures_seen}, \"failure_to_open_ms\": {}, \"recovery_to_closed_ms\": {}}}",
        ms(failed_at, opened_at),
        ms(healed_at, closed_at)
    );
}

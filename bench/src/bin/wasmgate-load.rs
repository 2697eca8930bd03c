//! `wasmgate-load URL --rate R --duration S [--connections C] [-H 'Name: value']...`
//!
//! An open-loop load generator: requests are scheduled at a fixed rate. When a connection is
//! still waiting for an earlier response at a request's due time, that request's latency is
//! counted from its due time, so a stalled server cannot hide its stall by slowing the load
//! down (coordinated omission); otherwise from when it was sent, so the timer's millisecond
//! granularity is not counted against the server. wrk measures peak throughput; this
//! measures latency at a chosen rate. Prints one JSON line.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::{Duration, Instant};

struct Args {
    url: hyper::Uri,
    rate: f64,
    duration: Duration,
    connections: usize,
    headers: Vec<(String, String)>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let (mut url, mut rate, mut duration, mut connections, mut headers) = (None, None, 10.0, 32, Vec::new());
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--rate" => rate = Some(value()?.parse::<f64>().map_err(|e| e.to_string())?),
            "--duration" => duration = value()?.parse::<f64>().map_err(|e| e.to_string())?,
            "--connections" => {
                connections = value()?.parse().map_err(|e: std::num::ParseIntError| e.to_string())?
            }
            "-H" => {
                let h = value()?;
                let (n, v) = h.split_once(':').ok_or(format!("header `{h}` needs `Name: value`"))?;
                headers.push((n.trim().to_string(), v.trim().to_string()));
            }
            _ => url = Some(a.parse().map_err(|e| format!("{e}"))?),
        }
    }
    Ok(Args {
        url: url.ok_or("a URL is needed")?,
        rate: rate.ok_or("--rate is needed")?,
        duration: Duration::from_secs_f64(duration),
        connections,
        headers,
    })
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("wasmgate-load: {e}");
        std::process::exit(2)
    });
    let total = (args.rate * args.duration.as_secs_f64()) as usize;
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let start = Instant::now() + Duration::from_millis(50);
    let mut workers = Vec::new();
    // Connection i sends requests i, i+C, i+2C, ... each at its due time (or at once when late).
    for c in 0..args.connections {
        let client: Client<_, Empty<Bytes>> =
            Client::builder(TokioExecutor::new()).pool_max_idle_per_host(1).build_http();
        let (url, headers, stride) = (args.url.clone(), args.headers.clone(), args.connections);
        workers.push(tokio::spawn(async move {
            let (mut latencies, mut errors) = (Vec::new(), 0usize);
            let mut last_done = Instant::now();
            for i in (c..total).step_by(stride) {
                let due = start + interval * i as u32;
                let origin = if last_done > due {
                    due
                } else {
                    tokio::time::sleep_until(due.into()).await;
                    Instant::now()
                };
                let mut req = hyper::Request::get(url.clone());
                for (n, v) in &headers {
                    req = req.header(n, v);
                }
                match client.request(req.body(Empty::new()).expect("valid request")).await {
                    Ok(resp) if resp.status().is_success() => {
                        let _ = resp.into_body().collect().await;
                        latencies.push(origin.elapsed());
                    }
                    _ => errors += 1,
                }
                last_done = Instant::now();
            }
            (latencies, errors)
        }));
    }
    let (mut all, mut errors) = (Vec::with_capacity(total), 0);
    for w in workers {
        let (l, e) = w.await.expect("worker");
        all.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort();
    println!(
        "{{\"rate\":{},\"sent\":{},\"ok\":{},\"errors\":{},\"achieved_rps\":{:.1},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"p999_ms\":{:.3},\"max_ms\":{:.3}}}",
        args.rate,
        total,
        all.len(),
        errors,
        all.len() as f64 / elapsed,
        percentile(&all, 0.50),
        percentile(&all, 0.99),
        percentile(&all, 0.999),
        percentile(&all, 1.0),
    );
}

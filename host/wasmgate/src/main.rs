//! The `wasmgate` binary: `run` serves a config (a file or the store), `validate` checks
//! one, `import`/`export` move one between a file and the store.
#![forbid(unsafe_code)]

mod admin_cli;
mod components;
mod otlp;
mod plugin_cli;
mod plugin_test;
mod snapshot;
mod store;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use components::Builtins;
use notify::{RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};
use wasmgate_config::GatewayConfig;
use wasmgate_proxy::{ListenerSettings, ListenerTls, ProxyState};
use wasmgate_runtime::PluginRuntime;
use wasmgate_runtime::capabilities::cluster::ClusterCounters;
use wasmgate_runtime::capabilities::credentials::{App, CredentialStore};
use wasmgate_runtime::capabilities::log_sink::BufferLimits;

#[derive(Parser)]
#[command(
    name = "wasmgate",
    version,
    long_version = concat!(
        env!("CARGO_PKG_VERSION"),
        " (commit ",
        env!("WASMGATE_COMMIT"),
        ", plugin contract ",
        env!("WASMGATE_CONTRACT"),
        ")"
    ),
    about = "An API gateway whose policies are sandboxed WebAssembly components"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a config file, or the store's configuration; reloads it on change or SIGHUP,
    /// drains on SIGTERM.
    Run {
        /// The YAML config file to serve.
        #[arg(short, long, required_unless_present = "store", conflicts_with = "store")]
        config: Option<PathBuf>,
        /// Serve the store's configuration instead: `sqlite://PATH` or `postgres://...`;
        /// without a URL, an SQLite file under the data directory. Changes made to the store
        /// (by any gateway or tool) are followed.
        #[arg(long, value_name = "URL")]
        store: Option<Option<String>>,
        /// Where the admin REST API listens when serving from the store.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8001")]
        admin_listen: std::net::SocketAddr,
        #[command(flatten)]
        plugins: PluginArgs,
    },
    /// Check a config file like `validate`, then make it the store's whole configuration.
    Import {
        #[arg(short, long)]
        config: PathBuf,
        /// `sqlite://PATH` or `postgres://...`; default: an SQLite file under the data
        /// directory.
        #[arg(long, value_name = "URL")]
        store: Option<String>,
        #[command(flatten)]
        plugins: PluginArgs,
    },
    /// Operate a running gateway through its admin API: list, get, apply, publish, history,
    /// rollback.
    Admin(admin_cli::AdminArgs),
    /// Write the store's configuration as a YAML config file (stdout unless `--output`).
    Export {
        #[arg(long, value_name = "URL")]
        store: Option<String>,
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Print a new credential (random AK, SK and AppCode) to paste under `credentials:`.
    Credential {
        /// The app's id.
        id: String,
    },
    /// Create, build and inspect plugins.
    #[command(subcommand)]
    Plugin(plugin_cli::PluginCommand),
    /// Check a config, plugins' own config validation included, and exit.
    Validate {
        #[arg(short, long)]
        config: PathBuf,
        #[command(flatten)]
        plugins: PluginArgs,
    },
}

#[derive(clap::Args)]
struct PluginArgs {
    /// A folder of built-in plugin components (`wasmgate_plugin_NAME.wasm`) to use instead of
    /// those built into this binary.
    #[arg(long, env = "WASMGATE_PLUGIN_DIR", value_name = "DIR")]
    plugin_dir: Option<PathBuf>,
}

impl PluginArgs {
    fn builtins(&self) -> Builtins {
        self.plugin_dir.clone().map_or(Builtins::Embedded, Builtins::Dir)
    }
}

fn cache_dir(config: &GatewayConfig) -> Option<PathBuf> {
    config.gateway.plugin_cache_dir.clone().or_else(default_cache_dir)
}

/// The plugin cache without `gateway.plugin_cache_dir`: `$XDG_CACHE_HOME/wasmgate`, else
/// `~/.cache/wasmgate`.
fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("wasmgate"))
}

/// Whether access log lines are JSON (else text); set from the config, reloadable.
static ACCESS_JSON: AtomicBool = AtomicBool::new(true);

/// The gateway's log on stderr (`RUST_LOG`, default `info`), and the access log beside it:
/// events with target `access`, in the configured format, whatever `RUST_LOG` says (the
/// config turns the access log on and off). Access lines are written by a thread of their
/// own through a buffer, in batches, so a request pays for formatting its line, not for a
/// system call; the returned guard flushes what is left when dropped.
fn init_logging() -> tracing_appender::non_blocking::WorkerGuard {
    use tracing::subscriber::Interest;
    use tracing_subscriber::filter::{DynFilterFn, EnvFilter};
    use tracing_subscriber::{Layer, fmt, layer::SubscriberExt, util::SubscriberInitExt};
    let env = EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let wanted = env.max_level_hint();
    let general = fmt::layer()
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, not in log files and collectors.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(env)
        .with_filter(DynFilterFn::new(|m, _| m.target() != "access").with_callsite_filter(|m| {
            if m.target() == "access" { Interest::never() } else { Interest::always() }
        }));
    // Dynamic filters: evaluated per event, so a reload can switch the format. The callsite
    // filter rules out every other callsite once, when it is first hit: without it each
    // `debug!` in hyper, h2 or wasmtime would ask these filters on every call.
    let access = |json: bool| {
        DynFilterFn::new(move |m, _| m.target() == "access" && ACCESS_JSON.load(Ordering::Relaxed) == json)
            .with_callsite_filter(|m| {
                if m.target() == "access" { Interest::sometimes() } else { Interest::never() }
            })
    };
    // Not lossy: under overload requests wait for the log rather than lose their lines.
    let (lines, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::BufWriter::with_capacity(64 << 10, std::io::stderr()));
    let json = fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_writer(lines.clone())
        .with_filter(access(true));
    let text = fmt::layer().with_writer(lines).with_ansi(false).with_filter(access(false));
    tracing_subscriber::registry().with(vec![general.boxed(), json.boxed(), text.boxed()]).init();
    // The access log's dynamic filters give no level hint, so `init` lets every `log` record
    // through to them; Cranelift logs at trace level all through compiling a plugin (a 20 MB
    // component took a minute in a debug build, mostly in filters). No `log` record is an
    // access line: cut them at the level RUST_LOG asks for.
    if let Some(level) = wanted {
        use tracing_log::AsLog;
        tracing_log::log::set_max_level(level.as_log());
    }
    guard
}

fn main() -> std::process::ExitCode {
    let _access_log = init_logging();
    // Panics are contained per request or per plugin call; log them like everything else.
    std::panic::set_hook(Box::new(|info| error!("panic: {info}")));
    match command(Cli::parse().command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // What went wrong and where, with its causes; never a backtrace of the gateway's
            // own code (which `RUST_BACKTRACE` would add to anyhow's report).
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn command(command: Command) -> Result<()> {
    match command {
        Command::Credential { id } => {
            let (key, secret, app_code) =
                wasmgate_admin::credential_keys().map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
            println!("  - {{id: {id}, key: {key}, secret: {secret}, app_code: {app_code}, apis: []}}");
            Ok(())
        }
        Command::Plugin(command) => plugin_cli::run(command),
        Command::Validate { config, plugins } => {
            let cfg = GatewayConfig::load(&config)?;
            let builder =
                snapshot::Builder::new(PluginRuntime::new(cache_dir(&cfg))?, plugins.builtins(), None);
            let (_, grants) = builder.build_with_grants(&cfg, &config)?;
            for line in grants {
                println!("grants: {line}");
            }
            println!("{}: OK", config.display());
            Ok(())
        }
        Command::Import { config, store, plugins } => {
            let runtime = check(&config, &plugins)?;
            let text = std::fs::read_to_string(&config)?;
            let declared = GatewayConfig::parse_declared(&text, &config)?;
            let url = store.map_or_else(store::default_url, Ok)?;
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let count =
                rt.block_on(async { store::import(&*store::open(&url).await?, &declared, &runtime).await })?;
            println!("{}: imported into {} ({count} resources)", config.display(), store::redacted(&url));
            Ok(())
        }
        Command::Admin(args) => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(admin_cli::run(args))
        }
        Command::Export { store, output } => {
            let url = store.map_or_else(store::default_url, Ok)?;
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let yaml = rt.block_on(async { store::export(&*store::open(&url).await?).await })?;
            match output {
                Some(path) => {
                    std::fs::write(&path, yaml).with_context(|| format!("cannot write {}", path.display()))?
                }
                None => print!("{yaml}"),
            }
            Ok(())
        }
        Command::Run { config, store, admin_listen, plugins } => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(async {
                let source = match (config, store) {
                    (Some(path), _) => Source::File(path),
                    (None, store) => {
                        let url = store.flatten().map_or_else(store::default_url, Ok)?;
                        Source::Store { store: store::open(&url).await?, origin: store::redacted(&url) }
                    }
                };
                run(source, plugins.builtins(), admin_listen).await
            })
        }
    }
}

/// Load a config file and build a snapshot from it (plugins check their own configs): all a
/// config must pass before it is served or stored. Returns the runtime that built it.
fn check(config: &Path, plugins: &PluginArgs) -> Result<Arc<PluginRuntime>> {
    let cfg = GatewayConfig::load(config)?;
    let runtime = PluginRuntime::new(cache_dir(&cfg))?;
    let builder = snapshot::Builder::new(runtime, plugins.builtins(), None);
    drop(builder.build(&cfg, config)?);
    Ok(builder.runtime)
}

/// Where the configuration comes from.
enum Source {
    File(PathBuf),
    Store { store: Arc<wasmgate_store::Store>, origin: String },
}

impl Source {
    async fn load(&self) -> Result<GatewayConfig> {
        match self {
            Source::File(path) => Ok(GatewayConfig::load(path)?),
            Source::Store { store, origin } => store::read_config(store, origin).await,
        }
    }

    /// Bring the components uploaded to the store that `cfg` uses into the plugin cache.
    async fn fetch_components(&self, cfg: &GatewayConfig, runtime: &Arc<PluginRuntime>) -> Result<()> {
        match self {
            Source::File(_) => Ok(()),
            Source::Store { store, .. } => store::fetch_components(store, cfg, runtime).await,
        }
    }

    /// How errors name it.
    fn origin(&self) -> PathBuf {
        match self {
            Source::File(path) => path.clone(),
            Source::Store { origin, .. } => PathBuf::from(origin),
        }
    }
}

async fn run(source: Source, builtins: Builtins, admin_listen: std::net::SocketAddr) -> Result<()> {
    let started = Instant::now();
    // Read before the configuration, so a change made meanwhile is seen as a change.
    let generation = match &source {
        Source::Store { store, .. } => Some(store.generation().await?),
        Source::File(_) => None,
    };
    let cfg = source.load().await?;
    let origin = source.origin();
    let runtime = PluginRuntime::new(cache_dir(&cfg))?;
    let b = cfg.gateway.log_buffer;
    runtime
        .capabilities()
        .log_sinks
        .set_limits(BufferLimits { messages: b.max_messages, bytes: b.max_bytes });
    if let Some(ca) = &cfg.gateway.outbound_ca {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        let certs = CertificateDer::pem_file_iter(ca)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .with_context(|| format!("gateway.outbound_ca `{}`", ca.display()))?;
        runtime.capabilities().outbound.trust(certs);
    }
    // The ports first: one in use is reported before minutes of compiling, and a client that
    // connects during start-up waits in the backlog instead of being refused.
    let mut bound = Vec::new();
    for l in &cfg.listeners {
        let listener =
            TcpListener::bind(l.address).await.with_context(|| format!("cannot listen on {}", l.address))?;
        // Tests and scripts read these lines, up to `wasmgate ready`, to learn the ports
        // when the config says :0.
        let scheme = if l.tls.is_some() { "https" } else { "http" };
        announce(&format!("wasmgate listening on {scheme}://{}", listener.local_addr()?));
        bound.push(listener);
    }
    source.fetch_components(&cfg, &runtime).await?;
    let mut builder =
        snapshot::Builder::new(runtime.clone(), builtins, Some(tokio::runtime::Handle::current()));
    let spans = match &cfg.gateway.otlp {
        Some(o) => Some(Arc::new(otlp::OtlpSpans::new(&o.endpoint, Duration::from_millis(o.flush_ms))?)),
        None => None,
    };
    builder.spans = spans.clone().map(|s| s as Arc<dyn wasmgate_proxy::access_log::SpanSink>);
    let snapshot = builder.build(&cfg, &origin)?;
    apply_process_settings(&runtime, &cfg);
    if let Some(redis) = &cfg.gateway.redis {
        let cluster = ClusterCounters::new(
            &redis.url,
            Duration::from_millis(redis.timeout_ms),
            tokio::runtime::Handle::current(),
        )
        .with_context(|| format!("gateway.redis.url `{}`", redis.url))?;
        let _ = runtime.capabilities().cluster.set(cluster);
        info!(url = %redis.url, "cluster counters in redis");
    }
    builder.loaded_at.set(unix_now());
    let state = Arc::new(builder.proxy(snapshot));

    // Reload triggers are in place before the first request can arrive, so no change made
    // after start-up is missed.
    let (reload_tx, mut reload_rx) = mpsc::channel::<()>(1);
    let _watcher = match (&source, generation) {
        (Source::File(path), _) => watch_file(path, reload_tx),
        (Source::Store { store, .. }, Some(seen)) => {
            tokio::spawn(store::watch(store.clone(), seen, reload_tx));
            None
        }
        (Source::Store { .. }, None) => unreachable!("read above"),
    };
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let drain = Duration::from_millis(cfg.gateway.drain_timeout_ms);
    let mut servers = Vec::new();
    for (l, listener) in cfg.listeners.iter().zip(bound) {
        let settings = Arc::new(ListenerSettings {
            trusted_proxies: l.trusted_proxies.clone(),
            tls: l.tls.as_ref().map(|t| ListenerTls { default_certificate: t.default_certificate.clone() }),
            limits: wasmgate_proxy::ListenerLimits {
                max_connections: l.limits.max_connections as usize,
                header_timeout: Duration::from_millis(l.limits.header_timeout_ms),
                idle_timeout: Duration::from_millis(l.limits.idle_timeout_ms),
                http2_max_concurrent_streams: l.limits.http2_max_concurrent_streams,
            },
        });
        servers.push(tokio::spawn(wasmgate_proxy::server::serve(
            settings,
            listener,
            state.clone(),
            shutdown_rx.clone(),
            drain,
        )));
    }
    if let Some(addr) = cfg.gateway.metrics_listen {
        let listener =
            TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} for metrics"))?;
        announce(&format!("wasmgate metrics on http://{}/metrics", listener.local_addr()?));
        tokio::spawn(serve_metrics(listener, builder.clone()));
    }
    if let Source::Store { store, .. } = &source {
        let (new_token, hash) = wasmgate_admin::token(store).await?;
        if let Some(token) = new_token {
            // On stdout for whoever started the gateway, never in the log; only its hash is kept.
            announce(&format!("wasmgate admin token (shown once): {token}"));
        }
        let listener = TcpListener::bind(admin_listen)
            .await
            .with_context(|| format!("cannot listen on {admin_listen} for the admin API"))?;
        announce(&format!("wasmgate admin on http://{}", listener.local_addr()?));
        let gateway = Arc::new(AdminGateway { store: store.clone(), builder: builder.clone() });
        tokio::spawn(wasmgate_admin::Admin::new(store.clone(), gateway, hash).serve(listener));
    }
    announce("wasmgate ready");
    info!(
        ms = started.elapsed().as_millis() as u64,
        apis = cfg.groups.iter().map(|g| g.apis.len()).sum::<usize>(),
        "ready"
    );

    let reload = Reloader {
        source,
        builder,
        state,
        listeners: cfg.listeners.clone(),
        redis: cfg.gateway.redis.clone(),
        log_buffer: cfg.gateway.log_buffer,
        otlp: cfg.gateway.otlp.clone(),
    };
    loop {
        tokio::select! {
            _ = hup.recv() => reload.reload().await,
            Some(()) = reload_rx.recv() => {
                // Editors write in bursts; let the file settle before reading it.
                if matches!(reload.source, Source::File(_)) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                while reload_rx.try_recv().is_ok() {}
                reload.reload().await;
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    info!("shutting down");
    let _ = shutdown_tx.send(true);
    for s in servers {
        let _ = s.await;
    }
    // Log messages already accepted get a last chance to reach their brokers.
    let caps = reload.builder.runtime.capabilities().clone();
    let _ = tokio::task::spawn_blocking(move || caps.log_sinks.flush(Duration::from_secs(5))).await;
    if let Some(spans) = spans {
        let _ = tokio::task::spawn_blocking(move || spans.flush()).await;
    }
    Ok(())
}

/// The admin API's view of this gateway: it builds snapshots exactly as serving does.
struct AdminGateway {
    store: Arc<wasmgate_store::Store>,
    builder: snapshot::Builder,
}

impl wasmgate_admin::Gateway for AdminGateway {
    fn build(
        &self,
        config: &GatewayConfig,
    ) -> Result<wasmgate_proxy::Snapshot, wasmgate_config::ConfigError> {
        let origin = Path::new(wasmgate_admin::ORIGIN);
        // Components another gateway accepted may not be here yet. (A blocking thread: the
        // admin API calls this through `spawn_blocking`.)
        let fetched = tokio::runtime::Handle::current().block_on(store::fetch_components(
            &self.store,
            config,
            &self.builder.runtime,
        ));
        fetched.map_err(|e| wasmgate_config::ConfigError {
            file: origin.into(),
            location: "plugins".into(),
            message: format!("{e:#}"),
        })?;
        self.builder.build(config, origin)
    }

    fn install_component(&self, bytes: &[u8]) -> Result<String, String> {
        self.builder.runtime.install(bytes).map_err(|e| e.to_string())
    }

    fn proxy(&self, snapshot: wasmgate_proxy::Snapshot) -> ProxyState {
        self.builder.proxy(snapshot)
    }

    fn metrics(&self) -> String {
        self.builder.metrics_text()
    }
}

/// `GET /metrics` in Prometheus' text format, without authentication: bind it where only
/// the scraper reaches (it names APIs, plugins and backends, nothing more).
async fn serve_metrics(listener: TcpListener, builder: snapshot::Builder) {
    use http_body_util::Full;
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let response = if req.uri().path() == "/metrics" {
                    hyper::Response::builder()
                        .header("content-type", "text/plain; version=0.0.4")
                        .body(Full::new(bytes::Bytes::from(builder.metrics_text())))
                } else {
                    hyper::Response::builder()
                        .status(404)
                        .body(Full::new(bytes::Bytes::from_static(b"GET /metrics\n")))
                };
                async move { response }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
        });
    }
}

/// A line on stdout for whoever started the gateway. Nobody may be reading any more (a
/// closed pipe): that must not stop the gateway, so errors are ignored (`println!` panics).
fn announce(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// What an accepted config sets beyond the snapshot: the plugins' clock, the credentials and
/// the access log's format.
fn apply_process_settings(runtime: &PluginRuntime, cfg: &GatewayConfig) {
    ACCESS_JSON.store(cfg.gateway.access_log.format == wasmgate_config::LogFormat::Json, Ordering::Relaxed);
    let caps = runtime.capabilities();
    caps.clock.set_offset_ms(cfg.gateway.clock_offset_ms);
    let mut store = CredentialStore::default();
    for c in &cfg.credentials {
        let app = App {
            id: c.id.clone(),
            secret: c.secret.clone(),
            apis: c.apis.clone(),
            groups: c.groups.clone(),
        };
        store.insert(c.key.clone(), c.app_code.clone(), app);
    }
    caps.credentials.store(Arc::new(store));
}

struct Reloader {
    source: Source,
    builder: snapshot::Builder,
    state: Arc<ProxyState>,
    listeners: Vec<wasmgate_config::Listener>,
    redis: Option<wasmgate_config::RedisSettings>,
    log_buffer: wasmgate_config::LogBuffer,
    otlp: Option<wasmgate_config::Otlp>,
}

impl Reloader {
    /// Build a complete new snapshot off the request path and swap it in; on any error keep
    /// serving the current one.
    async fn reload(&self) {
        let loaded = match self.source.load().await {
            Ok(cfg) => self.source.fetch_components(&cfg, &self.builder.runtime).await.map(|()| cfg),
            Err(e) => Err(e),
        };
        let rejected = || self.builder.reloads.with_label_values(&["rejected"]).inc();
        let cfg = match loaded {
            Ok(cfg) => cfg,
            Err(e) => {
                rejected();
                return error!("config reload rejected, still serving the previous config: {e:#}");
            }
        };
        let (origin, builder) = (self.source.origin(), self.builder.clone());
        let built = tokio::task::spawn_blocking(move || {
            let snapshot = builder.build(&cfg, &origin)?;
            Ok::<_, wasmgate_config::ConfigError>((cfg, snapshot))
        })
        .await;
        match built {
            Ok(Ok((cfg, snapshot))) => {
                apply_process_settings(&self.builder.runtime, &cfg);
                self.state.swap(snapshot);
                if cfg.listeners != self.listeners {
                    warn!("listener changes take effect on restart only");
                }
                if cfg.gateway.redis != self.redis {
                    warn!("gateway.redis changes take effect on restart only");
                }
                if cfg.gateway.log_buffer != self.log_buffer {
                    warn!("gateway.log_buffer changes take effect on restart only");
                }
                if cfg.gateway.otlp != self.otlp {
                    warn!("gateway.otlp changes take effect on restart only");
                }
                self.builder.reloads.with_label_values(&["applied"]).inc();
                self.builder.loaded_at.set(unix_now());
                info!("config reloaded");
            }
            Ok(Err(e)) => {
                rejected();
                error!("config reload rejected, still serving the previous config: {e}")
            }
            Err(e) => {
                rejected();
                error!("config reload failed: {e}")
            }
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Watch the config's folder (editors often replace the file rather than write into it).
fn watch_file(path: &Path, tx: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    let file_name = path.file_name()?.to_owned();
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev
            && (ev.kind.is_modify() || ev.kind.is_create())
            && ev.paths.iter().any(|p| p.file_name() == Some(&file_name))
        {
            let _ = tx.try_send(());
        }
    })
    .map_err(|e| warn!(error = %e, "config file watching unavailable; use SIGHUP to reload"))
    .ok()?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|e| warn!(error = %e, "config file watching unavailable; use SIGHUP to reload"))
        .ok()?;
    Some(watcher)
}

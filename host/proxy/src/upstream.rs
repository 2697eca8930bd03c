//! Where backend requests go: HTTP(S) clients, one per connect timeout and TLS setting, and
//! load-balance channels with their members' health. [`Upstreams`] keeps both across
//! reloads while their settings are unchanged, so connection pools, health state and
//! health probes survive a new snapshot; a channel whose snapshot is gone stops probing.

use crate::body::GatewayBody;
use http::uri::{Authority, Scheme};
use http::{HeaderMap, HeaderName, Request};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tracing::{info, warn};

pub type UpstreamClient = Client<WithoutConnInfo<HttpsConnector<HttpConnector>>, GatewayBody>;

/// What connections to a backend need; the key under which clients are shared.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientSettings {
    pub connect_timeout: Duration,
    /// PEM files' contents: CAs trusted besides the system's.
    pub extra_cas: Vec<Vec<u8>>,
    /// PEM certificate chain and private key presented to HTTPS backends.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings { connect_timeout: Duration::from_secs(5), extra_cas: Vec::new(), identity: None }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("a CA certificate is not usable: {0}")]
    Ca(String),
    #[error("the client certificate or key is not usable: {0}")]
    Identity(String),
}

/// The system's CAs. Unreadable ones are skipped: the configured CAs may be all it needs.
pub fn system_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    roots
}

/// A TLS client configuration (ring, the default protocol versions) verifying with `roots`.
pub fn tls_config(
    roots: rustls::RootCertStore,
) -> rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert> {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_root_certificates(roots)
}

/// HTTP, and HTTPS with `tls`, over one connector.
pub fn connector(
    tls: rustls::ClientConfig,
    connect_timeout: Option<Duration>,
) -> HttpsConnector<HttpConnector> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(connect_timeout);
    http.enforce_http(false);
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http)
}

/// A client for these settings: HTTP, or HTTPS verified against the system's CAs and the
/// extra ones.
pub fn client(settings: &ClientSettings) -> Result<UpstreamClient, UpstreamError> {
    let mut roots = system_roots();
    for pem in &settings.extra_cas {
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| UpstreamError::Ca(e.to_string()))?;
            roots.add(cert).map_err(|e| UpstreamError::Ca(e.to_string()))?;
        }
    }
    let tls = tls_config(roots);
    let tls = match &settings.identity {
        None => tls.with_no_client_auth(),
        Some((chain, key)) => {
            let bad = |e: &dyn std::fmt::Display| UpstreamError::Identity(e.to_string());
            let chain =
                CertificateDer::pem_slice_iter(chain).collect::<Result<Vec<_>, _>>().map_err(|e| bad(&e))?;
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| bad(&e))?;
            tls.with_client_auth_cert(chain, key).map_err(|e| bad(&e))?
        }
    };
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .build(WithoutConnInfo(connector(tls, Some(settings.connect_timeout)))))
}

/// A connector whose connections do not carry hyper-util's `HttpInfo` (their addresses):
/// the legacy client would insert it into every response's extensions, two allocations
/// per request for something nothing here reads.
#[derive(Clone)]
pub struct WithoutConnInfo<C>(C);

impl<C> tower_service::Service<http::Uri> for WithoutConnInfo<C>
where
    C: tower_service::Service<http::Uri>,
    C::Future: Send + 'static,
{
    type Response = NoInfo<C::Response>;
    type Error = C::Error;
    type Future = futures_util::future::MapOk<C::Future, fn(C::Response) -> NoInfo<C::Response>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        use futures_util::TryFutureExt;
        self.0.call(uri).map_ok(NoInfo as fn(C::Response) -> NoInfo<C::Response>)
    }
}

/// A connection as its connector made it, minus the `HttpInfo` extra.
pub struct NoInfo<T>(T);

impl<T: Connection> Connection for NoInfo<T> {
    fn connected(&self) -> Connected {
        let inner = self.0.connected();
        let connected = Connected::new().proxy(inner.is_proxied());
        if inner.is_negotiated_h2() { connected.negotiated_h2() } else { connected }
    }
}

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for NoInfo<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for NoInfo<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
}

/// Clients and channels, kept while some snapshot uses them.
pub struct Upstreams {
    clients: Mutex<HashMap<ClientSettings, Weak<UpstreamClient>>>,
    channels: Mutex<HashMap<String, Weak<Channel>>>,
    /// Where health probes run; `None` (checking a config without serving it): no probes.
    probes: Option<tokio::runtime::Handle>,
}

impl Upstreams {
    pub fn new(probes: Option<tokio::runtime::Handle>) -> Self {
        Upstreams { clients: Mutex::default(), channels: Mutex::default(), probes }
    }

    pub fn client(&self, settings: &ClientSettings) -> Result<Arc<UpstreamClient>, UpstreamError> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(settings).and_then(Weak::upgrade) {
            return Ok(c);
        }
        clients.retain(|_, c| c.strong_count() > 0);
        let c = Arc::new(client(settings)?);
        clients.insert(settings.clone(), Arc::downgrade(&c));
        Ok(c)
    }

    /// The channels some snapshot uses.
    pub fn channels(&self) -> Vec<Arc<Channel>> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner()).values().filter_map(Weak::upgrade).collect()
    }

    /// The channel `name` with this spec: the running one if its spec is the same (health
    /// state and probes carry on), else a new one whose probes start now.
    pub fn channel(&self, name: &str, spec: ChannelSpec) -> Result<Arc<Channel>, UpstreamError> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = channels.get(name).and_then(Weak::upgrade)
            && c.spec == spec
        {
            return Ok(c);
        }
        channels.retain(|_, c| c.strong_count() > 0);
        let probe_client = match &spec.health {
            Some(_) => Some(self.client(&spec.probe_client)?),
            None => None,
        };
        let channel = Arc::new(Channel::new(name, spec));
        if let (Some(rt), Some(client)) = (&self.probes, probe_client) {
            rt.spawn(probe(Arc::downgrade(&channel), client));
        }
        channels.insert(name.to_string(), Arc::downgrade(&channel));
        Ok(channel)
    }
}

/// What a channel is made of; a changed spec makes a new channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSpec {
    /// Members and weights.
    pub members: Vec<(Authority, u32)>,
    pub balance: Balance,
    pub health: Option<HealthSpec>,
    pub passive: Option<PassiveSpec>,
    /// How probes connect.
    pub probe_client: ClientSettings,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    /// Consistent hashing on the client's IP, or on a header (a request without it goes
    /// round robin).
    HashSourceIp,
    HashHeader(HeaderName),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSpec {
    pub path: String,
    pub https: bool,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassiveSpec {
    pub consecutive_failures: u32,
    pub eject: Duration,
}

pub struct Channel {
    pub name: String,
    spec: ChannelSpec,
    pub members: Vec<Member>,
    /// Member indexes in smooth weighted round-robin order (each member appears `weight`
    /// times, interleaved); a shared counter walks it, so picking takes no lock.
    schedule: Vec<u8>,
    next: AtomicUsize,
    /// Consistent-hash ring: (point, member), sorted; 40 points per unit of weight.
    ring: Vec<(u64, u8)>,
    epoch: Instant,
}

pub struct Member {
    pub authority: Authority,
    /// As the health probes last decided (members start healthy).
    healthy: AtomicBool,
    /// Good (positive) or failed (negative) probes in a row.
    probe_streak: AtomicU32,
    probe_failing: AtomicBool,
    /// Failed requests in a row (passive check).
    failures: AtomicU32,
    /// Milliseconds since the channel's epoch until which the passive check keeps it out.
    ejected_until: AtomicU64,
}

fn hash64(bytes: &[u8]) -> u64 {
    // SipHash with fixed keys: the same value for the same key for the process's lifetime.
    let mut h = std::hash::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

impl Channel {
    fn new(name: &str, spec: ChannelSpec) -> Channel {
        let members: Vec<Member> = spec
            .members
            .iter()
            .map(|(authority, _)| Member {
                authority: authority.clone(),
                healthy: AtomicBool::new(true),
                probe_streak: AtomicU32::new(0),
                probe_failing: AtomicBool::new(false),
                failures: AtomicU32::new(0),
                ejected_until: AtomicU64::new(0),
            })
            .collect();
        // Smooth weighted round robin (as nginx does it), run once for a whole cycle.
        let weights: Vec<i64> = spec.members.iter().map(|(_, w)| i64::from(*w)).collect();
        let total: i64 = weights.iter().sum();
        let mut current = vec![0i64; weights.len()];
        let mut schedule = Vec::with_capacity(total as usize);
        for _ in 0..total {
            for (c, w) in current.iter_mut().zip(&weights) {
                *c += w;
            }
            let best =
                (0..current.len()).max_by_key(|&i| (current[i], std::cmp::Reverse(i))).expect("members");
            current[best] -= total;
            schedule.push(best as u8);
        }
        let mut ring: Vec<(u64, u8)> = Vec::new();
        for (i, (authority, weight)) in spec.members.iter().enumerate() {
            for v in 0..weight * 40 {
                ring.push((hash64(format!("{authority}#{v}").as_bytes()), i as u8));
            }
        }
        ring.sort_unstable();
        Channel {
            name: name.to_string(),
            spec,
            members,
            schedule,
            next: AtomicUsize::new(0),
            ring,
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn available(&self, i: usize, now_ms: u64) -> bool {
        let m = &self.members[i];
        m.healthy.load(Ordering::Relaxed) && m.ejected_until.load(Ordering::Relaxed) <= now_ms
    }

    /// What consistent hashing hashes for this request, if the channel hashes.
    pub fn hash_key(&self, client_ip: IpAddr, headers: &HeaderMap) -> Option<u64> {
        match &self.spec.balance {
            Balance::RoundRobin => None,
            Balance::HashSourceIp => Some(hash64(client_ip.to_string().as_bytes())),
            Balance::HashHeader(name) => headers.get(name).map(|v| hash64(v.as_bytes())),
        }
    }

    /// The member to send to: by `key` on the ring, else the next in the weighted order;
    /// skipping members that are down or already `tried` (a bit per member).
    pub fn pick(&self, key: Option<u64>, tried: u128) -> Option<usize> {
        let now = self.now_ms();
        let ok = |i: usize| tried & (1 << i) == 0 && self.available(i, now);
        if let Some(key) = key {
            let start = self.ring.partition_point(|(p, _)| *p < key);
            return (0..self.ring.len())
                .map(|k| self.ring[(start + k) % self.ring.len()].1 as usize)
                .find(|&i| ok(i));
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..self.schedule.len())
            .map(|k| self.schedule[(start + k) % self.schedule.len()] as usize)
            .find(|&i| ok(i))
    }

    /// The passive check: a request to member `i` succeeded or failed.
    pub fn report(&self, i: usize, ok: bool) {
        let Some(passive) = &self.spec.passive else { return };
        let m = &self.members[i];
        if ok {
            m.failures.store(0, Ordering::Relaxed);
            return;
        }
        if m.failures.fetch_add(1, Ordering::Relaxed) + 1 >= passive.consecutive_failures {
            m.failures.store(0, Ordering::Relaxed);
            warn!(channel = %self.name, member = %m.authority, "member ejected after consecutive failures");
            if self.spec.health.is_some() {
                // Back when the probes find it healthy.
                m.healthy.store(false, Ordering::Relaxed);
                m.probe_streak.store(0, Ordering::Relaxed);
                m.probe_failing.store(true, Ordering::Relaxed);
            } else {
                m.ejected_until.store(self.now_ms() + passive.eject.as_millis() as u64, Ordering::Relaxed);
            }
        }
    }

    /// Whether each member is taking requests now, for metrics and the debug trace.
    pub fn health(&self) -> Vec<(&Authority, bool)> {
        let now = self.now_ms();
        self.members.iter().enumerate().map(|(i, m)| (&m.authority, self.available(i, now))).collect()
    }

    fn probed(&self, i: usize, ok: bool, spec: &HealthSpec) {
        let m = &self.members[i];
        // A change of direction restarts the streak.
        if m.probe_failing.swap(!ok, Ordering::Relaxed) == ok {
            m.probe_streak.store(0, Ordering::Relaxed);
        }
        let streak = m.probe_streak.fetch_add(1, Ordering::Relaxed) + 1;
        let healthy = m.healthy.load(Ordering::Relaxed);
        if ok && !healthy && streak >= spec.healthy_threshold {
            m.healthy.store(true, Ordering::Relaxed);
            info!(channel = %self.name, member = %m.authority, "member healthy again");
        } else if !ok && healthy && streak >= spec.unhealthy_threshold {
            m.healthy.store(false, Ordering::Relaxed);
            warn!(channel = %self.name, member = %m.authority, "member unhealthy: health checks failed");
        }
    }
}

/// Probe every member of the channel each interval, until the channel is dropped.
async fn probe(channel: Weak<Channel>, client: Arc<UpstreamClient>) {
    let Some(spec) = channel.upgrade().and_then(|c| c.spec.health.clone()) else { return };
    let scheme = if spec.https { Scheme::HTTPS } else { Scheme::HTTP };
    let mut tick = tokio::time::interval(spec.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(c) = channel.upgrade() else { return };
        let probes = c.members.iter().enumerate().map(|(i, m)| {
            let uri = format!("{scheme}://{}{}", m.authority, spec.path);
            let client = &client;
            async move {
                let Ok(request) = Request::get(uri).body(GatewayBody::Empty) else { return (i, false) };
                let answer = tokio::time::timeout(spec.timeout, client.request(request)).await;
                let ok = matches!(answer, Ok(Ok(r)) if r.status().as_u16() < 400);
                (i, ok)
            }
        });
        for (i, ok) in futures_util::future::join_all(probes).await {
            c.probed(i, ok, &spec);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(weights: &[u32], balance: Balance) -> Channel {
        let members = weights
            .iter()
            .enumerate()
            .map(|(i, w)| (format!("10.0.0.{i}:80").parse().unwrap(), *w))
            .collect();
        let spec = ChannelSpec {
            members,
            balance,
            health: None,
            passive: None,
            probe_client: ClientSettings::default(),
        };
        Channel::new("c", spec)
    }

    #[test]
    fn round_robin_follows_the_weights_interleaved() {
        let c = channel(&[5, 1, 1], Balance::RoundRobin);
        let picks: Vec<usize> = (0..7).map(|_| c.pick(None, 0).unwrap()).collect();
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0], "smooth: the heavy member is spread out");
        let mut counts = [0; 3];
        for _ in 0..700 {
            counts[c.pick(None, 0).unwrap()] += 1;
        }
        assert_eq!(counts, [500, 100, 100]);
        // A tried member is skipped.
        assert!((0..20).all(|_| c.pick(None, 1) != Some(0)));
    }

    #[test]
    fn consistent_hashing_keeps_keys_on_their_member_and_moves_few_when_one_goes() {
        let c = channel(&[1, 1, 1, 1], Balance::HashSourceIp);
        let keys: Vec<u64> = (0..1000).map(|k| hash64(format!("client-{k}").as_bytes())).collect();
        let before: Vec<usize> = keys.iter().map(|k| c.pick(Some(*k), 0).unwrap()).collect();
        assert_eq!(before, keys.iter().map(|k| c.pick(Some(*k), 0).unwrap()).collect::<Vec<_>>());
        let mut per_member = [0; 4];
        before.iter().for_each(|&m| per_member[m] += 1);
        assert!(per_member.iter().all(|&n| (150..=350).contains(&n)), "{per_member:?}");
        // Member 2 down: only its keys move.
        c.members[2].healthy.store(false, Ordering::Relaxed);
        let after: Vec<usize> = keys.iter().map(|k| c.pick(Some(*k), 0).unwrap()).collect();
        for (b, a) in before.iter().zip(&after) {
            assert!(b == a || *b == 2, "a key moved off a member that is still up");
            assert_ne!(*a, 2);
        }
    }

    #[test]
    fn the_passive_check_ejects_after_consecutive_failures_and_lets_the_member_back() {
        let mut c = channel(&[1, 1], Balance::RoundRobin);
        c.spec.passive = Some(PassiveSpec { consecutive_failures: 3, eject: Duration::from_millis(50) });
        c.report(0, false);
        c.report(0, false);
        c.report(0, true); // the streak is broken
        c.report(0, false);
        c.report(0, false);
        assert!((0..4).any(|_| c.pick(None, 0) == Some(0)));
        c.report(0, false);
        assert!((0..4).all(|_| c.pick(None, 0) == Some(1)), "ejected");
        assert_eq!(c.pick(None, 2), None, "nothing left but a tried member");
        std::thread::sleep(Duration::from_millis(60));
        assert!((0..4).any(|_| c.pick(None, 0) == Some(0)), "back after eject_ms");
    }
}

//! `wasmgate:plugin/log-sink`: non-blocking publishing to the Kafka topics bindings declare.
//!
//! One [`Producer`] per distinct broker list and security settings, shared by every binding
//! that names them and kept across reloads (the registry holds it weakly; snapshots hold it).
//! `publish` only appends to the producer's bounded buffer, so a log phase never waits for
//! Kafka. A dispatcher thread per producer hands messages to librdkafka, at most an eighth of
//! the buffer (≤ 1,024) at a time; a message whose delivery fails because no broker answered goes
//! back to the front of the buffer and is sent again after the retry interval, so while the
//! brokers are down messages wait in the buffer, and when it is full the oldest waiting one
//! is dropped and counted.

use crate::HostState;
use crate::bindings::wasmgate::plugin::log_sink::{Host, PublishError};
use crate::bindings::wasmgate::plugin::types::{KafkaProtocol, KafkaSink, LogSinkDecl, SaslMechanism};
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// The most messages handed to librdkafka and not yet reported delivered or failed, per
/// producer. They count toward the buffer but cannot be dropped, so this stays a fraction of
/// it; and it must cover what arrives during librdkafka's batching delay and a round trip,
/// or it caps throughput.
const MAX_IN_FLIGHT: usize = 1024;
/// A single message's limit (Kafka's default `message.max.bytes` is about 1 MiB).
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// How much a producer holds while its brokers are away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferLimits {
    pub messages: usize,
    pub bytes: usize,
}

impl Default for BufferLimits {
    fn default() -> Self {
        BufferLimits { messages: 10_000, bytes: 64 << 20 }
    }
}

/// One Kafka producer's numbers.
pub struct SinkStats {
    pub brokers: String,
    /// Waiting or in flight.
    pub buffered: u64,
    pub delivered: u64,
    /// Dropped for want of room, or rejected by Kafka.
    pub dropped: u64,
}

/// A sink a binding was granted: where its `publish(name, ..)` calls go.
pub struct GrantedSink {
    pub name: String,
    pub topic: Arc<str>,
    /// `None` when messages are captured instead ([`LogSinks::capture`]).
    producer: Option<Arc<Producer>>,
}

/// A message a plugin published while sinks were captured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub sink: String,
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

/// The registry of producers, shared by all snapshots of this process.
#[derive(Default)]
pub struct LogSinks {
    producers: Mutex<HashMap<String, Weak<Producer>>>,
    limits: Mutex<BufferLimits>,
    /// Set by test harnesses: sinks granted from then on keep what is published here
    /// instead of sending it to Kafka.
    captured: OnceLock<Mutex<Vec<Published>>>,
}

impl LogSinks {
    /// Set at start-up; producers made later use these limits.
    pub fn set_limits(&self, limits: BufferLimits) {
        *self.limits.lock().unwrap() = limits;
    }

    /// The producer for `decl`'s brokers and security, made on first use.
    pub fn grant(&self, decl: &LogSinkDecl) -> Result<GrantedSink, String> {
        let k = &decl.kafka;
        let config = client_config(k)?;
        if self.captured.get().is_some() {
            return Ok(GrantedSink {
                name: decl.name.clone(),
                topic: k.topic.as_str().into(),
                producer: None,
            });
        }
        // Same brokers and security: same producer. The retry settings are per producer too
        // (librdkafka's), so they are part of the key.
        let key = format!("{:?}", config.config_map());
        let mut producers = self.producers.lock().unwrap();
        producers.retain(|_, p| p.strong_count() > 0);
        let producer = match producers.get(&key).and_then(Weak::upgrade) {
            Some(p) => p,
            None => {
                let limits = *self.limits.lock().unwrap();
                let p = Producer::start(&config, k, limits)?;
                producers.insert(key, Arc::downgrade(&p));
                p
            }
        };
        Ok(GrantedSink { name: decl.name.clone(), topic: k.topic.as_str().into(), producer: Some(producer) })
    }

    /// Keep what plugins publish from now on instead of sending it (test harnesses).
    pub fn capture(&self) {
        let _ = self.captured.set(Mutex::default());
    }

    /// What was published since capturing started (or since the last call).
    pub fn take_captured(&self) -> Vec<Published> {
        self.captured.get().map(|c| std::mem::take(&mut *c.lock().unwrap())).unwrap_or_default()
    }

    /// What each producer holds and did, for metrics.
    pub fn stats(&self) -> Vec<SinkStats> {
        let producers: Vec<Arc<Producer>> =
            self.producers.lock().unwrap().values().filter_map(Weak::upgrade).collect();
        producers
            .iter()
            .map(|p| {
                let s = &p.shared;
                let buffered = {
                    let b = s.buffer.lock().unwrap();
                    (b.waiting.len() + b.in_flight) as u64
                };
                SinkStats {
                    brokers: s.name.clone(),
                    buffered,
                    delivered: s.delivered.load(Ordering::Relaxed),
                    dropped: s.dropped.load(Ordering::Relaxed) + s.failed.load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    /// Wait up to `timeout` for every producer to deliver what it holds (at shutdown).
    pub fn flush(&self, timeout: Duration) {
        let producers: Vec<Arc<Producer>> =
            self.producers.lock().unwrap().values().filter_map(Weak::upgrade).collect();
        let deadline = Instant::now() + timeout;
        for p in producers {
            p.flush_until(deadline);
        }
    }
}

fn client_config(k: &KafkaSink) -> Result<ClientConfig, String> {
    if k.brokers.is_empty() {
        return Err("no brokers".into());
    }
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", k.brokers.join(","))
        .set("message.send.max.retries", k.retries.to_string())
        .set("retry.backoff.ms", k.retry_interval_ms.to_string())
        // Undelivered after this (brokers away): back into our buffer, not lost.
        .set("message.timeout.ms", (10_000 + k.retries as u32 * k.retry_interval_ms).to_string())
        .set("linger.ms", LINGER.as_millis().to_string())
        // Find a returning broker within a second, not librdkafka's default ten.
        .set("reconnect.backoff.ms", "100")
        .set("reconnect.backoff.max.ms", "1000");
    let s = &k.security;
    let protocol = match s.protocol {
        KafkaProtocol::Plaintext => "plaintext",
        KafkaProtocol::SaslPlaintext => "sasl_plaintext",
        KafkaProtocol::SaslSsl => "sasl_ssl",
    };
    c.set("security.protocol", protocol);
    match (&s.sasl, s.protocol) {
        (_, KafkaProtocol::Plaintext) => {}
        (None, _) => return Err("SASL protocols need a username and password".into()),
        (Some(sasl), _) => {
            let mechanism = match sasl.mechanism {
                SaslMechanism::Plain => "PLAIN",
                SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            };
            c.set("sasl.mechanism", mechanism)
                .set("sasl.username", &sasl.username)
                .set("sasl.password", &sasl.password);
        }
    }
    if let Some(ca) = &s.ca_pem {
        c.set("ssl.ca.pem", ca);
    }
    Ok(c)
}

struct Pending {
    topic: Arc<str>,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
}

impl Pending {
    fn size(&self) -> usize {
        self.payload.len() + self.key.as_ref().map_or(0, Vec::len)
    }
}

#[derive(Default)]
struct Buffer {
    waiting: VecDeque<Pending>,
    /// Bytes of waiting and in-flight messages.
    bytes: usize,
    in_flight: usize,
    /// No sending before this (after a failed delivery).
    paused_until: Option<Instant>,
    stopping: bool,
    /// The dispatcher is in its long sleep and must be woken for new messages.
    sleeping: bool,
}

/// State shared by the publishers, the dispatcher thread and librdkafka's delivery callback.
struct Shared {
    name: String,
    buffer: Mutex<Buffer>,
    changed: Condvar,
    limits: BufferLimits,
    /// An eighth of the buffer, at most [`MAX_IN_FLIGHT`].
    in_flight_cap: usize,
    retry_interval: Duration,
    delivered: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
}

impl Shared {
    /// Append, dropping the oldest waiting messages while over the limits.
    fn push(&self, msg: Pending) {
        let mut b = self.buffer.lock().unwrap();
        // Under traffic the dispatcher looks for work every NAP by itself: waking it for each
        // message would cost a syscall and a context switch per request.
        let wake = b.sleeping;
        b.bytes += msg.size();
        b.waiting.push_back(msg);
        let mut dropped = 0;
        while b.waiting.len() + b.in_flight > self.limits.messages || b.bytes > self.limits.bytes {
            let Some(old) = b.waiting.pop_front() else { break };
            b.bytes -= old.size();
            dropped += 1;
        }
        drop(b);
        if dropped > 0 {
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        if wake {
            self.changed.notify_all();
        }
    }

    /// A delivery failed for want of a broker: first in line again, after a pause.
    fn requeue(&self, msg: Pending) {
        let mut b = self.buffer.lock().unwrap();
        b.in_flight -= 1;
        b.paused_until = Some(Instant::now() + self.retry_interval);
        if b.waiting.len() + b.in_flight >= self.limits.messages {
            // It is the oldest message there is.
            b.bytes -= msg.size();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            b.waiting.push_front(msg);
        }
        drop(b);
        self.changed.notify_all();
    }

    fn done(&self, msg: &Pending) {
        let mut b = self.buffer.lock().unwrap();
        // Wake the dispatcher if it was held back by the cap, and flushers once all is out.
        let wake = b.in_flight == self.in_flight_cap || (b.in_flight == 1 && b.waiting.is_empty());
        b.in_flight -= 1;
        b.bytes -= msg.size();
        drop(b);
        if wake {
            self.changed.notify_all();
        }
    }
}

struct Delivery(Arc<Shared>);

impl rdkafka::ClientContext for Delivery {}

impl ProducerContext for Delivery {
    type DeliveryOpaque = Arc<Pending>;

    fn delivery(&self, result: &DeliveryResult<'_>, msg: Arc<Pending>) {
        let shared = &self.0;
        match result {
            Ok(_) => {
                shared.delivered.fetch_add(1, Ordering::Relaxed);
                shared.done(&msg);
            }
            Err((e, _)) if permanent(e) => {
                shared.failed.fetch_add(1, Ordering::Relaxed);
                warn!(sink = %shared.name, topic = %msg.topic, error = %e, "log message rejected by Kafka; dropped");
                shared.done(&msg);
            }
            Err(_) => shared.requeue(owned(msg)),
        }
    }
}

/// Errors that sending again cannot cure; everything else (timeouts, brokers down, leader
/// changes) is worth waiting out.
fn permanent(e: &KafkaError) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        e.rdkafka_error_code(),
        Some(
            MessageSizeTooLarge
                | InvalidTopic
                | TopicAuthorizationFailed
                | ClusterAuthorizationFailed
                | InvalidMessage
                | InvalidRecord
        )
    )
}

/// One Kafka producer with its buffer and dispatcher thread. Dropped when no snapshot uses
/// it any more: the dispatcher then delivers what is left (for up to 10 s) and stops.
pub struct Producer {
    shared: Arc<Shared>,
}

impl Producer {
    fn start(config: &ClientConfig, k: &KafkaSink, limits: BufferLimits) -> Result<Arc<Self>, String> {
        let name = k.brokers.join(",");
        let shared = Arc::new(Shared {
            name: name.clone(),
            buffer: Mutex::new(Buffer::default()),
            changed: Condvar::new(),
            limits,
            in_flight_cap: (limits.messages / 8).clamp(1, MAX_IN_FLIGHT),
            retry_interval: Duration::from_millis(k.retry_interval_ms.max(100) as u64),
            delivered: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        });
        let producer: ThreadedProducer<Delivery> =
            config.create_with_context(Delivery(shared.clone())).map_err(|e| format!("Kafka client: {e}"))?;
        let dispatcher = shared.clone();
        std::thread::Builder::new()
            .name(format!("kafka {name}"))
            .spawn(move || dispatch(&dispatcher, &producer))
            .map_err(|e| e.to_string())?;
        info!(brokers = %name, "Kafka producer started");
        Ok(Arc::new(Producer { shared }))
    }

    /// Wait for the buffer to empty, then log what this producer did in its life.
    fn flush_until(&self, deadline: Instant) {
        let s = &self.shared;
        let mut b = s.buffer.lock().unwrap();
        while !(b.waiting.is_empty() && b.in_flight == 0) {
            let now = Instant::now();
            if now >= deadline {
                warn!(sink = %s.name, left = b.waiting.len() + b.in_flight, "log messages not delivered before shutdown");
                break;
            }
            b = s.changed.wait_timeout(b, deadline - now).unwrap().0;
        }
        let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
        info!(
            sink = %s.name,
            delivered = count(&s.delivered),
            dropped = count(&s.dropped),
            rejected = count(&s.failed),
            "log sink totals"
        );
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.shared.buffer.lock().unwrap().stopping = true;
        self.shared.changed.notify_all();
    }
}

/// How long librdkafka holds messages to batch them (`linger.ms`).
const LINGER: Duration = Duration::from_millis(5);
/// How often the dispatcher looks for new messages while they keep coming, and how many empty
/// looks (100 ms) before it sleeps until woken. As long as librdkafka lingers: each hand-off
/// wakes librdkafka's threads, then its delivery reports wake ours, and on a gateway's busy
/// cores each of those switches costs requests time.
const NAP: Duration = LINGER;
const NAPS_BEFORE_SLEEP: u32 = 20;

/// Move messages from the buffer into librdkafka, as many as the cap allows per turn; report
/// drops at most once a second.
fn dispatch(shared: &Shared, producer: &ThreadedProducer<Delivery>) {
    let mut reported_drops = 0;
    let mut last_report = Instant::now();
    let mut stop_deadline: Option<Instant> = None;
    let mut batch = Vec::new();
    let mut empty_naps = 0;
    loop {
        let mut b = shared.buffer.lock().unwrap();
        let now = Instant::now();
        if b.stopping && stop_deadline.is_none() {
            stop_deadline = Some(now + Duration::from_secs(10));
        }
        if stop_deadline.is_some_and(|d| now >= d || (b.waiting.is_empty() && b.in_flight == 0)) {
            break;
        }
        let dropped = shared.dropped.load(Ordering::Relaxed);
        if dropped != reported_drops && now >= last_report + Duration::from_secs(1) {
            warn!(sink = %shared.name, dropped_total = dropped, "log buffer full: oldest messages dropped");
            (reported_drops, last_report) = (dropped, now);
        }
        let paused = b.paused_until.filter(|t| *t > now);
        let room = shared.in_flight_cap - b.in_flight;
        if paused.is_none() && room > 0 && !b.waiting.is_empty() {
            empty_naps = 0;
            let n = room.min(b.waiting.len());
            batch.extend(b.waiting.drain(..n));
            b.in_flight += n;
            drop(b);
            for msg in batch.drain(..) {
                send(shared, producer, msg);
            }
            continue;
        }
        let wait = match paused {
            Some(until) => (until - now).min(Duration::from_secs(1)),
            None if b.waiting.is_empty() && empty_naps >= NAPS_BEFORE_SLEEP => Duration::from_secs(1),
            None => NAP,
        };
        if b.waiting.is_empty() {
            empty_naps += 1;
        }
        b.sleeping = wait == Duration::from_secs(1);
        let mut b = shared.changed.wait_timeout(b, wait).unwrap().0;
        b.sleeping = false;
    }
    let _ = producer.flush(Duration::from_secs(1));
}

fn send(shared: &Shared, producer: &ThreadedProducer<Delivery>, msg: Pending) {
    // The record borrows key and payload from `msg` while a second handle to it travels as
    // the delivery opaque; librdkafka copies both before `send` returns.
    let msg = Arc::new(msg);
    let mut record = BaseRecord::with_opaque_to(&msg.topic, msg.clone()).payload(msg.payload.as_slice());
    if let Some(k) = &msg.key {
        record = record.key(k.as_slice());
    }
    if let Err((e, record)) = producer.send(record) {
        // librdkafka's own queue is full or the client is failing: wait and try again.
        tracing::debug!(sink = %shared.name, error = %e, "Kafka send refused; will retry");
        drop(record);
        shared.requeue(owned(msg));
    }
}

/// The message back from its last handle (the other one is gone by the time this runs).
fn owned(msg: Arc<Pending>) -> Pending {
    Arc::try_unwrap(msg).unwrap_or_else(|m| Pending {
        topic: m.topic.clone(),
        key: m.key.clone(),
        payload: m.payload.clone(),
    })
}

impl Host for HostState {
    fn publish(&mut self, sink: String, key: Option<Vec<u8>>, payload: Vec<u8>) -> Result<(), PublishError> {
        let granted = self.scope().grants.get().and_then(|g| g.sinks.iter().find(|g| g.name == sink));
        let Some(g) = granted else {
            return Err(PublishError::UnknownSink(sink));
        };
        if payload.len() + key.as_ref().map_or(0, Vec::len) > MAX_MESSAGE_BYTES {
            return Err(PublishError::TooLarge);
        }
        match &g.producer {
            Some(p) => p.shared.push(Pending { topic: g.topic.clone(), key, payload }),
            None => {
                let published = Published { sink, topic: g.topic.to_string(), key, payload };
                let captured = self.caps.log_sinks.captured.get().expect("captured sinks");
                captured.lock().unwrap().push(published);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::wasmgate::plugin::types::{KafkaSecurity, SaslCredentials};

    fn sink(protocol: KafkaProtocol, sasl: Option<SaslCredentials>, ca_pem: Option<String>) -> KafkaSink {
        KafkaSink {
            brokers: vec!["k1:9092".into(), "k2:9093".into()],
            topic: "t".into(),
            security: KafkaSecurity { protocol, sasl, ca_pem },
            retries: 3,
            retry_interval_ms: 2000,
        }
    }

    #[test]
    fn security_settings_map_to_librdkafka_and_the_build_supports_them() {
        let scram = SaslCredentials {
            mechanism: SaslMechanism::ScramSha512,
            username: "gw".into(),
            password: "pw".into(),
        };
        let pem = "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n".to_string();
        let c = client_config(&sink(KafkaProtocol::SaslSsl, Some(scram), Some(pem.clone()))).unwrap();
        let get = |k: &str| c.get(k).map(str::to_string);
        assert_eq!(get("bootstrap.servers").as_deref(), Some("k1:9092,k2:9093"));
        assert_eq!(get("security.protocol").as_deref(), Some("sasl_ssl"));
        assert_eq!(get("sasl.mechanism").as_deref(), Some("SCRAM-SHA-512"));
        assert_eq!(
            (get("sasl.username").as_deref(), get("sasl.password").as_deref()),
            (Some("gw"), Some("pw"))
        );
        assert_eq!(get("ssl.ca.pem"), Some(pem));
        assert_eq!(
            (get("message.send.max.retries").as_deref(), get("retry.backoff.ms").as_deref()),
            (Some("3"), Some("2000"))
        );

        // librdkafka accepts SASL_SSL with SCRAM (it is built with SSL) and SASL_PLAINTEXT with
        // PLAIN; creating a client does not connect.
        let plain =
            SaslCredentials { mechanism: SaslMechanism::Plain, username: "u".into(), password: "p".into() };
        let scram = SaslCredentials {
            mechanism: SaslMechanism::ScramSha512,
            username: "u".into(),
            password: "p".into(),
        };
        for s in [
            sink(KafkaProtocol::SaslPlaintext, Some(plain), None),
            sink(KafkaProtocol::SaslSsl, Some(scram), None),
        ] {
            let created: Result<rdkafka::producer::BaseProducer, _> = client_config(&s).unwrap().create();
            assert!(created.is_ok(), "{:?}", created.err());
        }
        assert!(client_config(&sink(KafkaProtocol::SaslPlaintext, None, None)).is_err());
    }
}

//! Kafka sink (rdkafka / librdkafka). One message per event: JSON value, key =
//! pod uid (host events: the node name) so a pod's events stay ordered in one
//! partition, headers `kind` and `namespace`. librdkafka batches, compresses
//! and retries on its own; its delivery reports drive our counters. When its
//! buffer is full (`buffer_max_messages` / `buffer_max_kbytes`) our worker
//! waits, our bounded queue fills, and the newest events are dropped and
//! counted: memory stays bounded by both buffers.

use std::{collections::BTreeMap, path::PathBuf, sync::Arc, time::Duration};

use rdkafka::{
    config::ClientConfig,
    error::{KafkaError, RDKafkaErrorCode},
    message::{Header, OwnedHeaders},
    producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer as _},
};
use serde::Deserialize;
use tokio::{task::JoinSet, time::Instant};
use tracing::warn;

use super::{
    framework::{self, Encoder, QueueConfig, RetryConfig, SendError, Sent, SinkHandle, SinkStats, Transport},
    namespace_of,
};
use crate::pipeline::event::Event;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    #[default]
    Lz4,
    Zstd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaslConfig {
    pub mechanism: SaslMechanism,
    pub username: String,
    #[serde(default)]
    pub password: Option<String>,
    /// Read at start (a mounted Secret); instead of `password`.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaTls {
    /// PEM CA bundle; default: the system's.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// Topic; `{kind}` in it is replaced by the event kind (one topic per kind).
    #[serde(default = "default_topic")]
    pub topic: String,
    /// `all`, `1` or `0`.
    #[serde(default = "default_acks")]
    pub acks: String,
    #[serde(default)]
    pub compression: Compression,
    /// librdkafka `linger.ms`.
    #[serde(default = "default_linger")]
    pub linger_ms: u64,
    /// librdkafka `batch.size` (bytes per partition batch).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Larger events are not sent (counted failed); the broker's
    /// `message.max.bytes` should be at least this.
    #[serde(default = "default_message_max")]
    pub message_max_bytes: usize,
    /// How long librdkafka keeps retrying a message (broker outages shorter
    /// than this lose nothing that fits the buffers).
    #[serde(default = "default_message_timeout")]
    pub message_timeout_ms: u64,
    /// librdkafka's own buffer (`queue.buffering.max.messages` / `.kbytes`).
    #[serde(default = "default_buffer_messages")]
    pub buffer_max_messages: usize,
    #[serde(default = "default_buffer_kbytes")]
    pub buffer_max_kbytes: usize,
    /// TLS to the brokers (`security.protocol` SSL or SASL_SSL).
    #[serde(default)]
    pub tls: Option<KafkaTls>,
    #[serde(default)]
    pub sasl: Option<SaslConfig>,
    /// Any other librdkafka producer property, set last.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    #[serde(default = "default_queue")]
    pub queue: QueueConfig,
}

fn default_topic() -> String {
    "podwatch-events".into()
}
fn default_acks() -> String {
    "all".into()
}
fn default_linger() -> u64 {
    20
}
fn default_batch_size() -> usize {
    1_000_000
}
fn default_message_max() -> usize {
    1_000_000
}
fn default_message_timeout() -> u64 {
    300_000
}
fn default_buffer_messages() -> usize {
    100_000
}
fn default_buffer_kbytes() -> usize {
    65_536
}
/// librdkafka batches itself: our batches only amortise the hand-over.
fn default_queue() -> QueueConfig {
    QueueConfig { linger_ms: 5, ..QueueConfig::default() }
}

impl KafkaConfig {
    /// The librdkafka producer properties.
    pub fn client_config(&self) -> anyhow::Result<ClientConfig> {
        anyhow::ensure!(!self.brokers.is_empty(), "sinks.kafka.brokers is empty");
        anyhow::ensure!(!self.topic.is_empty(), "sinks.kafka.topic is empty");
        anyhow::ensure!(
            matches!(self.acks.as_str(), "all" | "-1" | "0" | "1"),
            "sinks.kafka.acks must be all, 1 or 0 (got {:?})",
            self.acks
        );
        self.queue.validate("kafka")?;
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.brokers.join(","))
            .set("client.id", "podwatch")
            .set("acks", &self.acks)
            .set(
                "compression.codec",
                match self.compression {
                    Compression::None => "none",
                    Compression::Gzip => "gzip",
                    Compression::Snappy => "snappy",
                    Compression::Lz4 => "lz4",
                    Compression::Zstd => "zstd",
                },
            )
            .set("linger.ms", self.linger_ms.to_string())
            .set("batch.size", self.batch_size.to_string())
            // Room for the headers and the record overhead.
            .set("message.max.bytes", self.message_max_bytes.saturating_add(4096).to_string())
            .set("message.timeout.ms", self.message_timeout_ms.to_string())
            .set("queue.buffering.max.messages", self.buffer_max_messages.to_string())
            .set("queue.buffering.max.kbytes", self.buffer_max_kbytes.to_string())
            // Keyed ordering survives retries.
            .set(
                "enable.idempotence",
                if self.acks == "all" || self.acks == "-1" { "true" } else { "false" },
            );
        let tls = self.tls.is_some();
        let protocol = match (tls, self.sasl.is_some()) {
            (false, false) => "plaintext",
            (true, false) => "ssl",
            (false, true) => "sasl_plaintext",
            (true, true) => "sasl_ssl",
        };
        c.set("security.protocol", protocol);
        if let Some(t) = &self.tls {
            let check = |p: &PathBuf, what: &str| -> anyhow::Result<String> {
                anyhow::ensure!(p.is_file(), "sinks.kafka.tls.{what}: {} does not exist", p.display());
                Ok(p.display().to_string())
            };
            if let Some(ca) = &t.ca_file {
                c.set("ssl.ca.location", check(ca, "ca_file")?);
            }
            match (&t.cert_file, &t.key_file) {
                (None, None) => {}
                (Some(cert), Some(key)) => {
                    c.set("ssl.certificate.location", check(cert, "cert_file")?);
                    c.set("ssl.key.location", check(key, "key_file")?);
                }
                _ => anyhow::bail!("sinks.kafka.tls: cert_file and key_file go together"),
            }
        }
        if let Some(s) = &self.sasl {
            let password = match (&s.password, &s.password_file) {
                (Some(_), Some(_)) => {
                    anyhow::bail!("sinks.kafka.sasl: password and password_file are exclusive")
                }
                (Some(p), None) => p.clone(),
                (None, Some(f)) => std::fs::read_to_string(f)
                    .map_err(|e| anyhow::anyhow!("sinks.kafka.sasl.password_file {}: {e}", f.display()))?
                    .trim_end_matches(['\r', '\n'])
                    .to_owned(),
                (None, None) => anyhow::bail!("sinks.kafka.sasl: password or password_file is required"),
            };
            let mech = match s.mechanism {
                SaslMechanism::Plain => "PLAIN",
                SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
                SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            };
            c.set("sasl.mechanism", mech).set("sasl.username", &s.username).set("sasl.password", password);
        }
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        Ok(c)
    }
}

pub struct KafkaRecord {
    pub topic: String,
    pub key: String,
    pub value: bytes::Bytes,
    pub kind: &'static str,
    pub namespace: String,
}

impl KafkaRecord {
    fn headers(&self) -> OwnedHeaders {
        OwnedHeaders::new_with_capacity(2)
            .insert(Header { key: "kind", value: Some(self.kind) })
            .insert(Header { key: "namespace", value: Some(self.namespace.as_str()) })
    }
}

pub struct KafkaEncoder {
    topic: String,
    per_kind: bool,
    node: String,
    max: usize,
}

impl KafkaEncoder {
    pub fn new(cfg: &KafkaConfig, node: &str) -> KafkaEncoder {
        KafkaEncoder {
            topic: cfg.topic.clone(),
            per_kind: cfg.topic.contains("{kind}"),
            node: node.to_owned(),
            max: cfg.message_max_bytes,
        }
    }
}

impl Encoder for KafkaEncoder {
    type Item = KafkaRecord;
    type Payload = Vec<KafkaRecord>;

    fn prepare(&mut self, ev: &Event) -> Result<(KafkaRecord, usize), String> {
        // The shared JSON line without its newline: no copy.
        let line = ev.json_line().ok_or("JSON: the event could not be encoded")?;
        let value = line.slice(..line.len() - 1);
        if value.len() > self.max {
            return Err(format!("message of {} bytes is over message_max_bytes {}", value.len(), self.max));
        }
        let topic =
            if self.per_kind { self.topic.replace("{kind}", ev.kind.as_str()) } else { self.topic.clone() };
        let key = match &ev.pod {
            Some(p) => p.uid.clone(),
            None => self.node.clone(),
        };
        let size = value.len() + key.len();
        let rec =
            KafkaRecord { topic, key, value, kind: ev.kind.as_str(), namespace: namespace_of(ev).to_owned() };
        Ok((rec, size))
    }

    fn encode(&mut self, items: Vec<KafkaRecord>) -> Result<Vec<KafkaRecord>, String> {
        Ok(items)
    }
}

pub struct KafkaTransport {
    producer: FutureProducer,
    /// One task per batch, counting its delivery reports.
    pending: JoinSet<()>,
    /// Last time a per-event error was logged (they come in bursts).
    last_warn: Option<Instant>,
}

/// Settles, when dropped, the events of a batch not handed to librdkafka
/// (the worker cancelled at the shutdown deadline).
struct NotHandedOver {
    n: u64,
    stats: Arc<SinkStats>,
}

impl Drop for NotHandedOver {
    fn drop(&mut self) {
        if self.n > 0 {
            self.stats.settle(self.n, &self.stats.failed);
        }
    }
}

async fn count_deliveries(futs: Vec<DeliveryFuture>, stats: Arc<SinkStats>) {
    let mut last_err: Option<String> = None;
    let mut failed = 0u64;
    for f in futs {
        match f.await {
            Ok(Ok(_)) => {
                stats.settle(1, &stats.sent);
                stats.success_now();
            }
            Ok(Err((e, _))) => {
                failed += 1;
                last_err = Some(e.to_string());
                stats.settle(1, &stats.failed);
            }
            Err(_) => {
                failed += 1;
                last_err = Some("producer closed".into());
                stats.settle(1, &stats.failed);
            }
        }
    }
    if let Some(e) = last_err {
        warn!(sink = "kafka", failed, error = %e, "messages not delivered");
    }
}

impl Transport for KafkaTransport {
    type Payload = Vec<KafkaRecord>;
    const ACCOUNTS_ITSELF: bool = true;

    async fn send(
        &mut self,
        p: &Vec<KafkaRecord>,
        _n: u64,
        stats: &Arc<SinkStats>,
    ) -> Result<Sent, SendError> {
        while self.pending.try_join_next().is_some() {}
        let mut guard = NotHandedOver { n: p.len() as u64, stats: stats.clone() };
        let mut futs = Vec::with_capacity(p.len());
        for r in p {
            loop {
                let headers = r.headers();
                let rec = FutureRecord::to(&r.topic).key(&r.key).payload(&r.value[..]).headers(headers);
                match self.producer.send_result(rec) {
                    Ok(f) => {
                        futs.push(f);
                        guard.n -= 1;
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        // librdkafka's buffer is full (broker slow or down):
                        // wait here, so that our own bounded queue absorbs and
                        // then drops. Deliveries already handed over go on.
                        if !futs.is_empty() {
                            self.pending.spawn(count_deliveries(std::mem::take(&mut futs), stats.clone()));
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err((e, _)) => {
                        guard.n -= 1;
                        stats.settle(1, &stats.failed);
                        if self.last_warn.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                            self.last_warn = Some(Instant::now());
                            warn!(sink = "kafka", topic = %r.topic, error = %e, "message rejected by the producer");
                        }
                        break;
                    }
                }
            }
        }
        if !futs.is_empty() {
            self.pending.spawn(count_deliveries(futs, stats.clone()));
        }
        Ok(Sent::Deferred)
    }

    async fn close(&mut self, deadline: Instant, stats: &Arc<SinkStats>) {
        let producer = self.producer.clone();
        let left = deadline.saturating_duration_since(Instant::now());
        let _ = tokio::task::spawn_blocking(move || producer.flush(left)).await;
        let all = async { while self.pending.join_next().await.is_some() {} };
        if tokio::time::timeout_at(deadline, all).await.is_err() {
            self.pending.abort_all();
            while self.pending.join_next().await.is_some() {}
            let n = stats.in_flight.load(std::sync::atomic::Ordering::Relaxed);
            warn!(sink = "kafka", messages = n, "not delivered by the shutdown deadline; counted failed");
            stats.settle(n, &stats.failed);
        }
    }
}

pub fn start(cfg: &KafkaConfig, node: &str) -> anyhow::Result<SinkHandle> {
    let producer: FutureProducer =
        cfg.client_config()?.create().map_err(|e| anyhow::anyhow!("sinks.kafka: producer: {e}"))?;
    let transport = KafkaTransport { producer, pending: JoinSet::new(), last_warn: None };
    // librdkafka retries (message_timeout_ms); our retry policy is unused.
    Ok(framework::spawn(
        "kafka",
        &cfg.queue,
        &RetryConfig::default(),
        KafkaEncoder::new(cfg, node),
        transport,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outputs::sinks::testdata::*;

    fn cfg(yaml: &str) -> KafkaConfig {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn keys_topics_and_headers() {
        let c = cfg("{brokers: ['127.0.0.1:9092'], topic: 'pw.{kind}'}");
        let mut enc = KafkaEncoder::new(&c, "node-1");
        let (r, _) = enc.prepare(&exec_in_pod(1, "2026-01-01T00:00:00Z")).unwrap();
        assert_eq!((r.topic.as_str(), r.key.as_str()), ("pw.exec", "6b1f0a52-2c3d-4e5f-8a9b-0c1d2e3f4a5b"));
        assert_eq!((r.kind, r.namespace.as_str()), ("exec", "shop"));
        let back: Event = serde_json::from_slice(&r.value).unwrap();
        assert_eq!(back.process.pid, 1);
        let (h, _) = enc.prepare(&connect_on_host(2, "2026-01-01T00:00:00Z")).unwrap();
        assert_eq!(
            (h.topic.as_str(), h.key.as_str(), h.namespace.as_str()),
            ("pw.connect", "node-1", "host")
        );
    }

    #[test]
    fn oversized_messages_are_rejected() {
        let c = cfg("{brokers: [b], message_max_bytes: 500}");
        let mut enc = KafkaEncoder::new(&c, "n");
        let e = enc.prepare(&file_in_pod(1, "2026-01-01T00:00:00Z", &"/x".repeat(400))).err().unwrap();
        assert!(e.contains("message_max_bytes"), "{e}");
    }

    #[test]
    fn client_properties() {
        let c = cfg("{brokers: ['a:9092', 'b:9092'], acks: '1', compression: zstd, \
              sasl: {mechanism: SCRAM-SHA-512, username: u, password: p}}")
        .client_config()
        .unwrap();
        assert_eq!(c.get("bootstrap.servers"), Some("a:9092,b:9092"));
        assert_eq!(c.get("compression.codec"), Some("zstd"));
        assert_eq!(c.get("security.protocol"), Some("sasl_plaintext"));
        assert_eq!(c.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(c.get("enable.idempotence"), Some("false"));
        let c = cfg("{brokers: [a], tls: {}, sasl: {mechanism: PLAIN, username: u, password: p}}");
        assert_eq!(c.client_config().unwrap().get("security.protocol"), Some("sasl_ssl"));
    }

    /// Found with the agent_config fuzz target (an input written for it):
    /// `message_max_bytes + 4096` overflowed for a value near usize::MAX;
    /// librdkafka now gets the saturated value and refuses it itself.
    #[test]
    fn a_huge_message_max_bytes_saturates_instead_of_overflowing() {
        let c = cfg("{brokers: [a], message_max_bytes: 18446744073709551615}").client_config().unwrap();
        assert_eq!(c.get("message.max.bytes"), Some(usize::MAX.to_string().as_str()));
        let e = c.create::<FutureProducer>().err().expect("out of librdkafka's range");
        assert!(e.to_string().contains("message.max.bytes"), "{e}");
        let c = cfg("{brokers: [a], message_max_bytes: 1000}").client_config().unwrap();
        assert_eq!(c.get("message.max.bytes"), Some("5096"));
    }

    #[test]
    fn config_errors() {
        assert!(cfg("{brokers: []}").client_config().is_err());
        assert!(cfg("{brokers: [a], acks: most}").client_config().is_err());
        let e = cfg("{brokers: [a], tls: {ca_file: /nonexistent.pem}}").client_config().unwrap_err();
        assert!(e.to_string().contains("/nonexistent.pem"), "{e}");
        assert!(cfg("{brokers: [a], sasl: {mechanism: PLAIN, username: u}}").client_config().is_err());
        assert!(serde_yaml::from_str::<KafkaConfig>(
            "{brokers: [a], sasl: {mechanism: GSSAPI, username: u}}"
        )
        .is_err());
    }

    #[tokio::test]
    async fn ssl_and_sasl_are_built_in() {
        // librdkafka was built with OpenSSL: a SASL_SSL + SCRAM producer can be created.
        let c = cfg(
            "{brokers: ['127.0.0.1:1'], tls: {}, sasl: {mechanism: SCRAM-SHA-256, username: u, password: p}}",
        );
        let p: Result<FutureProducer, _> = c.client_config().unwrap().create();
        assert!(p.is_ok(), "{:?}", p.err());
    }
}

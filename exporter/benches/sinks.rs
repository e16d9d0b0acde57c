//! Events/s through each sink's encoder, and through the whole sink pipeline
//! (offer → bounded queue → batcher → encoder → a transport that discards),
//! as ratios against a baseline measured in the same run: plain
//! `serde_json::to_vec` of the same events.
//!
//! `cargo bench --bench sinks` (release build). No network is used.
//!
//! OTLP: "grpc (generated types)" is the encoding the sink used for both
//! transports before it took opentelemetry-otlp's exporter for HTTP (and
//! still uses for gRPC); the "exporter" rows are the HTTP path now, each
//! request built and encoded by the exporter and handed to a discarding client.

use std::{
    hint::black_box,
    marker::PhantomData,
    sync::Arc,
    time::{Duration, Instant},
};

use podwatch::{
    outputs::sinks::{
        framework::{self, Encoder, QueueConfig, RetryConfig, SendError, Sent, SinkStats, Transport},
        kafka::{KafkaConfig, KafkaEncoder},
        loki::{LokiConfig, LokiEncoder},
        otlp::{
            exporter::{Answer, ExporterTransport, Post, RecordEncoder},
            settings, OtlpConfig, OtlpEncoder,
        },
    },
    pipeline::event::Event,
};
use prost::Message as _;

const N: usize = 100_000;
const BATCH: usize = 1_000;

fn events() -> Vec<Arc<Event>> {
    (0..N as u32)
        .map(|i| {
            let ns = ["shop", "payments", "kube-system", "monitoring"][i as usize % 4];
            let v = match i % 3 {
                0 => serde_json::json!({"time": format!("2026-11-22T17:57:{:02}.{:09}Z", i % 60, i),
                    "node": "node-1", "kind": "exec",
                    "process": {"pid": i, "tid": i, "uid": 0, "gid": 0, "comm": "curl", "binary": "/usr/bin/curl",
                                "args": ["curl", "-s", "http://10.0.0.7/"], "cwd": "/app",
                                "parent": {"pid": 1, "binary": "/bin/sh"}},
                    "pod": {"uid": format!("6b1f0a52-2c3d-4e5f-8a9b-{:012x}", i % 50), "namespace": ns,
                            "name": "web-7d4b9c-x2x9q", "workload": "web",
                            "container": {"id": "4f2b8e1c", "name": "nginx", "runtime": "containerd"}},
                    "cgroup": {"id": 10432, "path": "/kubepods.slice/kubepods-pod6b1f.slice/cri-containerd-4f2b.scope"}}),
                1 => serde_json::json!({"time": format!("2026-11-22T17:57:{:02}.{:09}Z", i % 60, i),
                    "node": "node-1", "kind": "file",
                    "process": {"pid": i, "tid": i, "uid": 0, "gid": 0, "comm": "nginx", "binary": "/usr/sbin/nginx",
                                "args": ["nginx", "-g", "daemon off;"]},
                    "pod": {"uid": format!("6b1f0a52-2c3d-4e5f-8a9b-{:012x}", i % 50), "namespace": ns},
                    "cgroup": {"id": 10432},
                    "file": {"path": "/etc/nginx/conf.d/default.conf", "operation": "read",
                             "flags": ["O_RDONLY", "O_CLOEXEC"], "syscall": "openat", "result": "ok", "fd": 7}}),
                _ => serde_json::json!({"time": format!("2026-11-22T17:57:{:02}.{:09}Z", i % 60, i),
                    "node": "node-1", "kind": "connect",
                    "process": {"pid": i, "tid": i, "uid": 0, "gid": 0, "comm": "curl", "binary": "/usr/bin/curl"},
                    "cgroup": {"id": 1},
                    "network": {"protocol": "tcp", "family": "ipv4", "direction": "egress",
                                "src": {"address": "10.244.1.5", "port": 40112},
                                "dst": {"address": "10.0.0.7", "port": 80}, "result": "ok"}}),
            };
            Arc::new(serde_json::from_value(v).expect("bench event"))
        })
        .collect()
}

/// Best of three runs, in events/s.
fn rate(mut f: impl FnMut()) -> f64 {
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed());
    }
    N as f64 / best.as_secs_f64()
}

fn encoder_rate<E: Encoder>(
    mut make: impl FnMut() -> E,
    evs: &[Arc<Event>],
    mut finish: impl FnMut(E::Payload),
) -> f64 {
    rate(|| {
        let mut enc = make();
        for chunk in evs.chunks(BATCH) {
            let items = chunk.iter().map(|e| enc.prepare(e).expect("prepare").0).collect();
            finish(enc.encode(items).expect("encode"));
        }
    })
}

/// Discards payloads (after `f`, e.g. serialising them as the real transport would).
struct Null<P, F>(F, PhantomData<fn(P)>);

impl<P: Send + Sync + 'static, F: FnMut(&P) + Send + 'static> Transport for Null<P, F> {
    type Payload = P;
    async fn send(&mut self, p: &P, _n: u64, _s: &Arc<SinkStats>) -> Result<Sent, SendError> {
        (self.0)(p);
        Ok(Sent::All)
    }
}

/// The OTLP exporter's HTTP client, discarding: the request is built,
/// encoded and compressed by the exporter as for a real collector.
struct NullPost;

impl Post for NullPost {
    async fn post_with(&mut self, headers: hyper::HeaderMap, body: bytes::Bytes) -> Answer {
        black_box((headers.len(), body.len()));
        Ok((hyper::StatusCode::OK, hyper::HeaderMap::new(), bytes::Bytes::new()))
    }
}

/// The whole pipeline with a real transport (the OTLP exporter's).
fn transport_rate<E: Encoder, T: Transport<Payload = E::Payload>>(
    rt: &tokio::runtime::Runtime,
    mut make: impl FnMut() -> (E, T),
) -> f64 {
    let evs = events();
    rate(|| {
        rt.block_on(async {
            let q =
                QueueConfig { capacity: N, batch_max_events: BATCH, batch_max_bytes: 4 << 20, linger_ms: 5 };
            let (enc, transport) = make();
            let h = framework::spawn("bench", &q, &RetryConfig::default(), enc, transport);
            for e in &evs {
                h.offer(e);
            }
            loop {
                let s = h.snapshot();
                if s.sent + s.failed + s.dropped >= N as u64 {
                    assert_eq!(s.sent, N as u64, "{s:?}");
                    break;
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            h.shutdown(tokio::time::Instant::now() + Duration::from_secs(1)).await;
        })
    })
}

fn pipeline_rate<E: Encoder>(
    rt: &tokio::runtime::Runtime,
    mut make: impl FnMut() -> E,
    finish: impl FnMut(&E::Payload) + Send + Clone + 'static,
    evs: &[Arc<Event>],
) -> f64 {
    rate(|| {
        rt.block_on(async {
            let q =
                QueueConfig { capacity: N, batch_max_events: BATCH, batch_max_bytes: 4 << 20, linger_ms: 5 };
            let h = framework::spawn(
                "bench",
                &q,
                &RetryConfig::default(),
                make(),
                Null(finish.clone(), PhantomData),
            );
            for e in evs {
                h.offer(e);
            }
            loop {
                let s = h.snapshot();
                if s.sent + s.failed + s.dropped >= N as u64 {
                    assert_eq!(s.sent, N as u64, "{s:?}");
                    break;
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            h.shutdown(tokio::time::Instant::now() + Duration::from_secs(1)).await;
        })
    })
}

/// OTLP/HTTP through opentelemetry-otlp's exporter: SDK records, the
/// exporter's encoding (and compression), a discarding client.
fn exporter_rate(rt: &tokio::runtime::Runtime, yaml: &str) -> f64 {
    let cfg: OtlpConfig = serde_yaml::from_str(yaml).expect("cfg");
    let s = settings::resolve(&cfg, &settings::no_env, "node-1").expect("settings");
    transport_rate(rt, || (RecordEncoder::default(), ExporterTransport::new(&s, NullPost).expect("exporter")))
}

fn main() {
    let evs = events();
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let _guard = rt.enter();
    let loki: LokiConfig = serde_yaml::from_str("url: http://loki:3100").expect("cfg");
    let loki_json: LokiConfig =
        serde_yaml::from_str("{url: 'http://loki:3100', encoding: json}").expect("cfg");
    let otlp: OtlpConfig = serde_yaml::from_str("endpoint: http://c:4317").expect("cfg");
    let kafka: KafkaConfig = serde_yaml::from_str("brokers: ['k:9092']").expect("cfg");

    let base = rate(|| {
        for e in &evs {
            black_box(serde_json::to_vec(&**e).expect("json"));
        }
    });
    println!("{N} events, batches of {BATCH}; baseline serde_json::to_vec: {base:.0} events/s\n");
    println!("{:<32} {:>14} {:>8}", "encoder (prepare + encode)", "events/s", "ratio");
    let rows = [
        (
            "loki protobuf+snappy",
            encoder_rate(
                || LokiEncoder::new(&loki, "node-1"),
                &evs,
                |p| {
                    black_box(p);
                },
            ),
        ),
        (
            "loki json",
            encoder_rate(
                || LokiEncoder::new(&loki_json, "node-1"),
                &evs,
                |p| {
                    black_box(p);
                },
            ),
        ),
        (
            "otlp (LogRecords + protobuf)",
            encoder_rate(
                || OtlpEncoder::new(&otlp, "node-1"),
                &evs,
                |p| {
                    black_box(p.encode_to_vec());
                },
            ),
        ),
        (
            "kafka (JSON records)",
            encoder_rate(
                || KafkaEncoder::new(&kafka, "node-1"),
                &evs,
                |p| {
                    black_box(p);
                },
            ),
        ),
    ];
    for (name, r) in rows {
        println!("{name:<32} {r:>14.0} {:>8.2}", r / base);
    }
    println!("\n{:<32} {:>14} {:>8}", "full pipeline (null transport)", "events/s", "ratio");
    let rows = [
        (
            "loki protobuf+snappy",
            pipeline_rate(
                &rt,
                || LokiEncoder::new(&loki, "node-1"),
                |p| {
                    black_box(p.body.len());
                },
                &evs,
            ),
        ),
        (
            "otlp grpc (generated types)",
            pipeline_rate(
                &rt,
                || OtlpEncoder::new(&otlp, "node-1"),
                |p| {
                    black_box(p.encode_to_vec());
                },
                &evs,
            ),
        ),
        ("otlp http/protobuf (exporter)", exporter_rate(&rt, "protocol: http/protobuf")),
        (
            "otlp http/protobuf+gzip (exp.)",
            exporter_rate(&rt, "{protocol: http/protobuf, compression: gzip}"),
        ),
        ("otlp http/json (exporter)", exporter_rate(&rt, "protocol: http/json")),
        (
            "kafka (records)",
            pipeline_rate(
                &rt,
                || KafkaEncoder::new(&kafka, "node-1"),
                |p| {
                    black_box(p.len());
                },
                &evs,
            ),
        ),
    ];
    for (name, r) in rows {
        println!("{name:<32} {r:>14.0} {:>8.2}", r / base);
    }
}

//! Ring-buffer bytes → records → events → every encoding an event gets.
//!
//! The input is a run of records as the kernel writes them (each header's
//! `len` says where the next one starts), so one input can create a cgroup,
//! fork, exec and open in it: enrichment keeps state between records the way
//! the reader's loop does. Every decoded record goes through the enricher
//! (process cache, cgroup → pod, paths), and every event through JSON (and
//! back), the compact view, and the Loki, OTLP and Kafka encoders.

#![no_main]

use std::{
    mem::size_of,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use libfuzzer_sys::fuzz_target;
use podwatch::{
    outputs::{
        sinks::{
            framework::Encoder as _,
            kafka::KafkaEncoder,
            loki::{LokiEncoder, LokiEncoding},
            otlp::{self, OtlpEncoder},
            KafkaConfig, LokiConfig, OtlpConfig,
        },
        view::compact,
    },
    pipeline::{
        decode::decode, enrich::Enricher, event::Event, names::BinaryNames, proc_cache::ProcessCache,
        redact::Redactor,
    },
    pods::{cgroup::CgroupResolver, ContainerMeta, PodMeta, PodStore, Workload},
    policy::engine::RuleNames,
};
use podwatch_common::Header;

/// A pod the seeds' cgroup paths name, so enrichment finds metadata.
const POD_UID: &str = "6b1f0a52-2c3d-4e5f-8a9b-0c1d2e3f4a5b";
const CONTAINER_ID: &str = "4f2b1c6a9d8e7f60";
/// Records per input: enough for a story, bounded for speed.
const MAX_RECORDS: usize = 64;

struct Sinks {
    loki: LokiConfig,
    otlp: OtlpConfig,
    kafka: KafkaConfig,
}

fn sinks() -> &'static Sinks {
    static SINKS: OnceLock<Sinks> = OnceLock::new();
    SINKS.get_or_init(|| Sinks {
        loki: serde_yaml::from_str("{url: 'http://loki:3100', labels: {cluster: fuzz}}").expect("loki"),
        otlp: serde_yaml::from_str("{endpoint: 'http://collector:4317', resource_attributes: {k: v}}")
            .expect("otlp"),
        kafka: serde_yaml::from_str("{brokers: ['k:9092'], topic: 'podwatch.{kind}'}").expect("kafka"),
    })
}

fn enricher() -> Enricher {
    let pods = Arc::new(PodStore::new("fuzz"));
    pods.upsert(PodMeta {
        uid: POD_UID.into(),
        namespace: "shop".into(),
        name: "web-7d4b9c-x2x9q".into(),
        labels: Default::default(),
        workload: Some(Workload { kind: "Deployment".into(), name: "web".into() }),
        containers: vec![ContainerMeta { id: CONTAINER_ID.into(), name: "nginx".into() }],
    });
    // No /proc and no cgroup tree: a miss stays a miss, the same on every run.
    let mut procs = ProcessCache::with_proc_root(64, Duration::from_secs(30), "/nonexistent");
    procs.redactor = Arc::new(Redactor::new(&["sk_live_[0-9a-zA-Z]+".to_owned()], true).expect("redactor"));
    Enricher::new(
        "fuzz-node".into(),
        procs,
        Arc::new(Mutex::new(CgroupResolver::new(None))),
        pods,
        Arc::new(BinaryNames::default()),
        Arc::new(RuleNames::default()),
    )
}

fn outputs(ev: &Event) {
    let json = serde_json::to_string(ev).expect("an event always encodes");
    let back: Event = serde_json::from_str(&json).expect("an event's JSON reads back");
    assert_eq!(&back, ev, "JSON round trip changed the event");
    let _ = compact(ev);
    let _ = otlp::attributes(ev);

    let s = sinks();
    for encoding in [LokiEncoding::Protobuf, LokiEncoding::Json] {
        let mut enc = LokiEncoder::new(&LokiConfig { encoding, ..s.loki.clone() }, "fuzz-node");
        if let Ok((item, _)) = enc.prepare(ev) {
            enc.encode(vec![item]).expect("a prepared Loki item encodes");
        }
    }
    let mut enc = OtlpEncoder::new(&s.otlp, "fuzz-node");
    if let Ok((item, _)) = enc.prepare(ev) {
        enc.encode(vec![item]).expect("a prepared OTLP record encodes");
    }
    let mut enc = KafkaEncoder::new(&s.kafka, "fuzz-node");
    if let Ok((item, _)) = enc.prepare(ev) {
        enc.encode(vec![item]).expect("a prepared Kafka record encodes");
    }
}

fuzz_target!(|data: &[u8]| {
    let mut enricher = enricher();
    let mut rest = data;
    for _ in 0..MAX_RECORDS {
        if rest.is_empty() {
            break;
        }
        match decode(rest) {
            Ok(rec) => {
                if let Some(ev) = enricher.enrich(rec) {
                    outputs(&ev);
                }
            }
            Err(e) => {
                let _ = e.reason();
            }
        }
        // The next record starts where this one's length says, as in the ring buffer.
        let len = match rest.get(4..8) {
            Some(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize,
            None => break,
        };
        if len < size_of::<Header>() || len > rest.len() {
            break;
        }
        rest = &rest[len..];
    }
});

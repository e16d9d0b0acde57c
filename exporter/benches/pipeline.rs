//! What the ring-buffer reader's task spends on one event, stage by stage:
//! decode (bytes → record), enrich (process cache, cgroup → pod, names),
//! and the encodings every output needs (the JSON line for the local output,
//! the live stream, Loki and Kafka; OTLP's attributes). The baseline, measured
//! in the same run, is one `serde_json::to_vec` of the finished event: every
//! figure is also given as a multiple of it.
//!
//! `cargo bench --bench pipeline` (release build). The records are file opens
//! by a process in a pod whose metadata, cgroup and exec are all known, as
//! on a busy node after warm-up: no /proc reads and no cgroup-tree walks.

use std::{
    hint::black_box,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use podwatch::{
    outputs::sinks::{
        framework::Encoder as _,
        kafka::{KafkaConfig, KafkaEncoder},
        loki::{LokiConfig, LokiEncoder},
        otlp::{OtlpConfig, OtlpEncoder},
    },
    pipeline::{
        decode::{decode, encode_for_test, Payload, Record},
        enrich::Enricher,
        names::BinaryNames,
        proc_cache::ProcessCache,
    },
    pods::{cgroup::CgroupResolver, ContainerMeta, PodMeta, PodStore, Workload},
    policy::engine::RuleNames,
};
use podwatch_common::{kind, open_syscall, FileOpen, Header};

/// The agent's allocator (exporter/src/main.rs), so allocation costs what it costs there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const N: usize = 200_000;
const POD_UID: &str = "6b1f0a52-2c3d-4e5f-8a9b-0c1d2e3f4a5b";
const CONTAINER_ID: &str = "4f2b1c6a9d8e7f604f2b1c6a9d8e7f604f2b1c6a9d8e7f604f2b1c6a9d8e7f60";
const CGROUP_ID: u64 = 10_432;
const PID: u32 = 4242;

fn header(kind: u16, tgid: u32) -> Header {
    let mut comm = [0u8; 16];
    comm[..5].copy_from_slice(b"nginx");
    Header { kind, tgid, tid: tgid, cgroup_id: CGROUP_ID, ktime_ns: 1_000_000, comm, ..Default::default() }
}

/// An enricher that knows the pod, its cgroup, the process and its parent.
fn enricher() -> Enricher {
    let pods = Arc::new(PodStore::new("bench"));
    pods.upsert(PodMeta {
        uid: POD_UID.into(),
        namespace: "shop".into(),
        name: "web-7d4b9c-x2x9q".into(),
        labels: Default::default(),
        workload: Some(Workload { kind: "Deployment".into(), name: "web".into() }),
        containers: vec![ContainerMeta { id: CONTAINER_ID.into(), name: "nginx".into() }],
    });
    let mut e = Enricher::new(
        "node-1".into(),
        ProcessCache::with_proc_root(1024, Duration::from_secs(30), "/nonexistent"),
        Arc::new(Mutex::new(CgroupResolver::new(None))),
        pods,
        Arc::new(BinaryNames::default()),
        Arc::new(RuleNames::default()),
    );
    let path = format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{CONTAINER_ID}.scope",
        POD_UID.replace('-', "_")
    );
    e.enrich(Record {
        header: header(kind::CGROUP_MKDIR, 0),
        payload: Payload::CgroupMkdir { id: CGROUP_ID, path: path.into_bytes() },
    });
    for (pid, ppid, file, args) in [
        (PID - 1, 1, "/bin/sh", vec!["/bin/sh", "-c", "nginx -g 'daemon off;'"]),
        (PID, PID - 1, "/usr/sbin/nginx", vec!["nginx", "-g", "daemon off;"]),
    ] {
        e.enrich(Record {
            header: header(kind::EXEC, pid),
            payload: Payload::Exec {
                ppid,
                filename: file.as_bytes().to_vec(),
                args: args.iter().map(|a| a.as_bytes().to_vec()).collect(),
                cwd: Some(b"/".to_vec()),
                executable: Some(file.as_bytes().to_vec()),
                creds: None,
            },
        });
    }
    e
}

/// The bytes the kernel writes for an open of `path` that returned fd 7.
fn open_record(path: &[u8]) -> Vec<u8> {
    let mut tail = path.to_vec();
    tail.push(0);
    let f = FileOpen {
        syscall: open_syscall::OPENAT,
        dfd: podwatch_common::AT_FDCWD,
        flags: 0o2000000,
        ret: 7,
        path_len: tail.len() as u32,
        ..Default::default()
    };
    encode_for_test(header(kind::FILE_OPEN, PID), &f, &tail)
}

/// Nanoseconds per call of `f` (best of three runs of N calls).
fn ns_per(mut f: impl FnMut(usize)) -> f64 {
    (0..3)
        .map(|_| {
            let t = Instant::now();
            for i in 0..N {
                f(i);
            }
            t.elapsed().as_nanos() as f64 / N as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let mut e = enricher();
    let rec = open_record(b"/etc/nginx/conf.d/default.conf");
    let sample = e.enrich(decode(&rec).expect("decodes")).expect("an event");
    assert!(
        sample.pod.as_ref().and_then(|p| p.name.as_deref()) == Some("web-7d4b9c-x2x9q"),
        "pod not resolved"
    );
    assert!(sample.process.parent.as_ref().and_then(|p| p.binary.as_deref()) == Some("/bin/sh"));

    let baseline = ns_per(|_| {
        black_box(serde_json::to_vec(black_box(&sample)).ok());
    });
    let decode_ns = ns_per(|_| {
        black_box(decode(black_box(&rec)).ok());
    });
    let enrich_ns = ns_per(|_| {
        if let Ok(r) = decode(&rec) {
            black_box(e.enrich(r).map(Arc::new));
        }
    }) - decode_ns;
    let json_ns = ns_per(|_| {
        if let Some(ev) = decode(&rec).ok().and_then(|r| e.enrich(r)).map(Arc::new) {
            black_box(ev.json_line());
        }
    }) - decode_ns
        - enrich_ns;
    // Every output's encoding of the same event, as the agent with every
    // sink configured does it: the local output and the live stream write
    // the JSON line; Loki, Kafka and OTLP prepare their records.
    let mut loki = LokiEncoder::new(
        &serde_yaml::from_str::<LokiConfig>("{url: 'http://loki:3100'}").expect("loki"),
        "node-1",
    );
    let mut kafka = KafkaEncoder::new(
        &serde_yaml::from_str::<KafkaConfig>("{brokers: ['k:9092'], topic: podwatch}").expect("kafka"),
        "node-1",
    );
    let mut otlp = OtlpEncoder::new(
        &serde_yaml::from_str::<OtlpConfig>("{endpoint: 'http://c:4317'}").expect("otlp"),
        "node-1",
    );
    let all_ns = ns_per(|_| {
        if let Some(ev) = decode(&rec).ok().and_then(|r| e.enrich(r)).map(Arc::new) {
            black_box(ev.json_line()); // local output
            black_box(ev.json_line()); // an /events subscriber
            black_box(loki.prepare(&ev).ok());
            black_box(kafka.prepare(&ev).ok());
            black_box(otlp.prepare(&ev).ok());
        }
    });

    println!("pipeline, one file-open event in a known pod ({N} events, best of 3):");
    println!("  baseline: serde_json::to_vec of the finished event  {baseline:>7.0} ns  1.00");
    for (name, ns) in [
        ("decode (ring-buffer bytes → record)", decode_ns),
        ("enrich (process, pod, names → event)", enrich_ns),
        ("JSON line (encoded once, shared by every output)", json_ns),
        ("decode + enrich + every output's encoding", all_ns),
    ] {
        println!("  {name:<48} {ns:>7.0} ns  {:.2}", ns / baseline);
    }
    println!("  → {:.0}k events/s per core through decode + enrich + encodings", 1e6 / all_ns);
}

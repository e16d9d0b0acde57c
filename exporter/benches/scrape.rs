//! Scrape cost with 500 pods' worth of series: the real collector (label
//! resolution cgroup → pod → metadata, aggregation, OpenMetrics encoding)
//! against a baseline measured in the same run — prometheus-client encoding
//! the same number of series from its own `Family<Counter>` — because this
//! machine is shared and noisy and only ratios travel.
//!
//! Run: `cargo bench --bench scrape` (scripts/bench.sh prints all figures).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use podwatch::{
    pipeline::names::BinaryNames,
    pods::{cgroup::CgroupResolver, ContainerMeta, PodMeta, PodStore, Workload},
    telemetry::{
        metrics::{LabelConfig, Metrics, StaticCounters},
        stats::AgentStats,
    },
};
use podwatch_common::{counter, file_op, CounterKey, CounterValue, DIRECTION_EGRESS, IPPROTO_TCP};
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

const PODS: u64 = 500;

fn synthetic() -> (Vec<(CounterKey, CounterValue)>, CgroupResolver, PodStore) {
    let mut entries = Vec::new();
    let mut cgroups = CgroupResolver::new(None);
    let store = PodStore::new("bench");
    for p in 0..PODS {
        let uid = format!("{p:08x}-0000-4000-8000-{p:012x}");
        let cid = format!("{p:064x}");
        let cg = 1000 + p;
        cgroups.insert(
            cg,
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{cid}.scope",
                uid.replace('-', "_")
            ),
        );
        store.upsert(PodMeta {
            uid: uid.clone(),
            namespace: format!("ns-{}", p % 20),
            name: format!("pod-{p}"),
            labels: BTreeMap::new(),
            workload: Some(Workload { kind: "Deployment".into(), name: format!("app-{}", p % 50) }),
            containers: vec![ContainerMeta { id: cid, name: "app".into() }],
        });
        let v = CounterValue { events: 10 + p, bytes_sent: 1000, bytes_received: 2000 };
        let key = |kind, op, outcome, direction| CounterKey {
            cgroup_id: cg,
            binary: 0,
            kind,
            rule: 0,
            op,
            outcome,
            action: 0,
            direction,
        };
        entries.push((key(counter::EXEC, 0, 0, 0), v));
        entries.push((key(counter::EXIT, 0, 0, 0), v));
        entries.push((key(counter::EXIT, 0, 1, 0), v));
        for op in [file_op::READ, file_op::WRITE, file_op::CREATE, file_op::TRUNCATE] {
            entries.push((key(counter::FILE, op, 0, 0), v));
            entries.push((key(counter::FILE, op, 1, 0), v));
        }
        entries.push((key(counter::CONNECT, IPPROTO_TCP as u8, 0, DIRECTION_EGRESS), v));
        entries.push((key(counter::CONNECT, IPPROTO_TCP as u8, 1, DIRECTION_EGRESS), v));
        entries.push((key(counter::CLOSE, IPPROTO_TCP as u8, 0, DIRECTION_EGRESS), v));
    }
    (entries, cgroups, store)
}

/// The collector as the agent builds it, over a given counter source.
fn metrics_over(
    counters: Box<dyn podwatch::telemetry::metrics::CounterSource>,
    cgroups: CgroupResolver,
    store: PodStore,
) -> Arc<Metrics> {
    Arc::new(Metrics::new(
        counters,
        Arc::new(AgentStats::default()),
        Arc::new(Mutex::new(cgroups)),
        Arc::new(store),
        Arc::new(BinaryNames::default()),
        LabelConfig::default(),
        Vec::new(),
        Duration::from_secs(300),
    ))
}

fn time<F: FnMut() -> usize>(iters: u32, mut f: F) -> (Duration, usize) {
    let mut bytes = f(); // warm-up
    let start = Instant::now();
    for _ in 0..iters {
        bytes = f();
    }
    (start.elapsed() / iters, bytes)
}

fn main() {
    let (entries, cgroups, store) = synthetic();
    let n_entries = entries.len();
    let metrics = metrics_over(Box::new(StaticCounters(Mutex::new(entries))), cgroups, store);
    let body = metrics.render().expect("render");
    let series = body.lines().filter(|l| !l.starts_with('#')).count();

    // Baseline: the same number of series, pre-built in prometheus-client's own family.
    let family = Family::<Vec<(String, String)>, Counter>::default();
    for i in 0..series {
        let labels = vec![
            ("namespace".to_owned(), format!("ns-{}", i % 20)),
            ("pod".to_owned(), format!("pod-{}", i / 12)),
            ("workload".to_owned(), format!("deployment/app-{}", i % 50)),
            ("container".to_owned(), "app".to_owned()),
            ("operation".to_owned(), format!("op-{}", i % 12)),
        ];
        family.get_or_create(&labels).inc_by(i as u64);
    }
    let mut registry = Registry::default();
    registry.register("baseline", "baseline family", family);

    let iters = 30;
    let (ours, bytes) = time(iters, || metrics.render().map(|b| b.len()).unwrap_or(0));
    let (base, _) = time(iters, || {
        let mut s = String::new();
        let _ = encode(&mut s, &registry);
        s.len()
    });
    println!(
        "scrape bench: {PODS} pods, {n_entries} kernel counter entries, {series} samples, {bytes} bytes"
    );
    println!("  podwatch /metrics render:   {:>8.2} ms", ours.as_secs_f64() * 1e3);
    println!("  baseline (plain family):    {:>8.2} ms", base.as_secs_f64() * 1e3);
    println!("  ratio podwatch / baseline:  {:>8.2}x", ours.as_secs_f64() / base.as_secs_f64());
    println!(
        "  design bar: < 50 ms per scrape -> {}",
        if ours < Duration::from_millis(50) { "met" } else { "NOT met" }
    );
    kernel_map_scrape(iters);
}

/// As root: the same entries in the real kernel COUNTERS map (programs loaded),
/// so the figure includes reading the map, one get-next-key + lookup per entry.
fn kernel_map_scrape(iters: u32) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("  kernel map read: skipped (needs root to load the programs)");
        return;
    }
    let (entries, cgroups, store) = synthetic();
    let root = podwatch::pods::cgroup::cgroup2_mount();
    let sensors = match podwatch::kernel::loader::load(&podwatch::kernel::loader::LoadOptions {
        ring_buffer_bytes: 1 << 20,
        counter_capacity: 65536,
        count_exec_by_binary: false,
        cgroup_root: root.as_deref(),
        filter_records: true,
    })
    .and_then(|l| l.attach())
    {
        Ok(s) => s,
        Err(e) => {
            println!("  kernel map read: skipped ({e:#})");
            return;
        }
    };
    let podwatch::kernel::loader::Sensors { mut counters, ebpf: _programs, .. } = sensors;
    let cpus = aya::util::nr_cpus().map(|n| n.max(1)).unwrap_or(1);
    for (k, v) in &entries {
        let values = aya::maps::PerCpuValues::try_from(vec![*v; cpus]).expect("per-cpu values");
        counters.insert(k, values, 0).expect("insert");
    }
    let metrics = metrics_over(
        Box::new(podwatch::telemetry::metrics::KernelCounters::new(counters, 65536)),
        cgroups,
        store,
    );
    let (t, _) = time(iters, || metrics.render().map(|b| b.len()).unwrap_or(0));
    let verdict = if t < Duration::from_millis(50) { "met" } else { "NOT met" };
    println!(
        "  with the kernel map read ({} entries, {cpus} CPUs): {:>6.2} ms -> design bar {verdict}",
        entries.len(),
        t.as_secs_f64() * 1e3
    );
}

//! `/metrics`: per-pod counters read from the kernel's COUNTERS map at scrape
//! time (so they are exact even when events are lost), labelled through
//! cgroup → pod → metadata, plus the agent's own loss and health counters.
//! OpenMetrics text through prometheus-client.
//!
//! Series of a pod go away `grace` after its cgroup disappears or its metadata
//! source reports it deleted: the kernel entries are deleted then.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{atomic::Ordering::Relaxed, Arc, Mutex},
    time::{Duration, Instant},
};

use aya::maps::{MapData, PerCpuHashMap};
use podwatch_common::{action, counter, file_op, kind, CounterKey, CounterValue, IPPROTO_UDP};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
    registry::{Registry, Unit},
};

use crate::{
    cgroup::{parse_kubelet_path, CgroupResolver},
    metadata::PodStore,
    policy::engine::{PolicyStatus, RuleNames},
    sensors::SensorStatus,
    stats::AgentStats,
};

/// Which pod labels the per-pod families carry (cardinality control).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabelConfig {
    pub namespace: bool,
    pub pod: bool,
    pub workload: bool,
    pub container: bool,
    /// Exec counters per binary path (also switches the kernel's per-binary keys on).
    pub binary: bool,
}

impl Default for LabelConfig {
    fn default() -> Self {
        LabelConfig { namespace: true, pod: true, workload: true, container: true, binary: false }
    }
}

impl LabelConfig {
    pub const NAMES: [&'static str; 5] = ["namespace", "pod", "workload", "container", "binary"];

    pub fn from_names(names: &[String]) -> Result<LabelConfig, String> {
        let mut c =
            LabelConfig { namespace: false, pod: false, workload: false, container: false, binary: false };
        for n in names {
            match n.as_str() {
                "namespace" => c.namespace = true,
                "pod" => c.pod = true,
                "workload" => c.workload = true,
                "container" => c.container = true,
                "binary" => c.binary = true,
                other => {
                    return Err(format!("unknown metric label {other:?}; one of {}", Self::NAMES.join(", ")))
                }
            }
        }
        Ok(c)
    }
}

/// Exec path by hash, learnt from exec events, for the `binary` label.
#[derive(Default, Debug)]
pub struct BinaryNames {
    names: Mutex<HashMap<u64, String>>,
}

const MAX_BINARY_NAMES: usize = 16384;

impl BinaryNames {
    pub fn learn(&self, hash: u64, name: &str) {
        if let Ok(mut m) = self.names.lock() {
            if m.len() >= MAX_BINARY_NAMES && !m.contains_key(&hash) {
                m.clear();
            }
            m.entry(hash).or_insert_with(|| name.to_owned());
        }
    }

    fn get(&self, hash: u64) -> String {
        self.names
            .lock()
            .ok()
            .and_then(|m| m.get(&hash).cloned())
            .unwrap_or_else(|| format!("unknown:{hash:016x}"))
    }
}

/// Pod labels of one cgroup.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodLabels {
    pub namespace: String,
    pub pod: String,
    pub workload: String,
    pub container: String,
}

/// Where the per-pod counters come from: the kernel map, or a fixed list (bench, tests).
pub trait CounterSource: Send + Sync {
    fn read(&self) -> Vec<(CounterKey, CounterValue)>;
    fn remove_cgroups(&self, ids: &[u64]);
    fn capacity(&self) -> u32;
}

pub struct KernelCounters {
    map: Mutex<PerCpuHashMap<MapData, CounterKey, CounterValue>>,
    capacity: u32,
}

impl KernelCounters {
    pub fn new(map: PerCpuHashMap<MapData, CounterKey, CounterValue>, capacity: u32) -> KernelCounters {
        KernelCounters { map: Mutex::new(map), capacity }
    }
}

impl CounterSource for KernelCounters {
    fn read(&self) -> Vec<(CounterKey, CounterValue)> {
        let Ok(map) = self.map.lock() else { return Vec::new() };
        map.iter()
            .filter_map(Result::ok)
            .map(|(k, per_cpu)| {
                let mut sum = CounterValue::default();
                for v in per_cpu.iter() {
                    sum.events += v.events;
                    sum.bytes_sent += v.bytes_sent;
                    sum.bytes_received += v.bytes_received;
                }
                (k, sum)
            })
            .collect()
    }

    fn remove_cgroups(&self, ids: &[u64]) {
        let Ok(mut map) = self.map.lock() else { return };
        let doomed: Vec<CounterKey> =
            map.keys().filter_map(Result::ok).filter(|k| ids.contains(&k.cgroup_id)).collect();
        for k in doomed {
            let _ = map.remove(&k);
        }
    }

    fn capacity(&self) -> u32 {
        self.capacity
    }
}

pub struct Metrics {
    pub counters: Box<dyn CounterSource>,
    pub stats: Arc<AgentStats>,
    pub cgroups: Arc<Mutex<CgroupResolver>>,
    pub pods: Arc<PodStore>,
    pub binaries: Arc<BinaryNames>,
    pub labels: LabelConfig,
    pub sensors: Vec<SensorStatus>,
    pub grace: Duration,
    gone_since: Mutex<HashMap<u64, Instant>>,
    last_scrape_seconds: Mutex<f64>,
    rules: Arc<RuleNames>,
    policy_status: Arc<PolicyStatus>,
    /// Set while sinks run; their counters are rendered per sink.
    pub sinks: Mutex<Option<Arc<crate::sinks::Sinks>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("labels", &self.labels).finish_non_exhaustive()
    }
}

type Labels = Vec<(&'static str, String)>;

/// A per-pod family: name (without `_total`/unit suffix), help, unit.
struct Family {
    name: &'static str,
    help: &'static str,
    unit: Option<Unit>,
    series: BTreeMap<Labels, u64>,
}

impl Family {
    fn new(name: &'static str, help: &'static str, unit: Option<Unit>) -> Family {
        Family { name, help, unit, series: BTreeMap::new() }
    }
    fn add(&mut self, labels: Labels, v: u64) {
        *self.series.entry(labels).or_default() += v;
    }
}

fn result(outcome: u8) -> String {
    if outcome == 0 { "ok" } else { "error" }.to_owned()
}

fn protocol(op: u8) -> String {
    if op == IPPROTO_UDP as u8 { "udp" } else { "tcp" }.to_owned()
}

fn direction(d: u8) -> String {
    if d == podwatch_common::DIRECTION_INGRESS { "ingress" } else { "egress" }.to_owned()
}

pub fn file_op_name(op: u8) -> &'static str {
    match op {
        file_op::READ => "read",
        file_op::WRITE => "write",
        file_op::CREATE => "create",
        file_op::TRUNCATE => "truncate",
        _ => "open",
    }
}

fn record_kind_name(k: u8) -> String {
    match k as u16 {
        kind::EXEC => "exec",
        kind::EXIT => "exit",
        kind::FORK => "fork",
        kind::FILE_OPEN => "file",
        kind::TCP_CONNECT | kind::UDP_CONNECT => "connect",
        kind::TCP_ACCEPT => "accept",
        kind::TCP_CLOSE => "close",
        kind::UDP_SEND => "send",
        kind::CGROUP_MKDIR => "cgroup",
        _ => "other",
    }
    .to_owned()
}

fn action_name(a: u8) -> String {
    match a {
        action::NONE => "",
        action::COUNT => "count",
        action::LOG => "log",
        action::KILL => "kill",
        action::DENY => "deny",
        _ => "other",
    }
    .to_owned()
}

impl Metrics {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        counters: Box<dyn CounterSource>,
        stats: Arc<AgentStats>,
        cgroups: Arc<Mutex<CgroupResolver>>,
        pods: Arc<PodStore>,
        binaries: Arc<BinaryNames>,
        labels: LabelConfig,
        sensors: Vec<SensorStatus>,
        grace: Duration,
    ) -> Metrics {
        Metrics {
            counters,
            stats,
            cgroups,
            pods,
            binaries,
            labels,
            sensors,
            grace,
            gone_since: Mutex::new(HashMap::new()),
            last_scrape_seconds: Mutex::new(0.0),
            rules: Arc::new(RuleNames::default()),
            policy_status: Arc::new(PolicyStatus::default()),
            sinks: Mutex::new(None),
        }
    }

    /// Names rule ids (policy label) and reports policy load state.
    pub fn with_policy(mut self, rules: Arc<RuleNames>, status: Arc<PolicyStatus>) -> Metrics {
        self.rules = rules;
        self.policy_status = status;
        self
    }

    /// Loaded rules whose programs are not attached, each said in one line.
    pub fn unenforced(&self) -> Vec<String> {
        self.policy_status
            .unenforced
            .read()
            .map(|u| u.iter().map(|g| g.to_string()).collect())
            .unwrap_or_default()
    }

    /// Labels of a cgroup: its pod from the kubelet naming, names from the
    /// metadata store; host processes are namespace "host".
    pub fn pod_labels(&self, cgroup_id: u64) -> PodLabels {
        let path = self.cgroups.lock().ok().and_then(|mut c| c.resolve(cgroup_id));
        let Some(path) = path else {
            return PodLabels { namespace: "unknown".into(), ..Default::default() };
        };
        let Some(r) = parse_kubelet_path(&path) else {
            return PodLabels { namespace: "host".into(), ..Default::default() };
        };
        let container_id = r.container_id.unwrap_or_default();
        match self.pods.get(&r.pod_uid) {
            Some(meta) => PodLabels {
                namespace: meta.namespace.clone(),
                pod: meta.name.clone(),
                workload: meta
                    .workload
                    .as_ref()
                    .map(|w| format!("{}/{}", w.kind.to_lowercase(), w.name))
                    .unwrap_or_default(),
                container: meta
                    .container_name(&container_id)
                    .map(str::to_owned)
                    .unwrap_or_else(|| short_id(&container_id)),
            },
            None => PodLabels {
                namespace: String::new(),
                pod: r.pod_uid,
                workload: String::new(),
                container: short_id(&container_id),
            },
        }
    }

    fn base(&self, p: &PodLabels) -> Labels {
        let mut l = Vec::with_capacity(8);
        if self.labels.namespace {
            l.push(("namespace", p.namespace.clone()));
        }
        if self.labels.pod {
            l.push(("pod", p.pod.clone()));
        }
        if self.labels.workload {
            l.push(("workload", p.workload.clone()));
        }
        if self.labels.container {
            l.push(("container", p.container.clone()));
        }
        l
    }

    /// Aggregates counter entries into families (pure: used by scrapes and the bench).
    fn families(&self, entries: &[(CounterKey, CounterValue)]) -> Vec<Family> {
        let mut exec = Family::new("podwatch_exec", "Processes executed (execve) per pod.", None);
        let mut exits =
            Family::new("podwatch_process_exits", "Processes that ended, by reason (exit or signal).", None);
        let mut files =
            Family::new("podwatch_file_access", "File opens per pod by operation and result.", None);
        let mut conns = Family::new(
            "podwatch_network_connections",
            "Connections per pod: TCP connects (egress) and accepts (ingress), UDP connects.",
            None,
        );
        let mut datagrams = Family::new(
            "podwatch_network_datagrams",
            "UDP datagrams sent to an explicit destination (e.g. DNS).",
            None,
        );
        let mut sent = Family::new(
            "podwatch_network_sent",
            "TCP payload bytes sent, counted when connections close.",
            Some(Unit::Bytes),
        );
        let mut received = Family::new(
            "podwatch_network_received",
            "TCP payload bytes received, counted when connections close.",
            Some(Unit::Bytes),
        );
        let mut enforced =
            Family::new("podwatch_enforcement_actions", "Acts stopped by a policy (kill or deny).", None);
        let mut lost = Family::new(
            "podwatch_ringbuf_lost_records",
            "Detailed records the kernel ring buffer could not take (counters stay exact).",
            None,
        );

        let mut records = Family::new(
            "podwatch_ringbuf_records",
            "Detailed records the kernel sent to user space (what policies asked to log).",
            None,
        );
        let mut matches = Family::new(
            "podwatch_policy_rule_matches",
            "Events each policy rule matched, on every pod (counted in the kernel).",
            None,
        );
        let mut pod_cache: HashMap<u64, PodLabels> = HashMap::new();
        for (k, v) in entries {
            let p = pod_cache.entry(k.cgroup_id).or_insert_with(|| self.pod_labels(k.cgroup_id));
            let mut l = self.base(p);
            let rule = (k.rule != 0).then(|| self.rules.get(k.rule)).flatten();
            let policy_name = match (&rule, k.rule) {
                (Some(r), _) => r.policy.clone(),
                (None, 0) => String::new(),
                (None, id) => format!("rule-{id}"),
            };
            let policy = |l: &mut Labels| {
                l.push(("policy", policy_name.clone()));
                l.push(("action", action_name(k.action)));
            };
            if k.rule != 0 && !matches!(k.kind, counter::LOST | counter::RECORD | counter::CLOSE) {
                let rule_name =
                    rule.as_ref().map(|r| r.rule.clone()).unwrap_or_else(|| format!("rule-{}", k.rule));
                matches.add(
                    vec![
                        ("policy", policy_name.clone()),
                        ("rule", rule_name),
                        ("action", action_name(k.action)),
                    ],
                    v.events,
                );
            }
            match k.kind {
                counter::EXEC => {
                    if self.labels.binary {
                        l.push(("binary", self.binaries.get(k.binary)));
                    }
                    policy(&mut l);
                    exec.add(l, v.events);
                }
                counter::EXIT => {
                    l.push(("reason", if k.outcome == 0 { "exit" } else { "signal" }.to_owned()));
                    exits.add(l, v.events);
                }
                counter::FILE => {
                    l.push(("operation", file_op_name(k.op).to_owned()));
                    l.push(("result", result(k.outcome)));
                    policy(&mut l);
                    files.add(l, v.events);
                }
                counter::CONNECT | counter::ACCEPT => {
                    l.push(("direction", direction(k.direction)));
                    l.push(("protocol", protocol(k.op)));
                    l.push(("result", result(k.outcome)));
                    policy(&mut l);
                    conns.add(l, v.events);
                }
                counter::SEND => {
                    l.push(("protocol", protocol(k.op)));
                    policy(&mut l);
                    datagrams.add(l, v.events);
                }
                counter::CLOSE => {
                    l.push(("direction", direction(k.direction)));
                    l.push(("protocol", protocol(k.op)));
                    sent.add(l.clone(), v.bytes_sent);
                    received.add(l, v.bytes_received);
                }
                counter::LOST => {
                    l.push(("kind", record_kind_name(k.op)));
                    lost.add(l, v.events);
                }
                counter::RECORD => {
                    l.push(("kind", record_kind_name(k.op)));
                    records.add(l, v.events);
                }
                _ => {}
            }
            if k.action == action::KILL || k.action == action::DENY {
                let mut l = self.base(p);
                policy(&mut l);
                enforced.add(l, v.events);
            }
        }
        vec![exec, exits, files, conns, datagrams, sent, received, enforced, lost, records, matches]
    }

    /// Deletes the kernel counters of pods gone for longer than `grace`.
    /// A cgroup is gone when its directory is, or when its pod is deleted in
    /// the metadata store. Returns the cgroup ids removed.
    pub fn prune(&self, now: Instant) -> Vec<u64> {
        let entries = self.counters.read();
        let mut ids: Vec<u64> = entries.iter().map(|(k, _)| k.cgroup_id).collect();
        ids.sort_unstable();
        ids.dedup();
        let Ok(mut gone) = self.gone_since.lock() else { return Vec::new() };
        let mut expired = Vec::new();
        for id in ids {
            if self.alive(id) {
                gone.remove(&id);
                continue;
            }
            let since = *gone.entry(id).or_insert(now);
            if now.duration_since(since) >= self.grace {
                expired.push(id);
            }
        }
        if !expired.is_empty() {
            self.counters.remove_cgroups(&expired);
            for id in &expired {
                gone.remove(id);
            }
        }
        expired
    }

    fn alive(&self, cgroup_id: u64) -> bool {
        let Ok(cgroups) = self.cgroups.lock() else { return true };
        let Some(path) = cgroups.peek(cgroup_id) else { return true };
        if !cgroups.exists(&path) {
            return false;
        }
        match parse_kubelet_path(&path) {
            Some(r) => !self.pods.is_deleted(&r.pod_uid),
            None => true,
        }
    }

    fn encode_self(
        &self,
        encoder: &mut DescriptorEncoder,
        map_entries: usize,
    ) -> Result<(), std::fmt::Error> {
        let s = self.stats.snapshot();
        let counter =
            |e: &mut DescriptorEncoder, name: &str, help: &str, v: u64| -> Result<(), std::fmt::Error> {
                ConstCounter::new(v).encode(e.encode_descriptor(name, help, None, MetricType::Counter)?)
            };
        let gauge =
            |e: &mut DescriptorEncoder, name: &str, help: &str, v: i64| -> Result<(), std::fmt::Error> {
                ConstGauge::new(v).encode(e.encode_descriptor(name, help, None, MetricType::Gauge)?)
            };
        counter(
            encoder,
            "podwatch_kernel_records",
            "Records the kernel wrote to the ring buffer.",
            s.kernel_records,
        )?;
        counter(
            encoder,
            "podwatch_kernel_read_errors",
            "Kernel memory reads that failed in the probes.",
            s.kernel_read_errors,
        )?;
        {
            let mut m = encoder.encode_descriptor(
                "podwatch_kernel_map_insert_failures",
                "Entries a kernel map could not take because it was full (per-pod counters lost).",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(self.stats.kernel_counter_full.load(Relaxed))
                .encode(m.encode_family(&[("map", "counters")])?)?;
        }
        counter(encoder, "podwatch_records_read", "Records read from the ring buffer.", s.records_read)?;
        {
            let mut m = encoder.encode_descriptor(
                "podwatch_decode_errors",
                "Ring buffer records that could not be decoded, by reason (skipped).",
                None,
                MetricType::Counter,
            )?;
            for (reason, v) in [
                ("short", s.decode_errors.short),
                ("unknown_kind", s.decode_errors.unknown_kind),
                ("bad_length", s.decode_errors.bad_length),
                ("bad_tail", s.decode_errors.bad_tail),
            ] {
                ConstCounter::new(v).encode(m.encode_family(&[("reason", reason)])?)?;
            }
        }
        counter(encoder, "podwatch_events", "Events produced after enrichment.", s.events_emitted)?;
        {
            let mut m = encoder.encode_descriptor(
                "podwatch_queue_dropped_events",
                "Events dropped because a queue was full (the reader never waits).",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(s.output_queue_drops).encode(m.encode_family(&[("queue", "output")])?)?;
            ConstCounter::new(s.stream_lagged).encode(m.encode_family(&[("queue", "live_stream")])?)?;
        }
        counter(
            encoder,
            "podwatch_output_write_errors",
            "Failed writes to the local output.",
            s.output_write_errors,
        )?;
        gauge(
            encoder,
            "podwatch_process_cache_entries",
            "Processes in the process cache.",
            s.process_cache_size as i64,
        )?;
        counter(
            encoder,
            "podwatch_process_cache_misses",
            "Process lookups not in the cache (read from /proc).",
            s.process_cache_misses,
        )?;
        counter(
            encoder,
            "podwatch_process_cache_evictions",
            "Processes evicted from the full cache.",
            s.process_cache_evictions,
        )?;
        gauge(
            encoder,
            "podwatch_cgroup_cache_entries",
            "cgroup ids with a known path.",
            s.cgroup_cache_size as i64,
        )?;
        counter(
            encoder,
            "podwatch_cgroup_cache_misses",
            "cgroup ids looked up without a known path.",
            s.cgroup_misses,
        )?;
        {
            let st = &self.pods.state;
            let source = st.name.read().map(|n| n.clone()).unwrap_or_default();
            let l = [("source", source.as_str())];
            let mut m = encoder.encode_descriptor(
                "podwatch_metadata_synced",
                "1 once the pod metadata source has completed its first full sync.",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(st.synced.load(Relaxed) as i64).encode(m.encode_family(&l)?)?;
            let mut m = encoder.encode_descriptor(
                "podwatch_metadata_errors",
                "Errors from the pod metadata source.",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(st.errors.load(Relaxed)).encode(m.encode_family(&l)?)?;
            let mut m = encoder.encode_descriptor(
                "podwatch_metadata_relists",
                "Full re-lists of pods (initial, after 410 Gone or errors).",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(st.relists.load(Relaxed)).encode(m.encode_family(&l)?)?;
            let mut m = encoder.encode_descriptor(
                "podwatch_metadata_pods",
                "Live pods known to the metadata source.",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(self.pods.live_count() as i64).encode(m.encode_family(&l)?)?;
        }
        {
            let entries = map_entries as i64;
            let mut m = encoder.encode_descriptor(
                "podwatch_kernel_map_entries",
                "Entries in a kernel map.",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(entries).encode(m.encode_family(&[("map", "counters")])?)?;
            let mut m = encoder.encode_descriptor(
                "podwatch_kernel_map_capacity",
                "Capacity of a kernel map.",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(self.counters.capacity() as i64)
                .encode(m.encode_family(&[("map", "counters")])?)?;
        }
        {
            let mut m = encoder.encode_descriptor(
                "podwatch_sensor_attached",
                "1 when a kernel program is attached to its hook.",
                None,
                MetricType::Gauge,
            )?;
            for s in &self.sensors {
                ConstGauge::new(s.attached as i64).encode(m.encode_family(&[
                    ("sensor", crate::sensors::sensor_of(&s.program)),
                    ("program", s.program.as_str()),
                    ("hook", s.hook.as_str()),
                ])?)?;
            }
            let mut m = encoder.encode_descriptor(
                "podwatch_kernel_feature",
                "1 when the running kernel offers a hook kind (probed by attaching an empty program).",
                None,
                MetricType::Gauge,
            )?;
            for (feature, on) in crate::probe::features().into_iter().flat_map(|f| f.flags()) {
                ConstGauge::new(on as i64).encode(m.encode_family(&[("feature", feature)])?)?;
            }
        }
        self.encode_sinks(encoder)?;
        {
            use std::sync::atomic::Ordering::Relaxed;
            let st = &self.policy_status;
            gauge(
                encoder,
                "podwatch_policies_loaded",
                "Policies in the active set.",
                st.policies.load(Relaxed) as i64,
            )?;
            gauge(
                encoder,
                "podwatch_policy_rules_loaded",
                "Rules in the active set.",
                st.rules.load(Relaxed) as i64,
            )?;
            let mut m = encoder.encode_descriptor(
                "podwatch_policy_reloads",
                "Policy set loads by result (a failed load keeps the running set).",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(st.reloads_ok.load(Relaxed)).encode(m.encode_family(&[("result", "ok")])?)?;
            ConstCounter::new(st.reloads_failed.load(Relaxed))
                .encode(m.encode_family(&[("result", "error")])?)?;
            let m = encoder.encode_descriptor(
                "podwatch_policy_last_reload_success_timestamp",
                "When the active policy set was loaded (Unix time).",
                Some(&Unit::Seconds),
                MetricType::Gauge,
            )?;
            ConstGauge::new(st.last_success.load(Relaxed) as i64).encode(m)?;
            let mut m = encoder.encode_descriptor(
                "podwatch_policy_rule_unenforced",
                "1 for a loaded rule a kernel program it needs is not attached for (the agent is not ready).",
                None,
                MetricType::Gauge,
            )?;
            for g in st.unenforced.read().iter().flat_map(|u| u.iter()) {
                for (program, _) in &g.missing {
                    ConstGauge::new(1i64).encode(m.encode_family(&[
                        ("policy", g.policy.as_str()),
                        ("rule", g.rule.as_str()),
                        ("program", program.as_str()),
                    ])?)?;
                }
            }
        }
        {
            let secs = self.last_scrape_seconds.lock().map(|v| *v).unwrap_or(0.0);
            let m = encoder.encode_descriptor(
                "podwatch_last_scrape_duration",
                "Time the previous /metrics scrape took.",
                Some(&Unit::Seconds),
                MetricType::Gauge,
            )?;
            ConstGauge::new(secs).encode(m)?;
        }
        {
            // A gauge of 1 (the `*_build_info` convention), not the OpenMetrics info
            // type: the classic text parser (promtool, older scrapers) rejects `info`.
            let mut m = encoder.encode_descriptor(
                "podwatch_build_info",
                "Build information; the value is always 1.",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(1i64).encode(m.encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?)?;
        }
        Ok(())
    }

    fn encode_sinks(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.sinks.lock().ok().and_then(|s| s.as_ref().map(|s| s.stats())).unwrap_or_default();
        let mut m = encoder.encode_descriptor(
            "podwatch_sink_events",
            "Events per sink by outcome: sent, failed (given up), dropped (queue full or oversized), retried.",
            None,
            MetricType::Counter,
        )?;
        for (sink, s) in &stats {
            for (outcome, v) in
                [("sent", s.sent), ("failed", s.failed), ("dropped", s.dropped), ("retried", s.retried)]
            {
                ConstCounter::new(v)
                    .encode(m.encode_family(&[("sink", sink.as_str()), ("outcome", outcome)])?)?;
            }
        }
        let mut m = encoder.encode_descriptor(
            "podwatch_sink_batches",
            "Batches a sink sent.",
            None,
            MetricType::Counter,
        )?;
        for (sink, s) in &stats {
            ConstCounter::new(s.batches).encode(m.encode_family(&[("sink", sink.as_str())])?)?;
        }
        for (name, help, get) in [
            (
                "podwatch_sink_queue_depth",
                "Events waiting in a sink's queue.",
                (|s| s.queue_depth) as fn(&crate::sinks::SinkStatsSnapshot) -> u64,
            ),
            ("podwatch_sink_queue_capacity", "Capacity of a sink's queue.", |s| s.queue_capacity),
            ("podwatch_sink_in_flight", "Events a sink has taken but not yet settled.", |s| s.in_flight),
        ] {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (sink, s) in &stats {
                ConstGauge::new(get(s) as i64).encode(m.encode_family(&[("sink", sink.as_str())])?)?;
            }
        }
        let mut m = encoder.encode_descriptor(
            "podwatch_sink_last_success_timestamp",
            "When a sink last delivered (Unix time).",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        for (sink, s) in &stats {
            ConstGauge::new(s.last_success_unix.unwrap_or(0.0))
                .encode(m.encode_family(&[("sink", sink.as_str())])?)?;
        }
        Ok(())
    }

    /// Encodes everything in OpenMetrics text.
    pub fn render(self: &Arc<Self>) -> Result<String, std::fmt::Error> {
        let start = Instant::now();
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self.clone()));
        let mut out = String::with_capacity(64 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &registry)?;
        if let Ok(mut s) = self.last_scrape_seconds.lock() {
            *s = start.elapsed().as_secs_f64();
        }
        Ok(out)
    }
}

/// OpenMetrics text → Prometheus text format 0.0.4, for scrapers that do not
/// ask for OpenMetrics (curl, promtool, older agents). The two differ here only
/// in that a counter family is named with its `_total` suffix in HELP/TYPE, and
/// in the `# UNIT` and `# EOF` lines, which 0.0.4 lacks.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let lines: Vec<&str> = openmetrics.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line == "# EOF" || line.starts_with("# UNIT ") {
            i += 1;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            // A family's metadata block: HELP, TYPE, (UNIT).
            let name = rest.split(' ').next().unwrap_or_default();
            let is_counter = lines
                .iter()
                .skip(i + 1)
                .take(2)
                .any(|l| l.strip_prefix("# TYPE ").is_some_and(|t| t == format!("{name} counter")));
            if is_counter {
                out.push_str(&format!("# HELP {name}_total{}\n", &rest[name.len()..]));
                out.push_str(&format!("# TYPE {name}_total counter\n"));
                i += 1;
                while i < lines.len() && (lines[i].starts_with("# TYPE ") || lines[i].starts_with("# UNIT "))
                {
                    i += 1;
                }
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
        i += 1;
    }
    out
}

fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
}

impl Collector for Metrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let entries = self.counters.read();
        for fam in self.families(&entries) {
            let mut m =
                encoder.encode_descriptor(fam.name, fam.help, fam.unit.as_ref(), MetricType::Counter)?;
            for (labels, v) in &fam.series {
                ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
            }
        }
        self.encode_self(&mut encoder, entries.len())
    }
}

/// A fixed counter list: for the scrape bench and unit tests.
pub struct StaticCounters(pub Mutex<Vec<(CounterKey, CounterValue)>>);

impl CounterSource for StaticCounters {
    fn read(&self) -> Vec<(CounterKey, CounterValue)> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
    fn remove_cgroups(&self, ids: &[u64]) {
        if let Ok(mut v) = self.0.lock() {
            v.retain(|(k, _)| !ids.contains(&k.cgroup_id));
        }
    }
    fn capacity(&self) -> u32 {
        u32::MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_to_classic_text() {
        let om = "# HELP a_b Things.\n# TYPE a_b counter\na_b_total{x=\"1\"} 3\n# HELP sent_bytes Bytes.\n# TYPE sent_bytes counter\n# UNIT sent_bytes bytes\nsent_bytes_total 5\n# HELP g A gauge.\n# TYPE g gauge\ng 1\n# EOF\n";
        let text = to_prometheus_text(om);
        assert_eq!(
            text,
            "# HELP a_b_total Things.\n# TYPE a_b_total counter\na_b_total{x=\"1\"} 3\n# HELP sent_bytes_total Bytes.\n# TYPE sent_bytes_total counter\nsent_bytes_total 5\n# HELP g A gauge.\n# TYPE g gauge\ng 1\n"
        );
    }

    #[test]
    fn label_config_from_names() {
        let c = LabelConfig::from_names(&["pod".into(), "binary".into()]).expect("valid");
        assert!(c.pod && c.binary && !c.namespace);
        assert!(LabelConfig::from_names(&["colour".into()]).is_err());
    }
}

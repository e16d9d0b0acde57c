//! `/metrics`: per-pod counters read from the kernel's COUNTERS map at scrape
//! time (so they are exact even when events are lost), labelled through
//! cgroup → pod → metadata, plus the agent's own loss and health counters.
//! OpenMetrics text through prometheus-client.
//!
//! - [`counters`]: where counter entries come from (kernel map, or a fixed list);
//! - [`labels`]: which pod labels series carry, cgroup → pod labels;
//! - [`pod_families`]: counter entries → per-pod families;
//! - [`self_metrics`]: the agent's own counters;
//! - [`process`]: the standard `process_*` metrics of the agent itself;
//! - [`prune`]: series of deleted pods go after a grace period;
//! - [`text`]: OpenMetrics → classic text for scrapers that do not ask for it.

pub mod counters;
pub mod labels;
pub mod pod_families;
pub mod process;
pub mod prune;
pub mod self_metrics;
pub mod text;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, MetricType},
    registry::Registry,
};

pub use counters::{CounterSource, KernelCounters, StaticCounters};
pub use labels::{LabelConfig, PodLabels};
pub use text::to_prometheus_text;

use crate::{
    kernel::loader::SensorStatus,
    pipeline::names::BinaryNames,
    pods::{cgroup::CgroupResolver, PodStore},
    policy::engine::{PolicyStatus, RuleNames},
    telemetry::stats::AgentStats,
};

pub struct Metrics {
    pub counters: Box<dyn CounterSource>,
    pub stats: Arc<AgentStats>,
    pub cgroups: Arc<Mutex<CgroupResolver>>,
    pub pods: Arc<PodStore>,
    pub binaries: Arc<BinaryNames>,
    pub labels: LabelConfig,
    pub sensors: Vec<SensorStatus>,
    pub grace: Duration,
    pub(super) gone_since: Mutex<HashMap<u64, Instant>>,
    pub(super) last_scrape_seconds: Mutex<f64>,
    pub(super) rules: Arc<RuleNames>,
    pub(super) policy_status: Arc<PolicyStatus>,
    /// Set while sinks run; their counters are rendered per sink.
    pub sinks: Mutex<Option<Arc<crate::outputs::sinks::Sinks>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("labels", &self.labels).finish_non_exhaustive()
    }
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
        self.encode_self(&mut encoder, entries.len())?;
        process::encode(&mut encoder)
    }
}

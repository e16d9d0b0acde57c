//! `podwatch run`: wires the stages of the data path together and shuts them
//! down in order. The stages themselves live in their folders:
//!
//! ```text
//! kernel::loader ─▶ pipeline::reader (decode ─▶ enrich) ─▶ outputs: local, live, sinks
//! kernel COUNTERS map ─────────────────────────────────▶ telemetry::metrics (at scrape)
//! kernel STATS map ─▶ telemetry::stats (polled)        policy::reload (SIGHUP, dir changes)
//! ```

use std::{
    sync::{
        atomic::{AtomicBool, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::{
    net::TcpListener,
    sync::{broadcast, Notify},
};
use tracing::{info, warn};

use crate::{
    config::{AgentConfig, EventsMode, MetadataConfig},
    kernel::loader as sensors,
    outputs::{local as output, sinks::Sinks},
    pipeline::{
        enrich::Enricher,
        names::BinaryNames,
        proc_cache::ProcessCache,
        reader::{Fanout, Reader},
    },
    pods::{
        self,
        cgroup::{cgroup2_mount, CgroupResolver},
        PodStore,
    },
    policy::{self, engine::PolicyEngine, reload::policy_loop},
    telemetry::{
        metrics::{KernelCounters, Metrics},
        server::{self, ServerState},
        stats::AgentStats,
    },
};

pub async fn run(cfg: AgentConfig) -> anyhow::Result<()> {
    // Name a missing capability here rather than fail with EPERM in the loader.
    crate::kernel::capabilities::check()?;
    let stats = Arc::new(AgentStats::default());
    let (events_tx, _) = broadcast::channel(cfg.queue_capacity.min(1 << 16));
    let pods = Arc::new(PodStore::new(match cfg.metadata {
        MetadataConfig::None => "none",
        MetadataConfig::File(_) => "file",
        MetadataConfig::Kubernetes { .. } => "kubernetes",
    }));
    let state = Arc::new(ServerState {
        stats: stats.clone(),
        ready: AtomicBool::new(false),
        events: events_tx.clone(),
        sensors: Mutex::new(Vec::new()),
        metrics: Mutex::new(None),
        pods: pods.clone(),
        policy_ready: Arc::new(AtomicBool::new(false)),
    });
    // Listen first so /healthz answers while programs load.
    let listener =
        TcpListener::bind(cfg.listen).await.with_context(|| format!("listening on {}", cfg.listen))?;
    info!(listen = %listener.local_addr()?, "http listening");
    tokio::spawn(server::serve(listener, state.clone()));
    pods::start_source(&cfg, pods.clone());

    let cgroup_root = cgroup2_mount();
    if cgroup_root.is_none() {
        warn!("no cgroup2 hierarchy mounted: no pod attribution and no UDP sensors");
    }
    let mut procs = ProcessCache::new(cfg.process_cache_capacity, cfg.exited_linger);
    procs.redactor = Arc::new(
        crate::pipeline::redact::Redactor::new(&cfg.redaction_patterns, cfg.redaction_enabled)
            .map_err(anyhow::Error::msg)?,
    );
    let seeded = procs.seed();
    let cgroups = Arc::new(Mutex::new(CgroupResolver::new(cgroup_root.clone())));
    let binaries = Arc::new(BinaryNames::default());
    info!(processes = seeded, "process cache seeded");
    let policy_caps = policy::Capabilities::probe();
    let initial_policies = match &cfg.policy_dir {
        Some(dir) => policy::load_dir(dir, policy_caps)?,
        None => policy::parse(policy::BUILTIN_DEFAULT, "built-in default policy", policy_caps)?,
    };

    let mut loaded = sensors::load(&sensors::LoadOptions {
        ring_buffer_bytes: cfg.ring_buffer_bytes,
        counter_capacity: cfg.counter_capacity,
        count_exec_by_binary: cfg.metric_labels.binary,
        cgroup_root: cgroup_root.as_deref(),
        filter_records: cfg.events == EventsMode::Matched,
    })?;
    // The policies are in the kernel before any program runs: no event is
    // judged by no policy, and none escapes the record filter, at start-up.
    let mut engine = PolicyEngine::new(loaded.policy_maps()?, cfg.events == EventsMode::Matched);
    let entries = cgroups.lock().map(|c| c.entries()).unwrap_or_default();
    engine.apply(initial_policies, &entries, &pods).context("loading the initial policy set")?;
    info!(
        policies = engine.policies().len(),
        source = %cfg.policy_dir.as_ref().map(|d| d.display().to_string()).unwrap_or_else(|| "built-in default".into()),
        "policies loaded"
    );
    let sensors = loaded.attach()?;
    *state.sensors.lock().map_err(|_| anyhow::anyhow!("poisoned"))? = sensors.status.clone();
    let sensors::Sensors {
        events, stats: kernel_stats, counters, ebpf: _programs, status, read_guard, ..
    } = sensors;
    engine.set_sensors(status.clone(), read_guard);
    let rule_names = engine.names.clone();
    let policy_status = engine.status.clone();
    let cgroup_created = Arc::new(Notify::new());
    tokio::spawn(policy_loop(
        engine,
        cfg.policy_dir.clone(),
        policy_caps,
        cgroups.clone(),
        pods.clone(),
        cgroup_created.clone(),
        state.policy_ready.clone(),
    ));
    let mut enricher = Enricher::new(
        cfg.node_name.clone(),
        procs,
        cgroups.clone(),
        pods.clone(),
        binaries.clone(),
        rule_names.clone(),
    );
    enricher.cgroup_created = Some(cgroup_created);

    let metrics = Arc::new(
        Metrics::new(
            Box::new(KernelCounters::new(counters, cfg.counter_capacity)),
            stats.clone(),
            cgroups.clone(),
            pods.clone(),
            binaries,
            cfg.metric_labels,
            status,
            cfg.deleted_pod_grace,
        )
        .with_policy(rule_names, policy_status),
    );
    *state.metrics.lock().map_err(|_| anyhow::anyhow!("poisoned"))? = Some(metrics.clone());

    let out = output::spawn(cfg.output.clone(), cfg.queue_capacity, cfg.queue_bytes, stats.clone())?;
    let sinks = Arc::new(Sinks::start(&cfg.sinks, &cfg.node_name).context("starting the event sinks")?);
    if let Ok(mut s) = metrics.sinks.lock() {
        *s = Some(sinks.clone());
    }

    let housekeeping = {
        let stats = stats.clone();
        let grace = cfg.deleted_pod_grace;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                stats.poll_kernel(&kernel_stats);
                let now = Instant::now();
                let removed = metrics.prune(now);
                if !removed.is_empty() {
                    info!(cgroups = removed.len(), "removed the series of deleted pods");
                }
                // Keep deleted pods' names a little longer than their series.
                metrics.pods.expire(now, grace.saturating_add(Duration::from_secs(60)));
            }
        })
    };

    let mut reader = Reader::new(events, enricher, stats.clone())?;
    let mut fanout = Fanout { local: out, sinks, live: events_tx };
    state.ready.store(true, Relaxed);
    info!(node = %cfg.node_name, "sensors ready");

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            r = reader.read_batch(&mut fanout) => r?,
            _ = tokio::signal::ctrl_c() => { info!("interrupted"); break; }
            _ = sigterm.recv() => { info!("terminated"); break; }
        }
    }
    reader.drain(&mut fanout);
    let Fanout { local: out, sinks, .. } = fanout;
    state.ready.store(false, Relaxed);
    housekeeping.abort();
    // Let queued events reach their output and sinks before exiting.
    tokio::task::spawn_blocking(move || out.finish()).await?;
    // /metrics holds a handle on the sinks; release it so they can be shut down.
    if let Some(m) = state.metrics.lock().ok().and_then(|m| m.clone()) {
        if let Ok(mut s) = m.sinks.lock() {
            s.take();
        }
    }
    match Arc::try_unwrap(sinks) {
        Ok(sinks) => sinks.shutdown(Duration::from_secs(10)).await,
        Err(_) => warn!("sinks still referenced at shutdown; queued events may be lost"),
    }
    info!(stats = ?stats.snapshot(), "stopped");
    Ok(())
}

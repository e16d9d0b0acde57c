//! `podwatch run`: load the sensors, read the ring buffer, enrich, fan out.
//!
//! ```text
//! ring buffer ─▶ decode ─▶ enrich ─▶ output queue (bounded, drop+count) ─▶ stdout/file
//!                                 └▶ broadcast ─▶ /events subscribers (lag counted)
//! kernel COUNTERS map ─────────────────────────▶ /metrics (read at scrape time)
//! kernel STATS map ─▶ AgentStats (polled)
//! ```
//! The reader never waits on an output: that is what keeps the kernel side
//! from overflowing while a disk or terminal is slow.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use aya::maps::{MapData, PerCpuArray};
use podwatch_common::stat;
use tokio::{
    io::unix::AsyncFd,
    net::TcpListener,
    sync::{broadcast, Notify},
};
use tracing::{error, info, warn};

use crate::{
    cgroup::{cgroup2_mount, CgroupResolver},
    config::{AgentConfig, EventsMode, MetadataConfig},
    decode::decode,
    enrich::Enricher,
    metadata::{self, PodStore},
    metrics::{BinaryNames, KernelCounters, Metrics},
    output,
    policy::{self, engine::PolicyEngine},
    proc_cache::ProcessCache,
    sensors,
    server::{self, ServerState},
    sinks::Sinks,
    stats::AgentStats,
};

fn poll_kernel_stats(map: &PerCpuArray<MapData, u64>, stats: &AgentStats) {
    let sum = |idx: u32| -> u64 { map.get(&idx, 0).map(|v| v.iter().copied().sum()).unwrap_or(0) };
    stats.kernel_ringbuf_lost.store(sum(stat::RINGBUF_LOST), Relaxed);
    stats.kernel_records.store(sum(stat::RECORDS), Relaxed);
    stats.kernel_read_errors.store(sum(stat::READ_ERRORS), Relaxed);
    stats.kernel_open_stash_misses.store(sum(stat::OPEN_STASH_MISS), Relaxed);
    stats.kernel_sock_owner_misses.store(sum(stat::SOCK_OWNER_MISS), Relaxed);
    stats.kernel_counter_full.store(sum(stat::COUNTER_FULL), Relaxed);
}

/// Starts the configured pod metadata source; it fills `store` in the background.
fn start_metadata(cfg: &AgentConfig, store: Arc<PodStore>) {
    match &cfg.metadata {
        MetadataConfig::None => store.set_synced(),
        MetadataConfig::File(path) => {
            tokio::spawn(metadata::static_file::run(path.clone(), store, Duration::from_secs(1)));
        }
        MetadataConfig::Kubernetes { kubeconfig, api_server } => {
            let kube = metadata::kube::KubeConfig {
                node_name: cfg.node_name.clone(),
                kubeconfig: kubeconfig.clone(),
                api_server: api_server.clone(),
                ..Default::default()
            };
            tokio::spawn(metadata::kube::run(kube, store));
        }
    }
}

/// Names and sizes of the policy files, to notice edits (ConfigMap updates
/// swap a symlink, which changes the inode behind each name).
fn dir_fingerprint(dir: &std::path::Path) -> Vec<(String, u64, u64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let m = std::fs::metadata(e.path()).ok()?;
                    Some((
                        e.file_name().to_string_lossy().into_owned(),
                        m.ino(),
                        m.len(),
                        m.mtime_nsec() + m.mtime() * 1_000_000_000,
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Keeps the kernel's policies current: reloads on SIGHUP and when the
/// directory changes (a rejected set leaves the running one in force), and
/// gives new or changed cgroups their policy masks.
async fn policy_loop(
    mut engine: PolicyEngine,
    dir: Option<std::path::PathBuf>,
    caps: policy::Capabilities,
    cgroups: Arc<Mutex<CgroupResolver>>,
    pods: Arc<PodStore>,
    cgroup_created: Arc<Notify>,
    ready: Arc<AtomicBool>,
) {
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!("no SIGHUP reloads: {e}");
            None
        }
    };
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut fingerprint = dir.as_deref().map(dir_fingerprint);
    loop {
        let mut reload = false;
        tokio::select! {
            _ = async { match hup.as_mut() { Some(h) => { h.recv().await; } None => std::future::pending().await } } => {
                info!("SIGHUP: reloading policies");
                reload = true;
            }
            _ = cgroup_created.notified() => {}
            _ = tick.tick() => {
                if let Some(d) = &dir {
                    let now = dir_fingerprint(d);
                    if fingerprint.as_ref() != Some(&now) {
                        fingerprint = Some(now);
                        reload = true;
                    }
                }
            }
        }
        // Snapshot under the lock, stat without it: the ring-buffer reader
        // takes the same lock for every event.
        let Some((known, probe)) = cgroups.lock().ok().map(|c| (c.entries(), c.clone_probe())) else {
            continue;
        };
        let (entries, gone): (Vec<_>, Vec<_>) = known.into_iter().partition(|(_, p)| probe.exists(p));
        let gone: Vec<u64> = gone.into_iter().map(|(id, _)| id).collect();
        if !gone.is_empty() {
            if let Ok(mut c) = cgroups.lock() {
                for id in &gone {
                    c.forget(*id);
                }
            }
        }
        if reload {
            if let Some(d) = &dir {
                match policy::load_dir(d, caps) {
                    Ok(set) => match engine.apply(set, &entries, &pods) {
                        Ok(()) => info!(policies = engine.policies().len(), "policy set reloaded"),
                        Err(e) => error!("policy set not loaded, the previous set stays in force: {e:#}"),
                    },
                    Err(e) => {
                        engine.status.reloads_failed.fetch_add(1, Relaxed);
                        if let Ok(mut last) = engine.status.last_error.write() {
                            *last = Some(e.to_string());
                        }
                        error!("policy set rejected, the previous set stays in force: {e}");
                    }
                }
            }
        }
        engine.refresh(&entries, &gone, &pods);
        if pods.synced() {
            ready.store(true, Relaxed);
        }
    }
}

pub async fn run(cfg: AgentConfig) -> anyhow::Result<()> {
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
    start_metadata(&cfg, pods.clone());

    let cgroup_root = cgroup2_mount();
    if cgroup_root.is_none() {
        warn!("no cgroup2 hierarchy mounted: no pod attribution and no UDP sensors");
    }
    let mut procs = ProcessCache::new(cfg.process_cache_capacity, cfg.exited_linger);
    procs.redactor = Arc::new(
        crate::redact::Redactor::new(&cfg.redaction_patterns, cfg.redaction_enabled)
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

    let sensors = sensors::load(&sensors::LoadOptions {
        ring_buffer_bytes: cfg.ring_buffer_bytes,
        counter_capacity: cfg.counter_capacity,
        count_exec_by_binary: cfg.metric_labels.binary,
        cgroup_root: cgroup_root.as_deref(),
    })?;
    *state.sensors.lock().map_err(|_| anyhow::anyhow!("poisoned"))? = sensors.status.clone();
    let sensors::Sensors {
        events,
        stats: kernel_stats,
        counters,
        policy: policy_maps,
        ebpf: _programs,
        status,
        ..
    } = sensors;

    let mut engine = PolicyEngine::new(policy_maps, cfg.events == EventsMode::Matched);
    engine.sensors = Some(status.clone());
    let entries = cgroups.lock().map(|c| c.entries()).unwrap_or_default();
    engine.apply(initial_policies, &entries, &pods).context("loading the initial policy set")?;
    info!(
        policies = engine.policies().len(),
        source = %cfg.policy_dir.as_ref().map(|d| d.display().to_string()).unwrap_or_else(|| "built-in default".into()),
        "policies loaded"
    );
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

    let out = output::spawn(cfg.output.clone(), cfg.queue_capacity, stats.clone())?;
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
                poll_kernel_stats(&kernel_stats, &stats);
                let now = Instant::now();
                let removed = metrics.prune(now);
                if !removed.is_empty() {
                    info!(cgroups = removed.len(), "removed the series of deleted pods");
                }
                // Keep deleted pods' names a little longer than their series.
                metrics.pods.expire(now, grace + Duration::from_secs(60));
            }
        })
    };

    // SAFETY: the RingBuf owns its map fd for as long as the AsyncFd owns it.
    let mut ring = unsafe { AsyncFd::register_with_interest(events, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("polling the ring buffer: {e}"))?;
    state.ready.store(true, Relaxed);
    info!(node = %cfg.node_name, "sensors ready");

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut last_tick = Instant::now();
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                let rb = guard.get_inner_mut();
                while let Some(item) = rb.next() {
                    stats.records_read.fetch_add(1, Relaxed);
                    match decode(&item) {
                        Ok(rec) => {
                            drop(item);
                            if let Some(ev) = enricher.enrich(rec) {
                                let ev = Arc::new(ev);
                                stats.events_emitted.fetch_add(1, Relaxed);
                                out.offer(&ev, &stats);
                                sinks.offer(&ev);
                                let _ = events_tx.send(ev);
                            }
                        }
                        Err(e) => stats.decode_error(e),
                    }
                }
                guard.clear_ready();
                if last_tick.elapsed() >= Duration::from_secs(1) {
                    last_tick = Instant::now();
                    enricher.tick(last_tick);
                    stats.process_cache_size.store(enricher.procs.len() as u64, Relaxed);
                    stats.process_cache_misses.store(enricher.procs.misses, Relaxed);
                    stats.process_cache_evictions.store(enricher.procs.evictions, Relaxed);
                    if let Ok(c) = enricher.cgroups.lock() {
                        stats.cgroup_cache_size.store(c.len() as u64, Relaxed);
                        stats.cgroup_misses.store(c.misses, Relaxed);
                    }
                }
            }
            _ = tokio::signal::ctrl_c() => { info!("interrupted"); break; }
            _ = sigterm.recv() => { info!("terminated"); break; }
        }
    }
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

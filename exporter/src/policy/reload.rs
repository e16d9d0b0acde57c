//! Keeping the kernel's policies current while the agent runs: reload on
//! SIGHUP or when the policy directory changes (a rejected set leaves the
//! running one in force), and give new or changed cgroups their masks.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::Duration,
};

use tokio::sync::Notify;
use tracing::{error, info, warn};

use crate::{
    pods::{cgroup::CgroupResolver, PodStore},
    policy::{self, engine::PolicyEngine},
};

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
pub async fn policy_loop(
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
            _ = pods.changed.notified() => {}
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

//! Pod metadata: pod uid → namespace, name, labels, workload and container
//! names, from one of several sources behind one store.
//!
//! - `kube`: watches Pods on this node through the Kubernetes API.
//! - `static_file`: a YAML/JSON file (hosts without an API server, tests).
//! - none: only what the cgroup path says (pod uid, container id).
//!
//! A deleted pod stays in the store for a grace period so late events and the
//! last scrape still resolve; `expire` then removes it and reports its uid so
//! its metric series can go too.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Arc, RwLock,
    },
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workload {
    /// Deployment, StatefulSet, DaemonSet, Job, CronJob, ReplicaSet (bare), Node (static pods)...
    pub kind: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerMeta {
    /// Runtime id without the `containerd://` / `cri-o://` / `docker://` prefix.
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodMeta {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub workload: Option<Workload>,
    /// Containers, init and ephemeral containers included, with their ids once started.
    #[serde(default)]
    pub containers: Vec<ContainerMeta>,
}

impl PodMeta {
    pub fn container_name(&self, id: &str) -> Option<&str> {
        self.containers.iter().find(|c| c.id == id).map(|c| c.name.as_str())
    }
}

struct Entry {
    meta: Arc<PodMeta>,
    deleted_at: Option<Instant>,
}

/// Counters and state of the active source, for /metrics and /readyz.
#[derive(Default, Debug)]
pub struct SourceState {
    /// "kubernetes", "file" or "none".
    pub name: RwLock<String>,
    /// True once the first full list is in the store.
    pub synced: AtomicBool,
    /// Errors talking to or parsing the source.
    pub errors: AtomicU64,
    /// Full re-lists (Kubernetes: initial, after 410 Gone, after errors).
    pub relists: AtomicU64,
    /// Watch events applied.
    pub events: AtomicU64,
}

#[derive(Default)]
pub struct PodStore {
    pods: RwLock<HashMap<String, Entry>>,
    pub state: SourceState,
    /// Signalled when a pod is added or changes: the policy loop recomputes
    /// pod cgroups' masks at once (a pod's labels decide which policies apply).
    pub changed: tokio::sync::Notify,
}

impl PodStore {
    pub fn new(source_name: &str) -> PodStore {
        let s = PodStore::default();
        if let Ok(mut n) = s.state.name.write() {
            *n = source_name.to_owned();
        }
        s
    }

    /// Adds or updates a pod (un-deleting it if it had been deleted).
    pub fn upsert(&self, meta: PodMeta) {
        if let Ok(mut pods) = self.pods.write() {
            pods.insert(meta.uid.clone(), Entry { meta: Arc::new(meta), deleted_at: None });
        }
        self.changed.notify_one();
    }

    /// Marks a pod deleted; it stays resolvable until `expire` drops it.
    pub fn mark_deleted(&self, uid: &str, now: Instant) {
        if let Ok(mut pods) = self.pods.write() {
            if let Some(e) = pods.get_mut(uid) {
                e.deleted_at.get_or_insert(now);
            }
        }
    }

    /// A full list replaces the live set: pods missing from it are marked deleted.
    pub fn replace_all(&self, list: Vec<PodMeta>, now: Instant) {
        let Ok(mut pods) = self.pods.write() else { return };
        let live: std::collections::HashSet<String> = list.iter().map(|p| p.uid.clone()).collect();
        for (uid, e) in pods.iter_mut() {
            if !live.contains(uid) {
                e.deleted_at.get_or_insert(now);
            }
        }
        for meta in list {
            pods.insert(meta.uid.clone(), Entry { meta: Arc::new(meta), deleted_at: None });
        }
        drop(pods);
        self.changed.notify_one();
    }

    pub fn get(&self, uid: &str) -> Option<Arc<PodMeta>> {
        self.pods.read().ok()?.get(uid).map(|e| e.meta.clone())
    }

    pub fn is_deleted(&self, uid: &str) -> bool {
        self.pods.read().ok().and_then(|p| p.get(uid).map(|e| e.deleted_at.is_some())).unwrap_or(false)
    }

    /// Live (not deleted) pods.
    pub fn live_count(&self) -> usize {
        self.pods.read().map(|p| p.values().filter(|e| e.deleted_at.is_none()).count()).unwrap_or(0)
    }

    /// Drops pods deleted more than `grace` ago; returns their uids.
    pub fn expire(&self, now: Instant, grace: Duration) -> Vec<String> {
        let Ok(mut pods) = self.pods.write() else { return Vec::new() };
        let gone: Vec<String> = pods
            .iter()
            .filter(|(_, e)| e.deleted_at.is_some_and(|t| now.duration_since(t) >= grace))
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in &gone {
            pods.remove(uid);
        }
        gone
    }

    pub fn set_synced(&self) {
        self.state.synced.store(true, Relaxed);
    }

    pub fn synced(&self) -> bool {
        self.state.synced.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str) -> PodMeta {
        PodMeta {
            uid: uid.into(),
            namespace: "default".into(),
            name: format!("p-{uid}"),
            labels: BTreeMap::new(),
            workload: None,
            containers: vec![ContainerMeta { id: "abc".into(), name: "app".into() }],
        }
    }

    #[test]
    fn deleted_pods_linger_then_expire() {
        let s = PodStore::new("test");
        let t0 = Instant::now();
        s.upsert(pod("a"));
        s.mark_deleted("a", t0);
        assert!(s.get("a").is_some());
        assert!(s.expire(t0 + Duration::from_secs(1), Duration::from_secs(5)).is_empty());
        assert_eq!(s.expire(t0 + Duration::from_secs(6), Duration::from_secs(5)), vec!["a".to_owned()]);
        assert!(s.get("a").is_none());
    }

    #[test]
    fn relist_marks_missing_pods_deleted() {
        let s = PodStore::new("test");
        let t0 = Instant::now();
        s.upsert(pod("a"));
        s.upsert(pod("b"));
        s.replace_all(vec![pod("b"), pod("c")], t0);
        assert!(s.is_deleted("a"));
        assert!(!s.is_deleted("b"));
        assert_eq!(s.live_count(), 2);
        assert_eq!(s.get("c").and_then(|p| p.container_name("abc").map(str::to_owned)), Some("app".into()));
    }
}

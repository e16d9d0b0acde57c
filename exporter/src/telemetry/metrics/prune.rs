//! Series of deleted pods go away: a cgroup whose directory is gone, or
//! whose pod the metadata source reports deleted, loses its kernel counter
//! entries once it has been gone for the grace period.

use std::time::Instant;

use crate::pods::cgroup::parse_kubelet_path;

use super::Metrics;

impl Metrics {
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
}

//! Which labels the per-pod families carry and how a cgroup becomes pod
//! labels (kubelet cgroup naming, then the pod metadata store).

use crate::pods::cgroup::parse_kubelet_path;

use super::Metrics;

/// Label pairs of one series.
pub(super) type Labels = Vec<(&'static str, String)>;

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

/// Pod labels of one cgroup.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodLabels {
    pub namespace: String,
    pub pod: String,
    pub workload: String,
    pub container: String,
}

impl Metrics {
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

    pub(super) fn base(&self, p: &PodLabels) -> Labels {
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
}

fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_config_from_names() {
        let c = LabelConfig::from_names(&["pod".into(), "binary".into()]).expect("valid");
        assert!(c.pod && c.binary && !c.namespace);
        assert!(LabelConfig::from_names(&["colour".into()]).is_err());
    }
}

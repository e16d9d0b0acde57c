//! Pods as the API server describes them (`k8s_openapi` types, decoded by
//! kube-rs) → the [`PodMeta`] podwatch keeps, and the rules that name a
//! pod's workload from its owner references. Pure functions: no client, no
//! I/O, so the fuzz target (`fuzz/fuzz_targets/kube_watch.rs`) and the unit
//! tests reach all of it.
//!
//! k8s-openapi decodes leniently (missing required fields read as their
//! defaults, `null` as absent), which is what we want: one odd object must
//! not stop the node's other pods from resolving.

use std::collections::BTreeMap;

use anyhow::bail;
use k8s_openapi::{
    api::core::v1::{Pod, PodStatus},
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};

use crate::pods::{ContainerMeta, PodMeta, Workload};

/// A pod's metadata, its workload left to the owner lookup (which may need
/// the API). Fails only without a uid, the store's key.
pub fn pod_meta(pod: &Pod) -> anyhow::Result<PodMeta> {
    let m = &pod.metadata;
    let namespace = m.namespace.clone().unwrap_or_default();
    let name = m.name.clone().unwrap_or_default();
    let uid = match m.uid.as_deref() {
        Some(uid) if !uid.is_empty() => uid.to_owned(),
        _ => bail!("pod {namespace}/{name} has no metadata.uid"),
    };
    Ok(PodMeta {
        uid,
        namespace,
        name,
        labels: m.labels.clone().unwrap_or_default(),
        workload: None,
        containers: pod.status.as_ref().map(containers).unwrap_or_default(),
    })
}

/// Every container with a runtime id: regular, init and ephemeral ones, and
/// the previous instance of restarted ones (late events from it still name
/// the right container). Containers not started yet have no id, hence no
/// cgroup to attribute; the MODIFIED event that follows their start adds them.
fn containers(status: &PodStatus) -> Vec<ContainerMeta> {
    let mut out: Vec<ContainerMeta> = Vec::new();
    let all =
        [&status.container_statuses, &status.init_container_statuses, &status.ephemeral_container_statuses]
            .into_iter()
            .flatten()
            .flatten();
    for c in all {
        let previous =
            c.last_state.as_ref().and_then(|s| s.terminated.as_ref()).and_then(|t| t.container_id.as_ref());
        for raw in [c.container_id.as_ref(), previous].into_iter().flatten() {
            let id = strip_runtime(raw);
            if !id.is_empty() && !out.iter().any(|o| o.id == id) {
                out.push(ContainerMeta { id: id.to_owned(), name: c.name.clone() });
            }
        }
    }
    out
}

/// `containerd://abc` → `abc` (also `cri-o://`, `docker://`).
fn strip_runtime(id: &str) -> &str {
    id.split_once("://").map_or(id, |(_, rest)| rest)
}

/// The owner reference marked `controller: true`, if any.
pub fn controller(refs: &[OwnerReference]) -> Option<&OwnerReference> {
    refs.iter().find(|o| o.controller == Some(true) && !o.kind.is_empty() && !o.name.is_empty())
}

/// The workload a pod owned by `owner` belongs to, given the owner references
/// of `owner`'s own object: whatever controls it (Deployment, CronJob, or e.g.
/// an Argo Rollout), else `owner` itself (a bare ReplicaSet or Job).
pub fn workload_of(owner: &OwnerReference, parent_refs: &[OwnerReference]) -> Workload {
    match controller(parent_refs) {
        Some(c) => Workload { kind: c.kind.clone(), name: c.name.clone() },
        None => Workload { kind: owner.kind.clone(), name: owner.name.clone() },
    }
}

/// Without the API's answer: a ReplicaSet named `<deployment>-<hash>` whose
/// pod carries that `pod-template-hash` label is a Deployment's; anything
/// else is taken as it is.
pub fn fallback_workload(owner: &OwnerReference, labels: &BTreeMap<String, String>) -> Workload {
    if owner.kind == "ReplicaSet" {
        if let Some(hash) = labels.get("pod-template-hash").filter(|h| !h.is_empty()) {
            if let Some(deployment) = owner.name.strip_suffix(hash.as_str()).and_then(|n| n.strip_suffix('-'))
            {
                if !deployment.is_empty() {
                    return Workload { kind: "Deployment".into(), name: deployment.into() };
                }
            }
        }
    }
    Workload { kind: owner.kind.clone(), name: owner.name.clone() }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn owner(kind: &str, name: &str) -> OwnerReference {
        OwnerReference { kind: kind.into(), name: name.into(), controller: Some(true), ..Default::default() }
    }

    fn refs(v: serde_json::Value) -> Vec<OwnerReference> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn pod_json_maps_to_meta() {
        let pod = parse(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "uid": "u1", "namespace": "shop", "name": "web-7d9f-abcde", "resourceVersion": "42",
                "labels": {"app": "web", "pod-template-hash": "7d9f"},
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Other", "name": "x", "uid": "x"},
                    {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f", "uid": "r", "controller": true}
                ]
            },
            "spec": {"nodeName": "n1"},
            "status": {
                "containerStatuses": [
                    {"name": "app", "containerID": "containerd://aaa",
                     "lastState": {"terminated": {"containerID": "containerd://old", "exitCode": 1}}},
                    {"name": "sidecar", "containerID": "cri-o://bbb"},
                    {"name": "pending"}
                ],
                "initContainerStatuses": [{"name": "init", "containerID": "docker://ccc"}],
                "ephemeralContainerStatuses": [{"name": "debug", "containerID": "ddd"}]
            }
        }));
        let m = pod_meta(&pod).unwrap();
        assert_eq!((m.uid.as_str(), m.namespace.as_str(), m.name.as_str()), ("u1", "shop", "web-7d9f-abcde"));
        assert_eq!(m.labels.get("app").map(String::as_str), Some("web"));
        let names: Vec<(&str, &str)> =
            m.containers.iter().map(|c| (c.id.as_str(), c.name.as_str())).collect();
        assert_eq!(
            names,
            [("aaa", "app"), ("old", "app"), ("bbb", "sidecar"), ("ccc", "init"), ("ddd", "debug")]
        );
        let o = controller(pod.metadata.owner_references.as_deref().unwrap_or_default()).unwrap();
        assert_eq!((o.kind.as_str(), o.name.as_str()), ("ReplicaSet", "web-7d9f"));
    }

    #[test]
    fn sparse_and_null_fields_are_fine() {
        let pod = parse(json!({"metadata": {"uid": "u2", "name": "bare", "namespace": "default",
            "labels": null, "ownerReferences": null}, "status": {"containerStatuses": null}}));
        let m = pod_meta(&pod).unwrap();
        assert!(m.labels.is_empty() && m.containers.is_empty() && m.workload.is_none());
        assert!(pod.metadata.owner_references.is_none());
        let m = pod_meta(&parse(json!({"metadata": {"uid": "u3"}}))).unwrap();
        assert_eq!(m.name, "");
        assert!(pod_meta(&parse(json!({"metadata": {"name": "no-uid"}}))).is_err());
        assert!(pod_meta(&parse(json!({"metadata": {"uid": ""}}))).is_err());
        // A controller reference without a kind or name is no controller.
        assert!(
            controller(&refs(json!([{"kind": "", "name": "x", "uid": "u", "controller": true}]))).is_none()
        );
    }

    #[test]
    fn workload_from_parent_object() {
        let deployment = refs(json!([{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
            "uid": "d", "controller": true}]));
        assert_eq!(
            workload_of(&owner("ReplicaSet", "web-7d9f"), &deployment),
            Workload { kind: "Deployment".into(), name: "web".into() }
        );
        let cronjob = refs(json!([{"apiVersion": "batch/v1", "kind": "CronJob", "name": "backup",
            "uid": "c", "controller": true}]));
        assert_eq!(
            workload_of(&owner("Job", "backup-2890"), &cronjob),
            Workload { kind: "CronJob".into(), name: "backup".into() }
        );
        assert_eq!(
            workload_of(&owner("Job", "once"), &[]),
            Workload { kind: "Job".into(), name: "once".into() }
        );
    }

    #[test]
    fn fallback_strips_pod_template_hash() {
        let labels = BTreeMap::from([("pod-template-hash".to_owned(), "7d9f".to_owned())]);
        let w = fallback_workload(&owner("ReplicaSet", "web-7d9f"), &labels);
        assert_eq!(w, Workload { kind: "Deployment".into(), name: "web".into() });
        let w = fallback_workload(&owner("ReplicaSet", "web-other"), &labels);
        assert_eq!(w, Workload { kind: "ReplicaSet".into(), name: "web-other".into() });
        let w = fallback_workload(&owner("ReplicaSet", "web-7d9f"), &BTreeMap::new());
        assert_eq!(w.kind, "ReplicaSet");
        let w = fallback_workload(&owner("Job", "backup-2890"), &labels);
        assert_eq!(w, Workload { kind: "Job".into(), name: "backup-2890".into() });
    }
}

//! Kubernetes API answers as the pod source reads them: kube-rs decodes the
//! wire format (the whole input as a list page, line by line as watch
//! events) into k8s-openapi's `Pod` through serde, and what is left on our
//! side is the pod → `PodMeta` conversion and the workload naming from owner
//! references (`pods::kube::convert`), each pod into the store as the pod
//! source puts it. The list/watch protocol itself (pagination, versions,
//! bookmarks, 410) is kube-runtime's.

#![no_main]

use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use kube::core::{ObjectList, WatchEvent};
use libfuzzer_sys::fuzz_target;
use podwatch::pods::{
    kube::convert::{controller, fallback_workload, pod_meta, workload_of},
    PodStore,
};

/// What the pod source does with one pod, minus the owner lookup's network
/// call: both of its outcomes are computed instead.
fn apply(store: &PodStore, pod: &Pod, deleted: bool) {
    let Ok(mut meta) = pod_meta(pod) else { return };
    let refs = pod.metadata.owner_references.as_deref().unwrap_or_default();
    if let Some(owner) = controller(refs) {
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let _ = workload_of(owner, refs);
        meta.workload = Some(fallback_workload(owner, &labels));
    }
    let uid = meta.uid.clone();
    store.upsert(meta);
    if deleted {
        store.mark_deleted(&uid, Instant::now());
    }
    assert!(store.get(&uid).is_some(), "an applied pod resolves");
}

fuzz_target!(|data: &[u8]| {
    let store = PodStore::new("kubernetes");
    if let Ok(list) = serde_json::from_slice::<ObjectList<Pod>>(data) {
        let pods: Vec<_> = list.items.iter().filter_map(|p| pod_meta(p).ok()).collect();
        store.replace_all(pods, Instant::now());
        let _ = (list.metadata.resource_version, list.metadata.continue_);
    }
    for line in data.split(|&b| b == b'\n') {
        match serde_json::from_slice::<WatchEvent<Pod>>(line) {
            Ok(WatchEvent::Added(pod) | WatchEvent::Modified(pod)) => apply(&store, &pod, false),
            Ok(WatchEvent::Deleted(pod)) => apply(&store, &pod, true),
            Ok(WatchEvent::Bookmark(b)) => {
                let _ = b.metadata.resource_version.len();
            }
            Ok(WatchEvent::Error(status)) => {
                let _ = status.code == 410;
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
});

//! Workloads: pod → ReplicaSet → Deployment, pod → Job → CronJob, through
//! one metadata GET of the pod's controller, cached.
//!
//! The GET asks for `PartialObjectMetadata` (kube-rs's `get_metadata`): owner
//! references are all we read, and a ReplicaSet's pod template can be larger
//! than the rest of it. RBAC is the same `get` on replicasets and jobs.

use std::{
    collections::HashMap,
    fmt::Debug,
    sync::atomic::Ordering::Relaxed,
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::{apps::v1::ReplicaSet, batch::v1::Job, core::v1::Pod},
    apimachinery::pkg::apis::meta::v1::OwnerReference,
    NamespaceResourceScope,
};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tracing::warn;

use super::convert::{controller, fallback_workload, workload_of};
use crate::pods::{PodStore, Workload};

/// How long a failed owner lookup's fallback answer is kept before we ask
/// the API again (a missing RBAC rule must not cost one GET per pod event).
const FALLBACK_TTL: Duration = Duration::from_secs(60);
/// Owner cache bound; cleared whole when reached (a node has ~100 pods).
const OWNER_CACHE_MAX: usize = 4096;

/// Caches what a ReplicaSet or Job is controlled by: that never changes for
/// the objects Deployments and CronJobs create.
pub struct Owners {
    client: Client,
    timeout: Duration,
    /// (kind, namespace, name) → workload, and when a fallback answer expires.
    cache: HashMap<(String, String, String), (Workload, Option<Instant>)>,
}

impl Owners {
    pub fn new(client: Client, timeout: Duration) -> Owners {
        Owners { client, timeout, cache: HashMap::new() }
    }

    /// The pod's workload: its controller, or the controller's controller
    /// for ReplicaSets and Jobs. None for pods nothing controls.
    pub async fn workload(&mut self, store: &PodStore, pod: &Pod) -> Option<Workload> {
        let owner = controller(pod.metadata.owner_references.as_deref().unwrap_or_default())?;
        if !matches!(owner.kind.as_str(), "ReplicaSet" | "Job") {
            return Some(Workload { kind: owner.kind.clone(), name: owner.name.clone() });
        }
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let key = (owner.kind.clone(), ns.clone(), owner.name.clone());
        if let Some((w, expires)) = self.cache.get(&key) {
            if expires.is_none_or(|t| Instant::now() < t) {
                return Some(w.clone());
            }
        }
        let (workload, expires) = match self.parent_refs(owner, &ns).await {
            Ok(refs) => (workload_of(owner, &refs), None),
            Err(e) => {
                // 404: the owner is gone (a rolled-over ReplicaSet); that is
                // no error, and the pod's labels still name the workload.
                if !matches!(&e, LookupError::Api(kube::Error::Api(s)) if s.code == 404) {
                    store.state.errors.fetch_add(1, Relaxed);
                    warn!(namespace = %ns, "Kubernetes pod source: cannot read {} {}: {e}; guessing the workload from names", owner.kind, owner.name);
                }
                let labels = pod.metadata.labels.clone().unwrap_or_default();
                (fallback_workload(owner, &labels), Some(Instant::now() + FALLBACK_TTL))
            }
        };
        if self.cache.len() >= OWNER_CACHE_MAX {
            self.cache.clear();
        }
        self.cache.insert(key, (workload.clone(), expires));
        Some(workload)
    }

    /// The owner references of the pod's ReplicaSet or Job.
    async fn parent_refs(
        &self,
        owner: &OwnerReference,
        ns: &str,
    ) -> Result<Vec<OwnerReference>, LookupError> {
        let lookup = async {
            match owner.kind.as_str() {
                "ReplicaSet" => owner_refs::<ReplicaSet>(&self.client, ns, &owner.name).await,
                _ => owner_refs::<Job>(&self.client, ns, &owner.name).await,
            }
        };
        tokio::time::timeout(self.timeout, lookup).await.map_err(|_| LookupError::Timeout(self.timeout))?
    }
}

async fn owner_refs<K>(client: &Client, ns: &str, name: &str) -> Result<Vec<OwnerReference>, LookupError>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let meta = Api::<K>::namespaced(client.clone(), ns).get_metadata(name).await.map_err(LookupError::Api)?;
    Ok(meta.metadata.owner_references.unwrap_or_default())
}

#[derive(Debug, thiserror::Error)]
enum LookupError {
    #[error("{0}")]
    Api(kube::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

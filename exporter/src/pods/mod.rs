//! Which pod a kernel event belongs to: cgroup id → cgroup path → pod uid and
//! container id ([`cgroup`]), then pod uid → names, labels and workload from
//! one of the metadata sources behind the [`store`].

pub mod cgroup;
pub mod kube;
pub mod static_file;
pub mod store;

use std::{sync::Arc, time::Duration};

pub use store::{ContainerMeta, PodMeta, PodStore, Workload};

use crate::config::{AgentConfig, MetadataConfig};

/// Starts the configured pod metadata source; it fills `store` in the background.
pub fn start_source(cfg: &AgentConfig, store: Arc<PodStore>) {
    match &cfg.metadata {
        MetadataConfig::None => store.set_synced(),
        MetadataConfig::File(path) => {
            tokio::spawn(static_file::run(path.clone(), store, Duration::from_secs(1)));
        }
        MetadataConfig::Kubernetes { kubeconfig, api_server } => {
            let kube = kube::KubeConfig {
                node_name: cfg.node_name.clone(),
                kubeconfig: kubeconfig.clone(),
                api_server: api_server.clone(),
                ..Default::default()
            };
            tokio::spawn(kube::run(kube, store));
        }
    }
}

//! Kubernetes API pod source: list, then watch, the pods scheduled on this
//! node, and keep the [`PodStore`] in step with them.
//!
//! Built on kube-rs: one [`kube::Client`] for the agent's lifetime
//! ([`client`]: kubeconfig and in-cluster auth as kubectl does it, and TLS),
//! and kube-runtime's [`watcher`] for the list/watch protocol client-go's
//! reflector speaks:
//! 1. LIST `/api/v1/pods?fieldSelector=spec.nodeName=<node>` with
//!    `resourceVersion=0` (`resourceVersionMatch=NotOlderThan`): the API
//!    server answers from its watch cache instead of a quorum read of etcd,
//!    so every node's agent re-listing at once (after an API server restart)
//!    costs the cluster little. kube-rs sends `resourceVersion=0` only on
//!    unpaginated lists, and a node's pods (110 by default, a few hundred at
//!    most) are one small answer, so lists are not paginated;
//! 2. WATCH from the list's version with bookmarks, re-watching from the last
//!    version seen when the server ends the stream (`timeoutSeconds`) or it
//!    goes silent;
//! 3. re-LIST when that version has expired (410 Gone): the watcher does it
//!    by itself, and it is the protocol, not an error.
//!
//! Our policy on top: after any other error (a failed list or watch, an event
//! that does not decode, an ERROR event) we cannot know which events we
//! missed, so the error is counted, the library's exponential backoff with
//! jitter is waited out, and a new watcher starts with a full re-list (cheap
//! now that it is served from the cache). The backoff resets once a list
//! completes or an event applies.
//!
//! Nothing read from the network is trusted: every failure is an error value,
//! never a panic.

mod client;
pub mod convert;
mod owners;
mod token_file;

use std::{
    path::PathBuf,
    pin::pin,
    sync::{atomic::Ordering::Relaxed, Arc},
    time::{Duration, Instant},
};

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    runtime::{
        utils::{Backoff as _, ResetTimerBackoff},
        watcher::{self, watcher, Event, ExponentialBackoff},
    },
    Api,
};
use tracing::{debug, error, info, warn};

pub use self::convert::pod_meta;
use self::owners::Owners;
use super::{PodMeta, PodStore};

/// Where the API server is, how to reach it, and how patiently.
#[derive(Debug, Clone)]
pub struct KubeConfig {
    /// Only pods scheduled on this node are listed and watched.
    pub node_name: String,
    /// A kubeconfig file (its current context), or a `$KUBECONFIG`-style
    /// list of them. When unset: `api_server` alone if set, else the
    /// in-cluster service account if `KUBERNETES_SERVICE_HOST` is set, else
    /// `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// Overrides the server URL, e.g. `http://127.0.0.1:8001` for
    /// `kubectl proxy` or a test server; plain http is allowed. Credentials
    /// and TLS settings still come from `kubeconfig` when it is set, and there
    /// are none otherwise.
    pub api_server: Option<String>,
    /// Asked of the server as `timeoutSeconds`: it ends each watch after this
    /// long and the watcher re-watches from the last version. A watch silent
    /// for 5 s longer is taken for dead and re-opened (kube-runtime).
    pub watch_timeout: Duration,
    /// Bound on connecting, on each LIST and on each owner lookup.
    pub request_timeout: Duration,
    /// kube-runtime's exponential backoff: the first delay after an error,
    /// doubling (with jitter) up to `backoff_max`; client-go's reflector
    /// values by default.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl Default for KubeConfig {
    /// The defaults client-go users would expect; `node_name` must still be set.
    fn default() -> KubeConfig {
        KubeConfig {
            node_name: String::new(),
            kubeconfig: None,
            api_server: None,
            watch_timeout: Duration::from_secs(290),
            request_timeout: Duration::from_secs(30),
            backoff_min: Duration::from_millis(800),
            backoff_max: Duration::from_secs(30),
        }
    }
}

impl KubeConfig {
    /// The defaults, for `node_name`.
    pub fn new(node_name: impl Into<String>) -> KubeConfig {
        KubeConfig { node_name: node_name.into(), ..KubeConfig::default() }
    }

    /// kube-runtime's `DefaultBackoff` with our bounds: exponential with
    /// jitter, reset after two quiet minutes as well as on success.
    fn backoff(&self) -> ResetTimerBackoff<ExponentialBackoff> {
        let builder = backon::ExponentialBuilder::default()
            .with_min_delay(self.backoff_min)
            .with_max_delay(self.backoff_max)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times();
        ResetTimerBackoff::new(ExponentialBackoff::from(builder), Duration::from_secs(120))
    }

    /// The watcher's parameters: this node's pods, cached lists, bookmarks.
    fn watcher_config(&self) -> watcher::Config {
        let mut wc = watcher::Config::default()
            .fields(&format!("spec.nodeName={}", self.node_name))
            .any_semantic()
            .timeout(u32::try_from(self.watch_timeout.as_secs().max(1)).unwrap_or(u32::MAX));
        // kube-rs drops resourceVersion=0 from paginated lists.
        wc.page_size = None;
        wc
    }
}

/// Keeps `store` in step with the pods on `cfg.node_name`. Runs until the
/// task is dropped or aborted; every failure is counted in
/// `store.state.errors`, logged, and retried with backoff.
pub async fn run(cfg: KubeConfig, store: Arc<PodStore>) {
    // An empty selector value would select the unscheduled pods.
    if cfg.node_name.is_empty() {
        store.state.errors.fetch_add(1, Relaxed);
        error!("Kubernetes pod source: no node name to select pods by; pods stay unnamed");
        return;
    }
    let mut backoff = cfg.backoff();
    let client = loop {
        match client::client(&cfg).await {
            Ok(c) => break c,
            Err(e) => {
                let delay = backoff.next().unwrap_or(cfg.backoff_max);
                failed(&store, &cfg, &e, delay);
                tokio::time::sleep(delay).await;
            }
        }
    };
    let pods: Api<Pod> = Api::all(client.clone());
    let mut owners = Owners::new(client, cfg.request_timeout);
    loop {
        let e = follow(&cfg, &pods, &mut owners, &store, &mut backoff).await;
        let delay = backoff.next().unwrap_or(cfg.backoff_max);
        failed(&store, &cfg, &e, delay);
        tokio::time::sleep(delay).await;
    }
}

fn failed(store: &PodStore, cfg: &KubeConfig, e: &anyhow::Error, delay: Duration) {
    store.state.errors.fetch_add(1, Relaxed);
    warn!(node = %cfg.node_name, retry_in = ?delay, "Kubernetes pod source: {e:#}; re-listing after the delay");
}

/// One watcher, from its first list until it reports an error other than
/// 410 Gone (which it handles by re-listing).
async fn follow(
    cfg: &KubeConfig,
    pods: &Api<Pod>,
    owners: &mut Owners,
    store: &PodStore,
    backoff: &mut ResetTimerBackoff<ExponentialBackoff>,
) -> anyhow::Error {
    let mut events = pin!(watcher(pods.clone(), cfg.watcher_config()));
    // The pods of the list in progress, from Init to InitDone.
    let mut listed: Option<Vec<PodMeta>> = None;
    loop {
        // A list (unlike a watch) has no reason to go quiet: bound it.
        let next = if listed.is_some() {
            match tokio::time::timeout(cfg.request_timeout, events.next()).await {
                Ok(next) => next,
                Err(_) => return anyhow::anyhow!("pod list: no answer within {:?}", cfg.request_timeout),
            }
        } else {
            events.next().await
        };
        match next {
            None => return anyhow::anyhow!("the pod watcher ended"),
            Some(Ok(Event::Init)) => listed = Some(Vec::new()),
            Some(Ok(Event::InitApply(pod))) => {
                if let Some(meta) = with_workload(owners, store, &pod).await {
                    listed.get_or_insert_with(Vec::new).push(meta);
                }
            }
            Some(Ok(Event::InitDone)) => {
                let list = listed.take().unwrap_or_default();
                let count = list.len();
                store.replace_all(list, Instant::now());
                store.set_synced();
                store.state.relists.fetch_add(1, Relaxed);
                backoff.reset();
                info!(pods = count, "pods listed");
            }
            Some(Ok(Event::Apply(pod))) => apply(owners, store, &pod, false, backoff).await,
            Some(Ok(Event::Delete(pod))) => apply(owners, store, &pod, true, backoff).await,
            Some(Err(watcher::Error::WatchError(status))) if status.code == 410 => {
                info!("pod watch version expired (410 Gone): {}; re-listing", status.message);
            }
            Some(Err(e)) => return e.into(),
        }
    }
}

/// A watch event: the pod's latest state, kept for late events when deleted.
async fn apply(
    owners: &mut Owners,
    store: &PodStore,
    pod: &Pod,
    deleted: bool,
    backoff: &mut ResetTimerBackoff<ExponentialBackoff>,
) {
    let Some(meta) = with_workload(owners, store, pod).await else { return };
    let uid = meta.uid.clone();
    store.upsert(meta);
    if deleted {
        store.mark_deleted(&uid, Instant::now());
    }
    store.state.events.fetch_add(1, Relaxed);
    backoff.reset();
    debug!(%uid, deleted, "pod event applied");
}

/// The pod's [`PodMeta`] with its workload; None (counted) for a pod we
/// cannot key: one odd object must not stop the others from resolving.
async fn with_workload(owners: &mut Owners, store: &PodStore, pod: &Pod) -> Option<PodMeta> {
    match pod_meta(pod) {
        Ok(mut meta) => {
            meta.workload = owners.workload(store, pod).await;
            Some(meta)
        }
        Err(e) => {
            store.state.errors.fetch_add(1, Relaxed);
            warn!("Kubernetes pod source: skipping a pod: {e:#}");
            None
        }
    }
}

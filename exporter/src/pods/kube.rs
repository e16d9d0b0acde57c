//! Kubernetes API pod source: LIST, then WATCH, the pods scheduled on this
//! node, and keep the [`PodStore`] in step with them.
//!
//! Written by hand on hyper 1 and rustls rather than kube-rs/k8s-openapi: we
//! need two read-only endpoints (pods on one node; a ReplicaSet or Job by
//! name), and those crates would more than double the agent's compile time on
//! 2-core CI machines.
//!
//! The protocol is the one client-go's reflector speaks:
//! 1. LIST `/api/v1/pods?fieldSelector=spec.nodeName=<node>` page by page
//!    (`limit`/`continue`), replace the store's live set, mark it synced;
//! 2. WATCH from the list's `resourceVersion`, applying ADDED / MODIFIED /
//!    DELETED, moving the version forward on BOOKMARK, re-watching from the
//!    last version when the server ends the stream (every `watch_timeout`);
//! 3. re-LIST when the version has expired (410 Gone), and after any error
//!    (counted, logged, retried with exponential backoff and jitter), because
//!    after an error we cannot know which events we missed.
//!
//! Nothing read from the network is trusted: every failure is an error value,
//! never a panic.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    path::{Path, PathBuf},
    sync::{atomic::Ordering::Relaxed, Arc},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::{
    body::Incoming,
    client::conn::http1::SendRequest,
    header::{HeaderValue, ACCEPT, AUTHORIZATION, HOST, USER_AGENT},
    Request, Response, Uri,
};
use hyper_util::rt::TokioIo;
use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer, ServerName, UnixTime},
    DigitallySignedStruct, SignatureScheme,
};
use serde::{de::DeserializeOwned, Deserialize, Deserializer};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};
use tracing::{debug, info, warn};

use super::{ContainerMeta, PodMeta, PodStore, Workload};
use crate::tls::{parse_certs, system_ca};

/// Where the API server is, how to reach it, and how patiently.
#[derive(Debug, Clone)]
pub struct KubeConfig {
    /// Only pods scheduled on this node are listed and watched.
    pub node_name: String,
    /// A kubeconfig file (its current context). When unset: in-cluster
    /// service account if `KUBERNETES_SERVICE_HOST` is set, else `$KUBECONFIG`.
    pub kubeconfig: Option<PathBuf>,
    /// Overrides the server URL, e.g. `http://127.0.0.1:8001` for
    /// `kubectl proxy` or a test server; plain http is allowed. Credentials
    /// and TLS settings still come from `kubeconfig` when it is set, and there
    /// are none otherwise.
    pub api_server: Option<String>,
    /// Asked of the server as `timeoutSeconds`: it ends each watch after this
    /// long and we re-watch from the last version. Also bounds a silent
    /// connection: a watch is dropped `request_timeout` after this.
    pub watch_timeout: Duration,
    /// Bound on connecting and on each LIST page or owner lookup.
    pub request_timeout: Duration,
    /// First retry delay after an error; doubles up to `backoff_max` and is
    /// reset by a successful list.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// LIST page size (`limit`), so a busy node's list does not arrive as
    /// one huge response.
    pub page_size: u32,
}

impl Default for KubeConfig {
    /// The defaults client-go users would expect; `node_name` must still be set.
    fn default() -> KubeConfig {
        KubeConfig {
            node_name: String::new(),
            kubeconfig: None,
            api_server: None,
            watch_timeout: Duration::from_secs(300),
            request_timeout: Duration::from_secs(30),
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            page_size: 500,
        }
    }
}

impl KubeConfig {
    /// The defaults, for `node_name`.
    pub fn new(node_name: impl Into<String>) -> KubeConfig {
        KubeConfig { node_name: node_name.into(), ..KubeConfig::default() }
    }
}

/// Keeps `store` in step with the pods on `cfg.node_name`. Runs until the
/// task is dropped or aborted; every failure is counted in
/// `store.state.errors`, logged, and retried with backoff.
pub async fn run(cfg: KubeConfig, store: Arc<PodStore>) {
    let mut backoff = Backoff::new(cfg.backoff_min, cfg.backoff_max);
    let mut owners = Owners::default();
    loop {
        let err = match Endpoint::resolve(&cfg) {
            // An empty selector value would select the unscheduled pods.
            Ok(_) if cfg.node_name.is_empty() => anyhow!("no node name to select pods by"),
            Ok(endpoint) => {
                let mut api = Api::new(endpoint, cfg.request_timeout);
                sync_forever(&cfg, &mut api, &mut owners, &store, &mut backoff).await
            }
            Err(e) => e,
        };
        store.state.errors.fetch_add(1, Relaxed);
        let delay = backoff.next_delay();
        warn!(node = %cfg.node_name, retry_in = ?delay, "Kubernetes pod source: {err:#}; re-listing after the delay");
        tokio::time::sleep(delay).await;
    }
}

/// List then watch, again and again, until something fails.
async fn sync_forever(
    cfg: &KubeConfig,
    api: &mut Api,
    owners: &mut Owners,
    store: &PodStore,
    backoff: &mut Backoff,
) -> anyhow::Error {
    loop {
        let mut rv = match list(cfg, api, owners, store).await {
            Ok(rv) => rv,
            Err(e) if is_gone(&e) => {
                info!("pod list continue token expired (410 Gone); listing again");
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
            Err(e) => return e,
        };
        backoff.reset();
        loop {
            let started = Instant::now();
            let (end, lines) = match watch(cfg, api, owners, store, &mut rv).await {
                Ok(r) => r,
                Err(e) => return e,
            };
            // A server that ends watches at once must not make us spin.
            if lines == 0 && started.elapsed() < Duration::from_secs(1) {
                tokio::time::sleep(backoff.next_delay()).await;
            } else if lines > 0 {
                backoff.reset();
            }
            match end {
                WatchEnd::Closed => debug!(resource_version = %rv, "pod watch ended; watching again"),
                WatchEnd::Gone => {
                    info!(resource_version = %rv, "pod watch version expired (410 Gone); re-listing");
                    break;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// LIST and WATCH

/// Lists every pod on the node, page by page, and replaces the store's live
/// set with them. Returns the list's resourceVersion to watch from.
async fn list(
    cfg: &KubeConfig,
    api: &mut Api,
    owners: &mut Owners,
    store: &PodStore,
) -> anyhow::Result<String> {
    let mut pods = Vec::new();
    let mut token: Option<String> = None;
    let rv = loop {
        let path = list_path(&cfg.node_name, cfg.page_size, token.as_deref());
        let page =
            parse_list_page(&api.get_body_within(&path).await?).with_context(|| format!("GET {path}"))?;
        for pod in page.items {
            match pod_meta(&pod) {
                Ok(mut meta) => {
                    meta.workload = owners.workload(api, store, &pod).await;
                    pods.push(meta);
                }
                Err(e) => skip_bad_pod(store, &e),
            }
        }
        match page.metadata.continue_token {
            c if c.is_empty() => break page.metadata.resource_version,
            c => token = Some(c),
        }
    };
    if rv.is_empty() {
        bail!("pod list has no metadata.resourceVersion to watch from");
    }
    let count = pods.len();
    store.replace_all(pods, Instant::now());
    store.set_synced();
    store.state.relists.fetch_add(1, Relaxed);
    info!(pods = count, resource_version = %rv, "pods listed");
    Ok(rv)
}

enum WatchEnd {
    /// The server ended the stream (or it outlived its deadline): re-watch.
    Closed,
    /// The version is too old to watch from: re-list.
    Gone,
}

/// Longest watch event line we buffer (a pod object is well under 1 MiB).
const MAX_LINE: usize = 16 << 20;

/// One watch request: applies its events until the stream ends. Returns how
/// it ended and how many lines it carried; `rv` follows the applied events.
async fn watch(
    cfg: &KubeConfig,
    api: &mut Api,
    owners: &mut Owners,
    store: &PodStore,
    rv: &mut String,
) -> anyhow::Result<(WatchEnd, u64)> {
    let path = watch_path(&cfg.node_name, rv, cfg.watch_timeout);
    let deadline = tokio::time::Instant::now() + cfg.watch_timeout + cfg.request_timeout;
    let resp = match api.open_stream(&path).await {
        Err(e) if is_gone(&e) => return Ok((WatchEnd::Gone, 0)),
        r => r?,
    };
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::new();
    let mut scanned = 0;
    let mut lines = 0;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Ok((WatchEnd::Closed, lines)),
            Ok(None) => break,
            Ok(Some(frame)) => frame.context("reading the pod watch stream")?,
        };
        let Ok(data) = frame.into_data() else { continue };
        buf.extend_from_slice(&data);
        while let Some(pos) = buf[scanned..].iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..scanned + pos + 1).collect();
            scanned = 0;
            lines += 1;
            if apply_line(api, owners, store, rv, &line).await? {
                return Ok((WatchEnd::Gone, lines));
            }
        }
        scanned = buf.len();
        if buf.len() > MAX_LINE {
            bail!("pod watch line longer than {MAX_LINE} bytes");
        }
    }
    // The last event may lack its newline.
    if !buf.iter().all(u8::is_ascii_whitespace) {
        lines += 1;
        if apply_line(api, owners, store, rv, &buf).await? {
            return Ok((WatchEnd::Gone, lines));
        }
    }
    Ok((WatchEnd::Closed, lines))
}

/// One watch event, as the API server frames it.
#[derive(Deserialize)]
struct WatchEvent {
    #[serde(rename = "type")]
    kind: String,
    object: serde_json::Value,
}

/// What one line of a watch stream says.
#[derive(Debug)]
pub enum WatchLine {
    /// An empty line.
    Blank,
    /// ADDED or MODIFIED (`deleted: false`), DELETED (`deleted: true`).
    Pod { deleted: bool, pod: Object },
    /// BOOKMARK: the version to watch from next.
    Bookmark { resource_version: String },
    /// ERROR with code 410: our version is gone, re-list.
    Gone,
}

/// Parses one line of a watch stream. A line we cannot make sense of is an
/// error: we may have missed an event, so the caller re-lists.
pub fn parse_watch_line(line: &[u8]) -> anyhow::Result<WatchLine> {
    let line = line.trim_ascii();
    if line.is_empty() {
        return Ok(WatchLine::Blank);
    }
    let event: WatchEvent = serde_json::from_slice(line)
        .with_context(|| format!("unparsable pod watch line {:?}", excerpt(line)))?;
    match event.kind.as_str() {
        "ADDED" | "MODIFIED" | "DELETED" => {
            let pod: Object = serde_json::from_value(event.object)
                .with_context(|| format!("{} event whose object is not a pod", event.kind))?;
            Ok(WatchLine::Pod { deleted: event.kind == "DELETED", pod })
        }
        "BOOKMARK" => {
            let o: Object =
                serde_json::from_value(event.object).context("BOOKMARK event without metadata")?;
            Ok(WatchLine::Bookmark { resource_version: o.metadata.resource_version })
        }
        "ERROR" => {
            let status: Status = serde_json::from_value(event.object).unwrap_or_default();
            if status.code == 410 {
                return Ok(WatchLine::Gone);
            }
            bail!("pod watch ERROR event: {status}");
        }
        other => bail!("pod watch event of unknown type {other:?}"),
    }
}

/// Applies one line of a watch stream; true when the server says our version
/// is gone (410).
async fn apply_line(
    api: &mut Api,
    owners: &mut Owners,
    store: &PodStore,
    rv: &mut String,
    line: &[u8],
) -> anyhow::Result<bool> {
    match parse_watch_line(line)? {
        WatchLine::Blank => {}
        WatchLine::Pod { deleted, pod } => {
            match pod_meta(&pod) {
                Ok(mut meta) => {
                    meta.workload = owners.workload(api, store, &pod).await;
                    let uid = meta.uid.clone();
                    store.upsert(meta);
                    if deleted {
                        store.mark_deleted(&uid, Instant::now());
                    }
                    store.state.events.fetch_add(1, Relaxed);
                }
                Err(e) => skip_bad_pod(store, &e),
            }
            advance(rv, pod.metadata.resource_version);
        }
        WatchLine::Bookmark { resource_version } => advance(rv, resource_version),
        WatchLine::Gone => return Ok(true),
    }
    Ok(false)
}

fn advance(rv: &mut String, new: String) {
    if !new.is_empty() {
        *rv = new;
    }
}

/// A pod object we cannot key (no uid) is skipped, not fatal: one odd object
/// must not stop the node's other pods from resolving.
fn skip_bad_pod(store: &PodStore, e: &anyhow::Error) {
    store.state.errors.fetch_add(1, Relaxed);
    warn!("Kubernetes pod source: skipping a pod: {e:#}");
}

fn excerpt(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(120)]).into_owned();
    if b.len() > 120 {
        s + "…"
    } else {
        s
    }
}

fn node_selector(node: &str) -> String {
    format!("fieldSelector={}", encode(&format!("spec.nodeName={node}")))
}

fn list_path(node: &str, limit: u32, token: Option<&str>) -> String {
    let mut p = format!("/api/v1/pods?{}&limit={limit}", node_selector(node));
    if let Some(t) = token {
        p += &format!("&continue={}", encode(t));
    }
    p
}

fn watch_path(node: &str, rv: &str, timeout: Duration) -> String {
    format!(
        "/api/v1/pods?{}&watch=1&resourceVersion={}&allowWatchBookmarks=true&timeoutSeconds={}",
        node_selector(node),
        encode(rv),
        timeout.as_secs().max(1)
    )
}

/// Percent-encodes a query value or path segment (RFC 3986 unreserved kept).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out += &format!("%{b:02X}");
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Kubernetes objects: only the fields we read, every one optional.

/// `null` where a value was expected reads as the default: Go clients emit
/// either, and neither should fail the object.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ObjectMeta {
    #[serde(deserialize_with = "nullable")]
    uid: String,
    #[serde(deserialize_with = "nullable")]
    namespace: String,
    #[serde(deserialize_with = "nullable")]
    name: String,
    #[serde(deserialize_with = "nullable")]
    resource_version: String,
    #[serde(deserialize_with = "nullable")]
    labels: BTreeMap<String, String>,
    #[serde(deserialize_with = "nullable")]
    owner_references: Vec<OwnerReference>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct OwnerReference {
    #[serde(deserialize_with = "nullable")]
    kind: String,
    #[serde(deserialize_with = "nullable")]
    name: String,
    #[serde(deserialize_with = "nullable")]
    controller: bool,
}

/// A Pod, ReplicaSet or Job: metadata plus (for pods) container statuses.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Object {
    #[serde(deserialize_with = "nullable")]
    metadata: ObjectMeta,
    #[serde(deserialize_with = "nullable")]
    status: PodStatus,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct PodStatus {
    #[serde(deserialize_with = "nullable")]
    container_statuses: Vec<ContainerStatus>,
    #[serde(deserialize_with = "nullable")]
    init_container_statuses: Vec<ContainerStatus>,
    #[serde(deserialize_with = "nullable")]
    ephemeral_container_statuses: Vec<ContainerStatus>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ContainerStatus {
    #[serde(deserialize_with = "nullable")]
    name: String,
    #[serde(rename = "containerID", deserialize_with = "nullable")]
    container_id: String,
    #[serde(deserialize_with = "nullable")]
    last_state: ContainerState,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ContainerState {
    #[serde(deserialize_with = "nullable")]
    terminated: ContainerStatusId,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ContainerStatusId {
    #[serde(rename = "containerID", deserialize_with = "nullable")]
    container_id: String,
}

/// One page of a LIST.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ObjectList {
    #[serde(deserialize_with = "nullable")]
    pub metadata: ListMeta,
    #[serde(deserialize_with = "nullable")]
    pub items: Vec<Object>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ListMeta {
    #[serde(deserialize_with = "nullable")]
    pub resource_version: String,
    #[serde(rename = "continue", deserialize_with = "nullable")]
    pub continue_token: String,
}

/// Parses a LIST page's body.
pub fn parse_list_page(body: &[u8]) -> anyhow::Result<ObjectList> {
    serde_json::from_slice(body).with_context(|| format!("unexpected body {:?}", excerpt(body)))
}

/// A `Status` object: error bodies and watch ERROR events.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Status {
    #[serde(deserialize_with = "nullable")]
    code: u16,
    #[serde(deserialize_with = "nullable")]
    reason: String,
    #[serde(deserialize_with = "nullable")]
    message: String,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "code {} {}: {}", self.code, self.reason, self.message)
    }
}

/// A pod's metadata, its workload left to [`Owners::workload`] (which may
/// need the API). Fails only without a uid, the store's key.
pub fn pod_meta(pod: &Object) -> anyhow::Result<PodMeta> {
    let m = &pod.metadata;
    if m.uid.is_empty() {
        bail!("pod {}/{} has no metadata.uid", m.namespace, m.name);
    }
    Ok(PodMeta {
        uid: m.uid.clone(),
        namespace: m.namespace.clone(),
        name: m.name.clone(),
        labels: m.labels.clone(),
        workload: None,
        containers: containers(&pod.status),
    })
}

/// Every container with a runtime id: regular, init and ephemeral ones, and
/// the previous instance of restarted ones (late events from it still name
/// the right container). Containers not started yet have no id, hence no
/// cgroup to attribute; the MODIFIED event that follows their start adds them.
fn containers(status: &PodStatus) -> Vec<ContainerMeta> {
    let mut out: Vec<ContainerMeta> = Vec::new();
    let all = status
        .container_statuses
        .iter()
        .chain(&status.init_container_statuses)
        .chain(&status.ephemeral_container_statuses);
    for c in all {
        for raw in [&c.container_id, &c.last_state.terminated.container_id] {
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
fn controller(refs: &[OwnerReference]) -> Option<&OwnerReference> {
    refs.iter().find(|o| o.controller && !o.kind.is_empty() && !o.name.is_empty())
}

// ---------------------------------------------------------------------------
// Workloads: pod → ReplicaSet → Deployment, pod → Job → CronJob.

/// How long a failed owner lookup's fallback answer is kept before we ask
/// the API again (a missing RBAC rule must not cost one GET per pod event).
const FALLBACK_TTL: Duration = Duration::from_secs(60);
/// Owner cache bound; cleared whole when reached (a node has ~100 pods).
const OWNER_CACHE_MAX: usize = 4096;

/// Caches what a ReplicaSet or Job is controlled by: that never changes for
/// the objects Deployments and CronJobs create.
#[derive(Default)]
struct Owners {
    cache: HashMap<(String, String, String), (Workload, Option<Instant>)>,
}

impl Owners {
    /// The pod's workload: its controller, or the controller's controller
    /// for ReplicaSets and Jobs. None for pods nothing controls.
    async fn workload(&mut self, api: &mut Api, store: &PodStore, pod: &Object) -> Option<Workload> {
        let owner = controller(&pod.metadata.owner_references)?;
        let ns = &pod.metadata.namespace;
        let path = match owner.kind.as_str() {
            "ReplicaSet" => {
                format!("/apis/apps/v1/namespaces/{}/replicasets/{}", encode(ns), encode(&owner.name))
            }
            "Job" => format!("/apis/batch/v1/namespaces/{}/jobs/{}", encode(ns), encode(&owner.name)),
            _ => return Some(Workload { kind: owner.kind.clone(), name: owner.name.clone() }),
        };
        let key = (owner.kind.clone(), ns.clone(), owner.name.clone());
        if let Some((w, expires)) = self.cache.get(&key) {
            if expires.is_none_or(|t| Instant::now() < t) {
                return Some(w.clone());
            }
        }
        let (workload, expires) = match api.get_json::<Object>(&path).await {
            Ok(parent) => (workload_of(owner, &parent), None),
            Err(e) => {
                if http_status(&e) != Some(404) {
                    store.state.errors.fetch_add(1, Relaxed);
                    warn!(namespace = %ns, "Kubernetes pod source: cannot read {} {}: {e:#}; guessing the workload from names", owner.kind, owner.name);
                }
                (fallback_workload(owner, &pod.metadata.labels), Some(Instant::now() + FALLBACK_TTL))
            }
        };
        if self.cache.len() >= OWNER_CACHE_MAX {
            self.cache.clear();
        }
        self.cache.insert(key, (workload.clone(), expires));
        Some(workload)
    }
}

/// The workload a pod owned by `owner` belongs to, given `owner`'s object:
/// whatever controls it (Deployment, CronJob, or e.g. an Argo Rollout), else
/// `owner` itself (a bare ReplicaSet or Job).
fn workload_of(owner: &OwnerReference, parent: &Object) -> Workload {
    match controller(&parent.metadata.owner_references) {
        Some(c) => Workload { kind: c.kind.clone(), name: c.name.clone() },
        None => Workload { kind: owner.kind.clone(), name: owner.name.clone() },
    }
}

/// Without the API's answer: a ReplicaSet named `<deployment>-<hash>` whose
/// pod carries that `pod-template-hash` label is a Deployment's; anything
/// else is taken as it is.
fn fallback_workload(owner: &OwnerReference, labels: &BTreeMap<String, String>) -> Workload {
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

// ---------------------------------------------------------------------------
// Backoff

/// Exponential backoff with jitter, so agents on every node do not retry in
/// lockstep after an API server outage.
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Backoff {
        let min = min.max(Duration::from_millis(1));
        Backoff { min, max: max.max(min), next: min }
    }

    /// A delay in [d/2, d], d doubling each call up to `max`.
    fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (d * 2).min(self.max);
        let half = d / 2;
        half + half.mul_f64(fastrand::f64())
    }

    fn reset(&mut self) {
        self.next = self.min;
    }
}

// ---------------------------------------------------------------------------
// Connection settings: kubeconfig, in-cluster, override.

/// How requests authenticate (beyond a TLS client certificate).
#[derive(Clone, Default, PartialEq, Eq)]
enum Auth {
    #[default]
    None,
    Bearer(String),
    /// Re-read for every request: projected service account tokens rotate
    /// under us.
    BearerFile(PathBuf),
    /// `user:password`, base64-encoded.
    Basic(String),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Auth::BearerFile(p) => write!(f, "BearerFile({})", p.display()),
            Auth::Basic(_) => f.write_str("Basic(<redacted>)"),
        }
    }
}

impl Auth {
    fn header(&self) -> anyhow::Result<Option<HeaderValue>> {
        let value = match self {
            Auth::None => return Ok(None),
            Auth::Bearer(t) => format!("Bearer {}", t.trim()),
            Auth::BearerFile(p) => {
                let t = std::fs::read_to_string(p)
                    .with_context(|| format!("reading token file {}", p.display()))?;
                format!("Bearer {}", t.trim())
            }
            Auth::Basic(b) => format!("Basic {b}"),
        };
        let mut v = HeaderValue::from_str(&value)
            .map_err(|_| anyhow!("the API token has characters not allowed in a header"))?;
        v.set_sensitive(true);
        Ok(Some(v))
    }
}

/// Everything needed to reach the API server, before any TLS object is built.
#[derive(Debug, Default, PartialEq, Eq)]
struct Settings {
    server: String,
    /// PEM bundle to trust; None means the system's.
    ca_pem: Option<Vec<u8>>,
    insecure: bool,
    tls_server_name: Option<String>,
    /// Client certificate chain and key, PEM.
    client_cert: Option<(Vec<u8>, Vec<u8>)>,
    auth: Auth,
}

const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

impl Settings {
    /// The override, the kubeconfig, in-cluster, then `$KUBECONFIG`.
    fn resolve(cfg: &KubeConfig) -> anyhow::Result<Settings> {
        let mut s = if let Some(path) = &cfg.kubeconfig {
            Settings::from_kubeconfig_file(path)?
        } else if cfg.api_server.is_some() {
            Settings::default()
        } else if let Ok(host) = std::env::var("KUBERNETES_SERVICE_HOST") {
            let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
            Settings::in_cluster(&host, &port, Path::new(SA_DIR))?
        } else if let Some(path) =
            std::env::var_os("KUBECONFIG").and_then(|v| std::env::split_paths(&v).next())
        {
            Settings::from_kubeconfig_file(&path)?
        } else {
            bail!(
                "no Kubernetes API: not in a cluster (KUBERNETES_SERVICE_HOST unset) and no kubeconfig given"
            );
        };
        if let Some(server) = &cfg.api_server {
            s.server = server.clone();
        }
        Ok(s)
    }

    /// The pod's service account: token and CA mounted under `dir`.
    fn in_cluster(host: &str, port: &str, dir: &Path) -> anyhow::Result<Settings> {
        let host = if host.contains(':') { format!("[{host}]") } else { host.to_owned() };
        let ca = dir.join("ca.crt");
        Ok(Settings {
            server: format!("https://{host}:{port}"),
            ca_pem: Some(std::fs::read(&ca).with_context(|| format!("reading {}", ca.display()))?),
            auth: Auth::BearerFile(dir.join("token")),
            ..Settings::default()
        })
    }

    fn from_kubeconfig_file(path: &Path) -> anyhow::Result<Settings> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading kubeconfig {}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Settings::from_kubeconfig(&text, dir).with_context(|| format!("kubeconfig {}", path.display()))
    }

    /// The current context's cluster and user; relative file names are
    /// relative to `dir`, the kubeconfig's directory, as kubectl reads them.
    fn from_kubeconfig(text: &str, dir: &Path) -> anyhow::Result<Settings> {
        let kc: Kubeconfig = serde_yaml::from_str(text)?;
        let ctx_name =
            kc.current_context.as_deref().filter(|c| !c.is_empty()).context("no current-context")?;
        let ctx = &kc
            .contexts
            .iter()
            .find(|c| c.name == ctx_name)
            .with_context(|| format!("current-context {ctx_name:?} is not in contexts"))?
            .context;
        let cluster = &kc
            .clusters
            .iter()
            .find(|c| c.name == ctx.cluster)
            .with_context(|| format!("context {ctx_name:?}: cluster {:?} is not in clusters", ctx.cluster))?
            .cluster;
        if cluster.server.is_empty() {
            bail!("cluster {:?} has no server", ctx.cluster);
        }
        let user = match ctx.user.as_deref().filter(|u| !u.is_empty()) {
            None => KubeUser::default(),
            Some(u) => kc
                .users
                .iter()
                .find(|n| n.name == u)
                .with_context(|| format!("context {ctx_name:?}: user {u:?} is not in users"))?
                .user
                .clone(),
        };
        let read = |what: &str,
                    data: &Option<String>,
                    file: &Option<String>|
         -> anyhow::Result<Option<Vec<u8>>> {
            if let Some(d) = data.as_deref().filter(|d| !d.is_empty()) {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(d.trim())
                    .with_context(|| format!("{what}-data is not valid base64"))?;
                return Ok(Some(bytes));
            }
            match file.as_deref().filter(|f| !f.is_empty()) {
                None => Ok(None),
                Some(f) => {
                    let p = dir.join(f);
                    Ok(Some(std::fs::read(&p).with_context(|| format!("{what}: reading {}", p.display()))?))
                }
            }
        };
        let ca_pem = read(
            "certificate-authority",
            &cluster.certificate_authority_data,
            &cluster.certificate_authority,
        )?;
        let cert = read("client-certificate", &user.client_certificate_data, &user.client_certificate)?;
        let key = read("client-key", &user.client_key_data, &user.client_key)?;
        let client_cert = match (cert, key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            (Some(_), None) => bail!("user has client-certificate but no client-key"),
            (None, Some(_)) => bail!("user has client-key but no client-certificate"),
        };
        if user.exec.is_some() || user.auth_provider.is_some() {
            bail!("user authenticates through an exec or auth-provider plugin, which podwatch does not run; use a token or a client certificate");
        }
        let auth = if let Some(t) = user.token.filter(|t| !t.is_empty()) {
            Auth::Bearer(t)
        } else if let Some(f) = user.token_file.filter(|f| !f.is_empty()) {
            Auth::BearerFile(dir.join(f))
        } else if let (Some(u), Some(p)) = (user.username, user.password) {
            Auth::Basic(base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}")))
        } else {
            Auth::None
        };
        Ok(Settings {
            server: cluster.server.clone(),
            ca_pem,
            insecure: cluster.insecure_skip_tls_verify,
            tls_server_name: cluster.tls_server_name.clone().filter(|n| !n.is_empty()),
            client_cert,
            auth,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Kubeconfig {
    #[serde(rename = "current-context")]
    current_context: Option<String>,
    #[serde(deserialize_with = "nullable")]
    contexts: Vec<NamedContext>,
    #[serde(deserialize_with = "nullable")]
    clusters: Vec<NamedCluster>,
    #[serde(deserialize_with = "nullable")]
    users: Vec<NamedUser>,
}

#[derive(Debug, Deserialize)]
struct NamedContext {
    name: String,
    context: KubeContext,
}

#[derive(Debug, Deserialize)]
struct KubeContext {
    cluster: String,
    user: Option<String>,
}

#[derive(Debug, Deserialize)]
struct NamedCluster {
    name: String,
    cluster: KubeCluster,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
struct KubeCluster {
    server: String,
    certificate_authority: Option<String>,
    certificate_authority_data: Option<String>,
    insecure_skip_tls_verify: bool,
    tls_server_name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct NamedUser {
    name: String,
    #[serde(default, deserialize_with = "nullable")]
    user: KubeUser,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
struct KubeUser {
    token: Option<String>,
    #[serde(rename = "tokenFile")]
    token_file: Option<String>,
    username: Option<String>,
    password: Option<String>,
    client_certificate: Option<String>,
    client_certificate_data: Option<String>,
    client_key: Option<String>,
    client_key_data: Option<String>,
    exec: Option<serde_yaml::Value>,
    auth_provider: Option<serde_yaml::Value>,
}

// ---------------------------------------------------------------------------
// Endpoint: TCP (+ TLS) + HTTP/1.1

/// A resolved server: address, path prefix, TLS and credentials.
struct Endpoint {
    host: String,
    port: u16,
    /// `Host` header value.
    authority: String,
    /// Prefix of every path (servers behind a proxy, e.g. Rancher's
    /// `/k8s/clusters/<id>`), without a trailing slash.
    base_path: String,
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    auth: Auth,
}

impl Endpoint {
    fn resolve(cfg: &KubeConfig) -> anyhow::Result<Endpoint> {
        Endpoint::new(Settings::resolve(cfg)?)
    }

    fn new(s: Settings) -> anyhow::Result<Endpoint> {
        let uri: Uri = s.server.parse().with_context(|| format!("API server URL {:?}", s.server))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => bail!("API server URL {:?}: scheme must be http or https", s.server),
        };
        let authority =
            uri.authority().with_context(|| format!("API server URL {:?} has no host", s.server))?;
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let name = s.tls_server_name.clone().unwrap_or_else(|| host.clone());
            let name = ServerName::try_from(name.clone())
                .map_err(|_| anyhow!("{name:?} is not a valid TLS server name"))?;
            Some((Arc::new(tls_config(&s)?), name))
        } else {
            None
        };
        Ok(Endpoint {
            host,
            port,
            authority: authority.as_str().to_owned(),
            base_path: uri.path().trim_end_matches('/').to_owned(),
            tls,
            auth: s.auth,
        })
    }
}

/// rustls client config for the API server; without a certificate-authority
/// the system bundle is used (publicly trusted API server certificates).
fn tls_config(s: &Settings) -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = if s.insecure {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
    } else {
        let mut roots = rustls::RootCertStore::empty();
        let pem = match &s.ca_pem {
            Some(pem) => pem.clone(),
            None => system_ca()?,
        };
        for cert in parse_certs(&pem, "certificate authority")? {
            roots.add(cert).context("certificate authority")?;
        }
        builder.with_root_certificates(roots)
    };
    match &s.client_cert {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let certs = parse_certs(cert, "client certificate")?;
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| anyhow!("client key: {e}"))?;
            builder.with_client_auth_cert(certs, key).context("client certificate and key")
        }
    }
}

/// `insecure-skip-tls-verify: true`: any certificate is accepted, but the
/// handshake signatures are still checked (that is what rustls needs to
/// complete the handshake at all).
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A non-2xx answer, kept typed so callers can tell 404 and 410 apart.
#[derive(Debug)]
struct HttpStatus {
    code: u16,
    path: String,
    message: String,
}

impl fmt::Display for HttpStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {} for GET {}: {}", self.code, self.path, self.message)
    }
}

impl std::error::Error for HttpStatus {}

fn http_status(e: &anyhow::Error) -> Option<u16> {
    e.downcast_ref::<HttpStatus>().map(|s| s.code)
}

fn is_gone(e: &anyhow::Error) -> bool {
    http_status(e) == Some(410)
}

/// Largest LIST page or object body we accept.
const MAX_BODY: usize = 256 << 20;

/// One open HTTP/1.1 connection.
struct Conn {
    send: SendRequest<Empty<Bytes>>,
}

/// Requests to one API server: unary GETs share a kept-alive connection,
/// each watch gets its own.
struct Api {
    endpoint: Endpoint,
    timeout: Duration,
    conn: Option<Conn>,
}

impl Api {
    fn new(endpoint: Endpoint, timeout: Duration) -> Api {
        Api { endpoint, timeout, conn: None }
    }

    /// GET `path` and decode its JSON body; non-2xx is an [`HttpStatus`].
    async fn get_json<T: DeserializeOwned>(&mut self, path: &str) -> anyhow::Result<T> {
        let body = self.get_body_within(path).await?;
        serde_json::from_slice(&body)
            .with_context(|| format!("GET {path}: unexpected body {:?}", excerpt(&body)))
    }

    /// GET `path` within the request timeout; non-2xx is an [`HttpStatus`].
    async fn get_body_within(&mut self, path: &str) -> anyhow::Result<Bytes> {
        tokio::time::timeout(self.timeout, self.get_body(path))
            .await
            .map_err(|_| anyhow!("GET {path}: no answer within {:?}", self.timeout))?
    }

    async fn get_body(&mut self, path: &str) -> anyhow::Result<Bytes> {
        let resp = self.send_reusing(path).await?;
        let resp = check_status(resp, path).await?;
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| anyhow!("GET {path}: reading the body: {e}"))?;
        Ok(body.to_bytes())
    }

    /// Sends on the kept connection, or on a new one when it has closed
    /// (API servers close idle connections; a GET is safe to repeat).
    async fn send_reusing(&mut self, path: &str) -> anyhow::Result<Response<Incoming>> {
        if let Some(conn) = self.conn.as_mut() {
            if conn.send.ready().await.is_ok() {
                match send(&self.endpoint, conn, path).await {
                    Ok(resp) => return Ok(resp),
                    Err(e) => debug!("kept-alive API connection failed, reconnecting: {e:#}"),
                }
            }
        }
        self.conn = None;
        let mut conn = self.connect().await?;
        let resp = send(&self.endpoint, &mut conn, path).await?;
        self.conn = Some(conn);
        Ok(resp)
    }

    /// GET on a fresh connection whose body is read as it arrives (watch).
    async fn open_stream(&self, path: &str) -> anyhow::Result<Response<Incoming>> {
        tokio::time::timeout(self.timeout, async {
            let mut conn = self.connect().await?;
            check_status(send(&self.endpoint, &mut conn, path).await?, path).await
        })
        .await
        .map_err(|_| anyhow!("GET {path}: no answer within {:?}", self.timeout))?
    }

    async fn connect(&self) -> anyhow::Result<Conn> {
        let ep = &self.endpoint;
        let tcp = tokio::time::timeout(self.timeout, TcpStream::connect((ep.host.as_str(), ep.port)))
            .await
            .map_err(|_| anyhow!("connecting to {}: timed out", ep.authority))?
            .with_context(|| format!("connecting to {}", ep.authority))?;
        // Small requests, streamed answers: do not wait for Nagle.
        let _ = tcp.set_nodelay(true);
        let send = match &ep.tls {
            None => handshake(tcp).await?,
            Some((config, name)) => {
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name.clone(), tcp)
                    .await
                    .with_context(|| format!("TLS handshake with {}", ep.authority))?;
                handshake(tls).await?
            }
        };
        Ok(Conn { send })
    }
}

async fn handshake<IO>(io: IO) -> anyhow::Result<SendRequest<Empty<Bytes>>>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(io)).await.context("HTTP handshake")?;
    // Drives the connection; it ends when the sender and the body are dropped.
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            debug!("Kubernetes API connection ended: {e}");
        }
    });
    Ok(send)
}

/// Credentials are read for every request, not once per connection: a
/// kept-alive connection can outlive a projected token (rotated hourly).
async fn send(ep: &Endpoint, conn: &mut Conn, path: &str) -> anyhow::Result<Response<Incoming>> {
    let mut req = Request::get(format!("{}{path}", ep.base_path))
        .header(HOST, &ep.authority)
        .header(ACCEPT, "application/json")
        .header(USER_AGENT, concat!("podwatch/", env!("CARGO_PKG_VERSION")));
    if let Some(auth) = ep.auth.header()? {
        req = req.header(AUTHORIZATION, auth);
    }
    let req = req.body(Empty::new()).with_context(|| format!("building GET {path}"))?;
    conn.send.send_request(req).await.with_context(|| format!("GET {path}"))
}

/// Passes 2xx through; turns anything else into an [`HttpStatus`] with the
/// server's own message when the body is a Status.
async fn check_status(resp: Response<Incoming>, path: &str) -> anyhow::Result<Response<Incoming>> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let code = resp.status().as_u16();
    let body =
        Limited::new(resp.into_body(), 64 << 10).collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    Err(HttpStatus { code, path: path.to_owned(), message: error_message(&body) }.into())
}

/// The message of an error answer: the server's own when the body is a
/// Status, else the start of the body.
pub fn error_message(body: &[u8]) -> String {
    match serde_json::from_slice::<Status>(body) {
        Ok(s) if !s.message.is_empty() => s.message,
        _ => excerpt(body),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(v: serde_json::Value) -> Object {
        serde_json::from_value(v).unwrap()
    }

    fn owner(kind: &str, name: &str) -> OwnerReference {
        OwnerReference { kind: kind.into(), name: name.into(), controller: true }
    }

    #[test]
    fn pod_json_maps_to_meta() {
        let pod = parse(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "uid": "u1", "namespace": "shop", "name": "web-7d9f-abcde", "resourceVersion": "42",
                "labels": {"app": "web", "pod-template-hash": "7d9f"},
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Other", "name": "x"},
                    {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f", "controller": true}
                ]
            },
            "spec": {"nodeName": "n1"},
            "status": {
                "containerStatuses": [
                    {"name": "app", "containerID": "containerd://aaa",
                     "lastState": {"terminated": {"containerID": "containerd://old"}}},
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
        let o = controller(&pod.metadata.owner_references).unwrap();
        assert_eq!((o.kind.as_str(), o.name.as_str()), ("ReplicaSet", "web-7d9f"));
        assert_eq!(pod.metadata.resource_version, "42");
    }

    #[test]
    fn sparse_and_null_fields_are_fine() {
        let pod = parse(json!({"metadata": {"uid": "u2", "name": "bare", "namespace": "default",
            "labels": null, "ownerReferences": null}, "status": {"containerStatuses": null}}));
        let m = pod_meta(&pod).unwrap();
        assert!(m.labels.is_empty() && m.containers.is_empty() && m.workload.is_none());
        assert!(controller(&pod.metadata.owner_references).is_none());
        let m = pod_meta(&parse(json!({"metadata": {"uid": "u3"}}))).unwrap();
        assert_eq!(m.name, "");
        assert!(pod_meta(&parse(json!({"metadata": {"name": "no-uid"}}))).is_err());
    }

    #[test]
    fn workload_from_parent_object() {
        let rs = parse(json!({"metadata": {"name": "web-7d9f", "ownerReferences": [
            {"kind": "Deployment", "name": "web", "controller": true}]}}));
        assert_eq!(
            workload_of(&owner("ReplicaSet", "web-7d9f"), &rs),
            Workload { kind: "Deployment".into(), name: "web".into() }
        );
        let job = parse(json!({"metadata": {"name": "backup-2890", "ownerReferences": [
            {"kind": "CronJob", "name": "backup", "controller": true}]}}));
        assert_eq!(
            workload_of(&owner("Job", "backup-2890"), &job),
            Workload { kind: "CronJob".into(), name: "backup".into() }
        );
        let bare = parse(json!({"metadata": {"name": "once"}}));
        assert_eq!(
            workload_of(&owner("Job", "once"), &bare),
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

    #[test]
    fn paths_are_encoded() {
        assert_eq!(
            list_path("node-1", 500, Some("a+b/c=")),
            "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1&limit=500&continue=a%2Bb%2Fc%3D"
        );
        assert_eq!(
            watch_path("n", "17", Duration::from_secs(300)),
            "/api/v1/pods?fieldSelector=spec.nodeName%3Dn&watch=1&resourceVersion=17&allowWatchBookmarks=true&timeoutSeconds=300"
        );
    }

    #[test]
    fn backoff_doubles_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        let d: Vec<Duration> = (0..10).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(100) && d[0] <= Duration::from_millis(200));
        assert!(d[3] >= Duration::from_millis(800) && d[3] <= Duration::from_millis(1600));
        assert!(d[9] >= Duration::from_secs(15) && d[9] <= Duration::from_secs(30));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(200));
    }

    const KUBECONFIG: &str = r#"
apiVersion: v1
kind: Config
current-context: prod
contexts:
- name: dev
  context: {cluster: dev, user: dev}
- name: prod
  context: {cluster: prod, user: admin, namespace: kube-system}
clusters:
- name: dev
  cluster: {server: "http://127.0.0.1:1"}
- name: prod
  cluster:
    server: https://10.0.0.1:6443/k8s/clusters/c-1/
    certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0t
    tls-server-name: kubernetes
users:
- name: dev
  user: {}
- name: admin
  user:
    client-certificate: certs/admin.crt
    client-key-data: a2V5
"#;

    #[test]
    fn kubeconfig_current_context() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("certs")).unwrap();
        std::fs::write(dir.path().join("certs/admin.crt"), "CERT").unwrap();
        let s = Settings::from_kubeconfig(KUBECONFIG, dir.path()).unwrap();
        assert_eq!(s.server, "https://10.0.0.1:6443/k8s/clusters/c-1/");
        assert_eq!(s.ca_pem.as_deref(), Some(&b"-----BEGIN CERTIFICATE-----"[..]));
        assert_eq!(s.tls_server_name.as_deref(), Some("kubernetes"));
        assert_eq!(s.client_cert, Some((b"CERT".to_vec(), b"key".to_vec())));
        assert_eq!(s.auth, Auth::None);
        assert!(!s.insecure);
    }

    #[test]
    fn kubeconfig_tokens_and_insecure() {
        let text = r#"
current-context: c
contexts: [{name: c, context: {cluster: k, user: u}}]
clusters: [{name: k, cluster: {server: "https://k:6443", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: abc}}]
"#;
        let s = Settings::from_kubeconfig(text, Path::new("/x")).unwrap();
        assert!(s.insecure);
        assert_eq!(s.auth, Auth::Bearer("abc".into()));
        let ep = Endpoint::new(s).unwrap();
        assert_eq!((ep.host.as_str(), ep.port, ep.base_path.as_str()), ("k", 6443, ""));
        assert!(ep.tls.is_some());

        let s =
            Settings::from_kubeconfig(&text.replace("token: abc", "tokenFile: t"), Path::new("/x")).unwrap();
        assert_eq!(s.auth, Auth::BearerFile(PathBuf::from("/x/t")));
        let s = Settings::from_kubeconfig(
            &text.replace("token: abc", "username: a, password: b"),
            Path::new("/x"),
        );
        assert_eq!(s.unwrap().auth, Auth::Basic("YTpi".into()));
    }

    #[test]
    fn kubeconfig_errors_say_what() {
        let err = |text: &str| {
            format!("{:#}", Settings::from_kubeconfig(text, Path::new("/nonexistent")).unwrap_err())
        };
        assert!(err("contexts: []").contains("no current-context"));
        assert!(err("current-context: x\ncontexts: []").contains("\"x\" is not in contexts"));
        let base = "current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n";
        assert!(err(base).contains("cluster \"k\" is not in clusters"));
        let with_cluster = format!("{base}clusters: [{{name: k, cluster: {{server: 'https://k', certificate-authority: ca.pem}}}}]\n");
        assert!(err(&with_cluster).contains("user \"u\" is not in users"));
        let e = err(&format!("{with_cluster}users: [{{name: u, user: {{}}}}]"));
        assert!(e.contains("certificate-authority: reading /nonexistent/ca.pem"), "{e}");
        let e = err(&format!("{base}clusters: [{{name: k, cluster: {{server: 'https://k', certificate-authority-data: '%%'}}}}]\nusers: [{{name: u, user: {{}}}}]"));
        assert!(e.contains("certificate-authority-data is not valid base64"), "{e}");
        let e = err(&format!("{base}clusters: [{{name: k, cluster: {{server: 'https://k'}}}}]\nusers: [{{name: u, user: {{exec: {{command: aws}}}}}}]"));
        assert!(e.contains("exec"), "{e}");
    }

    #[test]
    fn endpoints_from_urls() {
        let ep = Endpoint::new(Settings { server: "http://127.0.0.1:8001".into(), ..Settings::default() })
            .unwrap();
        assert_eq!((ep.host.as_str(), ep.port, ep.authority.as_str()), ("127.0.0.1", 8001, "127.0.0.1:8001"));
        assert!(ep.tls.is_none());
        let ep = Endpoint::new(Settings { server: "http://[::1]".into(), ..Settings::default() }).unwrap();
        assert_eq!((ep.host.as_str(), ep.port), ("::1", 80));
        assert!(Endpoint::new(Settings { server: "ftp://x".into(), ..Settings::default() }).is_err());
        let bad_ca =
            Settings { server: "https://x".into(), ca_pem: Some(b"nope".to_vec()), ..Settings::default() };
        let e = format!("{:#}", Endpoint::new(bad_ca).err().unwrap());
        assert!(e.contains("certificate authority: no PEM certificate"), "{e}");
    }

    #[test]
    fn in_cluster_reads_the_service_account() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.crt"), "CA").unwrap();
        let s = Settings::in_cluster("fd00::1", "443", dir.path()).unwrap();
        assert_eq!(s.server, "https://[fd00::1]:443");
        assert_eq!(s.auth, Auth::BearerFile(dir.path().join("token")));
        std::fs::write(dir.path().join("token"), "t1\n").unwrap();
        assert_eq!(s.auth.header().unwrap().unwrap(), "Bearer t1");
        // Rotated token: the next connection reads the new one.
        std::fs::write(dir.path().join("token"), "t2").unwrap();
        assert_eq!(s.auth.header().unwrap().unwrap(), "Bearer t2");
        assert!(Settings::in_cluster("h", "1", &dir.path().join("missing")).is_err());
    }
}

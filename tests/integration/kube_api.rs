//! A test double of the Kubernetes API server, for the pod source's tests.
//!
//! No real API server can run on this machine (no etcd, no kube-apiserver
//! binary, no network to fetch one), so this is a double built from the
//! Kubernetes API's list/watch protocol (api-concepts: efficient detection
//! of changes, resource versions, watch bookmarks) speaking the parts the
//! pod source's client (kube-rs) uses, in the same JSON:
//! - PodLists with `metadata.resourceVersion`, honouring the `spec.nodeName`
//!   field selector; `resourceVersion=0` (with `resourceVersionMatch=
//!   NotOlderThan`) answered whole, as the API server's watch cache answers
//!   it, `limit`/`continue` pagination otherwise, and the server's own
//!   validation of `resourceVersionMatch` (400 without a resourceVersion or
//!   with a continue token);
//! - newline-delimited watch event streams (ADDED, MODIFIED, DELETED,
//!   BOOKMARK, ERROR with a `Status`) ended after `timeoutSeconds`, as the
//!   server ends them; `allowWatchBookmarks` recorded; `sendInitialEvents`
//!   (streaming lists) refused with 400, because this double does not model it;
//! - GET of ReplicaSets and Jobs, whole or as `PartialObjectMetadata` when
//!   the Accept header asks for it;
//! - `Status` error bodies; bearer tokens and, over TLS, client certificates.
//!
//! Tests drive it: they change pods (which streams the events to the open
//! watch), inject failures, and read back which requests arrived and with
//! which token.

use std::{
    collections::{BTreeMap, HashMap},
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::{
    body::{Body, Frame, Incoming},
    header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE},
    service::service_fn,
    Request, Response, StatusCode,
};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::{net::TcpListener, sync::mpsc, task::JoinSet};

type Body_ = BoxBody<Bytes, Infallible>;

/// The open watch: where its events go and which node it selected.
struct Watch {
    tx: mpsc::UnboundedSender<Bytes>,
    node: String,
}

#[derive(Default)]
struct State {
    rv: u64,
    /// uid → Pod, in uid order (the list order).
    pods: BTreeMap<String, Value>,
    /// (kind, namespace, name) → ReplicaSet or Job.
    owners: HashMap<(String, String, String), Value>,
    page_size: usize,
    fail_lists: u32,
    fail_watches: u32,
    watch: Option<Watch>,
    /// Every request's path and query, in arrival order.
    requests: Vec<String>,
    /// When not empty, requests must carry `Authorization: Bearer <t>` with
    /// one of these tokens.
    tokens: Vec<String>,
    /// The bearer token each request carried (None: none), in arrival order.
    request_tokens: Vec<Option<String>>,
    /// When set, ReplicaSet and Job GETs get this status (403: RBAC missing).
    fail_owners: Option<u16>,
    /// Accept header of every owner GET, in arrival order.
    owner_accepts: Vec<String>,
    /// Counts watches opened, so a `timeoutSeconds` timer ends only its own.
    watch_serial: u64,
}

/// A running double; dropping it stops the server and ends every stream.
pub struct ApiDouble {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for ApiDouble {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl ApiDouble {
    /// Plain http on 127.0.0.1; lists come in pages of at most `page_size`.
    pub async fn start(page_size: usize) -> ApiDouble {
        ApiDouble::start_with(page_size, None).await
    }

    /// https with a server certificate from [`certs`], requiring a client
    /// certificate signed by the same CA.
    pub async fn start_tls(page_size: usize) -> ApiDouble {
        ApiDouble::start_with(page_size, Some(Arc::new(tls_server_config()))).await
    }

    /// https with the server certificate of [`certs`] (names `kubernetes`,
    /// `localhost`, 127.0.0.1) and no client certificate, on every address,
    /// as a pod's service account reaches the API server: for an agent in a
    /// container (tests/integration/image.rs). Pair it with `require_token`.
    pub async fn start_in_cluster(page_size: usize) -> ApiDouble {
        let config = tls_server_config_with(false);
        ApiDouble::start_on("0.0.0.0:0", page_size, Some(Arc::new(config))).await
    }

    async fn start_with(page_size: usize, tls: Option<Arc<rustls::ServerConfig>>) -> ApiDouble {
        ApiDouble::start_on("127.0.0.1:0", page_size, tls).await
    }

    async fn start_on(bind: &str, page_size: usize, tls: Option<Arc<rustls::ServerConfig>>) -> ApiDouble {
        let listener = TcpListener::bind(bind).await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(Mutex::new(State { rv: 100, page_size, ..State::default() }));
        let server = tokio::spawn(serve(listener, tls, state.clone()));
        ApiDouble { addr, state, server }
    }

    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}", self.addr)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("double state")
    }

    /// Requires this bearer token from now on (None: no authentication).
    pub fn require_token(&self, token: Option<&str>) {
        self.lock().tokens = token.map(str::to_owned).into_iter().collect();
    }

    /// The bearer token of every request so far, in arrival order.
    pub fn request_tokens(&self) -> Vec<Option<String>> {
        self.lock().request_tokens.clone()
    }

    /// Stores a pod without telling the open watch: an event the client
    /// missed, which only a re-list brings in.
    pub fn add_pod_unseen(&self, mut pod: Value) {
        let mut s = self.lock();
        bump(&mut s, &mut pod);
        s.pods.insert(uid_of(&pod), pod);
    }

    /// Creates a pod and streams ADDED to the open watch (when it selects the pod's node).
    pub fn add_pod(&self, mut pod: Value) {
        let mut s = self.lock();
        bump(&mut s, &mut pod);
        s.pods.insert(uid_of(&pod), pod.clone());
        emit(&mut s, "ADDED", &pod);
    }

    /// Changes a pod and streams MODIFIED.
    pub fn modify_pod(&self, uid: &str, change: impl FnOnce(&mut Value)) {
        let mut s = self.lock();
        let mut pod = s.pods.get(uid).cloned().expect("modify_pod: no such pod");
        change(&mut pod);
        bump(&mut s, &mut pod);
        s.pods.insert(uid.to_owned(), pod.clone());
        emit(&mut s, "MODIFIED", &pod);
    }

    /// Deletes a pod and streams DELETED with its last state.
    pub fn delete_pod(&self, uid: &str) {
        let mut s = self.lock();
        let mut pod = s.pods.remove(uid).expect("delete_pod: no such pod");
        bump(&mut s, &mut pod);
        emit(&mut s, "DELETED", &pod);
    }

    /// Deletes a pod without telling the open watch.
    pub fn delete_pod_unseen(&self, uid: &str) {
        let mut s = self.lock();
        s.pods.remove(uid).expect("delete_pod_unseen: no such pod");
        s.rv += 1;
    }

    /// A ReplicaSet or Job the pod source may look up, with its controller.
    pub fn add_owner(&self, kind: &str, namespace: &str, name: &str, controller: Option<(&str, &str)>) {
        let refs: Vec<Value> = controller
            .map(|(k, n)| json!({"apiVersion": "apps/v1", "kind": k, "name": n, "uid": format!("uid-{n}"), "controller": true}))
            .into_iter()
            .collect();
        let api_version = if kind == "Job" { "batch/v1" } else { "apps/v1" };
        let obj = json!({"apiVersion": api_version, "kind": kind,
            "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{name}"), "ownerReferences": refs}});
        self.lock().owners.insert((kind.to_owned(), namespace.to_owned(), name.to_owned()), obj);
    }

    /// A BOOKMARK at `rv` (which becomes the server's current version).
    pub fn bookmark(&self, rv: u64) {
        let mut s = self.lock();
        s.rv = s.rv.max(rv);
        let line = json!({"type": "BOOKMARK", "object": {"kind": "Pod", "apiVersion": "v1",
            "metadata": {"resourceVersion": rv.to_string(),
                         "annotations": {"k8s.io/initial-events-end": "true"}}}});
        send_line(&mut s, line.to_string().as_bytes());
    }

    /// An ERROR event carrying a Status with `code` (410: resourceVersion too old).
    pub fn watch_error(&self, code: u16) {
        let (reason, message) = match code {
            410 => ("Expired", "too old resource version: 100 (200)".to_owned()),
            _ => ("InternalError", format!("injected error {code}")),
        };
        let line = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": code}});
        send_line(&mut self.lock(), line.to_string().as_bytes());
    }

    /// Any bytes as one line of the open watch stream.
    pub fn send_raw(&self, line: &str) {
        send_line(&mut self.lock(), line.as_bytes());
    }

    /// Ends the open watch stream normally (as the server's timeoutSeconds does).
    pub fn end_watch(&self) {
        self.lock().watch = None;
    }

    /// Every ReplicaSet and Job GET from now on gets `code` (None: answered).
    pub fn fail_owner_lookups(&self, code: Option<u16>) {
        self.lock().fail_owners = code;
    }

    /// The Accept header of every owner GET so far.
    pub fn owner_accepts(&self) -> Vec<String> {
        self.lock().owner_accepts.clone()
    }

    /// The next `n` LIST requests get a 500.
    pub fn fail_lists(&self, n: u32) {
        self.lock().fail_lists = n;
    }

    /// The next `n` WATCH requests get a 500.
    pub fn fail_watches(&self, n: u32) {
        self.lock().fail_watches = n;
    }

    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    /// Query parameters of the watch requests received so far.
    pub fn watches(&self) -> Vec<HashMap<String, String>> {
        self.requests().iter().map(|r| query(r)).filter(|q| q.contains_key("watch")).collect()
    }

    /// LIST requests (pages included) received so far.
    pub fn lists(&self) -> Vec<HashMap<String, String>> {
        let pods = |r: &&String| r.starts_with("/api/v1/pods?");
        self.requests().iter().filter(pods).map(|r| query(r)).filter(|q| !q.contains_key("watch")).collect()
    }

    pub fn watch_open(&self) -> bool {
        self.lock().watch.as_ref().is_some_and(|w| !w.tx.is_closed())
    }

    /// Waits until `n` watches have been opened and the last is still open.
    pub async fn wait_watch(&self, n: usize) {
        eventually(&format!("watch #{n}"), || self.watches().len() >= n && self.watch_open()).await;
    }
}

/// Polls `f` until true; panics after 5 s so a stuck source cannot hang the suite.
pub async fn eventually(what: &str, f: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(5), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn uid_of(pod: &Value) -> String {
    pod["metadata"]["uid"].as_str().expect("pod uid").to_owned()
}

/// Every change gets the next resourceVersion, as in etcd.
fn bump(s: &mut State, obj: &mut Value) {
    s.rv += 1;
    obj["metadata"]["resourceVersion"] = json!(s.rv.to_string());
}

fn emit(s: &mut State, kind: &str, pod: &Value) {
    let node = pod["spec"]["nodeName"].as_str().unwrap_or_default();
    if s.watch.as_ref().is_some_and(|w| w.node == node) {
        let line = json!({"type": kind, "object": pod}).to_string();
        send_line(s, line.as_bytes());
    }
}

fn send_line(s: &mut State, line: &[u8]) {
    let mut b = line.to_vec();
    b.push(b'\n');
    if let Some(w) = &s.watch {
        let _ = w.tx.send(Bytes::from(b));
    }
}

async fn serve(listener: TcpListener, tls: Option<Arc<rustls::ServerConfig>>, state: Arc<Mutex<State>>) {
    // Connections live in this set, so aborting the server ends them too.
    let mut conns = JoinSet::new();
    loop {
        let Ok((tcp, _)) = listener.accept().await else { continue };
        let state = state.clone();
        let tls = tls.clone();
        conns.spawn(async move {
            let svc = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, req)) }
            });
            let http = hyper::server::conn::http1::Builder::new();
            match tls {
                None => {
                    let _ = http.serve_connection(TokioIo::new(tcp), svc).await;
                }
                Some(config) => {
                    // A client without an acceptable certificate fails here.
                    if let Ok(stream) = tokio_rustls::TlsAcceptor::from(config).accept(tcp).await {
                        let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                    }
                }
            }
        });
        while conns.try_join_next().is_some() {}
    }
}

fn handle(state: &Arc<Mutex<State>>, req: Request<Incoming>) -> Response<Body_> {
    let Ok(mut s) = state.lock() else { return status(500, "InternalError", "poisoned") };
    let target = req.uri().path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
    s.requests.push(target.clone());
    let bearer = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    s.request_tokens.push(bearer.clone());
    if !s.tokens.is_empty() && !bearer.is_some_and(|b| s.tokens.contains(&b)) {
        return status(401, "Unauthorized", "Unauthorized");
    }
    // kube-rs's get_metadata asks for the object's metadata only.
    let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let metadata_only = accept.contains("as=PartialObjectMetadata");
    let path = req.uri().path();
    let q = query(&target);
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["api", "v1", "pods"] if q.contains_key("watch") => watch(state, &mut s, &q),
        ["api", "v1", "pods"] => list(&mut s, &q),
        ["apis", "apps" | "batch", "v1", "namespaces", ..] if s.fail_owners.is_some() => {
            s.owner_accepts.push(accept);
            let code = s.fail_owners.unwrap_or(500);
            status(code, "Forbidden", "injected owner lookup failure")
        }
        ["apis", "apps", "v1", "namespaces", ns, "replicasets", name] => {
            s.owner_accepts.push(accept);
            owner(&s, "ReplicaSet", ns, name, metadata_only)
        }
        ["apis", "batch", "v1", "namespaces", ns, "jobs", name] => {
            s.owner_accepts.push(accept);
            owner(&s, "Job", ns, name, metadata_only)
        }
        _ => status(404, "NotFound", "the server could not find the requested resource"),
    }
}

/// `spec.nodeName=<node>` from the field selector (the only one supported).
fn selected_node(q: &HashMap<String, String>) -> Option<String> {
    q.get("fieldSelector")?.strip_prefix("spec.nodeName=").map(str::to_owned)
}

fn list(s: &mut State, q: &HashMap<String, String>) -> Response<Body_> {
    if s.fail_lists > 0 {
        s.fail_lists -= 1;
        return status(500, "InternalError", "injected list failure");
    }
    let Some(node) = selected_node(q) else {
        return status(400, "BadRequest", "expected a spec.nodeName field selector");
    };
    // The API server's validation of list options.
    if q.contains_key("resourceVersionMatch") {
        if !q.contains_key("resourceVersion") {
            return status(
                400,
                "BadRequest",
                "resourceVersionMatch is forbidden unless resourceVersion is provided",
            );
        }
        if q.contains_key("continue") {
            return status(400, "BadRequest", "resourceVersionMatch is forbidden when continue is provided");
        }
    }
    // resourceVersion=0 is served from the watch cache, whole; otherwise a
    // `limit` pages through the list (at most `page_size` per page).
    let from_cache = q.get("resourceVersion").is_some_and(|v| v == "0");
    let limit = match q.get("limit") {
        Some(l) if !from_cache => l.parse().unwrap_or(usize::MAX).min(s.page_size).max(1),
        _ => usize::MAX,
    };
    // An opaque-looking token with characters that need URL encoding.
    let offset = match q.get("continue") {
        None => 0,
        Some(t) => {
            match t.strip_prefix("off/").and_then(|t| t.strip_suffix("==")).and_then(|t| t.parse().ok()) {
                Some(o) => o,
                None => return status(400, "BadRequest", "bad continue token"),
            }
        }
    };
    let on_node: Vec<&Value> =
        s.pods.values().filter(|p| p["spec"]["nodeName"].as_str() == Some(node.as_str())).collect();
    let items: Vec<&Value> = on_node.iter().skip(offset).take(limit).copied().collect();
    let mut metadata = json!({"resourceVersion": s.rv.to_string()});
    if offset + items.len() < on_node.len() {
        metadata["continue"] = json!(format!("off/{}==", offset + items.len()));
        metadata["remainingItemCount"] = json!(on_node.len() - offset - items.len());
    }
    let body = json!({"kind": "PodList", "apiVersion": "v1", "metadata": metadata, "items": items});
    respond(200, body.to_string())
}

fn watch(state: &Arc<Mutex<State>>, s: &mut State, q: &HashMap<String, String>) -> Response<Body_> {
    if s.fail_watches > 0 {
        s.fail_watches -= 1;
        return status(500, "InternalError", "injected watch failure");
    }
    let Some(node) = selected_node(q) else {
        return status(400, "BadRequest", "expected a spec.nodeName field selector");
    };
    if q.contains_key("sendInitialEvents") {
        return status(
            400,
            "BadRequest",
            "streaming lists (sendInitialEvents) are not modelled by this double",
        );
    }
    let (tx, rx) = mpsc::unbounded_channel();
    // A new watch replaces the previous one, whose stream then ends.
    s.watch = Some(Watch { tx, node });
    s.watch_serial += 1;
    // The server ends every watch after timeoutSeconds.
    if let Some(secs) = q.get("timeoutSeconds").and_then(|t| t.parse::<u64>().ok()) {
        let (state, serial) = (Arc::downgrade(state), s.watch_serial);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(secs)).await;
            if let Some(state) = state.upgrade() {
                if let Ok(mut s) = state.lock() {
                    if s.watch_serial == serial {
                        s.watch = None;
                    }
                }
            }
        });
    }
    Response::builder()
        .status(200)
        .header(CONTENT_TYPE, "application/json")
        .body(ChannelBody(rx).boxed())
        .expect("watch response")
}

fn owner(s: &State, kind: &str, ns: &str, name: &str, metadata_only: bool) -> Response<Body_> {
    match s.owners.get(&(kind.to_owned(), ns.to_owned(), name.to_owned())) {
        Some(obj) if metadata_only => respond(
            200,
            json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": obj["metadata"]})
                .to_string(),
        ),
        Some(obj) => respond(200, obj.to_string()),
        None => status(404, "NotFound", &format!("{kind} {name:?} not found")),
    }
}

fn respond(code: u16, body: String) -> Response<Body_> {
    Response::builder()
        .status(StatusCode::from_u16(code).expect("status code"))
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)).boxed())
        .expect("response")
}

/// A `Status` error body, as the API server sends with every non-2xx answer.
fn status(code: u16, reason: &str, message: &str) -> Response<Body_> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code});
    respond(code, body.to_string())
}

/// Query parameters of `target` (a path with query), percent-decoded.
pub fn query(target: &str) -> HashMap<String, String> {
    let Some((_, q)) = target.split_once('?') else { return HashMap::new() };
    q.split('&').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (decode(k), decode(v))).collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex =
            || std::str::from_utf8(b.get(i + 1..i + 3)?).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex()) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A streamed response body fed by the test: the watch stream. It ends
/// when the sender is dropped.
struct ChannelBody(mpsc::UnboundedReceiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

fn tls_server_config() -> rustls::ServerConfig {
    tls_server_config_with(true)
}

fn tls_server_config_with(client_certs: bool) -> rustls::ServerConfig {
    use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(certs::CA_CRT.as_bytes()) {
        roots.add(c.expect("CA pem")).expect("CA");
    }
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("TLS versions");
    let builder = if client_certs {
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .expect("client verifier");
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let chain = CertificateDer::pem_slice_iter(certs::SERVER_CRT.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("server cert");
    let key = PrivateKeyDer::from_pem_slice(certs::SERVER_KEY.as_bytes()).expect("server key");
    builder.with_single_cert(chain, key).expect("server TLS config")
}

/// A test CA (P-256, valid until 2126), a server certificate for
/// 127.0.0.1 / localhost / kubernetes, and a client certificate for
/// `system:node:node-1`, made with openssl for these tests only.
pub mod certs {
    pub const CA_CRT: &str = "\
    -----BEGIN CERTIFICATE-----\n\
    MIIBnjCCAUOgAwIBAgIUOB50cnhLF3/gUZOTHchYTiJqF0EwCgYIKoZIzj0EAwIw\n\
    GzEZMBcGA1UEAwwQcG9kd2F0Y2gtdGVzdC1jYTAgFw0yNjExMjIxODExMDdaGA8y\n\
    MTI2MTAyOTE4MTEwN1owGzEZMBcGA1UEAwwQcG9kd2F0Y2gtdGVzdC1jYTBZMBMG\n\
    ByqGSM49AgEGCCqGSM49AwEHA0IABChCGk8GAQS9vaT+VESVFcUBAFzCco08HAjQ\n\
    Bn4U4UN9kLHlTJcxTR3qvQZyhmVssZ5H1qqRBhaAM2PuDIiFuUijYzBhMB0GA1Ud\n\
    DgQWBBSr2u1H7hbvu9qMH5VzSHFoJ6XdSDAfBgNVHSMEGDAWgBSr2u1H7hbvu9qM\n\
    H5VzSHFoJ6XdSDAPBgNVHRMBAf8EBTADAQH/MA4GA1UdDwEB/wQEAwIBBjAKBggq\n\
    hkjOPQQDAgNJADBGAiEAu5FOuNiKApI+Fy+qWvIAxuqUMzbLIn5SoOpGVJxZFmcC\n\
    IQDu1ne6G1CKpliFycqfs9huORIj9MSrf2cjXIMxy/DxBQ==\n\
    -----END CERTIFICATE-----\n\
    ";

    pub const SERVER_CRT: &str = "\
    -----BEGIN CERTIFICATE-----\n\
    MIIB1DCCAXqgAwIBAgIUBKdQy+OAt8lhczfnd4g67rxz9bwwCgYIKoZIzj0EAwIw\n\
    GzEZMBcGA1UEAwwQcG9kd2F0Y2gtdGVzdC1jYTAgFw0yNjExMjIxODExMDdaGA8y\n\
    MTI2MTAyOTE4MTEwN1owGTEXMBUGA1UEAwwOa3ViZS1hcGlzZXJ2ZXIwWTATBgcq\n\
    hkjOPQIBBggqhkjOPQMBBwNCAAScUMq1EiYznTkyM1EJS8z3l2470pQ47iz1Xv6A\n\
    Vmk7nZCn51LlCoD/pD/Xugb7HtmlA8onhWS90QtGOwhUrWVPo4GbMIGYMCYGA1Ud\n\
    EQQfMB2HBH8AAAGCCWxvY2FsaG9zdIIKa3ViZXJuZXRlczATBgNVHSUEDDAKBggr\n\
    BgEFBQcDATAJBgNVHRMEAjAAMA4GA1UdDwEB/wQEAwIHgDAdBgNVHQ4EFgQUFyit\n\
    FcXfcmHFuJzi9uxwBqWL908wHwYDVR0jBBgwFoAUq9rtR+4W77vajB+Vc0hxaCel\n\
    3UgwCgYIKoZIzj0EAwIDSAAwRQIhAM2jvt53Uc6CWXImIfzVtiZjm/A1g3gJMxI6\n\
    vFKyLrJPAiAZiFRT3v+cR4mL4ySs2KjdHz8zuFe9smDNKtLbNWPfJA==\n\
    -----END CERTIFICATE-----\n\
    ";

    pub const SERVER_KEY: &str = "\
    -----BEGIN PRIVATE KEY-----\n\
    MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgsgmWG0do6PWaE2AC\n\
    YgHScrU7Ef24rsmUHIQugoCF/OuhRANCAAScUMq1EiYznTkyM1EJS8z3l2470pQ4\n\
    7iz1Xv6AVmk7nZCn51LlCoD/pD/Xugb7HtmlA8onhWS90QtGOwhUrWVP\n\
    -----END PRIVATE KEY-----\n\
    ";

    pub const CLIENT_CRT: &str = "\
    -----BEGIN CERTIFICATE-----\n\
    MIIBxDCCAWugAwIBAgIUBKdQy+OAt8lhczfnd4g67rxz9b0wCgYIKoZIzj0EAwIw\n\
    GzEZMBcGA1UEAwwQcG9kd2F0Y2gtdGVzdC1jYTAgFw0yNjExMjIxODExMDdaGA8y\n\
    MTI2MTAyOTE4MTEwN1owNDEVMBMGA1UECgwMc3lzdGVtOm5vZGVzMRswGQYDVQQD\n\
    DBJzeXN0ZW06bm9kZTpub2RlLTEwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAQe\n\
    LlGheIioz7gI17BQnXkEOYqWulQTVvoi7Yba3HWZez/CxF4YHZHzaKF2G9Sp5oA6\n\
    rjjWOzgMGmlQ71AyrpUBo3IwcDATBgNVHSUEDDAKBggrBgEFBQcDAjAJBgNVHRME\n\
    AjAAMA4GA1UdDwEB/wQEAwIHgDAdBgNVHQ4EFgQUcAFU4XW+d+Au/BcZZF4BM8qB\n\
    f/gwHwYDVR0jBBgwFoAUq9rtR+4W77vajB+Vc0hxaCel3UgwCgYIKoZIzj0EAwID\n\
    RwAwRAIgJj1UnGpLT8Xn8hTUrSAODuT0JFklAtxr5TXYQvL579ACIARruKjvOaqs\n\
    aQWICTK1nkGzHKPUHX6DRE22ObXTFa+W\n\
    -----END CERTIFICATE-----\n\
    ";

    pub const CLIENT_KEY: &str = "\
    -----BEGIN PRIVATE KEY-----\n\
    MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgMHr83QOaosQQZPZ/\n\
    MHL2+Ap4uX11U+CQRUBM0AAHrEmhRANCAAQeLlGheIioz7gI17BQnXkEOYqWulQT\n\
    Vvoi7Yba3HWZez/CxF4YHZHzaKF2G9Sp5oA6rjjWOzgMGmlQ71AyrpUB\n\
    -----END PRIVATE KEY-----\n\
    ";
}

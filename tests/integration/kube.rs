//! The Kubernetes pod source (`pods::kube::run`, kube-rs's client and
//! watcher) against a test double of the API server ([`crate::kube_api`]): no
//! real Kubernetes API server can run on this machine, so the double speaks
//! the real list/watch protocol and JSON, and the source runs in-process in
//! the test's tokio runtime.
//!
//! These tests need no root; each one finishes in well under a second, every
//! wait bounded by [`eventually`]'s 5 s.

use std::{
    path::Path,
    sync::{atomic::Ordering::Relaxed, Arc},
    time::Duration,
};

use base64::Engine as _;
use podwatch::pods::{kube as source, ContainerMeta, PodStore, Workload};
use serde_json::{json, Value};

use crate::kube_api::{certs, eventually, ApiDouble};

const NODE: &str = "node-1";

/// A Pod as the API server returns it; `owner` is its controller.
fn pod(uid: &str, name: &str, node: &str, owner: Option<(&str, &str)>, containers: &[(&str, &str)]) -> Value {
    let mut p = json!({
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {"uid": uid, "name": name, "namespace": "shop", "labels": {"app": name},
                     "creationTimestamp": "2026-11-22T10:00:00Z"},
        "spec": {"nodeName": node, "containers": containers.iter().map(|(n, _)| json!({"name": n, "image": "busybox"})).collect::<Vec<_>>()},
        "status": {"phase": "Running", "containerStatuses": containers.iter().map(|(n, id)| json!({
            "name": n, "containerID": format!("containerd://{id}"), "ready": true, "restartCount": 0,
            "image": "busybox", "state": {"running": {"startedAt": "2026-11-22T10:00:01Z"}}})).collect::<Vec<_>>()}
    });
    if let Some((kind, owner_name)) = owner {
        p["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": kind, "name": owner_name,
            "uid": format!("uid-{owner_name}"), "controller": true, "blockOwnerDeletion": true}]);
    }
    p
}

fn config(api: &ApiDouble) -> source::KubeConfig {
    source::KubeConfig {
        api_server: Some(api.url("http")),
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(100),
        request_timeout: Duration::from_secs(2),
        ..source::KubeConfig::new(NODE)
    }
}

/// Runs the source until the returned guard is dropped.
struct Running(tokio::task::JoinHandle<()>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn start(cfg: source::KubeConfig) -> (Arc<PodStore>, Running) {
    let store = Arc::new(PodStore::new("kubernetes"));
    let task = tokio::spawn(source::run(cfg, store.clone()));
    (store, Running(task))
}

fn workload(store: &PodStore, uid: &str) -> Option<Workload> {
    store.get(uid).and_then(|p| p.workload.clone())
}

fn w(kind: &str, name: &str) -> Option<Workload> {
    Some(Workload { kind: kind.into(), name: name.into() })
}

fn count(c: &std::sync::atomic::AtomicU64) -> u64 {
    c.load(Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_list_watch_and_workloads() {
    let api = ApiDouble::start(2).await;
    api.add_owner("ReplicaSet", "shop", "web-7d9f", Some(("Deployment", "web")));
    api.add_owner("Job", "shop", "backup-28900", Some(("CronJob", "backup")));
    api.add_owner("Job", "shop", "migrate", None);
    let mut web = pod("u-web", "web-7d9f-aaaaa", NODE, Some(("ReplicaSet", "web-7d9f")), &[("app", "c1")]);
    web["metadata"]["labels"]["pod-template-hash"] = json!("7d9f");
    web["status"]["initContainerStatuses"] = json!([{"name": "init", "containerID": "containerd://c0"}]);
    api.add_pod(web);
    api.add_pod(pod("u-backup", "backup-28900-x", NODE, Some(("Job", "backup-28900")), &[("job", "c2")]));
    api.add_pod(pod("u-migrate", "migrate-x", NODE, Some(("Job", "migrate")), &[("m", "c3")]));
    api.add_pod(pod("u-pg", "pg-0", NODE, Some(("StatefulSet", "pg")), &[("pg", "c4")]));
    api.add_pod(pod("u-static", "etcd-node-1", NODE, Some(("Node", NODE)), &[("etcd", "c5")]));
    // The ReplicaSet is gone (404): the pod-template-hash label still names the Deployment.
    let mut orphan = pod("u-api", "api-5c6b-bbbbb", NODE, Some(("ReplicaSet", "api-5c6b")), &[("api", "c6")]);
    orphan["metadata"]["labels"]["pod-template-hash"] = json!("5c6b");
    api.add_pod(orphan);
    // No owner, no containers, no status at all.
    api.add_pod(json!({"metadata": {"uid": "u-bare", "name": "bare", "namespace": "default"}, "spec": {"nodeName": NODE}}));
    api.add_pod(pod("u-elsewhere", "other", "node-2", None, &[("x", "c9")]));

    let (store, _run) = start(config(&api));
    eventually("the first list", || store.synced()).await;

    assert_eq!(store.live_count(), 7, "only this node's pods");
    assert!(store.get("u-elsewhere").is_none());
    let web = store.get("u-web").expect("web pod");
    assert_eq!((web.namespace.as_str(), web.name.as_str()), ("shop", "web-7d9f-aaaaa"));
    assert_eq!(web.labels.get("app").map(String::as_str), Some("web-7d9f-aaaaa"));
    assert_eq!(web.container_name("c1"), Some("app"));
    assert_eq!(web.container_name("c0"), Some("init"));
    assert_eq!(workload(&store, "u-web"), w("Deployment", "web"));
    assert_eq!(workload(&store, "u-backup"), w("CronJob", "backup"));
    assert_eq!(workload(&store, "u-migrate"), w("Job", "migrate"));
    assert_eq!(workload(&store, "u-pg"), w("StatefulSet", "pg"));
    assert_eq!(workload(&store, "u-static"), w("Node", NODE));
    assert_eq!(workload(&store, "u-api"), w("Deployment", "api"));
    let bare = store.get("u-bare").expect("bare pod");
    assert!(bare.workload.is_none() && bare.containers.is_empty() && bare.labels.is_empty());

    // One list with the node selector, served from the API server's cache
    // (resourceVersion=0, so unpaginated: the double's page size of 2 applies
    // to `limit` lists only, as the watch cache ignores it).
    let lists = api.lists();
    assert_eq!(lists.len(), 1, "{lists:?}");
    let list = &lists[0];
    assert_eq!(list.get("fieldSelector").map(String::as_str), Some("spec.nodeName=node-1"));
    assert_eq!(list.get("resourceVersion").map(String::as_str), Some("0"), "{list:?}");
    assert_eq!(list.get("resourceVersionMatch").map(String::as_str), Some("NotOlderThan"));
    assert!(!list.contains_key("limit") && !list.contains_key("continue"), "{list:?}");
    assert_eq!(count(&store.state.relists), 1);
    assert_eq!(count(&store.state.errors), 0);

    // The watch starts at the list's version and applies events.
    api.wait_watch(1).await;
    let first = &api.watches()[0];
    assert_eq!(first.get("resourceVersion").map(String::as_str), Some("108"));
    assert_eq!(first.get("allowWatchBookmarks").map(String::as_str), Some("true"));
    assert_eq!(first.get("fieldSelector").map(String::as_str), Some("spec.nodeName=node-1"));
    assert!(first.contains_key("timeoutSeconds"));
    assert!(!first.contains_key("sendInitialEvents"), "list then watch, not a streaming list");

    let mut web2 = pod("u-web2", "web-7d9f-ccccc", NODE, Some(("ReplicaSet", "web-7d9f")), &[("app", "c7")]);
    web2["metadata"]["labels"]["pod-template-hash"] = json!("7d9f");
    api.add_pod(web2);
    eventually("ADDED", || store.get("u-web2").is_some()).await;
    assert_eq!(workload(&store, "u-web2"), w("Deployment", "web"));
    let rs_gets = api.requests().iter().filter(|r| r.contains("/replicasets/web-7d9f")).count();
    assert_eq!(rs_gets, 1, "ReplicaSet lookups are cached");

    api.modify_pod("u-bare", |p| {
        p["status"] = json!({"containerStatuses": [{"name": "late", "containerID": "cri-o://c8"}]});
    });
    eventually("MODIFIED", || store.get("u-bare").is_some_and(|p| p.container_name("c8") == Some("late")))
        .await;
    assert_eq!(
        store.get("u-bare").map(|p| p.containers.clone()),
        Some(vec![ContainerMeta { id: "c8".into(), name: "late".into() }])
    );

    api.delete_pod("u-pg");
    eventually("DELETED", || store.is_deleted("u-pg")).await;
    assert!(store.get("u-pg").is_some(), "a deleted pod lingers for late events");
    api.add_pod(pod("u-elsewhere2", "other2", "node-2", None, &[]));
    assert_eq!(count(&store.state.events), 3);

    // A bookmark moves the version on; a normally ended stream is re-watched
    // from there, without a re-list.
    api.bookmark(5000);
    tokio::time::sleep(Duration::from_millis(50)).await;
    api.end_watch();
    api.wait_watch(2).await;
    let second = &api.watches()[1];
    assert_eq!(second.get("resourceVersion").map(String::as_str), Some("5000"));
    assert_eq!(count(&store.state.relists), 1);
    assert_eq!(count(&store.state.errors), 0);
    assert_eq!(count(&store.state.events), 3, "bookmarks are not pod events");
    assert!(store.get("u-elsewhere2").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_410_gone_relists() {
    let api = ApiDouble::start(100).await;
    api.add_pod(pod("u1", "one", NODE, None, &[("a", "c1")]));
    api.add_pod(pod("u2", "two", NODE, None, &[("b", "c2")]));
    let (store, _run) = start(config(&api));
    api.wait_watch(1).await;
    assert_eq!(count(&store.state.relists), 1);

    // Changes the client never saw, then "resourceVersion too old".
    api.add_pod_unseen(pod("u3", "three", NODE, None, &[("c", "c3")]));
    api.delete_pod_unseen("u2");
    api.watch_error(410);

    eventually("the re-list", || count(&store.state.relists) == 2).await;
    assert_eq!(store.get("u3").and_then(|p| p.container_name("c3").map(str::to_owned)), Some("c".into()));
    assert!(store.is_deleted("u2"), "missing from the re-list: deleted");
    assert!(!store.is_deleted("u1"));
    api.wait_watch(2).await;
    let lists = api.lists();
    assert_eq!(lists.len(), 2);
    // The re-list after 410 is served from the cache too.
    assert_eq!(lists[1].get("resourceVersion").map(String::as_str), Some("0"), "{lists:?}");
    assert_eq!(lists[1].get("resourceVersionMatch").map(String::as_str), Some("NotOlderThan"));
    assert_eq!(count(&store.state.errors), 0, "410 is the protocol, not an error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_errors_are_counted_and_recovered() {
    let api = ApiDouble::start(100).await;
    api.add_pod(pod("u1", "one", NODE, None, &[("a", "c1")]));
    // Two failing lists: counted, then the source recovers on its own.
    api.fail_lists(2);
    let (store, _run) = start(config(&api));
    eventually("recovery from two 500s", || store.synced()).await;
    assert_eq!(count(&store.state.errors), 2);
    assert_eq!(count(&store.state.relists), 1);
    api.wait_watch(1).await;

    // A garbage line: counted, then a re-list brings in what may have been missed.
    api.add_pod_unseen(pod("u2", "two", NODE, None, &[("b", "c2")]));
    api.send_raw("{\"type\": \"ADDED\", \"object\": {trunc");
    eventually("re-list after garbage", || count(&store.state.relists) == 2).await;
    assert_eq!(count(&store.state.errors), 3);
    assert!(store.get("u2").is_some());
    api.wait_watch(2).await;

    // A non-410 ERROR event, then a watch answered with 500.
    api.fail_watches(1);
    api.watch_error(500);
    eventually("re-list after ERROR and 500", || count(&store.state.relists) == 4).await;
    assert_eq!(count(&store.state.errors), 5);
    api.wait_watch(4).await;

    // An event that is JSON but not a watch event, and an unknown type.
    api.send_raw("[1, 2, 3]");
    eventually("re-list after a non-event", || count(&store.state.relists) == 5).await;
    api.wait_watch(5).await;
    api.send_raw("{\"type\": \"WHATEVER\", \"object\": {}}");
    eventually("re-list after an unknown type", || count(&store.state.relists) == 6).await;
    assert_eq!(count(&store.state.errors), 7);

    // Still fully working.
    api.wait_watch(6).await;
    api.add_pod(pod("u3", "three", NODE, None, &[("c", "c3")]));
    eventually("ADDED after recovery", || store.get("u3").is_some()).await;
    assert_eq!(count(&store.state.errors), 7);

    // A failing owner lookup is counted and the pod still gets a workload.
    api.add_pod(pod("u4", "four", NODE, Some(("ReplicaSet", "gone")), &[]));
    eventually("ADDED with a missing owner", || store.get("u4").is_some()).await;
    assert_eq!(workload(&store, "u4"), w("ReplicaSet", "gone"));
    assert_eq!(count(&store.state.errors), 7, "404: the owner is gone, not an error");
}

/// An owner lookup the API refuses (403: the ClusterRole lacks `get` on
/// replicasets) is counted once, the pod still gets its Deployment from the
/// `pod-template-hash` label, and that answer is cached: the node's other
/// pods of the same ReplicaSet cost no more GETs. Lookups ask for metadata
/// only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_owner_lookup_failure_falls_back_and_is_cached() {
    let api = ApiDouble::start(100).await;
    api.fail_owner_lookups(Some(403));
    for i in 0..3 {
        let mut p =
            pod(&format!("u{i}"), &format!("web-7d9f-{i}"), NODE, Some(("ReplicaSet", "web-7d9f")), &[]);
        p["metadata"]["labels"]["pod-template-hash"] = json!("7d9f");
        api.add_pod(p);
    }
    let (store, _run) = start(config(&api));
    eventually("the first list", || store.synced()).await;
    for i in 0..3 {
        assert_eq!(workload(&store, &format!("u{i}")), w("Deployment", "web"));
    }
    api.wait_watch(1).await;
    let mut p = pod("u3", "web-7d9f-3", NODE, Some(("ReplicaSet", "web-7d9f")), &[]);
    p["metadata"]["labels"]["pod-template-hash"] = json!("7d9f");
    api.add_pod(p);
    eventually("ADDED", || store.get("u3").is_some()).await;
    assert_eq!(workload(&store, "u3"), w("Deployment", "web"));
    let accepts = api.owner_accepts();
    assert_eq!(accepts.len(), 1, "one lookup for four pods: {accepts:?}");
    assert!(accepts[0].contains("as=PartialObjectMetadata"), "{accepts:?}");
    assert_eq!(count(&store.state.errors), 1, "the refused lookup is counted once");
    assert_eq!(count(&store.state.relists), 1, "a failed owner lookup fails no list");
}

fn write_kubeconfig(dir: &Path, server: &str, user: &str) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: test\n\
         contexts: [{{name: test, context: {{cluster: double, user: me}}}}]\n\
         clusters: [{{name: double, cluster: {{server: '{server}', certificate-authority: ca.crt}}}}]\n\
         users: [{{name: me, user: {user}}}]\n"
    );
    std::fs::write(&path, text).expect("write kubeconfig");
    std::fs::write(dir.join("ca.crt"), certs::CA_CRT).expect("write ca");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_tls_with_client_certificate_from_kubeconfig() {
    let api = ApiDouble::start_tls(100).await;
    api.add_pod(pod("u1", "one", NODE, None, &[("a", "c1")]));
    let dir = tempfile::tempdir().expect("tempdir");
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let user = format!(
        "{{client-certificate-data: '{}', client-key-data: '{}'}}",
        b64(certs::CLIENT_CRT),
        b64(certs::CLIENT_KEY)
    );
    let kubeconfig = write_kubeconfig(dir.path(), &api.url("https"), &user);
    let cfg = source::KubeConfig { kubeconfig: Some(kubeconfig), api_server: None, ..config(&api) };
    let (store, _run) = start(cfg);
    eventually("the list over TLS", || store.synced()).await;
    assert!(store.get("u1").is_some());
    api.wait_watch(1).await;
    api.add_pod(pod("u2", "two", NODE, None, &[]));
    eventually("a watch event over TLS", || store.get("u2").is_some()).await;
    assert_eq!(count(&store.state.errors), 0);

    // Without the client certificate the server refuses the handshake: counted, never synced.
    let dir2 = tempfile::tempdir().expect("tempdir");
    let cfg = source::KubeConfig {
        kubeconfig: Some(write_kubeconfig(dir2.path(), &api.url("https"), "{}")),
        api_server: None,
        ..config(&api)
    };
    let (store, _run2) = start(cfg);
    eventually("the refused handshake counted", || count(&store.state.errors) >= 2).await;
    assert!(!store.synced());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_token_file_is_reread_on_reconnect() {
    let api = ApiDouble::start(100).await;
    api.add_pod(pod("u1", "one", NODE, None, &[("a", "c1")]));
    api.require_token(Some("t1"));
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("token"), "t1\n").expect("token");
    // Credentials from the kubeconfig, server from the override.
    let kubeconfig = write_kubeconfig(dir.path(), "https://unused.invalid", "{tokenFile: token}");
    let cfg = source::KubeConfig { kubeconfig: Some(kubeconfig), ..config(&api) };
    let (store, _run) = start(cfg);
    api.wait_watch(1).await;
    assert!(store.synced());

    // The token rotates; the next watch connection must present the new one.
    std::fs::write(dir.path().join("token"), "t2\n").expect("token");
    api.require_token(Some("t2"));
    api.end_watch();
    api.wait_watch(2).await;
    api.add_pod(pod("u2", "two", NODE, None, &[]));
    eventually("an event after rotation", || store.get("u2").is_some()).await;
    assert_eq!(count(&store.state.errors), 0);
    assert_eq!(count(&store.state.relists), 1);
}

/// A kubeconfig whose user runs an exec credential plugin (as EKS, GKE and
/// AKS kubeconfigs do): the plugin's ExecCredential token is what the
/// double requires, on every request, across a re-list, from one client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_exec_credential_plugin_from_kubeconfig() {
    use std::os::unix::fs::PermissionsExt as _;

    let api = ApiDouble::start(100).await;
    api.add_owner("ReplicaSet", "shop", "web-7d9f", Some(("Deployment", "web")));
    api.add_pod(pod("u1", "web-7d9f-x", NODE, Some(("ReplicaSet", "web-7d9f")), &[("a", "c1")]));
    api.require_token(Some("exec-token-1"));
    let dir = tempfile::tempdir().expect("tempdir");
    let plugin = dir.path().join("credential-plugin.sh");
    let runs = dir.path().join("runs");
    std::fs::write(
        &plugin,
        format!(
            "#!/bin/sh\n\
             # The exec credential protocol: kubectl sets KUBERNETES_EXEC_INFO.\n\
             [ -n \"$KUBERNETES_EXEC_INFO\" ] || exit 3\n\
             echo run >> '{}'\n\
             echo '{{\"apiVersion\": \"client.authentication.k8s.io/v1\", \"kind\": \"ExecCredential\", \
             \"status\": {{\"token\": \"exec-token-1\"}}}}'\n",
            runs.display()
        ),
    )
    .expect("plugin");
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // A relative command with a path separator is relative to the kubeconfig.
    let user = "{exec: {apiVersion: client.authentication.k8s.io/v1, command: ./credential-plugin.sh, \
                args: [--cluster, test], interactiveMode: Never}}";
    let kubeconfig = write_kubeconfig(dir.path(), &api.url("http"), user);
    let cfg = source::KubeConfig { kubeconfig: Some(kubeconfig), api_server: None, ..config(&api) };
    let (store, _run) = start(cfg);
    eventually("the list with the plugin's token", || store.synced()).await;
    assert_eq!(workload(&store, "u1"), w("Deployment", "web"), "the owner lookup carries the token too");
    api.wait_watch(1).await;
    // kube-rs runs the plugin while it builds the client (for a token and
    // for a client certificate); a token without expirationTimestamp is then
    // kept. What must not happen is a new client, and a new run, per re-list.
    let runs_at_start = std::fs::read_to_string(&runs).expect("the plugin ran").lines().count();
    assert!(runs_at_start >= 1);
    api.add_pod_unseen(pod("u2", "two", NODE, None, &[]));
    api.watch_error(410);
    eventually("the re-list after 410", || count(&store.state.relists) == 2).await;
    api.wait_watch(2).await;
    api.add_pod(pod("u3", "three", NODE, None, &[]));
    eventually("a watch event", || store.get("u3").is_some()).await;
    assert!(store.get("u2").is_some());
    assert_eq!(count(&store.state.errors), 0);
    let tokens = api.request_tokens();
    assert!(tokens.len() >= 5 && tokens.iter().all(|t| t.as_deref() == Some("exec-token-1")), "{tokens:?}");
    let runs = std::fs::read_to_string(&runs).expect("the plugin ran").lines().count();
    assert_eq!(runs, runs_at_start, "one client for every re-list");
}

/// The read-everything cost: a node with 5,000 pods from 100 Deployments
/// (one ReplicaSet lookup each, then cached), from start to the first
/// complete list in the store. Prints the time for the README's figures;
/// the bound only catches a pathological regression.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_initial_list_of_5000_pods_timed() {
    const PODS: usize = 5000;
    const DEPLOYMENTS: usize = 100;
    let api = ApiDouble::start(500).await;
    for d in 0..DEPLOYMENTS {
        api.add_owner(
            "ReplicaSet",
            "shop",
            &format!("web{d}-7d9f"),
            Some(("Deployment", &format!("web{d}"))),
        );
    }
    for i in 0..PODS {
        let rs = format!("web{}-7d9f", i % DEPLOYMENTS);
        let mut p = pod(
            &format!("u{i:05}"),
            &format!("{rs}-{i:05}"),
            NODE,
            Some(("ReplicaSet", &rs)),
            &[("app", &format!("c{i:05}"))],
        );
        p["metadata"]["labels"]["pod-template-hash"] = json!("7d9f");
        api.add_pod(p);
    }
    let cfg = source::KubeConfig { api_server: Some(api.url("http")), ..source::KubeConfig::new(NODE) };
    let t0 = std::time::Instant::now();
    let (store, _run) = start(cfg);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !store.synced() {
        assert!(std::time::Instant::now() < deadline, "5,000 pods not listed within 60 s");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = t0.elapsed();
    assert_eq!(store.live_count(), PODS);
    assert_eq!(workload(&store, "u04999"), w("Deployment", "web99"));
    let lists = api.lists().len();
    let owner_gets = api.requests().iter().filter(|r| r.contains("/replicasets/")).count();
    eprintln!("initial list of {PODS} pods: {elapsed:?} ({lists} list requests, {owner_gets} owner lookups)");
}

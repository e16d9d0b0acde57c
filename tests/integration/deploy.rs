//! deploy/kustomize without a cluster: every variant renders with `kubectl
//! kustomize` and validates against the Kubernetes schemas offline
//! (`kubernetes-validate`); the RBAC grants exactly what the agent's pod
//! source calls (checked against a real run of the source); the DaemonSet's
//! ports, probes, args, env and mounts agree with the agent's own flags,
//! defaults and config loader; the copies the manifests ship stay equal to
//! their sources. No root needed. The image is run in image.rs.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
};

use clap::{Args as _, FromArgMatches as _};
use podwatch::{
    config::{MetadataConfig, RunArgs, DEFAULT_PORT},
    kernel::capabilities,
    pods::{kube as source, PodStore},
};
use serde_json::json;
use serde_yaml::Value;

use crate::{
    kube_api::{eventually, ApiDouble},
    manifests::{self, container, daemonset, kind, name, one, render, seq, str_of, tools, variants},
};

/// What the agent calls on the API server, as (API group, resource, verb):
/// exporter/src/pods/kube/ lists and watches this node's pods and GETs (as
/// metadata) a pod's ReplicaSet or Job to name its Deployment or CronJob.
const AGENT_CALLS: &[(&str, &str, &str)] =
    &[("", "pods", "list"), ("", "pods", "watch"), ("apps", "replicasets", "get"), ("batch", "jobs", "get")];

/// Kinds kubernetes-validate has no schema for (CRDs), checked here instead.
const CRD_KINDS: &[&str] = &["ServiceMonitor", "PrometheusRule"];

#[test]
fn deploy_every_variant_renders_and_validates_offline() {
    if !tools(&["kubectl", "kubernetes-validate"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let variants = variants();
    assert!(variants.len() >= 8, "base and the overlays: {variants:?}");
    for v in &variants {
        let (text, objects) = render(v);
        let file = dir.path().join(format!("{}.yaml", v.replace('/', "-")));
        std::fs::write(&file, &text).expect("write");
        let out = Command::new("kubernetes-validate").arg("--strict").arg(&file).output().expect("run");
        let report =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{v} does not validate:\n{report}");
        let passed =
            report.lines().filter(|l| l.starts_with("INFO") && l.contains(" passed for resource ")).count();
        let crds: Vec<&Value> = objects.iter().filter(|o| CRD_KINDS.contains(&kind(o))).collect();
        assert_eq!(
            passed + crds.len(),
            objects.len(),
            "{v}: every object must pass the schema check or be a known CRD kind:\n{report}"
        );
        for o in &objects {
            assert!(!name(o).is_empty(), "{v}: an object without a name");
            if kind(o) != "Namespace" && !kind(o).starts_with("Cluster") {
                assert_eq!(str_of(&o["metadata"]["namespace"]), "podwatch", "{v}: {} {}", kind(o), name(o));
            }
        }
        for crd in crds {
            check_crd(v, crd, &objects);
        }
    }
}

/// What the schema check cannot see in the Prometheus Operator objects.
fn check_crd(variant: &str, o: &Value, objects: &[Value]) {
    assert_eq!(str_of(&o["apiVersion"]), "monitoring.coreos.com/v1", "{variant}");
    if kind(o) == "ServiceMonitor" {
        let svc = one(objects, "Service");
        let selector = o["spec"]["selector"]["matchLabels"].as_mapping().expect("matchLabels");
        for (k, val) in selector {
            assert_eq!(&svc["metadata"]["labels"][k], val, "{variant}: ServiceMonitor selects the Service");
        }
        let ep = &o["spec"]["endpoints"][0];
        assert_eq!(str_of(&ep["port"]), "metrics");
        assert_eq!(str_of(&ep["path"]), "/metrics");
        let relabel = seq(&ep["relabelings"]);
        assert!(
            relabel.iter().any(|r| seq(&r["sourceLabels"])
                .iter()
                .any(|s| str_of(s) == "__meta_kubernetes_pod_node_name")
                && str_of(&r["targetLabel"]) == "node"),
            "{variant}: node label from __meta_kubernetes_pod_node_name"
        );
    } else {
        assert!(o["spec"]["groups"].is_sequence(), "{variant}: PrometheusRule has spec.groups");
    }
}

fn rbac_grants(objects: &[Value]) -> BTreeSet<(String, String, String)> {
    let mut grants = BTreeSet::new();
    for role in objects.iter().filter(|o| matches!(kind(o), "ClusterRole" | "Role")) {
        for rule in seq(&role["rules"]) {
            for g in seq(&rule["apiGroups"]) {
                for r in seq(&rule["resources"]) {
                    for verb in seq(&rule["verbs"]) {
                        grants.insert((
                            str_of(&g).to_owned(),
                            str_of(&r).to_owned(),
                            str_of(&verb).to_owned(),
                        ));
                    }
                }
            }
        }
        assert!(role["aggregationRule"].is_null(), "no aggregated roles");
    }
    grants
}

fn owned(calls: &[(&str, &str, &str)]) -> BTreeSet<(String, String, String)> {
    calls.iter().map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string())).collect()
}

/// (group, resource, verb) of a request the API double received.
pub(crate) fn call_of(target: &str) -> (String, String, String) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => panic!("not an API path: {target}"),
    };
    let rest = match rest {
        ["namespaces", _ns, rest @ ..] => rest,
        r => r,
    };
    let watch = query.split('&').any(|kv| kv == "watch=1" || kv == "watch=true");
    let (resource, verb) = match rest {
        [resource] if watch => (*resource, "watch"),
        [resource] => (*resource, "list"),
        [resource, _name] => (*resource, "get"),
        _ => panic!("unexpected API path {target}"),
    };
    (group.to_owned(), resource.to_owned(), verb.to_owned())
}

fn api_pod(uid: &str, name: &str, owner: (&str, &str)) -> serde_json::Value {
    json!({"kind": "Pod", "apiVersion": "v1",
        "metadata": {"uid": uid, "name": name, "namespace": "shop", "labels": {"app": name},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner.0, "name": owner.1,
                                          "uid": format!("uid-{}", owner.1), "controller": true}]},
        "spec": {"nodeName": "node-1", "containers": [{"name": "app", "image": "busybox"}]},
        "status": {"phase": "Running", "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0,
            "image": "busybox", "containerID": format!("containerd://{}", "ab".repeat(32))}]}})
}

/// The ClusterRole grants exactly what the agent's pod source calls when it
/// runs against the API double, and nothing else in any variant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_rbac_grants_only_what_the_agent_calls() {
    if !tools(&["kubectl"]) {
        return;
    }
    // What the pod source really requests, from a run against the double:
    // one pod from a Deployment's ReplicaSet, one from a CronJob's Job.
    let api = ApiDouble::start(100).await;
    api.add_owner("ReplicaSet", "shop", "web-5d8f", Some(("Deployment", "web")));
    api.add_owner("Job", "shop", "backup-2911", Some(("CronJob", "backup")));
    api.add_pod(api_pod("uid-a", "web-5d8f-x1", ("ReplicaSet", "web-5d8f")));
    api.add_pod(api_pod("uid-b", "backup-2911-y2", ("Job", "backup-2911")));
    let store = Arc::new(PodStore::new("kubernetes"));
    let cfg = source::KubeConfig { api_server: Some(api.url("http")), ..source::KubeConfig::new("node-1") };
    let task = tokio::spawn(source::run(cfg, store.clone()));
    let named =
        |uid: &str| store.get(uid).and_then(|p| p.workload.clone()).map(|w| format!("{}/{}", w.kind, w.name));
    eventually("both workloads named", || {
        named("uid-a").as_deref() == Some("Deployment/web")
            && named("uid-b").as_deref() == Some("CronJob/backup")
    })
    .await;
    api.wait_watch(1).await;
    task.abort();
    let called: BTreeSet<_> = api.requests().iter().map(|r| call_of(r)).collect();
    assert_eq!(
        called,
        owned(AGENT_CALLS),
        "the pod source's calls changed: update rbac.yaml and AGENT_CALLS"
    );

    let (_, base) = render("base");
    assert_eq!(rbac_grants(&base), owned(AGENT_CALLS), "base/rbac.yaml grants exactly what the agent calls");
    let binding = one(&base, "ClusterRoleBinding");
    assert_eq!(str_of(&binding["roleRef"]["name"]), name(one(&base, "ClusterRole")));
    let subject = &binding["subjects"][0];
    let ds = daemonset(&base);
    assert_eq!(str_of(&subject["name"]), str_of(&ds["spec"]["template"]["spec"]["serviceAccountName"]));
    assert_eq!(str_of(&subject["namespace"]), str_of(&ds["metadata"]["namespace"]));
    for v in variants() {
        let (_, objects) = render(&v);
        let grants = rbac_grants(&objects);
        assert!(grants.is_subset(&owned(AGENT_CALLS)), "{v} grants more than the agent calls: {grants:?}");
        if v.ends_with("metadata-none") {
            assert!(grants.is_empty(), "metadata-none grants nothing");
            assert!(!objects.iter().any(|o| kind(o).ends_with("RoleBinding")), "metadata-none binds nothing");
            let ds = daemonset(&objects);
            assert_eq!(ds["spec"]["template"]["spec"]["automountServiceAccountToken"], Value::Bool(false));
        }
    }
}

/// Writes every ConfigMap the DaemonSet mounts into `root` (kubelet's
/// layout) and returns `arg` with mount paths mapped into `root`.
fn map_mounts(ds: &Value, objects: &[Value], root: &Path) -> impl Fn(&str) -> String {
    let mut maps: Vec<(String, PathBuf)> = Vec::new();
    for o in objects.iter().filter(|o| kind(o) == "ConfigMap") {
        let has_volume = seq(&ds["spec"]["template"]["spec"]["volumes"])
            .iter()
            .any(|v| str_of(&v["configMap"]["name"]) == name(o));
        if !has_volume {
            continue;
        }
        let mount = manifests::config_map_mount(ds, name(o));
        let dir = root.join(name(o));
        manifests::write_config_map_volume(&dir, o, 1);
        maps.push((mount, dir));
    }
    move |arg: &str| {
        for (mount, dir) in &maps {
            if let Some(rest) = arg.strip_prefix(mount.as_str()) {
                return format!("{}{rest}", dir.display());
            }
        }
        arg.to_owned()
    }
}

/// The DaemonSet's args and env, parsed by the agent's own flag definitions
/// (env vars turned into the flags that read them), its config file loaded by
/// the agent's config code: what the agent would run with in the pod.
fn agent_config(v: &str, ds: &Value, objects: &[Value], root: &Path) -> podwatch::config::AgentConfig {
    let c = container(ds);
    let args: Vec<String> = seq(&c["args"]).iter().map(|a| str_of(a).to_owned()).collect();
    assert_eq!(args.first().map(String::as_str), Some("run"), "{v}: the container runs `podwatch run`");
    assert!(c["command"].is_null(), "{v}: the image's entrypoint is used");
    let cmd = RunArgs::augment_args(clap::Command::new("run").no_binary_name(true));
    let mut argv: Vec<String> = Vec::new();
    for e in seq(&c["env"]) {
        let env_name = str_of(&e["name"]);
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_env().is_some_and(|n| n == env_name))
            .unwrap_or_else(|| panic!("{v}: env {env_name} is read by no flag of `podwatch run`"));
        let value = if e["valueFrom"]["fieldRef"]["fieldPath"].as_str() == Some("spec.nodeName") {
            "node-from-downward-api".to_owned()
        } else {
            str_of(&e["value"]).to_owned()
        };
        argv.push(format!("--{}={value}", arg.get_long().expect("long flag")));
    }
    let mapped = map_mounts(ds, objects, root);
    argv.extend(args[1..].iter().map(|a| match a.split_once('=') {
        Some((flag, value)) => format!("{flag}={}", mapped(value)),
        None => mapped(a),
    }));
    // The test's own environment must not leak in: the pod has only its env.
    let cmd = cmd.mut_args(|a| a.env(None::<&str>));
    let matches = cmd.try_get_matches_from(&argv).unwrap_or_else(|e| panic!("{v}: {argv:?}: {e}"));
    let run = RunArgs::from_arg_matches(&matches).expect("RunArgs");
    run.resolve().unwrap_or_else(|e| panic!("{v}: the agent rejects the config: {e:#}"))
}

#[test]
fn deploy_daemonset_agrees_with_the_agent() {
    if !tools(&["kubectl"]) {
        return;
    }
    for v in variants() {
        let (_, objects) = render(&v);
        let ds = daemonset(&objects);
        let c = container(ds);
        let tmp = tempfile::tempdir().expect("tmp");
        let cfg = agent_config(&v, ds, &objects, tmp.path());

        // Port: the agent's default, the container's `metrics` port, the Service's.
        let ports = seq(&c["ports"]);
        let metrics = ports.iter().find(|p| str_of(&p["name"]) == "metrics").expect("a port named metrics");
        assert_eq!(metrics["containerPort"].as_u64(), Some(u64::from(DEFAULT_PORT)), "{v}");
        assert_eq!(cfg.listen.port(), DEFAULT_PORT, "{v}: the agent listens on the metrics port");
        assert!(cfg.listen.ip().is_unspecified(), "{v}: in its pod the agent listens on every pod address");
        let svc = one(&objects, "Service");
        let sp = &svc["spec"]["ports"][0];
        assert_eq!(str_of(&sp["name"]), "metrics");
        assert_eq!(sp["port"].as_u64(), Some(u64::from(DEFAULT_PORT)));
        assert_eq!(str_of(&sp["targetPort"]), "metrics");
        for (k, val) in svc["spec"]["selector"].as_mapping().expect("selector") {
            assert_eq!(
                &ds["spec"]["template"]["metadata"]["labels"][k], val,
                "{v}: the Service selects the pods"
            );
        }

        // Probes: the agent's paths (image.rs GETs them from the running image).
        for (probe, path) in
            [("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")]
        {
            assert_eq!(str_of(&c[probe]["httpGet"]["path"]), path, "{v}: {probe}");
            assert_eq!(str_of(&c[probe]["httpGet"]["port"]), "metrics", "{v}: {probe}");
        }

        // Config and policies: where the ConfigMaps are mounted.
        let config_cm = objects
            .iter()
            .find(|o| kind(o) == "ConfigMap" && name(o).starts_with("podwatch-config"))
            .expect("config ConfigMap");
        let config_mount = manifests::config_map_mount(ds, name(config_cm));
        let config_arg = manifests::config_arg(ds);
        assert_eq!(
            Path::new(&config_arg).parent().map(Path::to_path_buf),
            Some(PathBuf::from(&config_mount)),
            "{v}: --config points into the config ConfigMap"
        );
        let key = Path::new(&config_arg).file_name().and_then(|f| f.to_str()).expect("file");
        assert!(config_cm["data"][key].is_string(), "{v}: the config ConfigMap has {key}");
        let policy_mount = manifests::config_map_mount(ds, "podwatch-policies");
        assert_eq!(
            cfg.policy_dir.as_deref(),
            Some(Path::new(&policy_mount)),
            "{v}: policies.dir is where the policies ConfigMap is mounted"
        );
        // The policies load with the agent's own loader, from kubelet's layout.
        let policy_dir = tmp.path().join("podwatch-policies");
        let policies =
            podwatch::policy::load_dir(&policy_dir, podwatch::policy::Capabilities { bpf_lsm: false })
                .unwrap_or_else(|e| panic!("{v}: the policies ConfigMap does not load: {e}"));
        let kills = policies
            .iter()
            .flat_map(|p| &p.rules)
            .filter(|r| r.action == podwatch::policy::Action::Kill)
            .count();
        if v.ends_with("enforce") {
            assert!(kills > 0, "{v}: enforcement ships kill rules");
        } else {
            assert!(
                policies.iter().all(|p| p.name.starts_with("default-")),
                "{v}: the built-in default only"
            );
        }

        // Metadata source: the API server, except where there is none.
        match &cfg.metadata {
            MetadataConfig::Kubernetes { kubeconfig: None, api_server: None } => {
                assert!(!v.ends_with("metadata-none"), "{v}")
            }
            MetadataConfig::None => assert!(v.ends_with("metadata-none"), "{v}"),
            other => panic!("{v}: unexpected metadata source {other:?}"),
        }

        // Secrets: every credential file a sink reads is in a Secret volume.
        let secret_mounts: Vec<String> = seq(&c["volumeMounts"])
            .iter()
            .filter(|m| {
                seq(&ds["spec"]["template"]["spec"]["volumes"])
                    .iter()
                    .any(|vol| vol["name"] == m["name"] && vol["secret"].is_mapping())
            })
            .map(|m| str_of(&m["mountPath"]).to_owned())
            .collect();
        let mut files: Vec<PathBuf> = Vec::new();
        if let Some(l) = &cfg.sinks.loki {
            files.extend(l.basic_auth.iter().filter_map(|b| b.password_file.clone()));
            files.extend(l.bearer_token_file.clone());
            assert!(l.bearer_token.is_none() && l.basic_auth.iter().all(|b| b.password.is_none()), "{v}");
        }
        if let Some(k) = &cfg.sinks.kafka {
            files.extend(k.sasl.iter().filter_map(|s| s.password_file.clone()));
            files.extend(
                k.tls
                    .iter()
                    .flat_map(|t| [t.ca_file.clone(), t.cert_file.clone(), t.key_file.clone()])
                    .flatten(),
            );
            assert!(k.sasl.iter().all(|s| s.password.is_none()), "{v}");
        }
        if let Some(o) = &cfg.sinks.otlp {
            files.extend(
                o.tls
                    .iter()
                    .flat_map(|t| [t.ca_file.clone(), t.cert_file.clone(), t.key_file.clone()])
                    .flatten(),
            );
            assert!(o.headers.is_empty(), "{v}: OTLP headers would be in the ConfigMap");
        }
        let sinks = [cfg.sinks.loki.is_some(), cfg.sinks.kafka.is_some(), cfg.sinks.otlp.is_some()];
        if ["loki", "kafka", "otlp"].iter().any(|s| v.ends_with(s)) {
            assert_eq!(sinks.iter().filter(|s| **s).count(), 1, "{v}: its sink is configured");
            assert!(!files.is_empty(), "{v}: its sink authenticates");
        } else {
            assert_eq!(sinks, [false; 3], "{v}: no sink");
        }
        for f in files {
            assert!(
                secret_mounts.iter().any(|m| f.starts_with(m)),
                "{v}: {} is not in a Secret volume ({secret_mounts:?})",
                f.display()
            );
        }

        // The image is the one scripts/image.sh builds for this version.
        assert_eq!(str_of(&c["image"]), format!("podwatch:{}", env!("CARGO_PKG_VERSION")), "{v}");
    }
}

/// Least privilege in the default variants: not privileged, no capability
/// but what capabilities::NEEDS says the agent uses, every one a sensor
/// needs present, a read-only root. The privileged overlay is the exception.
#[test]
fn deploy_security_context_is_least_privilege() {
    if !tools(&["kubectl"]) {
        return;
    }
    for v in variants() {
        let (_, objects) = render(&v);
        let ds = daemonset(&objects);
        let pod = &ds["spec"]["template"]["spec"];
        let sc = &container(ds)["securityContext"];
        assert_eq!(pod["hostPID"], Value::Bool(true), "{v}");
        assert!(pod["hostNetwork"].is_null() || pod["hostNetwork"] == Value::Bool(false), "{v}");
        assert_eq!(sc["readOnlyRootFilesystem"], Value::Bool(true), "{v}");
        if v.ends_with("privileged") {
            assert_eq!(sc["privileged"], Value::Bool(true), "{v}");
            // The API server rejects privileged with allowPrivilegeEscalation: false.
            assert_ne!(sc["allowPrivilegeEscalation"], Value::Bool(false), "{v}");
            continue;
        }
        assert_eq!(sc["privileged"], Value::Bool(false), "{v}");
        assert_eq!(sc["allowPrivilegeEscalation"], Value::Bool(false), "{v}");
        let drop: Vec<&str> =
            sc["capabilities"]["drop"].as_sequence().expect("drop").iter().map(str_of).collect();
        assert_eq!(drop, ["ALL"], "{v}");
        let added: BTreeSet<String> =
            seq(&sc["capabilities"]["add"]).iter().map(|c| format!("CAP_{}", str_of(c))).collect();
        for cap in &added {
            assert!(
                capabilities::NEEDS.iter().any(|n| capabilities::name(n.cap) == cap),
                "{v}: {cap} is added but the agent does not say what it uses it for"
            );
        }
        // Every sensor on by default: the required ones and the sensors' own.
        for need in capabilities::NEEDS.iter().filter(|n| n.level != capabilities::Level::Detail) {
            let cap = capabilities::name(need.cap);
            assert!(added.contains(cap), "{v}: {cap} is needed ({})", need.cost);
        }
        assert!(!added.contains("CAP_SYS_ADMIN"), "{v}");
        // Every host path is mounted read-only.
        for m in seq(&container(ds)["volumeMounts"]) {
            let vol = seq(&pod["volumes"]).into_iter().find(|vol| vol["name"] == m["name"]).expect("volume");
            if vol["hostPath"].is_mapping() {
                assert_eq!(m["readOnly"], Value::Bool(true), "{v}: {}", str_of(&m["mountPath"]));
            }
        }
    }
}

/// What deploy/ copies (kustomize cannot read files outside its directory)
/// stays equal to its source.
#[test]
fn deploy_copies_match_their_sources() {
    let repo = manifests::repo();
    let k = manifests::kustomize_dir();
    let read = |p: PathBuf| std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert_eq!(read(k.join("base/policies-default.yaml")), read(repo.join("policies/builtin/default.yaml")));
    let enforce = k.join("components/enforce");
    let mut copied = 0;
    for e in std::fs::read_dir(&enforce).expect("enforce").flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n != "kustomization.yaml" {
            assert_eq!(read(e.path()), read(repo.join("policies").join(&n)), "{n}");
            copied += 1;
        }
    }
    assert_eq!(copied, 4);
    let base: Value = serde_yaml::from_str(&read(k.join("base/config.yaml"))).expect("base config");
    for sink in ["loki", "kafka", "otlp"] {
        let mut cfg: Value =
            serde_yaml::from_str(&read(k.join(format!("overlays/{sink}/config.yaml")))).expect("cfg");
        let sinks = cfg.as_mapping_mut().expect("mapping").remove("sinks").expect("sinks");
        assert_eq!(cfg, base, "overlays/{sink}/config.yaml is base/config.yaml plus sinks");
        assert!(sinks[sink].is_mapping(), "{sink}");
    }
}

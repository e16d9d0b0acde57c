//! The OCI image from scripts/image.sh, run with podman the way the
//! DaemonSet runs it: its mounts, env, args, capabilities, user, seccomp
//! profile, read-only root, limits and hostPID are all read from the
//! rendered manifest (`kubectl kustomize deploy/kustomize/base`), not
//! restated here. What kubelet adds is emulated: the service account volume
//! and KUBERNETES_SERVICE_* (pointing at the API double), the node name for
//! the downward API, and the ConfigMap volumes in kubelet's atomic-writer
//! layout (`..data` symlink swaps on update).
//!
//! Root, podman, buildah and kubectl are needed (scripts/setup.sh --test).
//! The image is built once per test run: scripts/test.sh builds it before
//! the tests (PODWATCH_IMAGE_BUILT=1); a bare `cargo test` builds it here.

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader},
    os::unix::process::ExitStatusExt,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Condvar, Mutex, OnceLock},
    time::{Duration, Instant},
};

use podwatch::{kernel::capabilities, pipeline::event::Event};
use serde_json::json;
use serde_yaml::Value;

use crate::{
    harness::{command_in, http_get, metric_sum, require_root, run, FakePod},
    kube_api::{certs, ApiDouble},
    manifests::{self, config_map, container, daemonset, kind, render, seq, str_of, tools},
};

const NODE: &str = "podwatch-image-test-node";
const TOKEN: &str = "image-test-service-account-token";

fn runnable() -> bool {
    tools(&["kubectl", "podman", "buildah"])
}

/// podman, always on runc here: crun refuses this machine's hybrid cgroups.
fn podman() -> Command {
    let mut c = Command::new("podman");
    c.args(["--runtime", "runc"]);
    c
}

/// The image, built by scripts/image.sh once per test run.
fn image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let tag = format!("localhost/podwatch:{}", env!("CARGO_PKG_VERSION"));
        if std::env::var("PODWATCH_IMAGE_BUILT").is_ok_and(|v| v == "1") {
            return tag;
        }
        let out = Command::new("bash")
            .arg(manifests::repo().join("scripts/image.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/image.sh");
        assert!(out.status.success(), "scripts/image.sh failed");
        let last = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_owned();
        assert_eq!(last, tag, "scripts/image.sh names the image it built on its last line");
        tag
    })
}

/// What kubelet would give the pod besides the manifest.
struct Kubelet<'a> {
    /// Service account directory (token, ca.crt, namespace) and the API
    /// server as KUBERNETES_SERVICE_HOST/PORT, with a hosts entry for it.
    api: Option<(&'a Path, &'a str, u16, &'a str)>,
    /// Where ConfigMap volumes are written.
    volumes: &'a Path,
    /// Capability to leave out of the manifest's list (the negative test).
    without_cap: Option<&'a str>,
}

/// `podman run` options for the DaemonSet's pod, from the manifest.
fn podman_options(ds: &Value, objects: &[Value], k: &Kubelet) -> Vec<String> {
    let pod = &ds["spec"]["template"]["spec"];
    let c = container(ds);
    let sc = &c["securityContext"];
    let mut o: Vec<String> = Vec::new();
    if pod["hostPID"] == Value::Bool(true) {
        o.push("--pid=host".into());
    }
    if pod["hostNetwork"] == Value::Bool(true) {
        o.push("--network=host".into());
    }
    if sc["privileged"] == Value::Bool(true) {
        o.push("--privileged".into());
    }
    for cap in seq(&sc["capabilities"]["drop"]) {
        o.push(format!("--cap-drop={}", str_of(&cap)));
    }
    for cap in seq(&sc["capabilities"]["add"]) {
        let cap = format!("CAP_{}", str_of(&cap));
        if k.without_cap != Some(cap.as_str()) {
            o.push(format!("--cap-add={cap}"));
        }
    }
    if sc["readOnlyRootFilesystem"] == Value::Bool(true) {
        // Kubernetes adds no tmpfs on a read-only root; podman would.
        o.extend(["--read-only".into(), "--read-only-tmpfs=false".into()]);
    }
    if let Some(uid) = sc["runAsUser"].as_u64() {
        let gid = sc["runAsGroup"].as_u64().unwrap_or(uid);
        o.push(format!("--user={uid}:{gid}"));
    }
    if sc["allowPrivilegeEscalation"] == Value::Bool(false) {
        o.push("--security-opt=no-new-privileges".into());
    }
    let seccomp =
        sc["seccompProfile"]["type"].as_str().or(pod["securityContext"]["seccompProfile"]["type"].as_str());
    match seccomp {
        // Kubernetes' default without a profile is Unconfined too.
        Some("Unconfined") | None => o.push("--security-opt=seccomp=unconfined".into()),
        Some("RuntimeDefault") => {}
        Some(other) => panic!("seccomp profile {other} is not emulated"),
    }
    let limits = &c["resources"]["limits"];
    if let Some(mem) = limits["memory"].as_str() {
        let mib = mem.strip_suffix("Mi").and_then(|m| m.parse::<u64>().ok()).expect("memory limit in Mi");
        o.push(format!("--memory={mib}m"));
    }
    if let Some(cpu) = limits["cpu"].as_str() {
        let cpus = match cpu.strip_suffix('m') {
            Some(milli) => milli.parse::<f64>().expect("cpu") / 1000.0,
            None => cpu.parse::<f64>().expect("cpu"),
        };
        o.push(format!("--cpus={cpus}"));
    }
    for e in seq(&c["env"]) {
        let value = match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            Some("spec.nodeName") => NODE.to_owned(),
            Some(other) => panic!("downward API field {other} is not emulated"),
            None => str_of(&e["value"]).to_owned(),
        };
        o.push(format!("--env={}={value}", str_of(&e["name"])));
    }
    let volumes = seq(&pod["volumes"]);
    for m in seq(&c["volumeMounts"]) {
        let vol = volumes.iter().find(|v| v["name"] == m["name"]).expect("mount's volume");
        let target = str_of(&m["mountPath"]);
        let ro = if m["readOnly"] == Value::Bool(true) { ":ro" } else { "" };
        let source = if let Some(cm) = vol["configMap"]["name"].as_str() {
            let dir = k.volumes.join(cm);
            manifests::write_config_map_volume(&dir, config_map(objects, cm), 1);
            dir.display().to_string()
        } else if let Some(p) = vol["hostPath"]["path"].as_str() {
            p.to_owned()
        } else {
            panic!("volume {} is neither a ConfigMap nor a hostPath", str_of(&vol["name"]))
        };
        o.push(format!("--volume={source}:{target}{ro}"));
    }
    if let Some((sa_dir, host, port, gateway)) = k.api {
        if pod["automountServiceAccountToken"] != Value::Bool(false) {
            o.push(format!("--volume={}:/var/run/secrets/kubernetes.io/serviceaccount:ro", sa_dir.display()));
        }
        o.push(format!("--env=KUBERNETES_SERVICE_HOST={host}"));
        o.push(format!("--env=KUBERNETES_SERVICE_PORT={port}"));
        o.push(format!("--add-host={host}:{gateway}"));
    }
    o
}

/// A container started with `podman run`, its stdout parsed as events.
struct Container {
    name: String,
    child: Child,
    events: Arc<(Mutex<Vec<Event>>, Condvar)>,
    stderr: Arc<Mutex<String>>,
}

impl Container {
    fn start(options: &[String], image: &str, args: &[String]) -> Container {
        let name = format!("podwatch-test-{}", crate::harness::uuid());
        let mut child = podman()
            .args(["run", "--rm", "--name", &name])
            .args(options)
            .arg(image)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("podman run");
        let events = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().expect("stdout");
        let ev = events.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(e) = serde_json::from_str::<Event>(&line) {
                    let (lock, cv) = &*ev;
                    lock.lock().expect("lock").push(e);
                    cv.notify_all();
                }
            }
        });
        let err = child.stderr.take().expect("stderr");
        let log = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut l = log.lock().expect("lock");
                l.push_str(&line);
                l.push('\n');
            }
        });
        Container { name, child, events, stderr }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("lock").clone()
    }

    /// The container's address in the pod network, once it has one.
    fn ip(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                panic!("the container exited ({s}) before it had an address:\n{}", self.stderr());
            }
            let out = podman()
                .args(["inspect", "--format", "{{.NetworkSettings.IPAddress}}", &self.name])
                .output()
                .expect("podman inspect");
            let ip = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if out.status.success() && !ip.is_empty() {
                return ip;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("no address for {}", self.name)
    }

    /// Waits until `path` answers 200 (the probes' view of readiness).
    fn wait_http_ok(&mut self, addr: &str, path: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                panic!("the agent exited ({s}) before {path} answered 200:\n{}", self.stderr());
            }
            if let Ok((200, _)) = http_get(addr, path) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "{path} on {addr} not 200 within {timeout:?}; last: {:?}\n{}",
            http_get(addr, path),
            self.stderr()
        );
    }

    fn expect_event(&self, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
        let deadline = Instant::now() + Duration::from_secs(30);
        let (lock, cv) = &*self.events;
        let mut guard = lock.lock().expect("lock");
        loop {
            if let Some(e) = guard.iter().find(|e| pred(e)) {
                return e.clone();
            }
            let now = Instant::now();
            if now >= deadline {
                panic!("no {what} event within 30 s ({} events seen)\n{}", guard.len(), self.stderr());
            }
            guard = cv.wait_timeout(guard, deadline - now).expect("wait").0;
        }
    }

    /// Waits for the container to exit by itself.
    fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the container did not exit within {timeout:?}:\n{}", self.stderr())
    }

    /// `podman stop` (SIGTERM, then SIGKILL after `grace`): how long it took.
    fn stop(&mut self, grace: u64) -> Duration {
        let t0 = Instant::now();
        let _ = podman().args(["stop", "--time", &grace.to_string(), &self.name]).output();
        let _ = self.child.wait();
        t0.elapsed()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = podman().args(["stop", "--time", "5", &self.name]).output();
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = podman().args(["rm", "--force", "--ignore", &self.name]).output();
    }
}

/// The podman bridge's gateway: the host as the containers reach it.
fn gateway() -> String {
    let out = podman().args(["network", "inspect", "podman"]).output().expect("podman network inspect");
    assert!(out.status.success(), "podman network inspect: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("network JSON");
    v[0]["subnets"][0]["gateway"].as_str().expect("gateway").to_owned()
}

fn args_of(ds: &Value) -> Vec<String> {
    seq(&container(ds)["args"]).iter().map(|a| str_of(a).to_owned()).collect()
}

fn metrics_port(ds: &Value) -> u64 {
    seq(&container(ds)["ports"])
        .iter()
        .find(|p| str_of(&p["name"]) == "metrics")
        .and_then(|p| p["containerPort"].as_u64())
        .expect("metrics port")
}

fn probe_path(ds: &Value, probe: &str) -> String {
    str_of(&container(ds)[probe]["httpGet"]["path"]).to_owned()
}

/// Polls /metrics until `family` with `labels` reaches `min`.
fn wait_metric(c: &mut Container, addr: &str, family: &str, labels: &[(&str, &str)], min: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = None;
    while Instant::now() < deadline {
        if let Ok((200, body)) = http_get(addr, "/metrics") {
            last = metric_sum(&body, family, labels);
            if last.is_some_and(|v| v >= min) {
                return last.unwrap_or_default();
            }
        }
        if let Ok(Some(s)) = c.child.try_wait() {
            panic!("the agent exited ({s}):\n{}", c.stderr());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{family}{labels:?} did not reach {min} within 30 s (last {last:?})")
}

#[test]
fn image_holds_only_what_it_needs() {
    require_root!();
    if !runnable() {
        return;
    }
    let image = image();
    let out = podman().args(["create", image]).output().expect("podman create");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let tar = podman().args(["export", &id]).output().expect("podman export");
    let _ = podman().args(["rm", "--force", &id]).output();
    assert!(tar.status.success());
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("image.tar"), &tar.stdout).expect("write tar");
    let list = Command::new("tar").arg("-tf").arg(dir.path().join("image.tar")).output().expect("tar");
    let files: BTreeSet<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter(|l| !l.ends_with('/'))
        .map(|l| l.trim_start_matches("./").to_owned())
        .collect();
    let expected_fixed = [
        "usr/bin/podwatch",
        "etc/ssl/certs/ca-certificates.crt",
        "usr/share/podwatch/policies/default.yaml",
        "etc/nsswitch.conf",
    ];
    for f in expected_fixed {
        assert!(files.contains(f), "{f} missing from the image: {files:?}");
    }
    // The rest are the shared objects the binary links, and nothing else:
    // the loader's own list of them, read from the binary in the image.
    let root = dir.path().join("root");
    std::fs::create_dir(&root).expect("mkdir");
    let x = Command::new("tar")
        .arg("-xf")
        .arg(dir.path().join("image.tar"))
        .arg("-C")
        .arg(&root)
        .status()
        .expect("tar x");
    assert!(x.success());
    let ldd = Command::new("ldd").arg(root.join("usr/bin/podwatch")).output().expect("ldd");
    let linked: BTreeSet<String> = String::from_utf8_lossy(&ldd.stdout)
        .lines()
        .filter_map(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            match parts.as_slice() {
                [_, "=>", path, ..] if path.starts_with('/') => Some(path.trim_start_matches('/').to_owned()),
                [path, ..] if path.starts_with('/') => Some(path.trim_start_matches('/').to_owned()),
                _ => None,
            }
        })
        .collect();
    assert!(!linked.is_empty(), "ldd found no libraries: {}", String::from_utf8_lossy(&ldd.stdout));
    let rest: BTreeSet<String> =
        files.iter().filter(|f| !expected_fixed.contains(&f.as_str())).cloned().collect();
    assert_eq!(rest, linked, "the image holds exactly the binary's shared objects");
    assert!(!files.iter().any(|f| f.ends_with("/sh") || f.ends_with("busybox")), "no shell in the image");
}

/// The DaemonSet's pod, emulated with podman: ready, events and per-pod
/// counters for a real process in a fake pod, a policy ConfigMap update
/// reloaded in place, its kill rule killing, RBAC covering every request,
/// and a clean stop within the grace period.
#[test]
fn image_runs_as_the_daemonset_says() {
    require_root!();
    if !runnable() {
        return;
    }
    let image = image();
    let (_, base) = render("base");
    let (_, enforce) = render("overlays/enforce");
    let ds = daemonset(&base);
    assert_eq!(
        manifests::container(daemonset(&enforce)),
        container(ds),
        "the enforce overlay runs the same container; only the policies differ"
    );
    let image_ref = str_of(&container(ds)["image"]).to_owned();
    assert_eq!(
        format!("localhost/{image_ref}"),
        image,
        "the DaemonSet runs the image scripts/image.sh builds"
    );

    // The API server (a double speaking the real protocol over TLS with the
    // service account token) knows one pod on this node: a Deployment's.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    let api = rt.block_on(ApiDouble::start_in_cluster(100));
    api.require_token(Some(TOKEN));
    let pod = FakePod::systemd("burstable");
    let pod_name = "web-5d8f-image";
    api.add_owner("ReplicaSet", "default", "web-5d8f", Some(("Deployment", "web")));
    api.add_pod(json!({"kind": "Pod", "apiVersion": "v1",
        "metadata": {"uid": pod.uid, "name": pod_name, "namespace": "default", "labels": {"app": "web"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d8f",
                                          "uid": "uid-web-5d8f", "controller": true}]},
        "spec": {"nodeName": NODE, "containers": [{"name": "app", "image": "web"}]},
        "status": {"phase": "Running", "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0,
            "image": "web", "containerID": format!("containerd://{}", pod.container_id)}]}}));

    let tmp = tempfile::tempdir().expect("tmp");
    let sa = tmp.path().join("serviceaccount");
    std::fs::create_dir(&sa).expect("mkdir");
    std::fs::write(sa.join("token"), TOKEN).expect("token");
    std::fs::write(sa.join("ca.crt"), certs::CA_CRT).expect("ca");
    std::fs::write(sa.join("namespace"), "podwatch").expect("ns");
    let gw = gateway();
    let volumes = tmp.path().join("volumes");
    let kubelet = Kubelet {
        api: Some((&sa, "kubernetes", api.addr.port(), &gw)),
        volumes: &volumes,
        without_cap: None,
    };
    let options = podman_options(ds, &base, &kubelet);
    let mut c = Container::start(&options, image, &args_of(ds));
    let addr = format!("{}:{}", c.ip(), metrics_port(ds));

    // Ready as the probes see it, from the pod network.
    c.wait_http_ok(&addr, &probe_path(ds, "startupProbe"), Duration::from_secs(60));
    c.wait_http_ok(&addr, &probe_path(ds, "readinessProbe"), Duration::from_secs(120));
    c.wait_http_ok(&addr, &probe_path(ds, "livenessProbe"), Duration::from_secs(5));

    // A real process in the fake pod: events named from the API server.
    let in_pod = |e: &Event| e.pod.as_ref().is_some_and(|p| p.uid == pod.uid);
    let (_, st) = run(command_in(Some(&pod.cgroup), "/bin/cat", &["/etc/passwd"]));
    assert!(st.success());
    let exec = c.expect_event("exec in the pod", |e| in_pod(e) && e.kind.as_str() == "exec");
    let p = exec.pod.as_ref().expect("pod");
    assert_eq!(p.name.as_deref(), Some(pod_name));
    assert_eq!(p.namespace.as_deref(), Some("default"));
    assert_eq!(&*exec.node, NODE, "node name from the downward API env");
    c.expect_event("file read in the pod", |e| {
        in_pod(e) && e.kind.as_str() == "file" && e.file.as_ref().is_some_and(|f| f.path == "/etc/passwd")
    });
    let labels = [("namespace", "default"), ("pod", pod_name), ("workload", "deployment/web")];
    wait_metric(&mut c, &addr, "podwatch_exec_total", &labels, 1.0);
    wait_metric(&mut c, &addr, "podwatch_file_access_total", &labels, 1.0);

    // The base policies only log: reading /etc/shadow is allowed.
    let (_, st) = run(command_in(Some(&pod.cgroup), "/bin/cat", &["/etc/shadow"]));
    assert!(st.success(), "observe-only policies do not kill: {st:?}");

    // Update the policies ConfigMap to the enforce overlay's, as kubelet
    // does (new data directory, `..data` swapped): the agent reloads it.
    let policies_cm = config_map(&enforce, "podwatch-policies");
    let policy_dir = volumes.join("podwatch-policies");
    manifests::write_config_map_volume(&policy_dir, policies_cm, 2);
    let want = podwatch::policy::load_dir(&policy_dir, podwatch::policy::Capabilities { bpf_lsm: false })
        .expect("enforce policies load")
        .len();
    wait_metric(&mut c, &addr, "podwatch_policies_loaded", &[], want as f64);

    let (pid, st) = run(command_in(Some(&pod.cgroup), "/bin/cat", &["/etc/shadow"]));
    assert_eq!(st.signal(), Some(libc::SIGKILL), "the kill rule from the ConfigMap kills: {st:?}");
    let kill = c.expect_event("kill", |e| e.process.pid == pid && e.action.as_deref() == Some("kill"));
    assert_eq!(kill.policy.as_deref(), Some("sensitive-files-enforce"));

    // Every request the agent made is granted by the rendered RBAC.
    let grants: BTreeSet<(String, String, String)> = base
        .iter()
        .filter(|o| kind(o) == "ClusterRole")
        .flat_map(|r| seq(&r["rules"]))
        .flat_map(|rule| {
            let mut v = Vec::new();
            for g in seq(&rule["apiGroups"]) {
                for r in seq(&rule["resources"]) {
                    for verb in seq(&rule["verbs"]) {
                        v.push((str_of(&g).to_owned(), str_of(&r).to_owned(), str_of(&verb).to_owned()));
                    }
                }
            }
            v
        })
        .collect();
    let requests = api.requests();
    assert!(
        requests.iter().any(|r| r.contains("/replicasets/web-5d8f")),
        "the workload was looked up: {requests:?}"
    );
    for r in &requests {
        let call = crate::deploy::call_of(r);
        assert!(grants.contains(&call), "request {r} ({call:?}) is not granted by rbac.yaml");
    }

    // SIGTERM: the agent stops within the grace period.
    let grace = ds["spec"]["template"]["spec"]["terminationGracePeriodSeconds"].as_u64().expect("grace");
    let took = c.stop(grace);
    assert!(took < Duration::from_secs(grace), "stopping took {took:?}");
    assert!(c.stderr().contains("stopped"), "a clean stop:\n{}", c.stderr());
}

/// Each required capability removed from the manifest's list: the agent
/// refuses to start and names it (capabilities.rs), instead of an EPERM
/// from the loader.
#[test]
fn image_without_a_required_capability_names_it() {
    require_root!();
    if !runnable() {
        return;
    }
    let image = image();
    let (_, base) = render("base");
    let ds = daemonset(&base);
    let added: Vec<String> = seq(&container(ds)["securityContext"]["capabilities"]["add"])
        .iter()
        .map(|c| format!("CAP_{}", str_of(c)))
        .collect();
    let required: Vec<&str> = capabilities::NEEDS
        .iter()
        .filter(|n| n.level == capabilities::Level::Required)
        .map(|n| capabilities::name(n.cap))
        .filter(|n| added.iter().any(|a| a == n))
        .collect();
    assert!(required.len() >= 2, "CAP_BPF and CAP_PERFMON are in the manifest: {added:?}");
    let tmp = tempfile::tempdir().expect("tmp");
    for cap in required {
        let volumes = tmp.path().join(cap);
        let kubelet = Kubelet { api: None, volumes: &volumes, without_cap: Some(cap) };
        let options = podman_options(ds, &base, &kubelet);
        assert!(!options.iter().any(|o| o.ends_with(cap)), "{cap} left out: {options:?}");
        let mut c = Container::start(&options, image, &args_of(ds));
        let st = c.wait_exit(Duration::from_secs(60));
        // The stderr reader may still be draining after exit.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !c.stderr().contains("missing capability") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = c.stderr();
        assert!(!st.success(), "the agent must not run without {cap}");
        assert!(
            log.contains(&format!("missing capability {cap}: without {cap} ")),
            "the agent names {cap} and what it costs:\n{log}"
        );
        assert!(!log.contains("EPERM") && !log.contains("Operation not permitted"), "{log}");
    }

    // The manifest's seccompProfile: Unconfined left out, podman's default
    // profile refuses bpf(2) without CAP_SYS_ADMIN; the agent says so.
    let volumes = tmp.path().join("seccomp");
    let kubelet = Kubelet { api: None, volumes: &volumes, without_cap: None };
    let mut options = podman_options(ds, &base, &kubelet);
    let before = options.len();
    options.retain(|o| o != "--security-opt=seccomp=unconfined");
    assert_eq!(options.len() + 1, before, "the manifest asks for an unconfined seccomp profile");
    let mut c = Container::start(&options, image, &args_of(ds));
    let st = c.wait_exit(Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !c.stderr().contains("seccomp") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!st.success());
    let log = c.stderr();
    assert!(log.contains("bpf(2)") && log.contains("a seccomp filter blocks"), "{log}");
}

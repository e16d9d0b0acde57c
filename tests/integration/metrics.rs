//! Per-pod counters in the kernel, seen through /metrics and a real Prometheus.

use std::{
    io::Write,
    net::TcpListener,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use podwatch::pipeline::event::Kind;

use crate::harness::{
    http_get, metric_sum, pods_file, require_root, workload_in, Agent, FakePod, Prometheus,
};

/// Accepts and closes connections until the test ends.
fn sink_listener() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            drop(s);
        }
    });
    port
}

#[test]
fn prometheus_sees_exact_per_pod_counts() {
    require_root!();
    let dir = tempfile::tempdir().expect("tmp");
    let web = FakePod::systemd("burstable");
    let db = FakePod::cgroupfs("guaranteed");
    let pods = pods_file(
        dir.path(),
        &[
            (&web, "team-a", "web-1", Some(("Deployment", "web"))),
            (&db, "team-b", "db-0", Some(("StatefulSet", "db"))),
        ],
    );
    let agent = Agent::start_with(&["--output", "none", "--metadata-file", &pods]);
    let prom = Prometheus::start(&agent.addr);
    let port = sink_listener().to_string();

    // web: 5 + 1 + 1 execs, 7 reads, 3 connects. db: 2 + 1 + 1 execs, 2 reads, 5 connects.
    workload_in(&web.cgroup, &["exec", "4"]);
    workload_in(&web.cgroup, &["open", "7", "/etc/hostname"]);
    workload_in(&web.cgroup, &["connect", "3", &port]);
    workload_in(&db.cgroup, &["exec", "1"]);
    workload_in(&db.cgroup, &["open", "2", "/etc/hostname"]);
    workload_in(&db.cgroup, &["connect", "5", &port]);

    prom.expect(
        r#"sum by (pod) (podwatch_exec_total{namespace=~"team-.*"})"#,
        "pod",
        &[("web-1", 7.0), ("db-0", 4.0)],
    );
    prom.expect(
        r#"sum by (pod) (podwatch_file_access_total{namespace=~"team-.*", operation="read", result="ok"})"#,
        "pod",
        &[("web-1", 7.0), ("db-0", 2.0)],
    );
    prom.expect(
        r#"sum by (pod) (podwatch_network_connections_total{namespace=~"team-.*", direction="egress", protocol="tcp", result="ok"})"#,
        "pod",
        &[("web-1", 3.0), ("db-0", 5.0)],
    );
    prom.expect(
        r#"sum by (namespace) (podwatch_exec_total{namespace=~"team-.*"})"#,
        "namespace",
        &[("team-a", 7.0), ("team-b", 4.0)],
    );
    prom.expect(
        r#"sum by (workload) (podwatch_exec_total{namespace=~"team-.*"})"#,
        "workload",
        &[("deployment/web", 7.0), ("statefulset/db", 4.0)],
    );
    prom.expect(
        r#"sum by (container) (podwatch_process_exits_total{namespace="team-a", reason="exit"})"#,
        "container",
        &[("app", 7.0)],
    );
}

#[test]
fn promtool_accepts_a_real_scrape() {
    require_root!();
    let agent = Agent::start_with(&["--output", "none"]);
    let pod = FakePod::systemd("besteffort");
    workload_in(&pod.cgroup, &["open", "3", "/etc/hostname"]);
    let body =
        agent.wait_metric("podwatch_file_access_total", &[("pod", &pod.uid), ("operation", "read")], 3.0);
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    promtool.stdin.take().expect("stdin").write_all(body.as_bytes()).expect("write");
    let out = promtool.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The pod's counters are there, labelled by uid without a metadata source.
    assert_eq!(
        metric_sum(&body, "podwatch_file_access_total", &[("pod", &pod.uid), ("operation", "read")]),
        Some(3.0)
    );
}

#[test]
fn tiny_ring_buffer_counters_stay_exact_and_losses_are_counted() {
    require_root!();
    // 4 KiB of ring buffer cannot hold a burst of 20000 opens.
    let agent = Agent::start_with(&["--ring-buffer-bytes", "4096"]);
    let pod = FakePod::cgroupfs("besteffort");
    let cg = pod.cgroup_id();
    const N: usize = 20_000;
    workload_in(&pod.cgroup, &["open", &N.to_string(), "/etc/hostname"]);

    let delivered = agent
        .drain(|e| {
            e.kind == Kind::File
                && e.cgroup.id == cg
                && e.file.as_ref().is_some_and(|f| f.path == "/etc/hostname")
        })
        .len();
    let (_, body) = http_get(&agent.addr, "/metrics").expect("scrape");
    let counted =
        metric_sum(&body, "podwatch_file_access_total", &[("pod", &pod.uid), ("operation", "read")]);
    let lost =
        metric_sum(&body, "podwatch_ringbuf_lost_records_total", &[("pod", &pod.uid), ("kind", "file")])
            .unwrap_or(0.0);
    assert_eq!(counted, Some(N as f64), "the kernel counter saw every open");
    assert!(lost > 0.0, "a 4 KiB ring buffer must have overflowed ({delivered} delivered)");
    // /etc/hostname is the only file this workload opens, so every file record
    // of the pod is one of the N opens.
    assert_eq!(delivered as f64 + lost, N as f64, "delivered {delivered} + lost {lost} == performed {N}");
}

#[test]
fn deleted_pod_series_go_after_the_grace_period() {
    require_root!();
    let agent = Agent::start_with(&["--output", "none", "--deleted-pod-grace-seconds", "2"]);
    let uid = {
        let pod = FakePod::systemd("burstable");
        workload_in(&pod.cgroup, &["exec", "2"]);
        agent.wait_metric("podwatch_exec_total", &[("pod", &pod.uid)], 3.0);
        pod.uid.clone()
        // dropping the pod removes its cgroup, as kubelet does
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = http_get(&agent.addr, "/metrics").expect("scrape");
        if metric_sum(&body, "podwatch_exec_total", &[("pod", &uid)]).is_none() {
            break;
        }
        assert!(Instant::now() < deadline, "series of the deleted pod still there after 20 s");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The agent watching a Kubernetes API (the test double of `kube_api`: no real
/// API server runs here) labels a pod's series with its names and workload,
/// and a watch DELETED removes them after the grace period even though the
/// pod's cgroup is still there.
#[test]
fn kubernetes_deleted_pod_loses_its_series_after_grace() {
    require_root!();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let api = rt.block_on(crate::kube_api::ApiDouble::start(100));
    let pod = FakePod::systemd("burstable");
    api.add_owner("ReplicaSet", "shop", "api-7d9f6c", Some(("Deployment", "api")));
    api.add_pod(serde_json::json!({
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {"uid": pod.uid, "name": "api-7d9f6c-x2x4q", "namespace": "shop",
                     "labels": {"app": "api", "pod-template-hash": "7d9f6c"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "api-7d9f6c",
                                          "uid": "uid-api-7d9f6c", "controller": true}]},
        "spec": {"nodeName": "node-e2e", "containers": [{"name": "server", "image": "busybox"}]},
        "status": {"phase": "Running", "containerStatuses": [
            {"name": "server", "containerID": format!("containerd://{}", pod.container_id), "ready": true}]}
    }));
    let url = api.url("http");
    let agent = Agent::start_with(&[
        "--output",
        "none",
        "--metadata-source",
        "kubernetes",
        "--kube-api-server",
        &url,
        "--node-name",
        "node-e2e",
        "--deleted-pod-grace-seconds",
        "2",
    ]);
    workload_in(&pod.cgroup, &["exec", "2"]);
    let labels = [
        ("namespace", "shop"),
        ("pod", "api-7d9f6c-x2x4q"),
        ("workload", "deployment/api"),
        ("container", "server"),
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = http_get(&agent.addr, "/metrics").expect("scrape");
        if metric_sum(&body, "podwatch_exec_total", &labels) == Some(3.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no labelled series: {}",
            body.lines().filter(|l| l.starts_with("podwatch_exec_total")).collect::<Vec<_>>().join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    api.delete_pod(&pod.uid);
    let deleted_at = Instant::now();
    loop {
        let (_, body) = http_get(&agent.addr, "/metrics").expect("scrape");
        if metric_sum(&body, "podwatch_exec_total", &[("pod", "api-7d9f6c-x2x4q")]).is_none() {
            break;
        }
        assert!(deleted_at.elapsed() < Duration::from_secs(20), "series still there 20 s after DELETED");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(deleted_at.elapsed() >= Duration::from_millis(1500), "series went before the 2 s grace period");
    assert!(pod.cgroup.exists(), "the cgroup is still there: deletion came from the API");
}

/// The kernel does not count exec and exit records as sent (every exec and
/// exit is counted and sent, so the agent derives them from those counts
/// and the losses): the derived figures are exact and match the events.
#[test]
fn exec_and_exit_records_sent_are_the_exec_and_exit_counts() {
    require_root!();
    let agent = Agent::start();
    let pod = FakePod::cgroupfs("burstable");
    // The workload and its four children: five execs, five exits.
    workload_in(&pod.cgroup, &["exec", "4"]);
    let pod_l = ("pod", pod.uid.as_str());
    agent.wait_metric("podwatch_exec_total", &[pod_l], 5.0);
    let m = agent.wait_metric("podwatch_process_exits_total", &[pod_l], 5.0);
    let records = |k: &str| metric_sum(&m, "podwatch_ringbuf_records_total", &[pod_l, ("kind", k)]);
    let lost = metric_sum(&m, "podwatch_ringbuf_lost_records_total", &[pod_l]).unwrap_or(0.0);
    assert_eq!(lost, 0.0, "nothing lost on a quiet ring");
    assert_eq!((records("exec"), records("exit")), (Some(5.0), Some(5.0)));
    let cg = pod.cgroup_id();
    let execs = agent.wait_n(5, Duration::from_secs(20), |e| e.kind == Kind::Exec && e.cgroup.id == cg);
    let exits = agent.wait_n(5, Duration::from_secs(20), |e| e.kind == Kind::Exit && e.cgroup.id == cg);
    assert_eq!((execs.len(), exits.len()), (5, 5));
}

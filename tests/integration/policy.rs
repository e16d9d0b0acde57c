//! Policies end to end: kill and deny against real processes in fake pods,
//! in-kernel filtering, and reloads under load.

use std::{
    os::unix::process::ExitStatusExt,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use podwatch::pipeline::event::Kind;

use crate::harness::{
    command_in, http_get, metric_sum, pods_file, require_root, run, run_fresh_binary, uuid, workload_in,
    Agent, FakePod, BIN,
};

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write policy");
}

fn policy(name: &str, selector: &str, rules: &str) -> String {
    format!("apiVersion: podwatch.dev/v1alpha1\nkind: Policy\nmetadata:\n  name: {name}\nspec:\n  selector: {selector}\n  rules:\n{rules}")
}

/// A policy directory holding one file, and an agent enforcing it with
/// `--events matched`. The directory must live as long as the agent.
fn agent_with_policy(name: &str, selector: &str, rules: &str) -> (tempfile::TempDir, Agent) {
    let dir = tempfile::tempdir().expect("tmp");
    write(dir.path(), "p.yaml", &policy(name, selector, rules));
    let agent =
        Agent::start_with(&["--events", "matched", "--policy-dir", &dir.path().display().to_string()]);
    (dir, agent)
}

fn scrape(agent: &Agent) -> String {
    http_get(&agent.addr, "/metrics").expect("scrape").1
}

#[test]
fn kill_policy_kills_readers_in_selected_pods_only() {
    require_root!();
    let dir = tempfile::tempdir().expect("tmp");
    let pols = dir.path().join("policies");
    std::fs::create_dir(&pols).expect("mkdir");
    write(
        &pols,
        "enforce.yaml",
        &policy(
            "shadow-enforce",
            "{namespaces: [prod]}",
            "  - name: kill-shadow-readers\n    action: kill\n    file: {exact: [/etc/shadow], operations: [read]}\n",
        ),
    );
    let prod = FakePod::systemd("burstable");
    let dev = FakePod::systemd("burstable");
    let pods = pods_file(dir.path(), &[(&prod, "prod", "api", None), (&dev, "dev", "api", None)]);
    let agent = Agent::start_with(&[
        "--events",
        "matched",
        "--policy-dir",
        &pols.display().to_string(),
        "--metadata-file",
        &pods,
    ]);

    // The reader in the selected pod dies of SIGKILL.
    let (pid, status) = run(command_in(Some(&prod.cgroup), "/bin/cat", &["/etc/shadow"]));
    assert_eq!(status.signal(), Some(9), "cat in prod: {status:?}");
    let e = agent.expect_one("kill event", |e| e.process.pid == pid && e.kind == Kind::File);
    assert_eq!(e.action.as_deref(), Some("kill"));
    assert_eq!(e.policy.as_deref(), Some("shadow-enforce"));
    assert_eq!(e.rule.as_deref(), Some("kill-shadow-readers"));
    assert_eq!(e.file.as_ref().map(|f| f.path.as_str()), Some("/etc/shadow"));
    assert_eq!(e.pod.as_ref().and_then(|p| p.namespace.as_deref()), Some("prod"));
    let exit =
        agent.expect_one("exit of the killed reader", |e| e.process.pid == pid && e.kind == Kind::Exit);
    assert_eq!(exit.exit.as_ref().and_then(|x| x.signal.clone()), Some("SIGKILL".into()));
    // The exit is not a policy match: no verdict carried over from the open.
    assert_eq!((exit.policy.as_deref(), exit.action.as_deref()), (None, None));

    // The same read in a pod the policy does not select is untouched.
    let (_, status) = run(command_in(Some(&dev.cgroup), "/bin/cat", &["/etc/shadow"]));
    assert_eq!(status.code(), Some(0), "cat in dev: {status:?}");
    // A write to /tmp in the selected pod is untouched too.
    let target = format!("/tmp/podwatch-{}", uuid());
    let (_, status) = run(command_in(Some(&prod.cgroup), "/bin/cp", &["/etc/hostname", &target]));
    assert_eq!(status.code(), Some(0), "cp in prod: {status:?}");
    assert!(Path::new(&target).exists());
    let _ = std::fs::remove_file(&target);

    let m = agent.wait_metric(
        "podwatch_enforcement_actions_total",
        &[("namespace", "prod"), ("policy", "shadow-enforce"), ("action", "kill")],
        1.0,
    );
    assert_eq!(metric_sum(&m, "podwatch_enforcement_actions_total", &[("namespace", "dev")]), None);
    assert_eq!(
        metric_sum(
            &m,
            "podwatch_policy_rule_matches_total",
            &[("policy", "shadow-enforce"), ("rule", "kill-shadow-readers")]
        ),
        Some(1.0)
    );
}

#[test]
fn deny_policy_refuses_connects_with_eperm() {
    require_root!();
    let dir = tempfile::tempdir().expect("tmp");
    let pols = dir.path().join("policies");
    std::fs::create_dir(&pols).expect("mkdir");
    let denied = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let allowed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let (dp, ap) = (denied.local_addr().expect("a").port(), allowed.local_addr().expect("a").port());
    write(
        &pols,
        "egress.yaml",
        &policy(
            "no-egress",
            "{allPods: true}",
            &format!("  - name: refuse\n    action: deny\n    network: {{cidrs: [127.0.0.0/8], ports: [{dp}], protocol: tcp}}\n"),
        ),
    );
    let pod = FakePod::cgroupfs("besteffort");
    let agent = Agent::start_with(&["--events", "matched", "--policy-dir", &pols.display().to_string()]);
    let script = format!(
        "import socket, sys\ntry:\n    socket.create_connection(('127.0.0.1', {dp}))\n    sys.exit(10)\nexcept PermissionError:\n    pass\nsocket.create_connection(('127.0.0.1', {ap})).close()\n"
    );
    let (pid, status) = run(command_in(Some(&pod.cgroup), "/usr/bin/python3", &["-c", &script]));
    assert_eq!(status.code(), Some(0), "denied connect must fail with EPERM, allowed one succeed");
    let e = agent.expect_one("denied connect", |e| e.process.pid == pid && e.kind == Kind::Connect);
    let n = e.network.as_ref().expect("network");
    assert_eq!((&*n.result, n.dst.port), ("EPERM", dp));
    assert_eq!(e.action.as_deref(), Some("deny"));
    // The same connect from the host (not selected) goes through.
    let host_script = format!("import socket\nsocket.create_connection(('127.0.0.1', {dp})).close()\n");
    let (_, status) = run(command_in(None, "/usr/bin/python3", &["-c", &host_script]));
    assert_eq!(status.code(), Some(0), "host is not selected");
    agent.wait_metric(
        "podwatch_network_connections_total",
        &[("pod", &pod.uid), ("action", "deny"), ("result", "error")],
        1.0,
    );
    drop((denied, allowed));
}

#[test]
fn opens_matching_no_policy_send_no_records_but_are_counted() {
    require_root!();
    let pod = FakePod::cgroupfs("burstable");
    let (_dir, agent) = agent_with_policy(
        "shadow-log",
        "{allPods: true}",
        "  - name: log-shadow\n    action: log\n    file: {exact: [/etc/shadow]}\n",
    );
    workload_in(&pod.cgroup, &["open", "500", "/etc/hostname"]);
    workload_in(&pod.cgroup, &["open", "3", "/etc/shadow"]);
    let pod_l = ("pod", pod.uid.as_str());
    let m = agent.wait_metric("podwatch_file_access_total", &[pod_l, ("operation", "read")], 503.0);
    // Only the three logged opens crossed to user space: the kernel counts
    // every record it sends, so this also proves no fourth event is on its way.
    assert_eq!(metric_sum(&m, "podwatch_ringbuf_records_total", &[pod_l, ("kind", "file")]), Some(3.0));
    let logged =
        agent.wait_n(3, Duration::from_secs(20), |e| e.kind == Kind::File && e.cgroup.id == pod.cgroup_id());
    assert_eq!(logged.len(), 3);
    assert!(logged.iter().all(|e| e.file.as_ref().is_some_and(|f| f.path == "/etc/shadow")));
    // The 500 unmatched opens are counted with no policy; the 3 under it.
    assert_eq!(
        metric_sum(&m, "podwatch_file_access_total", &[pod_l, ("policy", "shadow-log"), ("action", "log")]),
        Some(3.0)
    );
}

/// File suffix rules pass the kernel's two-byte prefilter before their trie:
/// a file whose name ends as a rule's suffix (a path suffix, a one-byte one)
/// is logged, others are only counted; after a reload the new set's suffixes
/// match and the old set's do not.
#[test]
fn suffix_rules_match_through_their_prefilter_and_follow_reloads() {
    require_root!();
    let files = tempfile::tempdir().expect("tmp");
    std::fs::create_dir(files.path().join(".ssh")).expect("mkdir");
    let path = |name: &str| {
        let p = files.path().join(name);
        std::fs::write(&p, "x\n").expect("write file");
        p.display().to_string()
    };
    let (key, backup, plain, pem) = (path(".ssh/id_rsa"), path("notes~"), path("hostname"), path("tls.pem"));
    let pod = FakePod::cgroupfs("burstable");
    let (dir, agent) = agent_with_policy(
        "suffixes",
        "{allPods: true}",
        "  - name: keys\n    action: log\n    file: {suffix: [/.ssh/id_rsa, \"~\"]}\n",
    );
    workload_in(&pod.cgroup, &["open", "2", &key]);
    workload_in(&pod.cgroup, &["open", "1", &backup]);
    workload_in(&pod.cgroup, &["open", "5", &plain]);
    workload_in(&pod.cgroup, &["open", "3", &pem]);
    let pod_l = ("pod", pod.uid.as_str());
    let m = agent.wait_metric("podwatch_file_access_total", &[pod_l, ("operation", "read")], 11.0);
    assert_eq!(metric_sum(&m, "podwatch_file_access_total", &[pod_l, ("policy", "suffixes")]), Some(3.0));
    assert_eq!(metric_sum(&m, "podwatch_ringbuf_records_total", &[pod_l, ("kind", "file")]), Some(3.0));
    let cg = pod.cgroup_id();
    let logged = agent.wait_n(3, Duration::from_secs(20), |e| e.kind == Kind::File && e.cgroup.id == cg);
    let mut paths: Vec<_> = logged.iter().filter_map(|e| e.file.as_ref().map(|f| f.path.clone())).collect();
    paths.sort();
    let mut want = vec![key.clone(), key.clone(), backup.clone()];
    want.sort();
    assert_eq!(paths, want);

    // Another set: `.pem` files, not keys.
    let reloads =
        |m: &str| metric_sum(m, "podwatch_policy_reloads_total", &[("result", "ok")]).unwrap_or(0.0);
    let before = reloads(&m);
    write(
        dir.path(),
        "p.yaml",
        &policy("certs", "{allPods: true}", "  - name: pem\n    action: log\n    file: {suffix: [.pem]}\n"),
    );
    // SAFETY: signalling our own child.
    unsafe { libc::kill(agent.pid() as i32, libc::SIGHUP) };
    let deadline = Instant::now() + Duration::from_secs(20);
    while reloads(&scrape(&agent)) < before + 1.0 {
        assert!(Instant::now() < deadline, "the reload did not happen");
        std::thread::sleep(Duration::from_millis(100));
    }
    workload_in(&pod.cgroup, &["open", "1", &key]);
    workload_in(&pod.cgroup, &["open", "2", &pem]);
    let m = agent.wait_metric("podwatch_file_access_total", &[pod_l, ("operation", "read")], 14.0);
    assert_eq!(metric_sum(&m, "podwatch_file_access_total", &[pod_l, ("policy", "certs")]), Some(2.0));
    // Two more records, the .pem opens: the key's open under the new set was not sent.
    assert_eq!(metric_sum(&m, "podwatch_ringbuf_records_total", &[pod_l, ("kind", "file")]), Some(5.0));
    let certs = agent.wait_n(2, Duration::from_secs(20), |e| {
        e.kind == Kind::File && e.cgroup.id == cg && e.policy.as_deref() == Some("certs")
    });
    assert!(certs.iter().all(|e| e.file.as_ref().is_some_and(|f| f.path == pem)));
}

#[test]
fn kill_on_exec_from_tmp() {
    require_root!();
    let pod = FakePod::systemd("besteffort");
    let (_dir, agent) = agent_with_policy(
        "no-tmp-exec",
        "{allPods: true}",
        "  - name: kill\n    action: kill\n    exec: {prefix: [/tmp/podwatch-exec-]}\n",
    );
    let bin = format!("/tmp/podwatch-exec-{}", uuid());
    std::fs::copy(crate::harness::workload(), &bin).expect("copy");
    let (pid, status) = run_fresh_binary(|| command_in(Some(&pod.cgroup), &bin, &["noop"]));
    let _ = std::fs::remove_file(&bin);
    assert_eq!(status.signal(), Some(9), "{status:?}");
    let e = agent.expect_one("exec kill", |e| e.process.pid == pid && e.kind == Kind::Exec);
    assert_eq!(e.action.as_deref(), Some("kill"));
}

/// Policies swapped again and again while two generators open files: every
/// open is judged by a complete set (one of the two), none by no policy, and
/// none is lost.
#[test]
fn reload_under_load_is_atomic_and_loses_nothing() {
    require_root!();
    let dir = tempfile::tempdir().expect("tmp");
    let set = |name: &str| {
        policy(
            name,
            "{allPods: true}",
            "  - name: hostname\n    action: log\n    file: {exact: [/etc/hostname]}\n  - name: hosts\n    action: log\n    file: {exact: [/etc/hosts]}\n",
        )
    };
    write(dir.path(), "p.yaml", &set("set-a"));
    let pod = FakePod::cgroupfs("burstable");
    let agent =
        Agent::start_with(&["--events", "matched", "--policy-dir", &dir.path().display().to_string()]);
    let agent_pid = agent.pid();
    let bin = crate::harness::workload().display().to_string();
    const N: usize = 4000;
    let mut gens: Vec<_> = ["/etc/hostname", "/etc/hosts"]
        .iter()
        // ~4 s each at 1 ms apart: long enough for dozens of swaps.
        .map(|p| {
            command_in(Some(&pod.cgroup), &bin, &["open", &N.to_string(), p, "1000"]).spawn().expect("spawn")
        })
        .collect();
    // Swap sets while they run: rewrite + SIGHUP, alternating names.
    let start = Instant::now();
    let mut swaps = 0;
    while gens.iter_mut().any(|g| g.try_wait().ok().flatten().is_none())
        && start.elapsed() < Duration::from_secs(30)
    {
        swaps += 1;
        write(dir.path(), "p.yaml", &set(if swaps % 2 == 0 { "set-a" } else { "set-b" }));
        // SAFETY: signalling our own child.
        unsafe { libc::kill(agent_pid as i32, libc::SIGHUP) };
        std::thread::sleep(Duration::from_millis(40));
    }
    for g in &mut gens {
        assert!(g.wait().expect("wait").success());
    }
    let cg = pod.cgroup_id();
    let m = agent.wait_metric(
        "podwatch_file_access_total",
        &[("pod", &pod.uid), ("operation", "read")],
        (2 * N) as f64,
    );
    // Generous: a loaded machine delivers late, and late is not lost.
    let events = agent.wait_n(2 * N, Duration::from_secs(60), |e| e.kind == Kind::File && e.cgroup.id == cg);
    if events.len() != 2 * N {
        let sent = metric_sum(
            &scrape(&agent),
            "podwatch_ringbuf_records_total",
            &[("pod", &pod.uid), ("kind", "file")],
        );
        eprintln!(
            "{} events arrived; the kernel sent {sent:?} file records; stats {}",
            events.len(),
            agent.stats()["stats"]
        );
    }
    let reloads = metric_sum(&m, "podwatch_policy_reloads_total", &[("result", "ok")]).unwrap_or(0.0);
    assert!(reloads >= 20.0, "only {reloads} reloads happened during the run ({swaps} swaps)");
    let lost = metric_sum(&m, "podwatch_ringbuf_lost_records_total", &[("pod", &pod.uid)]).unwrap_or(0.0);
    assert_eq!(lost, 0.0, "the ring buffer is large enough for this run");
    assert_eq!(events.len(), 2 * N, "every open was logged: none fell between two sets");
    for e in &events {
        assert!(matches!(e.policy.as_deref(), Some("set-a" | "set-b")), "judged by {:?}", e.policy);
        assert_eq!(e.action.as_deref(), Some("log"));
    }
    let policies: std::collections::BTreeSet<_> = events.iter().filter_map(|e| e.policy.clone()).collect();
    assert_eq!(policies.len(), 2, "both sets judged some opens: the swaps took effect");
    assert_eq!(
        metric_sum(&m, "podwatch_file_access_total", &[("pod", &pod.uid), ("operation", "read")]),
        Some((2 * N) as f64)
    );
}

#[test]
fn a_broken_reload_keeps_the_running_set() {
    require_root!();
    let pod = FakePod::cgroupfs("burstable");
    let (dir, agent) = agent_with_policy(
        "shadow-log",
        "{allPods: true}",
        "  - name: r\n    action: log\n    file: {exact: [/etc/shadow]}\n",
    );
    write(
        dir.path(),
        "broken.yaml",
        &policy("broken", "{}", "  - name: r\n    action: log\n    file: {exact: [/x]}\n"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric_sum(&scrape(&agent), "podwatch_policy_reloads_total", &[("result", "error")]).unwrap_or(0.0)
        < 1.0
    {
        assert!(Instant::now() < deadline, "the broken file was not noticed");
        std::thread::sleep(Duration::from_millis(200));
    }
    let pid = workload_in(&pod.cgroup, &["open", "1", "/etc/shadow"]);
    let e = agent.expect_one("open under the old set", |e| e.process.pid == pid && e.kind == Kind::File);
    assert_eq!(e.policy.as_deref(), Some("shadow-log"));
}

#[test]
fn policy_check_cli() {
    let dir = tempfile::tempdir().expect("tmp");
    write(
        dir.path(),
        "ok.yaml",
        &policy("fine", "{host: true}", "  - name: r\n    action: log\n    exec: {suffix: [/sh]}\n"),
    );
    let out = Command::new(BIN).args(["policy", "check"]).arg(dir.path()).output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    write(
        dir.path(),
        "zz-bad.yaml",
        &policy("bad", "{host: true}", "  - name: r\n    action: log\n    network: {cidrs: [300.1.1.1/8]}\n"),
    );
    let out = Command::new(BIN).args(["policy", "check"]).arg(dir.path()).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("zz-bad.yaml:") && err.contains("300.1.1.1/8"), "{err}");
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let out = Command::new(BIN).args(["policy", "check"]).arg(&shipped).output().expect("run");
    assert!(out.status.success(), "shipped examples: {}", String::from_utf8_lossy(&out.stderr));
}

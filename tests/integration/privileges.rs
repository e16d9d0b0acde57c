//! Credentials and namespaces: what an exec runs with, and before → after
//! for setuid/capset/unshare/setns and execs that change credentials, in
//! kubelet-shaped cgroups, with real tools (util-linux's setpriv, unshare,
//! nsenter) and the static workload. Kill rules are tried in a selected pod
//! and the same acts in another pod must go through.

use std::{os::unix::process::ExitStatusExt, path::Path};

use podwatch::pipeline::event::{Event, Kind};

use crate::harness::{command_in, metric_sum, pods_file, require_root, run, workload, Agent, FakePod};

fn policy(name: &str, selector: &str, rules: &str) -> String {
    format!("apiVersion: podwatch.dev/v1alpha1\nkind: Policy\nmetadata:\n  name: {name}\nspec:\n  selector: {selector}\n  rules:\n{rules}")
}

/// An agent with `--events matched`, the policies in `docs`, and static pod
/// metadata for `pods`. The directory must live as long as the agent.
fn agent(docs: &[String], pods: &[(&FakePod, &str)]) -> (tempfile::TempDir, Agent) {
    let dir = tempfile::tempdir().expect("tmp");
    let pols = dir.path().join("policies");
    std::fs::create_dir(&pols).expect("mkdir");
    for (i, d) in docs.iter().enumerate() {
        std::fs::write(pols.join(format!("p{i}.yaml")), d).expect("write policy");
    }
    let defs: Vec<_> = pods.iter().map(|(p, ns)| (*p, *ns, "app", None)).collect();
    let meta = pods_file(dir.path(), &defs);
    let agent = Agent::start_with(&[
        "--events",
        "matched",
        "--policy-dir",
        &pols.display().to_string(),
        "--metadata-file",
        &meta,
    ]);
    (dir, agent)
}

fn privilege(e: &Event) -> &podwatch::pipeline::event::PrivilegeChange {
    e.privilege.as_ref().expect("a privilege event has its change")
}

fn has(list: &[podwatch::pipeline::event::Name], item: &str) -> bool {
    list.iter().any(|c| c == item)
}

/// The test process's own network namespace: the host's (the test runs in
/// the root namespaces, as the agent does).
fn own_netns() -> String {
    format!("/proc/{}/ns/net", std::process::id())
}

#[test]
fn privilege_changes_are_reported_before_and_after() {
    require_root!();
    let pod = FakePod::systemd("burstable");
    let rules = "  - {name: every-change, action: log, privileges: {changes: [setuid, setgid, capset, unshare, setns, exec]}}\n\
                 \x20 - {name: runs-with-net-raw, action: log, privileges: {capabilitiesHeld: [CAP_NET_RAW], changes: [exec]}}\n";
    let (_dir, agent) =
        agent(&[policy("watch-privileges", "{namespaces: [shop]}", rules)], &[(&pod, "shop")]);
    let cg = Some(pod.cgroup.as_path());

    // An exec after dropping capabilities from the bounding set runs with the
    // reduced set, and the exec itself is a change (CAP_SYS_ADMIN lost).
    let (pid, st) = run(command_in(cg, "/usr/bin/setpriv", &["--bounding-set=-sys_admin", "/bin/true"]));
    assert!(st.success(), "setpriv --bounding-set: {st:?}");
    let e = agent.expect_one("exec of /bin/true with a reduced set", |e| {
        e.kind == Kind::Privilege
            && e.process.pid == pid
            && privilege(e).change == "exec"
            && e.rule.as_deref() == Some("every-change")
    });
    let p = privilege(&e);
    assert!(has(&p.before.capabilities_effective, "CAP_SYS_ADMIN"), "{p:?}");
    assert!(!has(&p.after.capabilities_effective, "CAP_SYS_ADMIN"), "{p:?}");
    assert!(has(&p.after.capabilities_effective, "CAP_CHOWN"), "{p:?}");
    assert!(has(&p.capabilities_lost, "CAP_SYS_ADMIN"), "{p:?}");
    assert_eq!(p.syscall, "execve");
    assert_eq!(e.pod.as_ref().and_then(|p| p.namespace.as_deref()), Some("shop"));
    assert_eq!((e.policy.as_deref(), e.rule.as_deref()), (Some("watch-privileges"), Some("every-change")));

    // To nobody and back: the effective capabilities leave with uid 0 and
    // come back with it; each step says before → after.
    let bin = workload().display().to_string();
    let (pid, st) = run(command_in(cg, &bin, &["regain-root"]));
    assert!(st.success(), "regain-root: {st:?}");
    let steps = agent.wait_n(2, std::time::Duration::from_secs(20), |e| {
        e.kind == Kind::Privilege && e.process.pid == pid && privilege(e).change == "setuid"
    });
    assert_eq!(steps.len(), 2, "two setresuid changes: {steps:?}");
    let (down, up) = (privilege(&steps[0]), privilege(&steps[1]));
    assert_eq!((&*down.syscall, &*down.result), ("setresuid", "ok"));
    assert_eq!((down.before.euid, down.after.euid, down.after.uid), (0, 65534, 0));
    assert!(has(&down.capabilities_lost, "CAP_SYS_ADMIN") && down.after.capabilities_effective.is_empty());
    assert_eq!((up.before.euid, up.after.euid), (65534, 0));
    // Each namespace is read from its own place: the ids are the ones /proc
    // shows (the workload runs in the test's namespaces).
    let nss = down.after.namespaces.clone().expect("namespaces");
    for (name, link) in [
        ("mnt", "mnt"),
        ("pid", "pid_for_children"),
        ("net", "net"),
        ("uts", "uts"),
        ("ipc", "ipc"),
        ("user", "user"),
        ("cgroup", "cgroup"),
    ] {
        use std::os::unix::fs::MetadataExt;
        let ino = std::fs::metadata(format!("/proc/self/ns/{link}")).expect("a namespace").ino();
        assert_eq!(nss.get(name).map(|&i| i as u64), Some(ino), "{name}: {nss:?}");
    }
    assert!(has(&up.capabilities_gained, "CAP_SYS_ADMIN"), "{up:?}");

    // Root given up for good: taking it back fails, and the attempt is an
    // event (a rule naming only `changes` meets failed calls) and a counter.
    let (pid, st) = run(command_in(cg, &bin, &["setuid-denied"]));
    assert!(st.success(), "setuid-denied: {st:?}");
    let e = agent.expect_one("the failed setuid(0)", |e| {
        e.kind == Kind::Privilege && e.process.pid == pid && privilege(e).syscall == "setuid"
    });
    let p = privilege(&e);
    assert_eq!((&*p.result, p.errno), ("EPERM", Some(1)), "{p:?}");
    assert_eq!((p.before.uid, p.after.uid, p.after.euid), (65534, 65534, 65534), "{p:?}");

    // setpriv to another user: real and effective ids change.
    let (pid, st) = run(command_in(
        cg,
        "/usr/bin/setpriv",
        &["--reuid=65534", "--regid=65534", "--clear-groups", "/bin/true"],
    ));
    assert!(st.success(), "setpriv --reuid: {st:?}");
    let e = agent.expect_one("setuid to nobody", |e| {
        e.kind == Kind::Privilege && e.process.pid == pid && privilege(e).change == "setuid"
    });
    let p = privilege(&e);
    assert_eq!((p.before.uid, p.after.uid, p.after.euid), (0, 65534, 65534), "{p:?}");

    // A new network namespace, then back into the host's: both name it.
    let netns = own_netns();
    let (pid, st) = run(command_in(
        cg,
        "/usr/bin/unshare",
        &["-n", "/usr/bin/nsenter", &format!("--net={netns}"), "/bin/true"],
    ));
    assert!(st.success(), "unshare -n nsenter: {st:?}");
    let un = agent.expect_one("unshare -n", |e| {
        e.kind == Kind::Privilege && e.process.pid == pid && privilege(e).change == "unshare"
    });
    let un = privilege(&un);
    assert_eq!(un.namespaces_changed, ["net"], "{un:?}");
    assert!(un.host_namespaces_entered.is_empty(), "{un:?}");
    let ns_of = |c: &podwatch::pipeline::event::Credentials| c.namespaces.clone().expect("namespaces")["net"];
    assert_ne!(ns_of(&un.before), ns_of(&un.after));
    assert!(has(&un.before.host_namespaces, "net") && !has(&un.after.host_namespaces, "net"), "{un:?}");
    let back = agent.expect_one("setns into the host's network namespace", |e| {
        e.kind == Kind::Privilege && e.process.pid == pid && privilege(e).change == "setns"
    });
    let back = privilege(&back);
    assert_eq!(back.namespaces_changed, ["net"], "{back:?}");
    assert_eq!(back.host_namespaces_entered, ["net"], "{back:?}");
    assert_eq!(ns_of(&back.after), ns_of(&un.before), "back in the namespace it started in");

    // Exec events carry what the process runs with; a capability rule on
    // execs matches a process that holds CAP_NET_RAW.
    let (pid, st) = run(command_in(cg, "/bin/true", &[]));
    assert!(st.success());
    let e = agent.expect_one("exec holding CAP_NET_RAW", |e| {
        e.kind == Kind::Privilege && e.process.pid == pid && e.rule.as_deref() == Some("runs-with-net-raw")
    });
    assert!(has(&privilege(&e).after.capabilities_effective, "CAP_NET_RAW"));

    // Per-pod counters, exact.
    agent.wait_metric(
        "podwatch_privilege_changes_total",
        &[("namespace", "shop"), ("change", "setuid"), ("result", "error")],
        1.0,
    );
    let m = agent.wait_metric(
        "podwatch_privilege_changes_total",
        &[("namespace", "shop"), ("change", "unshare"), ("result", "ok")],
        1.0,
    );
    assert_eq!(
        metric_sum(&m, "podwatch_privilege_changes_total", &[("namespace", "shop"), ("change", "setns")]),
        Some(1.0)
    );
    assert_eq!(
        metric_sum(&m, "podwatch_privilege_changes_total", &[("namespace", "shop"), ("result", "error")]),
        Some(1.0),
        "{m}"
    );
}

#[test]
fn exec_of_a_setuid_binary_reports_the_gain() {
    require_root!();
    let pod = FakePod::systemd("besteffort");
    let rules = "  - {name: gains-root, action: log, privileges: {uidBecomes: [0]}}\n";
    let (dir, agent) = agent(&[policy("escalation", "{allPods: true}", rules)], &[(&pod, "shop")]);
    // A root-owned setuid copy of the workload, run as nobody: setpriv keeps
    // its capabilities across setresuid, the shell's exec drops them, the
    // setuid exec brings them back with euid 0.
    let suid = dir.path().join("suid-workload");
    std::fs::copy(workload(), &suid).expect("copy");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).expect("chmod u+s");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    let suid = suid.display().to_string();
    let (pid, st) = run(command_in(
        Some(&pod.cgroup),
        "/usr/bin/setpriv",
        &["--reuid=65534", "--regid=65534", "--clear-groups", "/bin/sh", "-c", &format!("exec {suid} noop")],
    ));
    assert!(st.success(), "setuid exec: {st:?}");
    let e = agent.expect_one("exec of a setuid-root binary", |e| {
        e.kind == Kind::Privilege && e.process.pid == pid && privilege(e).change == "exec"
    });
    let p = privilege(&e);
    assert_eq!((p.before.uid, p.before.euid), (65534, 65534), "{p:?}");
    assert!(p.before.capabilities_effective.is_empty(), "{p:?}");
    assert_eq!((p.after.uid, p.after.euid), (65534, 0), "{p:?}");
    assert!(has(&p.capabilities_gained, "CAP_SYS_ADMIN"), "{p:?}");
    assert_eq!(e.rule.as_deref(), Some("gains-root"));
    assert!(Path::new(&suid).exists());
}

#[test]
fn privilege_kill_rules_kill_in_selected_pods_only() {
    require_root!();
    let prod = FakePod::systemd("burstable");
    let dev = FakePod::systemd("burstable");
    let rules = "  - {name: gains-sys-admin, action: kill, privileges: {capabilitiesGained: [CAP_SYS_ADMIN]}}\n\
                 \x20 - {name: joins-host-network, action: kill, privileges: {hostNamespacesEntered: [net]}}\n";
    let (_dir, agent) = agent(
        &[policy("privilege-escalation", "{namespaces: [prod]}", rules)],
        &[(&prod, "prod"), (&dev, "dev")],
    );
    let bin = workload().display().to_string();
    let netns = own_netns();
    let join_host = ["-n", "/usr/bin/nsenter", &format!("--net={netns}"), "/bin/true"];

    // In prod: regaining root is killed at the setresuid that brings
    // CAP_SYS_ADMIN back; joining the host's network namespace at setns.
    let (pid, st) = run(command_in(Some(&prod.cgroup), &bin, &["regain-root"]));
    assert_eq!(st.signal(), Some(9), "regain-root in prod: {st:?}");
    let e = agent.expect_one("kill at setresuid", |e| e.kind == Kind::Privilege && e.process.pid == pid);
    assert_eq!((e.action.as_deref(), e.rule.as_deref()), (Some("kill"), Some("gains-sys-admin")));
    let (pid, st) = run(command_in(Some(&prod.cgroup), "/usr/bin/unshare", &join_host));
    assert_eq!(st.signal(), Some(9), "nsenter into the host netns in prod: {st:?}");
    let e = agent.expect_one("kill at setns", |e| e.kind == Kind::Privilege && e.process.pid == pid);
    assert_eq!((e.action.as_deref(), e.rule.as_deref()), (Some("kill"), Some("joins-host-network")));
    assert_eq!(privilege(&e).host_namespaces_entered, ["net"]);

    // The same acts in dev go through.
    let (_, st) = run(command_in(Some(&dev.cgroup), &bin, &["regain-root"]));
    assert!(st.success(), "regain-root in dev: {st:?}");
    let (_, st) = run(command_in(Some(&dev.cgroup), "/usr/bin/unshare", &join_host));
    assert!(st.success(), "nsenter in dev: {st:?}");

    let m = agent.wait_metric(
        "podwatch_enforcement_actions_total",
        &[("namespace", "prod"), ("policy", "privilege-escalation"), ("action", "kill")],
        2.0,
    );
    assert_eq!(metric_sum(&m, "podwatch_enforcement_actions_total", &[("namespace", "dev")]), None);
    // dev's changes are counted, unmatched (setns into the host's, the regain).
    let m = agent.wait_metric(
        "podwatch_privilege_changes_total",
        &[("namespace", "dev"), ("change", "setns"), ("result", "ok"), ("action", "")],
        1.0,
    );
    assert_eq!(
        metric_sum(
            &m,
            "podwatch_privilege_changes_total",
            &[("namespace", "prod"), ("change", "setns"), ("action", "kill")]
        ),
        Some(1.0)
    );
}

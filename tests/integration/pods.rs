//! Pod attribution from kubelet-shaped cgroups (systemd and cgroupfs drivers).

use podwatch::pipeline::event::Kind;

use crate::harness::{bash_in, require_root, Agent, FakePod};

fn check_pod(agent: &Agent, pod: &FakePod) {
    let (bash, status) = bash_in(Some(&pod.cgroup), "/bin/cat /etc/hostname >/dev/null");
    assert!(status.success());
    // cat's own events (bash's child), all after bash moved into the pod; the
    // fork before the move (writing cgroup.procs) is rightly outside the pod.
    for (what, kind) in [("exec", Kind::Exec), ("file", Kind::File), ("exit", Kind::Exit)] {
        let e = agent.expect_one(what, |e| {
            e.kind == kind
                && e.process.parent.as_ref().is_some_and(|p| p.pid == bash)
                && (kind != Kind::File || e.file.as_ref().is_some_and(|f| f.path == "/etc/hostname"))
        });
        let p = e.pod.as_ref().unwrap_or_else(|| panic!("{what} event has no pod: {e:?}"));
        assert_eq!(p.uid, pod.uid);
        let c = p.container.as_ref().expect("container");
        assert_eq!(c.id, pod.container_id);
        assert_eq!(e.cgroup.id, pod.cgroup_id());
    }
}

#[test]
fn systemd_driver_pod_and_container() {
    require_root!();
    let agent = Agent::start();
    let pod = FakePod::systemd("besteffort");
    check_pod(&agent, &pod);
    let e = agent.expect_one("exec in pod", |e| e.kind == Kind::Exec && e.cgroup.id == pod.cgroup_id());
    let c = e.pod.and_then(|p| p.container.clone()).expect("container");
    assert_eq!(c.runtime.as_deref(), Some("containerd"));
}

#[test]
fn cgroupfs_driver_pod_and_container() {
    require_root!();
    let agent = Agent::start();
    let pod = FakePod::cgroupfs("burstable");
    check_pod(&agent, &pod);
}

#[test]
fn cgroup_created_after_start_and_gone_before_lookup() {
    require_root!();
    let agent = Agent::start();
    // Created, used and removed quickly: the cgroup_mkdir record is what lets
    // the agent still name the pod.
    let (uid, id, bash) = {
        let pod = FakePod::systemd("burstable");
        let (bash, _) = bash_in(Some(&pod.cgroup), "/bin/true");
        (pod.uid.clone(), pod.cgroup_id(), bash)
    };
    let e = agent.expect_one("exec in short-lived pod", |e| e.kind == Kind::Exec && e.process.pid == bash);
    assert_eq!(e.cgroup.id, id);
    assert_eq!(e.pod.map(|p| p.uid.clone()), Some(uid));
}

#[test]
fn unknown_cgroup_shapes_are_host_not_errors() {
    require_root!();
    let agent = Agent::start();
    let odd = FakePod::unknown_shape();
    let (bash, status) = bash_in(Some(&odd.cgroup), "/bin/true");
    assert!(status.success());
    let e = agent.expect_one("exec in odd cgroup", |e| e.kind == Kind::Exec && e.process.pid == bash);
    assert!(e.pod.is_none());
    assert!(e.cgroup.path.as_deref().is_some_and(|p| p.ends_with("/odd.scope")), "{:?}", e.cgroup);
}

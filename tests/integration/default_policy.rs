//! The built-in default policy does not flood: build-like file activity under
//! /root and /etc/passwd reads on the host are counted, not logged, while
//! credential files on the host and /etc/passwd inside a pod still are.

use std::time::{Duration, Instant};

use podwatch::pipeline::event::{Event, Kind};

use crate::harness::{bash_in, http_get, metric_sum, pods_file, require_root, uuid, Agent, FakePod};

fn file_path(e: &Event) -> &str {
    e.file.as_ref().map(|f| f.path.as_str()).unwrap_or_default()
}

#[test]
fn builtin_default_logs_credentials_not_build_noise() {
    require_root!();
    let dir = tempfile::tempdir().expect("tmp");
    let pod = FakePod::systemd("burstable");
    let pods = pods_file(dir.path(), &[(&pod, "shop", "xwing", None)]);
    // No --policy-dir: the built-in default, as a new user runs it.
    let agent = Agent::start_with(&["--events", "matched", "--metadata-file", &pods]);

    // What a build as root does under /root (the previous default logged every
    // one of these), then a credential read as a sentinel: events of one
    // process arrive in order, so once it is here the noise would be too.
    let cache = std::path::PathBuf::from(format!("/root/.cache/podwatch-quiet-{}", uuid()));
    let keys = dir.path().join("home/.ssh");
    std::fs::create_dir_all(&keys).expect("mkdir");
    std::fs::write(keys.join("id_ed25519"), "not a key\n").expect("key");
    let script = format!(
        "mkdir -p {c} && for i in $(seq 300); do echo x > {c}/f$i; cat {c}/f$i >/dev/null; done; \
         cat /etc/passwd >/dev/null; cat {k} >/dev/null",
        c = cache.display(),
        k = keys.join("id_ed25519").display()
    );
    let (script_pid, status) = bash_in(None, &script);
    let _ = std::fs::remove_dir_all(&cache);
    assert!(status.success(), "{status:?}");
    // The sentinel is the last thing the script does; the ring buffer keeps
    // submission order, so every earlier event has been read by then.
    let sentinel = agent.expect_one("the credential read on the host", |e| {
        e.kind == Kind::File && file_path(e).ends_with("/.ssh/id_ed25519")
    });
    assert_eq!(sentinel.rule.as_deref(), Some("credential-files"));
    assert_eq!(sentinel.action.as_deref(), Some("log"));
    let cache_prefix = format!("{}/", cache.display());
    // Only this script's processes (the shell and what it forks): tests
    // running beside this one make fake pods this agent has no metadata for
    // (pod absent, yet rightly judged as in a pod by the kernel), and their
    // reads of /etc/passwd are logged.
    let ours = |e: &Event| {
        e.process.pid == script_pid || e.process.parent.as_ref().is_some_and(|p| p.pid == script_pid)
    };
    let noise: Vec<String> = agent
        .wait_n(usize::MAX, Duration::ZERO, |e| {
            e.kind == Kind::File
                && (file_path(e).starts_with(&cache_prefix) || (file_path(e) == "/etc/passwd" && ours(e)))
        })
        .iter()
        .map(|e| {
            format!(
                "{} {} (pid {} parent {:?} cgroup {:?} policy {:?} rule {:?} action {:?})",
                e.process.comm,
                file_path(e),
                e.process.pid,
                e.process.parent.as_ref().map(|p| p.pid),
                e.cgroup.path,
                e.policy,
                e.rule,
                e.action
            )
        })
        .collect();
    assert!(noise.is_empty(), "the default logged build-like activity or /etc/passwd on the host: {noise:?}");

    // /etc/passwd in a pod ("which pod ran cat /etc/passwd") is an event.
    let (_, status) = bash_in(Some(&pod.cgroup), "cat /etc/passwd >/dev/null");
    assert!(status.success());
    let e = agent.expect_one("cat /etc/passwd in the pod", |e| {
        e.kind == Kind::File && file_path(e) == "/etc/passwd" && e.pod.is_some()
    });
    assert_eq!(e.rule.as_deref(), Some("account-files"));
    assert_eq!(e.pod.as_ref().and_then(|p| p.name.as_deref()), Some("xwing"));

    // On the host it is counted, exactly, in the kernel.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, m) = http_get(&agent.addr, "/metrics").expect("scrape");
        let counted = metric_sum(
            &m,
            "podwatch_file_access_total",
            &[("namespace", "host"), ("policy", "default-account-files-on-host"), ("action", "count")],
        );
        if counted.is_some_and(|v| v >= 1.0) {
            break;
        }
        assert!(Instant::now() < deadline, "no counted /etc/passwd read on the host: {counted:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

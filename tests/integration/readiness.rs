//! "Ready" means every loaded rule is enforced, and `podwatch probe` says
//! what this kernel offers. A program is forced off with the agent's
//! PODWATCH_SKIP_PROGRAMS, standing in for a kernel whose verifier refuses it.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::harness::{free_port, http_get, metric_sum, require_root, BIN};

const SHADOW_KILL: &str = "apiVersion: podwatch.dev/v1alpha1\nkind: Policy\nmetadata:\n  name: shadow\nspec:\n  selector: {allPods: true}\n  rules:\n  - name: kill-readers\n    action: kill\n    file: {exact: [/etc/shadow]}\n  - name: shells\n    action: log\n    exec: {suffix: [/sh]}\n";

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls /readyz until `pred(code, body)` holds; panics if the agent exits.
fn wait_readyz(agent: &mut Child, addr: &str, pred: impl Fn(u16, &str) -> bool) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(Some(status)) = agent.try_wait() {
            panic!("agent exited: {status}");
        }
        if let Ok((code, body)) = http_get(addr, "/readyz") {
            if pred(code, &body) {
                return (code, body);
            }
        }
        assert!(Instant::now() < deadline, "/readyz never reached the expected state");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_rule_whose_programs_did_not_attach_keeps_the_agent_not_ready() {
    require_root!();
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("p.yaml"), SHADOW_KILL).expect("write");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut agent = Killed(
        Command::new(BIN)
            .args(["run", "--listen", &addr, "--output", "none", "--log-level", "error"])
            .arg("--policy-dir")
            .arg(dir.path())
            .env("PODWATCH_SKIP_PROGRAMS", "sys_exit_openat")
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    let (code, body) = wait_readyz(&mut agent.0, &addr, |_, b| b.contains("not enforced"));
    assert_eq!(code, 503);
    let file = dir.path().join("p.yaml");
    assert_eq!(
        body.trim(),
        format!(
            "not ready: policy shadow rule kill-readers ({}) is not enforced: sys_exit_openat not attached (left out by PODWATCH_SKIP_PROGRAMS)",
            file.display()
        )
    );
    let m = http_get(&addr, "/metrics").expect("scrape").1;
    let want = [("policy", "shadow"), ("rule", "kill-readers"), ("program", "sys_exit_openat")];
    assert_eq!(metric_sum(&m, "podwatch_policy_rule_unenforced", &want), Some(1.0), "{m}");
    assert_eq!(metric_sum(&m, "podwatch_policy_rule_unenforced", &[("rule", "shells")]), None);
    assert_eq!(
        metric_sum(&m, "podwatch_sensor_attached", &[("sensor", "file"), ("program", "sys_exit_openat")]),
        Some(0.0)
    );
    assert_eq!(metric_sum(&m, "podwatch_sensor_attached", &[("sensor", "exec")]), Some(1.0));

    // Without the rule that cannot be enforced, the same agent becomes ready.
    let exec_only = SHADOW_KILL.split("  - name: kill-readers").next().expect("head").to_owned()
        + "  - name: shells\n    action: log\n    exec: {suffix: [/sh]}\n";
    std::fs::write(dir.path().join("p.yaml"), exec_only).expect("write");
    wait_readyz(&mut agent.0, &addr, |c, _| c == 200);
    let m = http_get(&addr, "/metrics").expect("scrape").1;
    assert_eq!(metric_sum(&m, "podwatch_policy_rule_unenforced", &[]), None);
}

#[test]
fn probe_prints_features_and_each_programs_hook() {
    require_root!();
    let out = Command::new(BIN).arg("probe").output().expect("run probe");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let line = |key: &str| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(key))
            .unwrap_or_else(|| panic!("no {key} line in:\n{text}"))
            .to_owned()
    };
    assert!(line("btf").contains("yes"));
    // BPF LSM is usable exactly when the kernel's LSM list names bpf.
    let lsm = std::fs::read_to_string("/sys/kernel/security/lsm").unwrap_or_default();
    let bpf_active = lsm.trim().split(',').any(|l| l == "bpf");
    assert_eq!(line("bpf_lsm").contains("yes"), bpf_active, "{text}");
    for key in ["fentry", "kprobe"] {
        let l = line(key);
        assert!(l.contains("yes") || l.contains("no ("), "{l}");
    }
    let exec = text.lines().find(|l| l.contains("sched_process_exec")).expect("exec sensor line");
    assert!(
        exec.contains("exec")
            && exec.contains("tracepoint/sched/sched_process_exec")
            && exec.contains(" attached (")
    );
    let sensors = text.lines().filter(|l| l.starts_with("sensor")).count();
    assert_eq!(sensors, podwatch::kernel::loader::program_names().count(), "one line per program:\n{text}");
}

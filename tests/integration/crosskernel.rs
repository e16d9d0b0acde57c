//! The same actions give the same events and the same counters on every
//! kernel. This test runs a fixed scenario in a fake pod — a static binary
//! that opens a logged file, connects to a logged address and reads a file a
//! kill rule guards — and reduces what the agent reported to a digest: the
//! events with times, ids, pids and ephemeral ports left out, and the pod's
//! counters. With `PODWATCH_DIGEST_OUT` set it writes the digest there;
//! `scripts/kernel-matrix.sh` runs it on the host and in every VM and fails
//! when a kernel's digest differs from the host's.

use std::{os::unix::process::ExitStatusExt, process::Command};

use podwatch::pipeline::event::Event;
use serde_json::{json, Value};

use crate::harness::{command_in, http_get, require_root, run_fresh_binary, workload, Agent, FakePod};

/// What must not differ between kernels; `port` is the server's (random) port.
fn normalize(e: &Event, port: u16) -> Value {
    let p = &e.process;
    let file = e.file.as_ref().map(|f| {
        json!({"path": f.path, "requested": f.requested, "operation": f.operation, "flags": f.flags,
               "syscall": f.syscall, "result": f.result, "errno": f.errno})
    });
    let network = e.network.as_ref().map(|n| {
        let dport = if n.dst.port == port { "server".to_owned() } else { n.dst.port.to_string() };
        json!({"protocol": n.protocol, "family": n.family, "direction": n.direction,
               "src": n.src.address, "dst": n.dst.address, "dport": dport, "result": n.result,
               "bytes_sent": n.bytes_sent, "bytes_received": n.bytes_received})
    });
    json!({
        "kind": e.kind.as_str(),
        "process": {"uid": p.uid, "gid": p.gid, "comm": p.comm, "binary": p.binary,
                    "executable": p.executable, "cwd": p.cwd,
                    "args": p.args.iter().map(|a| if *a == port.to_string() { "server" } else { a }).collect::<Vec<_>>()},
        "in_pod": e.pod.is_some(),
        "file": file,
        "network": network,
        "exit": e.exit.as_ref().map(|x| json!({"code": x.code, "signal": x.signal, "core_dumped": x.core_dumped})),
        "policy": e.policy, "rule": e.rule, "action": e.action, "matched_on": e.matched_on,
    })
}

#[test]
fn same_actions_same_events_and_counters() {
    require_root!();
    // The binary at one path on every machine, so paths compare.
    let dir = std::path::Path::new("/tmp/podwatch-digest");
    std::fs::create_dir_all(dir).expect("mkdir");
    let wl = dir.join("wl");
    let _ = std::fs::remove_file(&wl);
    std::fs::copy(workload(), &wl).expect("copy");
    let wl = wl.display().to_string();
    let mut server = Command::new(workload())
        .args(["serve", "0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("server");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.as_mut().expect("stdout")),
        &mut line,
    )
    .expect("port");
    let port: u16 = line.trim().parse().expect("port number");
    let policies = tempfile::tempdir().expect("tmp");
    std::fs::write(
        policies.path().join("p.yaml"),
        "apiVersion: podwatch.dev/v1alpha1\nkind: Policy\nmetadata:\n  name: digest\nspec:\n  selector: {allPods: true}\n  rules:\n  - name: hostname\n    action: log\n    file: {exact: [/etc/hostname]}\n  - name: shadow\n    action: kill\n    file: {exact: [/etc/shadow], operations: [read]}\n  - name: loopback\n    action: log\n    network: {cidrs: [127.0.0.1/32], protocol: tcp}\n",
    )
    .expect("write policy");
    let pod = FakePod::cgroupfs("besteffort");
    let agent =
        Agent::start_with(&["--events", "all", "--policy-dir", &policies.path().display().to_string()]);
    let port_s = port.to_string();
    for (args, killed) in [
        (vec!["open", "3", "/etc/hostname"], false),
        (vec!["connect", "2", &port_s], false),
        (vec!["open", "1", "/etc/shadow"], true),
    ] {
        let (_, status) = run_fresh_binary(|| {
            let mut c = command_in(Some(&pod.cgroup), &wl, &args);
            c.current_dir("/");
            c
        });
        assert_eq!(status.signal(), killed.then_some(9), "{args:?}: {status:?}");
    }
    let cg = pod.cgroup_id();
    let mut events: Vec<String> =
        agent.drain(|e| e.cgroup.id == cg).iter().map(|e| normalize(e, port).to_string()).collect();
    events.sort();
    let _ = server.kill();
    let _ = server.wait();
    // The pod's counters, labels as the agent renders them minus the pod's own.
    let (_, text) = http_get(&agent.addr, "/metrics").expect("scrape");
    let mut counters: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains(&format!("pod=\"{}\"", pod.uid)))
        .filter(|l| !l.starts_with("podwatch_ringbuf_"))
        .map(|l| l.replace(&pod.uid, "POD").replace(&pod.container_id[..12], "CONTAINER"))
        .collect();
    counters.sort();
    assert!(events.len() >= 10, "exec, file, connect, close and exit events: {events:#?}");
    assert!(counters.iter().any(|c| c.contains("action=\"kill\"")), "{counters:#?}");
    let digest = json!({"events": events, "counters": counters});
    if let Ok(out) = std::env::var("PODWATCH_DIGEST_OUT") {
        std::fs::write(&out, format!("{digest}\n")).expect("write the digest");
    }
}

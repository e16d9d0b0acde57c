//! The command line as people use it: `podwatch events --compact`, config
//! errors, file output.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use crate::harness::{bash_in, require_root, uuid, Agent, FakePod, BIN};

#[test]
fn bad_config_names_the_file_and_key() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("podwatch.yaml");
    std::fs::write(&cfg, "listen: 127.0.0.1:9\nringbuffer: 12\n").expect("write");
    let out = Command::new(BIN).args(["run", "--config"]).arg(&cfg).output().expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("podwatch.yaml") && err.contains("ringbuffer"), "{err}");
}

#[test]
fn help_explains_flags() {
    let out = Command::new(BIN).args(["run", "--help"]).output().expect("help");
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in ["--listen", "--output-file", "--ring-buffer-bytes", "--log-format", "PODWATCH_LISTEN"] {
        assert!(text.contains(flag), "--help lacks {flag}");
    }
}

/// Spawns `podwatch events` and collects its stdout lines on a channel.
fn follow(args: &[&str]) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut child =
        Command::new(BIN).arg("events").args(args).stdout(Stdio::piped()).spawn().expect("podwatch events");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// The first line matching `pred` within `timeout`; other lines are dropped.
fn wait_line_for(
    rx: &mpsc::Receiver<String>,
    timeout: Duration,
    pred: impl Fn(&str) -> bool,
) -> Option<String> {
    let deadline = std::time::Instant::now() + timeout;
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(l) if pred(&l) => return Some(l),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

#[test]
fn events_compact_filters_by_pod_and_kind() {
    require_root!();
    let agent = Agent::start_with(&["--output", "none"]);
    let pod = FakePod::systemd("besteffort");
    let (mut child, rx) =
        follow(&["--server", &agent.addr, "--compact", "--pods", &pod.uid, "--kind", "exec,file"]);
    let short = &pod.uid[..8];
    // The subscription is live once a pod event comes through it: repeat a
    // marked exec in the pod until one does.
    let hello = format!("hello-{}", uuid());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        bash_in(Some(&pod.cgroup), &format!("/bin/echo {hello} >/dev/null"));
        if wait_line_for(&rx, Duration::from_secs(1), |l| l.contains(&hello)).is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "podwatch events never showed the pod's events");
    }
    // A host process first: it must not show up.
    bash_in(None, "/bin/cat /etc/hostname >/dev/null");
    bash_in(Some(&pod.cgroup), "/bin/cat /etc/hostname >/dev/null; exit 3");
    // A sentinel in the pod: the stream is ordered, so once its line is here,
    // every line for what ran before it is too.
    let sentinel = format!("sentinel-{}", uuid());
    bash_in(Some(&pod.cgroup), &format!("/bin/echo {sentinel} >/dev/null"));
    let mut seen = Vec::new();
    while let Some(l) = wait_line_for(&rx, Duration::from_secs(20), |_| true) {
        if l.contains(&sentinel) && l.starts_with("🚀 exec") && l.contains("/bin/echo") {
            break;
        }
        seen.push(l);
    }
    let exec = seen.iter().find(|l| l.starts_with("🚀 exec") && l.contains("/bin/cat /etc/hostname"));
    let exec = exec.expect("compact exec line");
    assert!(exec.contains(&format!("pod/{short}")), "{exec}");
    let open = seen.iter().find(|l| l.starts_with("📚 read") && l.contains("/etc/hostname"));
    assert!(open.expect("read line").contains(&format!("pod/{short}")), "{open:?}");
    // Nothing from the host, and no exit lines (not asked for).
    assert!(seen.iter().all(|l| l.contains(&format!("pod/{short}"))), "{seen:?}");
    assert!(seen.iter().all(|l| !l.starts_with("💥")), "{seen:?}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn file_output_rotates() {
    require_root!();
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("events.jsonl");
    let out_s = out.display().to_string();
    // `matched`: execs and exits (always reported) and matched files only.
    // With `all`, every open on this busy machine is an event and a burst
    // can rotate the sentinel out of every kept file before we look.
    let agent = Agent::start_with(&[
        "--events",
        "matched",
        "--output",
        "file",
        "--output-file",
        &out_s,
        "--output-max-bytes",
        "65536",
        "--output-max-files",
        "2",
    ]);
    let pod = FakePod::cgroupfs("guaranteed");
    bash_in(Some(&pod.cgroup), "for i in $(seq 300); do /bin/cat /etc/hostname >/dev/null; done");
    // Everything before a sentinel exec has been written once the sentinel is
    // in a file (the output is ordered and flushed when idle). The host's own
    // activity may rotate it out of the current file before we look, so every
    // kept file is searched.
    let sentinel = format!("sentinel-{}", uuid());
    bash_in(None, &format!("/bin/echo {sentinel} >/dev/null"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let kept = |n: usize| if n == 0 { out.clone() } else { dir.path().join(format!("events.jsonl.{n}")) };
    while !(0..=2).any(|n| std::fs::read_to_string(kept(n)).is_ok_and(|t| t.contains(&sentinel))) {
        assert!(Instant::now() < deadline, "the sentinel never reached {out_s} or its rotated files");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(agent);
    let rotated = dir.path().join("events.jsonl.1");
    assert!(rotated.exists(), "rotation happened");
    assert!(!dir.path().join("events.jsonl.3").exists(), "at most 2 rotated files");
    for p in [&out, &rotated] {
        let text = std::fs::read_to_string(p).expect("read");
        assert!(std::fs::metadata(p).expect("meta").len() <= 65536);
        for line in text.lines() {
            serde_json::from_str::<podwatch::pipeline::event::Event>(line).expect("every line is an event");
        }
    }
}

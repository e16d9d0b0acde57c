//! The command line as people use it: `podwatch events --compact`, config
//! errors, file output.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use crate::harness::{bash_in, require_root, Agent, FakePod, BIN};

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

fn wait_line(rx: &mpsc::Receiver<String>, pred: impl Fn(&str) -> bool) -> Option<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
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
    std::thread::sleep(Duration::from_millis(500));
    // A host process first: it must not show up.
    bash_in(None, "/bin/cat /etc/hostname >/dev/null");
    bash_in(Some(&pod.cgroup), "/bin/cat /etc/hostname >/dev/null; exit 3");
    let short = &pod.uid[..8];
    let exec = wait_line(&rx, |l| l.starts_with("🚀 exec") && l.contains("/bin/cat /etc/hostname"));
    let exec = exec.expect("compact exec line");
    assert!(exec.contains(&format!("pod/{short}")), "{exec}");
    let open =
        wait_line(&rx, |l| l.starts_with("📚 read") && l.contains("/etc/hostname")).expect("read line");
    assert!(open.contains(&format!("pod/{short}")), "{open}");
    // Nothing from the host, and no exit lines (not asked for).
    std::thread::sleep(Duration::from_millis(1000));
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(rest.iter().all(|l| l.contains(&format!("pod/{short}"))), "{rest:?}");
    assert!(rest.iter().all(|l| !l.starts_with("💥")), "{rest:?}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn file_output_rotates() {
    require_root!();
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("events.jsonl");
    let out_s = out.display().to_string();
    let agent = Agent::start_with(&[
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
    bash_in(Some(&pod.cgroup), "for i in $(seq 100); do /bin/cat /etc/hostname >/dev/null; done");
    std::thread::sleep(Duration::from_secs(2));
    drop(agent);
    let rotated = dir.path().join("events.jsonl.1");
    assert!(rotated.exists(), "rotation happened");
    assert!(!dir.path().join("events.jsonl.3").exists(), "at most 2 rotated files");
    for p in [&out, &rotated] {
        let text = std::fs::read_to_string(p).expect("read");
        assert!(std::fs::metadata(p).expect("meta").len() <= 65536);
        for line in text.lines() {
            serde_json::from_str::<podwatch::event::Event>(line).expect("every line is an event");
        }
    }
}

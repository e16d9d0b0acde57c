//! Exec, exit and the process tree.

use std::{os::unix::process::ExitStatusExt, time::Duration};

use podwatch::pipeline::event::Kind;

use crate::harness::{bash_in, command_in, ends_with, require_root, Agent};

#[test]
fn exec_of_cat_has_binary_args_parent_and_exit_codes() {
    require_root!();
    let agent = Agent::start();
    let (bash_pid, status) = bash_in(None, "/bin/cat /etc/passwd >/dev/null; exit 7");
    assert_eq!(status.code(), Some(7));

    let exec = agent.expect_one("exec of cat", |e| {
        e.kind == Kind::Exec && e.process.parent.as_ref().is_some_and(|p| p.pid == bash_pid)
    });
    assert!(ends_with(&exec.process.binary, "/cat"), "{:?}", exec.process.binary);
    assert_eq!(exec.process.args[..], ["/bin/cat", "/etc/passwd"]);
    let parent = exec.process.parent.as_ref().expect("parent");
    assert!(ends_with(&parent.binary, "/bash"), "parent binary {:?}", parent.binary);
    assert_eq!(exec.process.uid, 0);
    assert_eq!(exec.process.comm, "cat");
    assert!(exec.pod.is_none(), "a host process has no pod");
    let cat_pid = exec.process.pid;

    let open = agent.expect_one("open of /etc/passwd", |e| {
        e.kind == Kind::File
            && e.process.pid == cat_pid
            && e.file.as_ref().is_some_and(|f| f.path == "/etc/passwd")
    });
    let f = open.file.as_ref().expect("file");
    assert_eq!((&*f.operation, &*f.result), ("read", "ok"));
    assert!(ends_with(&open.process.binary, "/cat"));
    assert_eq!(open.process.args[..], ["/bin/cat", "/etc/passwd"]);

    let cat_exit = agent.expect_one("exit of cat", |e| e.kind == Kind::Exit && e.process.pid == cat_pid);
    assert_eq!(cat_exit.exit.as_ref().and_then(|x| x.code), Some(0));
    let bash_exit = agent.expect_one("exit of bash", |e| e.kind == Kind::Exit && e.process.pid == bash_pid);
    assert_eq!(bash_exit.exit.as_ref().and_then(|x| x.code), Some(7));
    assert!(agent.bad_lines().is_empty(), "{:?}", agent.bad_lines());
}

#[test]
fn exit_by_signal_reports_the_signal() {
    require_root!();
    let agent = Agent::start();
    let mut child = command_in(None, "/bin/sleep", &["30"]).spawn().expect("sleep");
    let pid = child.id();
    agent.expect_one("exec of sleep", |e| e.kind == Kind::Exec && e.process.pid == pid);
    child.kill().expect("kill");
    let status = child.wait().expect("wait");
    assert_eq!(status.signal(), Some(9));
    let exit = agent.expect_one("exit of sleep", |e| e.kind == Kind::Exit && e.process.pid == pid);
    let x = exit.exit.expect("exit");
    assert_eq!((x.code, x.signal.as_deref()), (None, Some("SIGKILL")));
}

#[test]
fn long_and_non_utf8_argv_is_flagged_not_lost() {
    require_root!();
    let agent = Agent::start();
    let long = "a".repeat(3000);
    // 3 × 3000 bytes of argv: more than the 4 KiB the kernel side copies.
    let mut cmd = command_in(None, "/bin/echo", &[&long, &long, &long]);
    cmd.arg(std::ffi::OsStr::from_encoded_bytes_unchecked_safe(b"caf\xe9"));
    let (pid, _) = crate::harness::run(cmd);
    let exec = agent.expect_one("exec of echo", |e| e.kind == Kind::Exec && e.process.pid == pid);
    assert!(exec.process.args_truncated, "truncation is flagged");
    assert_eq!(exec.process.args[0], "/bin/echo");
    assert_eq!(exec.process.args[1], long);
    assert!(exec.process.args.len() < 5, "the non-UTF-8 tail was cut with the rest");

    let mut cmd = command_in(None, "/bin/echo", &[]);
    cmd.arg(std::ffi::OsStr::from_encoded_bytes_unchecked_safe(b"caf\xe9"));
    let (pid, _) = crate::harness::run(cmd);
    let exec = agent.expect_one("exec of echo", |e| e.kind == Kind::Exec && e.process.pid == pid);
    assert_eq!(exec.process.args[..], ["/bin/echo", "caf\\xe9"]);
    assert!(!exec.process.args_truncated);
}

#[test]
fn processes_older_than_the_agent_are_described_from_proc() {
    require_root!();
    // Started before the agent: its binary and args come from the /proc seed.
    let mut child = command_in(None, "/bin/sleep", &["7.5"]).spawn().expect("sleep");
    let pid = child.id();
    // Until the exec has happened, /proc shows the test binary (the fork).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.ends_with(b"7.5\0")) {
        assert!(std::time::Instant::now() < deadline, "sleep 7.5 never started");
        std::thread::yield_now();
    }
    let agent = Agent::start();
    child.kill().expect("kill");
    child.wait().expect("wait");
    let exit = agent.expect_one("exit of old sleep", |e| e.kind == Kind::Exit && e.process.pid == pid);
    assert!(ends_with(&exit.process.binary, "/sleep"), "{:?}", exit.process.binary);
    assert_eq!(exit.process.args[..], ["/bin/sleep", "7.5"]);
}

/// `OsStr::from_encoded_bytes_unchecked` is unsafe; on Unix every byte string is
/// a valid OsStr, so this wrapper is sound.
trait OsStrBytes {
    fn from_encoded_bytes_unchecked_safe(b: &[u8]) -> &std::ffi::OsStr;
}
impl OsStrBytes for std::ffi::OsStr {
    fn from_encoded_bytes_unchecked_safe(b: &[u8]) -> &std::ffi::OsStr {
        std::os::unix::ffi::OsStrExt::from_bytes(b)
    }
}

#[test]
fn secrets_in_argv_are_masked_before_any_output() {
    require_root!();
    let agent = Agent::start_with(&["--redact-pattern", "sk_live_[0-9a-z]+"]);
    let args = [
        "--password=hunter2",
        "--token",
        "t0k3n",
        "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI",
        "Authorization: Bearer eyJhbGci",
        "sk_live_abc123",
        "--color=auto",
    ];
    let (pid, _) = crate::harness::run(command_in(None, "/bin/echo", &args));
    let exec = agent.expect_one("exec of echo", |e| e.kind == Kind::Exec && e.process.pid == pid);
    assert_eq!(
        exec.process.args[..],
        [
            "/bin/echo",
            "--password=****",
            "--token",
            "****",
            "AWS_SECRET_ACCESS_KEY=****",
            "Authorization: ****",
            "****",
            "--color=auto"
        ]
    );
    let everything = serde_json::to_string(&agent.drain(|e| e.process.pid == pid)).expect("json");
    for secret in ["hunter2", "t0k3n", "wJalrXUtnFEMI", "eyJhbGci", "sk_live_abc123"] {
        assert!(!everything.contains(secret), "{secret} leaked into an event");
    }
}

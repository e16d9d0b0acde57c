//! File opens: absolute paths from relative ones, dirfds, every open-family
//! syscall, operations and refused opens.

use std::os::unix::process::CommandExt;

use podwatch::pipeline::event::Kind;

use crate::harness::{bash_in, command_in, require_root, run, Agent};

fn opens_by(agent: &Agent, parent_bash: u32, path: &str) -> podwatch::pipeline::event::Event {
    agent.expect_one(path, |e| {
        e.kind == Kind::File
            && e.file.as_ref().is_some_and(|f| f.path == path)
            && e.process.parent.as_ref().is_some_and(|p| p.pid == parent_bash)
    })
}

#[test]
fn relative_paths_come_out_absolute() {
    require_root!();
    let agent = Agent::start();
    let (bash, _) = bash_in(None, "cd /etc && cat shadow >/dev/null");
    let e = opens_by(&agent, bash, "/etc/shadow");
    assert_eq!(e.file.as_ref().map(|f| &*f.result), Some("ok"));
    assert_eq!(e.process.cwd.as_deref(), Some("/etc"));

    let (bash, _) = bash_in(None, "cd /tmp && cat ../etc/shadow >/dev/null");
    let e = opens_by(&agent, bash, "/etc/shadow");
    assert_eq!(e.process.cwd.as_deref(), Some("/tmp"));
}

#[test]
fn dirfd_relative_openat_and_every_open_syscall() {
    require_root!();
    let agent = Agent::start();
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path().display().to_string();
    // openat(dirfd), creat(2) and openat2(2) through libc, from a real process.
    let script = format!(
        r#"
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open("/etc", os.O_RDONLY | os.O_DIRECTORY)
os.close(os.open("hostname", os.O_RDONLY, dir_fd=fd))
os.close(libc.creat(b"{d}/created-by-creat", 0o644))
class How(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]
how = How(os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600, 0)
r = libc.syscall(437, -100, b"{d}/made-by-openat2", ctypes.byref(how), ctypes.sizeof(how))
assert r >= 0, ctypes.get_errno()
os.close(r)
os.close(os.open("{d}/appended", os.O_WRONLY | os.O_CREAT | os.O_APPEND))
os.close(os.open("{d}/appended", os.O_WRONLY | os.O_APPEND))
os.close(os.open("{d}/appended", os.O_RDWR | os.O_TRUNC))
"#
    );
    let (pid, status) = run(command_in(None, "/usr/bin/python3", &["-c", &script]));
    assert!(status.success(), "helper script failed");
    let by = |path: String, syscall: &'static str, op: &'static str| {
        let e = agent.expect_one(&path, |e| {
            e.process.pid == pid
                && e.file
                    .as_ref()
                    .is_some_and(|f| f.path == path && f.syscall == syscall && f.operation == op)
        });
        e.file.expect("file")
    };
    let f = by("/etc/hostname".into(), "openat", "read");
    assert_eq!(f.result, "ok");
    let f = by(format!("{d}/created-by-creat"), "creat", "create");
    assert!(f.flags.iter().any(|f| f == "O_TRUNC"), "{:?}", f.flags);
    let f = by(format!("{d}/made-by-openat2"), "openat2", "create");
    assert!(f.flags.iter().any(|f| f == "O_WRONLY"));
    by(format!("{d}/appended"), "openat", "write");
    by(format!("{d}/appended"), "openat", "truncate");
}

#[test]
fn refused_open_reports_errno() {
    require_root!();
    let agent = Agent::start();
    let mut cmd = command_in(None, "/bin/cat", &["/etc/shadow"]);
    cmd.uid(65534).gid(65534);
    let (pid, status) = run(cmd);
    assert!(!status.success(), "nobody cannot read /etc/shadow");
    let e = agent.expect_one("refused open", |e| {
        e.process.pid == pid && e.file.as_ref().is_some_and(|f| f.path == "/etc/shadow")
    });
    let f = e.file.expect("file");
    assert_eq!((&*f.result, f.errno), ("EACCES", Some(13)));
    assert_eq!(f.fd, None);
    assert_eq!(e.process.uid, 65534);
}

#[test]
fn non_utf8_and_deep_paths() {
    require_root!();
    // No policy applies to host processes, so the kernel does not resolve the
    // opened files and the record carries the cwd it walked (a policy that
    // applies resolves the file itself: `evasion::long_paths_...`).
    let policies = tempfile::tempdir().expect("tmp");
    std::fs::write(
        policies.path().join("pods-only.yaml"),
        "apiVersion: podwatch.dev/v1alpha1\nkind: Policy\nmetadata:\n  name: pods-only\nspec:\n  selector: {allPods: true}\n  rules:\n  - name: shadow\n    action: log\n    file: {exact: [/etc/shadow]}\n",
    )
    .expect("write policy");
    let agent = Agent::start_with(&["--policy-dir", &policies.path().display().to_string()]);
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path().display().to_string();
    // A file name that is not UTF-8, and a cwd 60 directories deep (deeper
    // than the kernel walks), entered with relative cd's.
    let up = "../".repeat(80);
    let (bash, status) = bash_in(
        None,
        &format!(
            "cd {d} && touch $'bad\\xff' && cat $'bad\\xff' && for i in $(seq 60); do mkdir d && cd d; done && cat {up}etc/hostname >/dev/null"
        ),
    );
    assert!(status.success());
    let bad = format!("{d}/bad\\xff");
    let e = agent.expect_one("non-UTF-8 open", |e| {
        e.process.parent.as_ref().is_some_and(|p| p.pid == bash)
            && e.file.as_ref().is_some_and(|f| f.path == bad)
    });
    assert_eq!(e.file.map(|f| f.result), Some("ok".into()));
    // The deep relative open is still reported; its base directory is flagged as cut short.
    let deep = agent.expect_one("deep relative open", |e| {
        e.process.parent.as_ref().is_some_and(|p| p.pid == bash)
            && e.file.as_ref().is_some_and(|f| f.path.ends_with("hostname"))
    });
    assert!(deep.file.expect("file").path_truncated);
    let stats = agent.stats();
    let errs = &stats["stats"]["decode_errors"];
    for k in ["short", "unknown_kind", "bad_length", "bad_tail"] {
        assert_eq!(errs[k], 0, "decode error {k}: the kernel's records are well-formed");
    }
}

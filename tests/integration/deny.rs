//! `deny` for files and execs, where the kernel runs BPF LSM programs (`bpf`
//! in /sys/kernel/security/lsm: Debian's 6.1 and 6.12 under the kernel
//! matrix; not this development host, whose kernel has no BPF LSM). The
//! call fails with EPERM and the process lives on. Elsewhere such a policy is
//! refused at load (`policy::tests::deny_on_files_and_execs_needs_bpf_lsm`).

use std::os::unix::process::ExitStatusExt;

use podwatch::pipeline::event::Kind;

use crate::harness::{command_in, require_root, run, run_fresh_binary, workload, Agent, FakePod};

fn bpf_lsm_active() -> bool {
    let lsm = std::fs::read_to_string("/sys/kernel/security/lsm").unwrap_or_default();
    let active = lsm.trim().split(',').any(|l| l == "bpf");
    if !active {
        eprintln!(
            "skipped: BPF LSM is not active on this kernel (LSMs: {:?}), so deny for files and execs \
             cannot be enforced here and is refused at load; scripts/kernel-matrix.sh runs this test on 6.1 and 6.12",
            lsm.trim()
        );
    }
    active
}

#[test]
fn deny_refuses_opens_and_execs_and_the_process_lives_on() {
    require_root!();
    if !bpf_lsm_active() {
        return;
    }
    let base = tempfile::tempdir().expect("tmp");
    let guarded = base.path().join("guarded");
    std::fs::create_dir(&guarded).expect("mkdir");
    let tool = guarded.join("tool");
    std::fs::copy(workload(), &tool).expect("copy");
    // A file of this test's own: tests run side by side, each with an agent
    // enforcing its policies on every pod, so a shared target such as
    // /etc/shadow would meet another test's kill rule.
    let secret = std::fs::canonicalize(base.path()).expect("canonical").join("secret");
    std::fs::write(&secret, "s3cret\n").expect("write secret");
    let secret_dir = secret.parent().expect("parent").display().to_string();
    let secret = secret.display().to_string();
    let policies = tempfile::tempdir().expect("tmp");
    std::fs::write(
        policies.path().join("deny.yaml"),
        format!(
            "apiVersion: podwatch.dev/v1alpha1\nkind: Policy\nmetadata:\n  name: refuse\nspec:\n  selector: {{allPods: true}}\n  rules:\n  - name: no-secret\n    action: deny\n    file: {{exact: [{}], operations: [read]}}\n  - name: no-guarded-exec\n    action: deny\n    exec: {{directory: [{}]}}\n",
            secret,
            guarded.display()
        ),
    )
    .expect("write policy");
    let pod = FakePod::systemd("burstable");
    let agent =
        Agent::start_with(&["--events", "matched", "--policy-dir", &policies.path().display().to_string()]);

    // Opens: plain, read+write, relative. Exit 0: refused with EPERM, and alive to say so.
    let open = |flags: &str| {
        format!("import os, sys\ntry:\n    os.open('{secret}', {flags})\n    sys.exit(10)\nexcept PermissionError:\n    sys.exit(0)\n")
    };
    let relative = format!(
        "import os, sys\nos.chdir('{secret_dir}')\ntry:\n    os.open('secret', os.O_RDONLY)\n    sys.exit(10)\nexcept PermissionError:\n    sys.exit(0)\n"
    );
    for (what, script) in
        [("O_RDONLY", open("os.O_RDONLY")), ("O_RDWR", open("os.O_RDWR")), ("relative", relative)]
    {
        let (pid, status) = run(command_in(Some(&pod.cgroup), "/usr/bin/python3", &["-c", &script]));
        assert_eq!(
            status.code(),
            Some(0),
            "{what}: the open must fail with EPERM and the process live: {status:?}"
        );
        let e = agent.expect_one(what, |e| e.process.pid == pid && e.kind == Kind::File);
        let f = e.file.as_ref().expect("file");
        assert_eq!(f.result, "EPERM", "{what}");
        assert_eq!((e.action.as_deref(), e.rule.as_deref()), (Some("deny"), Some("no-secret")), "{what}");
    }

    // Exec: refused, the caller goes on; the binary never ran (it would create the marker).
    let marker = base.path().join("ran");
    let script = format!(
        "import os, sys\ntry:\n    os.execv('{t}', ['{t}', 'create', '{m}'])\nexcept PermissionError:\n    sys.exit(0)\n",
        t = tool.display(),
        m = marker.display()
    );
    let (pid, status) =
        run_fresh_binary(|| command_in(Some(&pod.cgroup), "/usr/bin/python3", &["-c", &script]));
    assert_eq!(status.code(), Some(0), "the exec must fail with EPERM: {status:?}");
    assert_eq!(status.signal(), None);
    assert!(!marker.exists(), "the refused binary ran");
    let e = agent
        .expect_one("denied exec", |e| e.process.pid == pid && e.kind == Kind::Exec && e.action.is_some());
    assert_eq!((e.action.as_deref(), e.rule.as_deref()), (Some("deny"), Some("no-guarded-exec")));
    let t = std::fs::canonicalize(&tool).expect("canonical").display().to_string();
    assert_eq!(e.process.executable.as_deref(), Some(t.as_str()));

    // Outside the selected pods both work.
    let (_, status) = run(command_in(None, "/bin/cat", &[secret.as_str()]));
    assert!(status.success(), "{status:?}");
    let (_, status) = run_fresh_binary(|| command_in(None, &t, &["create", &marker.display().to_string()]));
    assert!(status.success() && marker.exists(), "{status:?}");
}

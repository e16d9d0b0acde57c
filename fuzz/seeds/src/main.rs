//! Seed records for the `decode_record` fuzz target, one file per story: a
//! cgroup appears, a shell forks and execs `cat /etc/shadow` in it, the open
//! is refused, a connection is made and closed, the process exits.
//! Records are concatenated as the target reads them (each header's `len`
//! gives the next one's start).

use std::{mem::size_of, path::PathBuf};

use podwatch_common::{
    action, flags, kind, open_syscall, CgroupMkdir, Exec, Exit, FileOpen, Fork, Header, Net, AF_INET,
    AF_INET6, AT_FDCWD, IPPROTO_TCP, IPPROTO_UDP,
};

const POD_CGROUP: &[u8] = b"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6b1f0a52_2c3d_4e5f_8a9b_0c1d2e3f4a5b.slice/cri-containerd-4f2b1c6a9d8e7f60.scope\0";
const CGROUP_ID: u64 = 10432;

fn bytes_of<T: Copy>(v: &T) -> &[u8] {
    // SAFETY: the records are #[repr(C)] plain-old-data, read as bytes.
    unsafe { std::slice::from_raw_parts(v as *const T as *const u8, size_of::<T>()) }
}

fn header(k: u16, tgid: u32, comm: &[u8]) -> Header {
    let mut h = Header {
        kind: k,
        ktime_ns: 5_000_000_000 + u64::from(tgid),
        tgid,
        tid: tgid,
        uid: 1000,
        gid: 1000,
        cgroup_id: CGROUP_ID,
        ..Default::default()
    };
    h.comm[..comm.len()].copy_from_slice(comm);
    h
}

fn record<T: Copy>(mut h: Header, payload: &T, tail: &[u8]) -> Vec<u8> {
    h.len = (size_of::<Header>() + size_of::<T>() + tail.len()) as u32;
    let mut out = bytes_of(&h).to_vec();
    out.extend_from_slice(bytes_of(payload));
    out.extend_from_slice(tail);
    out
}

fn mkdir() -> Vec<u8> {
    let c = CgroupMkdir { id: CGROUP_ID, level: 5, path_len: POD_CGROUP.len() as u32 };
    record(header(kind::CGROUP_MKDIR, 1, b"runc"), &c, POD_CGROUP)
}

fn exec(tgid: u32, filename: &[u8], args: &[u8], cwd: &[u8]) -> Vec<u8> {
    let e = Exec {
        ppid: 100,
        filename_len: filename.len() as u32,
        args_len: args.len() as u32,
        cwd_len: cwd.len() as u32,
        exe_len: 0,
        _pad: 0,
        creds: Default::default(),
    };
    let mut tail = filename.to_vec();
    tail.extend_from_slice(args);
    tail.extend_from_slice(cwd);
    record(header(kind::EXEC, tgid, b"cat"), &e, &tail)
}

fn open(tgid: u32, syscall: u32, oflags: u64, ret: i32, path: &[u8], dir: &[u8]) -> Vec<u8> {
    let f = FileOpen {
        syscall,
        dfd: AT_FDCWD,
        flags: oflags,
        mode: 0o644,
        ret,
        path_len: path.len() as u32,
        dir_len: dir.len() as u32,
        resolved_len: 0,
        _pad: 0,
    };
    let mut tail = path.to_vec();
    tail.extend_from_slice(dir);
    let mut h = header(kind::FILE_OPEN, tgid, b"cat");
    h.rule = 3;
    h.action = action::LOG;
    record(h, &f, &tail)
}

fn net(k: u16, tgid: u32, v6: bool, result: i32) -> Vec<u8> {
    let mut n = Net {
        family: if v6 { AF_INET6 } else { AF_INET },
        protocol: if k == kind::UDP_SEND || k == kind::UDP_CONNECT { IPPROTO_UDP } else { IPPROTO_TCP },
        sport: 40112,
        dport: if k == kind::UDP_SEND { 53 } else { 80 },
        result,
        side: if k == kind::TCP_ACCEPT { kind::TCP_ACCEPT } else { kind::TCP_CONNECT },
        bytes_sent: 78,
        bytes_received: 615,
        ..Default::default()
    };
    if v6 {
        n.saddr = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5];
        n.daddr = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
    } else {
        n.saddr[..4].copy_from_slice(&[10, 244, 1, 5]);
        n.daddr[..4].copy_from_slice(&[10, 0, 0, 7]);
    }
    record(header(k, tgid, b"curl"), &n, &[])
}

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "fuzz/corpus/decode_record".into()));
    std::fs::create_dir_all(&dir).expect("corpus directory");
    let fork = record(header(kind::FORK, 200, b"bash"), &Fork { child_tgid: 200, parent_tgid: 100 }, &[]);
    let shadow_exec = exec(200, b"/usr/bin/cat\0", b"cat\0/etc/shadow\0", b"app\0/\0");
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("cgroup_mkdir", mkdir()),
        ("fork", fork.clone()),
        ("exec", shadow_exec.clone()),
        (
            "exec_relative_non_utf8",
            exec(201, b"./run\xff\0", b"run\0--token=sk_live_abc\0-p\0", b"bin\0opt\0"),
        ),
        ("open_read_ok", open(200, open_syscall::OPENAT, 0, 3, b"/etc/passwd\0", b"")),
        (
            "open_denied_relative",
            open(200, open_syscall::OPENAT2, 0o2 | 0o1000 | 0o2000000, -13, b"../etc/shadow\0", b"tmp\0/\0"),
        ),
        ("open_creat", open(200, open_syscall::CREAT, 0o1 | 0o100 | 0o1000, 4, b"/tmp/x\0", b"")),
        ("tcp_connect_refused", net(kind::TCP_CONNECT, 300, false, -111)),
        ("tcp_accept_v6", net(kind::TCP_ACCEPT, 300, true, 0)),
        ("tcp_close", net(kind::TCP_CLOSE, 300, false, 0)),
        ("udp_send_dns", net(kind::UDP_SEND, 300, false, 0)),
        ("udp_connect", net(kind::UDP_CONNECT, 300, true, -101)),
        ("exit_signal", record(header(kind::EXIT, 200, b"cat"), &Exit { exit_code: 9 | 0x80, _pad: 0 }, &[])),
        ("exit_code", record(header(kind::EXIT, 200, b"cat"), &Exit { exit_code: 1 << 8, _pad: 0 }, &[])),
        ("exec_args_truncated", {
            let mut r = exec(202, b"/bin/sh\0", b"sh\0-c\0echo", b"");
            r[2..4].copy_from_slice(&flags::ARGS_TRUNCATED.to_le_bytes());
            r
        }),
    ];
    let mut story = Vec::new();
    for part in [&mkdir(), &fork, &shadow_exec, &seeds[5].1, &seeds[7].1, &seeds[9].1, &seeds[12].1] {
        story.extend_from_slice(part);
    }
    for (name, bytes) in seeds.iter().chain([("story_pod_shadow_read", story)].iter()) {
        std::fs::write(dir.join(format!("{name}.bin")), bytes).expect("write seed");
    }
}

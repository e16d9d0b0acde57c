//! File opens: open, openat, openat2, creat, seen once, at syscall exit,
//! with the result, so refused opens (a denied read of /etc/shadow) are
//! reported with their errno.
//!
//! No program runs at syscall entry: the arguments are read at exit from the
//! registers the syscall entry saved on the task's kernel stack (the kernel
//! never changes them), as Falco's modern probe does. That spares every open
//! an entry program and two hash-map operations, and reads openat2's
//! `open_how` after the kernel has copied it (its page is resident).
//!
//! The path string is read at exit from the user pointer: the kernel has just
//! copied it, so its page is resident. A relative path travels with the
//! directory it is relative to (cwd or the dirfd's path), walked in the kernel
//! at exit; userspace joins and normalises them.

use aya_ebpf::{
    helpers::generated::bpf_get_current_cgroup_id, macros::tracepoint, programs::TracePointContext,
};
use podwatch_common::{action, counter, file_op, kind, offsets, open_syscall, stat, FileOpen, AT_FDCWD};

use crate::{
    counters,
    kernel::{
        current_task, fd_file, forward_path, has, off, path_at, push_cwd, push_fd_path, read, task_root,
    },
    policy,
    record::{count, current_is_agent, Record},
};

/// What the open was asked to do.
struct OpenArgs {
    filename: u64,
    flags: u64,
    dfd: i32,
    mode: u32,
    syscall: u32,
}

/// x86_64 `struct pt_regs` from r10 to orig_ax (offsets 56..128, the arch's
/// fixed layout): the syscall number and its first four arguments.
#[repr(C)]
#[derive(Clone, Copy)]
struct SyscallRegs {
    r10: u64,
    _r9: u64,
    _r8: u64,
    _ax: u64,
    _cx: u64,
    dx: u64,
    si: u64,
    di: u64,
    orig_ax: u64,
}
const REGS_R10: u64 = 56;
/// sizeof(struct pt_regs) on x86_64.
const PT_REGS_SIZE: u64 = 168;
/// x86_64 kernel stacks are 16 KiB (32 KiB only in KASAN builds, where the
/// syscall-number check below fails and the opens are counted as misses).
const THREAD_SIZE: u64 = 16384;

// x86_64 syscall numbers.
const NR_OPEN: u64 = 2;
const NR_CREAT: u64 = 85;
const NR_OPENAT: u64 = 257;
const NR_OPENAT2: u64 = 437;

const O_WRONLY: u64 = 0o1;
const O_CREAT: u64 = 0o100;
const O_TRUNC: u64 = 0o1000;

/// The current syscall's saved registers, if they are the syscall `nr`'s
/// (`task_pt_regs`: the top of the task's kernel stack).
#[inline(always)]
fn syscall_regs(task: u64, nr: u64) -> Result<SyscallRegs, u32> {
    let stack: u64 = read(task, off!(task_stack))?;
    let regs: SyscallRegs = read(stack + THREAD_SIZE - PT_REGS_SIZE, REGS_R10)?;
    if regs.orig_ax != nr {
        count(stat::OPEN_ARGS_MISS);
        return Err(0);
    }
    Ok(regs)
}

#[inline(always)]
fn open_args(task: u64, syscall: u32) -> Result<OpenArgs, u32> {
    let (nr, dfd_arg) = match syscall {
        open_syscall::OPEN => (NR_OPEN, false),
        open_syscall::CREAT => (NR_CREAT, false),
        open_syscall::OPENAT => (NR_OPENAT, true),
        _ => (NR_OPENAT2, true),
    };
    let r = syscall_regs(task, nr)?;
    // The arguments after dfd (openat, openat2) or from the first (open, creat).
    let (dfd, filename, a1, a2) =
        if dfd_arg { (r.di as i32, r.si, r.dx, r.r10) } else { (AT_FDCWD, r.di, r.si, r.dx) };
    let (flags, mode) = match syscall {
        open_syscall::OPEN | open_syscall::OPENAT => (a1, a2),
        open_syscall::CREAT => (O_CREAT | O_WRONLY | O_TRUNC, a1),
        _ => {
            // struct open_how { u64 flags; u64 mode; u64 resolve; }, already
            // copied in by the kernel: its page is resident.
            // SAFETY: user pointers read through the checked helper.
            let flags: u64 = unsafe { aya_ebpf::helpers::bpf_probe_read_user(a1 as *const u64) }.unwrap_or(0);
            let mode: u64 =
                unsafe { aya_ebpf::helpers::bpf_probe_read_user((a1 + 8) as *const u64) }.unwrap_or(0);
            (flags, mode)
        }
    };
    Ok(OpenArgs { filename, flags, dfd, mode: mode as u32, syscall })
}

#[inline(always)]
fn field(ctx: &TracePointContext, off: usize) -> Result<u64, u32> {
    // SAFETY: reading a field of the tracepoint record.
    unsafe { ctx.read_at::<u64>(off) }.map_err(|_| 0u32)
}

#[tracepoint]
pub fn sys_exit_open(ctx: TracePointContext) -> u32 {
    match try_exit_open(&ctx, open_syscall::OPEN) {
        Ok(v) | Err(v) => v,
    }
}

#[tracepoint]
pub fn sys_exit_openat(ctx: TracePointContext) -> u32 {
    match try_exit_open(&ctx, open_syscall::OPENAT) {
        Ok(v) | Err(v) => v,
    }
}

#[tracepoint]
pub fn sys_exit_openat2(ctx: TracePointContext) -> u32 {
    match try_exit_open(&ctx, open_syscall::OPENAT2) {
        Ok(v) | Err(v) => v,
    }
}

#[tracepoint]
pub fn sys_exit_creat(ctx: TracePointContext) -> u32 {
    match try_exit_open(&ctx, open_syscall::CREAT) {
        Ok(v) | Err(v) => v,
    }
}

fn try_exit_open(ctx: &TracePointContext, syscall: u32) -> Result<u32, u32> {
    if current_is_agent() || !has(offsets::FILES) {
        return Ok(0);
    }
    let task = current_task();
    let args = open_args(task, syscall)?;
    let ret = field(ctx, 16)? as i64;

    // The verdict and the counter come first, from the cheapest facts: the
    // record (the user's string, the cwd walk) is built only when it is sent.
    // SAFETY: helper without arguments.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    let failed = (ret < 0) as u8;
    let op = file_op(args.flags);
    let verdict = match_open(task, ret, args.filename, cgroup_id, 1u8 << op);
    let mut k = counters::key(cgroup_id, counter::FILE, op, failed, 0);
    k.rule = verdict.rule;
    k.action = verdict.action;
    counters::add(&k, 0, 0);
    if verdict.action == action::KILL {
        // The signal lands before the process returns to user space: it never
        // reads from the descriptor it just opened.
        // SAFETY: helper with a signal number.
        unsafe { aya_ebpf::helpers::generated::bpf_send_signal(9) };
    }
    if policy::filtering() && verdict.action < action::LOG {
        return Ok(0); // counted, not logged: no record crosses to user space
    }

    let mut rec = Record::new(kind::FILE_OPEN).ok_or(0u32)?;
    rec.set_verdict(verdict.rule, verdict.action);
    let path_start = rec.len();
    let path_len = rec.push_user_str(args.filename);
    let mut dir_len = 0;
    if path_len > 0 && rec.byte_at(path_start) != b'/' {
        dir_len = if args.dfd == AT_FDCWD {
            push_cwd(&mut rec, task)
        } else {
            push_fd_path(&mut rec, task, args.dfd as i64)
        };
    }
    let p: &mut FileOpen = rec.payload();
    p.syscall = args.syscall;
    p.dfd = args.dfd;
    p.flags = args.flags;
    p.mode = args.mode;
    p.ret = ret as i32;
    p.path_len = path_len;
    p.dir_len = dir_len;
    rec.emit();
    Ok(0)
}

/// The policy verdict for an open. A successful open is matched on the
/// opened file's own path (resolved: `..`, symlinks and relative paths cannot
/// dodge a rule); a refused one on the path it asked for when that is absolute.
#[inline(always)]
fn match_open(task: u64, ret: i64, filename: u64, cgroup_id: u64, ops: u8) -> policy::Verdict {
    // No policy applies to this cgroup: no path work at all.
    if policy::state(cgroup_id).1 == 0 {
        return policy::Verdict::NONE;
    }
    let Some(buf) = policy::scratch() else { return policy::Verdict::NONE };
    let len = if ret >= 0 {
        let Ok(root) = task_root(task) else { return policy::Verdict::NONE };
        let Ok(file) = fd_file(task, ret) else { return policy::Verdict::NONE };
        let Ok((dentry, mnt)) = path_at(file, off!(file_path)) else { return policy::Verdict::NONE };
        forward_path(buf, dentry, mnt, root)
    } else {
        policy::user_path(buf, filename)
    };
    policy::match_file(buf, len, cgroup_id, ops)
}

//! File opens: open, openat, openat2, creat. Arguments are stashed at syscall
//! entry and the record is emitted at exit with the result, so refused opens
//! (a denied read of /etc/shadow) are reported with their errno.
//!
//! The path string is read at exit from the saved user pointer: the kernel has
//! just copied it, so its page is resident. A relative path travels with the
//! directory it is relative to (cwd or the dirfd's path), walked in the kernel
//! at exit; userspace joins and normalises them.

use aya_ebpf::{
    helpers::generated::bpf_get_current_pid_tgid,
    macros::{map, tracepoint},
    maps::LruHashMap,
    programs::TracePointContext,
};
use podwatch_common::{action, counter, file_op, kind, open_syscall, stat, FileOpen, AT_FDCWD};

use crate::{
    counters,
    kernel::{current_task, fd_file, forward_path, off, path_at, push_cwd, push_fd_path, task_root},
    policy,
    record::{count, current_is_agent, Record},
};

#[repr(C)]
#[derive(Clone, Copy)]
struct OpenArgs {
    filename: u64,
    flags: u64,
    dfd: i32,
    mode: u32,
    syscall: u32,
    _pad: u32,
}

/// In-flight opens, keyed by pid_tgid. LRU so a thread killed mid-syscall
/// cannot leak an entry forever.
#[map]
static OPEN_STASH: LruHashMap<u64, OpenArgs> = LruHashMap::with_max_entries(16384, 0);

const O_WRONLY: u64 = 0o1;
const O_CREAT: u64 = 0o100;
const O_TRUNC: u64 = 0o1000;

#[inline(always)]
fn field(ctx: &TracePointContext, off: usize) -> Result<u64, u32> {
    // SAFETY: reading a field of the tracepoint record.
    unsafe { ctx.read_at::<u64>(off) }.map_err(|_| 0u32)
}

#[inline(always)]
fn stash(args: OpenArgs) -> Result<u32, u32> {
    if current_is_agent() {
        return Ok(0);
    }
    // SAFETY: helper without arguments.
    let key = unsafe { bpf_get_current_pid_tgid() };
    OPEN_STASH.insert(&key, &args, 0).map_err(|_| 0u32)?;
    Ok(0)
}

#[tracepoint]
pub fn sys_enter_open(ctx: TracePointContext) -> u32 {
    let r = (|| {
        stash(OpenArgs {
            filename: field(&ctx, 16)?,
            flags: field(&ctx, 24)?,
            mode: field(&ctx, 32)? as u32,
            dfd: AT_FDCWD,
            syscall: open_syscall::OPEN,
            _pad: 0,
        })
    })();
    match r {
        Ok(v) | Err(v) => v,
    }
}

#[tracepoint]
pub fn sys_enter_openat(ctx: TracePointContext) -> u32 {
    let r = (|| {
        stash(OpenArgs {
            dfd: field(&ctx, 16)? as i32,
            filename: field(&ctx, 24)?,
            flags: field(&ctx, 32)?,
            mode: field(&ctx, 40)? as u32,
            syscall: open_syscall::OPENAT,
            _pad: 0,
        })
    })();
    match r {
        Ok(v) | Err(v) => v,
    }
}

#[tracepoint]
pub fn sys_enter_openat2(ctx: TracePointContext) -> u32 {
    let r = (|| {
        let how = field(&ctx, 32)?;
        // struct open_how { u64 flags; u64 mode; u64 resolve; }
        // SAFETY: user pointer read through the checked helper.
        let flags: u64 = unsafe { aya_ebpf::helpers::bpf_probe_read_user(how as *const u64) }.unwrap_or(0);
        let mode: u64 =
            unsafe { aya_ebpf::helpers::bpf_probe_read_user((how + 8) as *const u64) }.unwrap_or(0);
        stash(OpenArgs {
            dfd: field(&ctx, 16)? as i32,
            filename: field(&ctx, 24)?,
            flags,
            mode: mode as u32,
            syscall: open_syscall::OPENAT2,
            _pad: 0,
        })
    })();
    match r {
        Ok(v) | Err(v) => v,
    }
}

#[tracepoint]
pub fn sys_enter_creat(ctx: TracePointContext) -> u32 {
    let r = (|| {
        stash(OpenArgs {
            filename: field(&ctx, 16)?,
            flags: O_CREAT | O_WRONLY | O_TRUNC,
            mode: field(&ctx, 24)? as u32,
            dfd: AT_FDCWD,
            syscall: open_syscall::CREAT,
            _pad: 0,
        })
    })();
    match r {
        Ok(v) | Err(v) => v,
    }
}

#[tracepoint]
pub fn sys_exit_open(ctx: TracePointContext) -> u32 {
    match try_exit_open(&ctx) {
        Ok(v) | Err(v) => v,
    }
}

#[tracepoint]
pub fn sys_exit_openat(ctx: TracePointContext) -> u32 {
    match try_exit_open(&ctx) {
        Ok(v) | Err(v) => v,
    }
}

#[tracepoint]
pub fn sys_exit_openat2(ctx: TracePointContext) -> u32 {
    match try_exit_open(&ctx) {
        Ok(v) | Err(v) => v,
    }
}

#[tracepoint]
pub fn sys_exit_creat(ctx: TracePointContext) -> u32 {
    match try_exit_open(&ctx) {
        Ok(v) | Err(v) => v,
    }
}

fn try_exit_open(ctx: &TracePointContext) -> Result<u32, u32> {
    if current_is_agent() {
        return Ok(0);
    }
    // SAFETY: helper without arguments.
    let key = unsafe { bpf_get_current_pid_tgid() };
    // SAFETY: the value is copied out before the entry is removed.
    let Some(args) = (unsafe { OPEN_STASH.get(&key) }).copied() else {
        count(stat::OPEN_STASH_MISS);
        return Ok(0);
    };
    let _ = OPEN_STASH.remove(&key);
    let ret = field(ctx, 16)? as i64;

    let mut rec = Record::new(kind::FILE_OPEN).ok_or(0u32)?;
    let cgroup_id = rec.header().cgroup_id;
    let failed = (ret < 0) as u8;
    let op = file_op(args.flags);
    let path_start = rec.len();
    let path_len = rec.push_user_str(args.filename);
    let task = current_task();
    let mut dir_len = 0;
    if path_len > 0 && rec.byte_at(path_start) != b'/' {
        dir_len = if args.dfd == AT_FDCWD {
            push_cwd(&mut rec, task)
        } else {
            push_fd_path(&mut rec, task, args.dfd as i64)
        };
    }
    let verdict = match_open(&rec, task, ret, path_start, path_len, cgroup_id, 1u8 << op);
    rec.set_verdict(verdict.rule, verdict.action);
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
fn match_open(
    rec: &Record,
    task: u64,
    ret: i64,
    path_start: usize,
    path_len: u32,
    cgroup_id: u64,
    ops: u8,
) -> policy::Verdict {
    // No policy applies to this cgroup: skip the path walk altogether.
    if policy::state(cgroup_id).1 == 0 {
        return policy::Verdict::NONE;
    }
    let Some(buf) = policy::scratch() else { return policy::Verdict::NONE };
    let len = if ret >= 0 {
        let Ok(root) = task_root(task) else { return policy::Verdict::NONE };
        let Ok(file) = fd_file(task, ret) else { return policy::Verdict::NONE };
        let Ok((dentry, mnt)) = path_at(file, off!(file_path)) else { return policy::Verdict::NONE };
        forward_path(buf, dentry, mnt, root)
    } else if path_len > 1 && rec.byte_at(path_start) == b'/' {
        let len = (path_len - 1) as usize;
        if !rec.copy_out(path_start, len, buf) {
            return policy::Verdict::NONE;
        }
        len
    } else {
        return policy::Verdict::NONE;
    };
    policy::match_file(buf, len, cgroup_id, ops)
}

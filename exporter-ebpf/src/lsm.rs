//! BPF LSM hooks, on kernels that run them (`bpf` in the active LSM list:
//! Debian's 6.1 and 6.12 by default, 5.10 with `lsm=...,bpf`): the one place
//! an open or an exec can be refused — `deny`, the call fails with EPERM and
//! the process lives on. `file_permission` and `mmap_file` are the read
//! guard there (reads of descriptors opened elsewhere, under a kill rule):
//! called only for file reads, not for every syscall as the tracepoint guard
//! is, they also see io_uring's reads, and refuse the read as they kill. They judge only deny rules and return at once when
//! the active policy set has none. Counting and logging stay with the
//! tracepoint programs: an open's exit program picks up the verdict this
//! hook left for its thread; a refused exec never reaches
//! `sched_process_exec`, so its hook emits the exec record itself.

use aya_ebpf::{
    helpers::generated::{bpf_get_current_cgroup_id, bpf_get_current_pid_tgid},
    macros::{lsm, map},
    maps::LruHashMap,
    programs::LsmContext,
};
use podwatch_common::{
    action, counter, file_ops, flags, kind, offsets, Denial, Exec, DENY_EXECS, DENY_FILES, MAX_STR,
};

use crate::{
    counters,
    kernel::{current_task, file_inode, forward_path, has, off, path_at, push_cwd, read, task_root},
    policy,
    record::{current_is_agent, Record},
};

const EPERM: i32 = 1;
/// `MAY_READ` in file_permission's mask.
const MAY_READ: i32 = 4;

/// Deny verdicts for the open exit programs, by pid_tgid (the hook and the
/// exit run in the same thread).
#[map]
static DENIALS: LruHashMap<u64, Denial> = LruHashMap::with_max_entries(4096, 0);

/// The verdict the LSM hook left for this thread's open, taken.
#[inline(always)]
pub fn take_denial() -> Option<Denial> {
    // SAFETY: helper without arguments.
    let key = unsafe { bpf_get_current_pid_tgid() };
    // SAFETY: the value is copied out before the element is removed.
    let d = unsafe { DENIALS.get(&key) }.copied()?;
    let _ = DENIALS.remove(&key);
    Some(d)
}

#[lsm(hook = "file_open")]
pub fn lsm_file_open(ctx: LsmContext) -> i32 {
    match try_file_open(&ctx) {
        Ok(v) | Err(v) => v,
    }
}

fn try_file_open(ctx: &LsmContext) -> Result<i32, i32> {
    // The hook's arguments: (struct file *file, int ret).
    let prev: i32 = ctx.arg(1);
    if prev != 0 {
        return Ok(prev); // refused already
    }
    if !policy::denying(DENY_FILES) || current_is_agent() || !has(offsets::LSM | offsets::PATHS) {
        return Ok(0);
    }
    // SAFETY: helper without arguments.
    let st = policy::state(unsafe { bpf_get_current_cgroup_id() });
    if st.1 == 0 {
        return Ok(0);
    }
    let file: u64 = ctx.arg(0);
    let f_flags: u32 = read(file, off!(file_flags)).map_err(|_| 0)?;
    let ops = file_ops(f_flags as u64);
    let buf = policy::scratch().ok_or(0)?;
    let root = task_root(current_task()).map_err(|_| 0)?;
    let (dentry, mnt) = path_at(file, off!(file_path)).map_err(|_| 0)?;
    policy::identity_begin(buf, st, ops, false);
    let len = forward_path(buf, dentry, mnt, root);
    let by_id = policy::unpack(policy::identity_scan(buf, file_inode(file)));
    let by_name = if len > 0 { policy::match_file(buf, len, st, ops) } else { policy::Verdict::NONE };
    let (v, f) = if by_id.action > by_name.action { (by_id, flags::MATCHED_IDENTITY) } else { (by_name, 0) };
    if v.action != action::DENY {
        return Ok(0);
    }
    // SAFETY: helper without arguments.
    let key = unsafe { bpf_get_current_pid_tgid() };
    let d = Denial { rule: v.rule, action: v.action, flags: f, ..Default::default() };
    let _ = DENIALS.insert(&key, &d, 0);
    Ok(-EPERM)
}

/// Called for every file of an exec's chain (a script, then its
/// interpreter), with `bprm->file` the one being checked.
#[lsm(hook = "bprm_check_security")]
pub fn lsm_bprm_check_security(ctx: LsmContext) -> i32 {
    match try_bprm_check(&ctx) {
        Ok(v) | Err(v) => v,
    }
}

fn try_bprm_check(ctx: &LsmContext) -> Result<i32, i32> {
    // The hook's arguments: (struct linux_binprm *bprm, int ret).
    let prev: i32 = ctx.arg(1);
    if prev != 0 {
        return Ok(prev);
    }
    if !policy::denying(DENY_EXECS) || !has(offsets::LSM | offsets::PATHS) {
        return Ok(0);
    }
    // SAFETY: helper without arguments.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    let st = policy::state(cgroup_id);
    if st.1 == 0 {
        return Ok(0);
    }
    let bprm: u64 = ctx.arg(0);
    let file: u64 = read(bprm, off!(bprm_file)).map_err(|_| 0)?;
    let filename: u64 = read(bprm, off!(bprm_filename)).map_err(|_| 0)?;
    let buf = policy::scratch().ok_or(0)?;
    let task = current_task();
    // The path asked for, when absolute.
    let mut v = policy::Verdict::NONE;
    let mut f = 0;
    let asked = policy::kernel_path(buf, filename);
    if asked > 0 {
        v = policy::match_exec(buf, asked, st);
    }
    // The file being checked, resolved, and its identity.
    let root = task_root(task).map_err(|_| 0)?;
    let (dentry, mnt) = path_at(file, off!(file_path)).map_err(|_| 0)?;
    policy::identity_begin(buf, st, 0, true);
    let len = forward_path(buf, dentry, mnt, root);
    let by_id = policy::unpack(policy::identity_scan(buf, file_inode(file)));
    if by_id.action > v.action {
        v = by_id;
        f = flags::MATCHED_IDENTITY;
    }
    if len > 0 {
        let resolved = policy::match_exec(buf, len, st);
        if resolved.action > v.action {
            v = resolved;
            f = flags::MATCHED_EXECUTABLE;
        }
    }
    if v.action != action::DENY {
        return Ok(0);
    }
    let mut key = counters::key(cgroup_id, counter::EXEC, 0, 1, 0);
    key.rule = v.rule;
    key.action = v.action;
    counters::add(&key, 0, 0);
    // The exec never happens: say so here, with what was asked and what
    // would have run (the resolved path is still at the front of `buf`).
    if let Some(mut rec) = Record::new(kind::EXEC) {
        rec.set_verdict(v.rule, v.action);
        rec.flag(flags::EXEC_DENIED | f);
        let filename_len = rec.push_kernel_str(filename, MAX_STR as u32);
        let cwd_len = push_cwd(&mut rec, task);
        let exe_len = if len > 0 { rec.push_kernel_bytes(buf, len) } else { 0 };
        let p: &mut Exec = rec.payload();
        p.filename_len = filename_len;
        p.cwd_len = cwd_len;
        p.exe_len = exe_len;
        // The credentials it would have run with: the caller's.
        crate::privilege::read_creds(task, &mut p.creds, true);
        rec.emit_counted();
    }
    Ok(-EPERM)
}

/// A read of a file: `rw_verify_area` asks before every read, readv,
/// pread, sendfile, splice, copy_file_range — and io_uring's reads.
#[lsm(hook = "file_permission")]
pub fn lsm_file_permission(ctx: LsmContext) -> i32 {
    match try_file_permission(&ctx) {
        Ok(v) | Err(v) => v,
    }
}

fn try_file_permission(ctx: &LsmContext) -> Result<i32, i32> {
    // The hook's arguments: (struct file *file, int mask, int ret).
    let prev: i32 = ctx.arg(2);
    if prev != 0 {
        return Ok(prev);
    }
    let mask: i32 = ctx.arg(1);
    if mask & MAY_READ == 0 {
        return Ok(0);
    }
    guard_read(ctx.arg(0))
}

/// A file mapped: its pages are read without a read syscall.
#[lsm(hook = "mmap_file")]
pub fn lsm_mmap_file(ctx: LsmContext) -> i32 {
    match try_mmap_file(&ctx) {
        Ok(v) | Err(v) => v,
    }
}

fn try_mmap_file(ctx: &LsmContext) -> Result<i32, i32> {
    // The hook's arguments: (struct file *file, unsigned long reqprot,
    // unsigned long prot, unsigned long flags, int ret).
    let prev: i32 = ctx.arg(4);
    if prev != 0 {
        return Ok(prev);
    }
    let file: u64 = ctx.arg(0);
    if file == 0 || !policy::guarding_reads() {
        return Ok(0); // anonymous memory
    }
    let mode: u32 = read(file, off!(file_mode)).map_err(|_| 0)?;
    if mode & crate::file::FMODE_READ == 0 {
        return Ok(0);
    }
    guard_read(file)
}

/// The read guard's verdict on a read of `file` in a read-family syscall
/// (the same syscalls the tracepoint guard watches, and io_uring_enter).
#[inline(always)]
fn guard_read(file: u64) -> Result<i32, i32> {
    if !policy::guarding_reads() || current_is_agent() || !has(offsets::FILES | offsets::IDENTITY) {
        return Ok(0);
    }
    let task = current_task();
    let Some((fd, syscall)) = crate::file::current_read_syscall(task) else { return Ok(0) };
    match crate::file::guard_read(task, file, fd, syscall) {
        Ok(true) => Err(-EPERM),
        _ => Ok(0),
    }
}

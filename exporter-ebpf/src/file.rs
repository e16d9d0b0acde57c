//! File opens: open, openat, openat2, creat and open_by_handle_at, seen
//! once, at syscall exit, with the result, so refused opens (a denied read of
//! /etc/shadow) are reported with their errno; and io_uring's openat/openat2,
//! which go through no syscall of their own, at their completion.
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
    helpers::generated::bpf_get_current_cgroup_id,
    macros::{map, tracepoint},
    maps::{PerCpuArray, ProgramArray},
    programs::TracePointContext,
};
use podwatch_common::{
    action, counter, file_op, file_ops, flags, kind, offsets, open_syscall, stat, FileOpen, AT_FDCWD,
};

use crate::{
    counters,
    kernel::{
        current_task, fd_file, file_inode, forward_path, has, off, path_at, push_cwd, push_fd_path, read,
        task_root, tp_field,
    },
    policy,
    record::{count, current_is_agent, Record},
};

/// What the open was asked to do.
struct OpenArgs {
    /// User pointer to the path string; 0 when there is none (a handle, io_uring).
    filename: u64,
    flags: u64,
    dfd: i32,
    mode: u32,
    syscall: u32,
    /// False when the saved registers were not this syscall's: the open is
    /// still counted and judged on its file, as every operation at once.
    known: bool,
}

/// x86_64 `struct pt_regs` from r10 to orig_ax (offsets 56..128, the arch's
/// fixed layout): the syscall number and its first four arguments.
#[repr(C)]
#[derive(Clone, Copy)]
struct SyscallRegs {
    r10: u64,
    _r9: u64,
    /// mmap's descriptor (its fifth argument).
    r8: u64,
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
const NR_OPEN_BY_HANDLE_AT: u64 = 304;

// io_uring opcodes (stable ABI).
const IORING_OP_OPENAT: u8 = 18;
const IORING_OP_OPENAT2: u8 = 28;

const O_WRONLY: u64 = 0o1;
const EPERM: i32 = 1;
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
        open_syscall::OPEN_BY_HANDLE_AT => (NR_OPEN_BY_HANDLE_AT, true),
        _ => (NR_OPENAT2, true),
    };
    let r = syscall_regs(task, nr)?;
    if syscall == open_syscall::OPEN_BY_HANDLE_AT {
        // (mount_fd, handle, flags): no path string; the opened file says which it is.
        return Ok(OpenArgs { filename: 0, flags: r.dx, dfd: r.di as i32, mode: 0, syscall, known: true });
    }
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
    Ok(OpenArgs { filename, flags, dfd, mode: mode as u32, syscall, known: true })
}

#[inline(always)]
fn field(ctx: &TracePointContext, off: usize) -> Result<u64, u32> {
    // SAFETY: reading a field of the tracepoint record.
    unsafe { ctx.read_at::<u64>(off) }.map_err(|_| 0u32)
}

/// One program for the exits of open, openat, openat2, creat and
/// open_by_handle_at, attached to each: the record's `__syscall_nr` says
/// which. (Five copies of the same program cost the verifier five times as
/// much, which under emulation is minutes of start-up.)
#[tracepoint]
pub fn sys_exit_open_family(ctx: TracePointContext) -> u32 {
    match try_exit_open_family(&ctx) {
        Ok(v) | Err(v) => v,
    }
}

fn try_exit_open_family(ctx: &TracePointContext) -> Result<u32, u32> {
    // sys_exit_* records: the syscall number (int) at 8, the return value at 16.
    let nr: i32 = tp_field(ctx, 8);
    let syscall = match nr as u64 {
        NR_OPEN => open_syscall::OPEN,
        NR_CREAT => open_syscall::CREAT,
        NR_OPENAT => open_syscall::OPENAT,
        NR_OPENAT2 => open_syscall::OPENAT2,
        NR_OPEN_BY_HANDLE_AT => open_syscall::OPEN_BY_HANDLE_AT,
        _ => return Ok(0),
    };
    try_exit_open(ctx, syscall)
}

fn try_exit_open(ctx: &TracePointContext, syscall: u32) -> Result<u32, u32> {
    if current_is_agent() || !has(offsets::FILES) {
        return Ok(0);
    }
    let task = current_task();
    let ret: i64 = tp_field(ctx, 16);
    let args = open_args(task, syscall).unwrap_or(OpenArgs {
        filename: 0,
        flags: 0,
        dfd: AT_FDCWD,
        mode: 0,
        syscall,
        known: false,
    });
    hand_over(ctx, ret, ret, &args)
}

/// io_uring's openat and openat2 run in the submitting task, a worker thread
/// of its process or its SQ-poll thread — never through an open syscall. At
/// completion the descriptor is installed in the process's table (the
/// threads share it), so the open is judged like any other and a kill lands
/// before the process sees the completion. An open into a fixed-file slot
/// (a "direct descriptor") installs nothing there: it is reported unresolved.
#[tracepoint]
pub fn io_uring_complete(ctx: TracePointContext) -> u32 {
    match try_uring_complete(&ctx) {
        Ok(v) | Err(v) => v,
    }
}

fn try_uring_complete(ctx: &TracePointContext) -> Result<u32, u32> {
    if current_is_agent() || !has(offsets::FILES | offsets::URING) {
        return Ok(0);
    }
    let req = field(ctx, off!(tp_uring_req) as usize)?;
    let opcode: u8 = read(req, off!(io_kiocb_opcode))?;
    let syscall = match opcode {
        IORING_OP_OPENAT => open_syscall::IO_URING_OPENAT,
        IORING_OP_OPENAT2 => open_syscall::IO_URING_OPENAT2,
        _ => return Ok(0),
    };
    let res_at = off!(tp_uring_res) as usize;
    // SAFETY: reading a field of the tracepoint record.
    let res: i32 = unsafe { ctx.read_at::<i32>(res_at) }.map_err(|_| 0u32)?;
    // open_how { flags, mode, resolve } (openat's arguments are stored in it too).
    let flags: u64 = read(req, off!(io_open_how))?;
    let mode: u64 = read(req, off!(io_open_how) + 8)?;
    let slot: u32 = read(req, off!(io_open_file_slot))?;
    let args = OpenArgs { filename: 0, flags, dfd: AT_FDCWD, mode: mode as u32, syscall, known: true };
    // A direct descriptor succeeded (res 0) but there is no fd to resolve.
    let fd = if slot != 0 { -1 } else { res as i64 };
    hand_over(ctx, res as i64, fd, &args)
}

/// An open on its way from the hook that saw it to `open_judge`, through a
/// per-CPU slot (tail calls run on the CPU that made them, uninterrupted).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct OpenCall {
    filename: u64,
    flags: u64,
    ret: i64,
    fd: i64,
    dfd: i32,
    mode: u32,
    syscall: u32,
    known: u32,
    /// Left by `open_judge` for `open_verdict`: what the path resolution
    /// came to (`Resolved`), the path's length at the front of the policy
    /// scratch buffer, and the identity verdict (packed, `policy::unpack`).
    resolved: u32,
    len: u32,
    by_id: u32,
    /// The cgroup and its policy state (`policy::state`), looked up once
    /// by `open_judge`.
    gen: u32,
    cgroup_id: u64,
    mask: u64,
}

#[map]
static OPEN_CALL: PerCpuArray<OpenCall> = PerCpuArray::with_max_entries(1, 0);

/// The open pipeline's later stages, tail-called (filled by the loader):
/// each is verified on its own, from one starting state, instead of once per
/// way the earlier stages can reach it. On 5.10 and 6.1, whose verifiers
/// prune less, one program holding all three does not fit the budget.
#[map]
static OPEN_STAGES: ProgramArray = ProgramArray::with_max_entries(3, 0);
const STAGE_JUDGE: u32 = 0;
const STAGE_VERDICT: u32 = 1;
const STAGE_RECORD: u32 = 2;

/// Hands the open to `open_judge`. Without it (not loaded: the loader then
/// reports the open programs as not attached) nothing more can be done.
#[inline(always)]
fn hand_over(ctx: &TracePointContext, ret: i64, fd: i64, args: &OpenArgs) -> Result<u32, u32> {
    let call = OPEN_CALL.get_ptr_mut(0).ok_or(0u32)?;
    // SAFETY: a per-CPU map value, ours until the tail call returns.
    unsafe {
        *call = OpenCall {
            filename: args.filename,
            flags: args.flags,
            ret,
            fd,
            dfd: args.dfd,
            mode: args.mode,
            syscall: args.syscall,
            known: args.known as u32,
            resolved: Resolved::NoPolicy as u32,
            len: 0,
            by_id: 0,
            gen: 0,
            cgroup_id: 0,
            mask: 0,
        };
        // On success control does not come back.
        OPEN_STAGES.tail_call(ctx, STAGE_JUDGE);
    }
    count(stat::OPEN_STAGE_MISS);
    Ok(0)
}

/// Second stage of every open: resolves the path to judge (the opened
/// file's, or the one asked for when the open failed) and checks the file's
/// identity; `open_verdict` matches the path.
#[tracepoint]
pub fn open_judge(ctx: TracePointContext) -> u32 {
    match try_judge(&ctx) {
        Ok(v) | Err(v) => v,
    }
}

fn try_judge(ctx: &TracePointContext) -> Result<u32, u32> {
    let call = OPEN_CALL.get_ptr_mut(0).ok_or(0u32)?;
    // SAFETY: a per-CPU map value, filled by the stage that tail-called us.
    let c = unsafe { *call };
    let ops = if c.known != 0 { file_ops(c.flags) } else { 0x1f };
    // SAFETY: helper without arguments.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    let st = policy::state(cgroup_id);
    let (resolved, len, by_id) = resolve_open(current_task(), c.ret, c.fd, c.filename, st, ops);
    // SAFETY: as above.
    unsafe {
        (*call).resolved = resolved as u32;
        (*call).len = len as u32;
        (*call).by_id = by_id;
        (*call).gen = st.0 as u32;
        (*call).cgroup_id = cgroup_id;
        (*call).mask = st.1;
        OPEN_STAGES.tail_call(ctx, STAGE_VERDICT);
    }
    count(stat::OPEN_STAGE_MISS);
    Ok(0)
}

/// Third stage of every open: matches the resolved path, counts, kills, and
/// (when it is to be sent) starts the record, whose strings `open_record`
/// appends.
#[tracepoint]
pub fn open_verdict(ctx: TracePointContext) -> u32 {
    match try_verdict(&ctx) {
        Ok(v) | Err(v) => v,
    }
}

fn try_verdict(ctx: &TracePointContext) -> Result<u32, u32> {
    // SAFETY: a per-CPU map value, filled by the earlier stages.
    let c = unsafe { *OPEN_CALL.get_ptr(0).ok_or(0u32)? };
    // The verdict and the counter come first, from the cheapest facts: the
    // record (the user's string, the cwd walk) is built only when it is sent.
    let cgroup_id = c.cgroup_id;
    let failed = (c.ret < 0) as u8;
    let (op, ops) = if c.known != 0 { (file_op(c.flags), file_ops(c.flags)) } else { (file_op::OPEN, 0x1f) };
    let by_id = policy::unpack(c.by_id);
    let mut judged = if c.resolved == Resolved::Path as u32 {
        match_resolved(c.len as usize, c.ret < 0, by_id, (c.gen as u8, c.mask), ops)
    } else if c.resolved == Resolved::Unresolved as u32 {
        if by_id.action != action::NONE {
            OpenVerdict { verdict: by_id, by_identity: true, ..OpenVerdict::UNRESOLVED }
        } else {
            OpenVerdict::UNRESOLVED
        }
    } else {
        OpenVerdict::NONE
    };
    // Refused by the BPF LSM hook: its verdict, which saw the file itself.
    if c.ret == -(EPERM as i64) {
        if let Some(d) = crate::lsm::take_denial() {
            judged.verdict = policy::Verdict { rule: d.rule, action: d.action };
            judged.by_identity = d.flags & flags::MATCHED_IDENTITY != 0;
        }
    }
    let verdict = judged.verdict;
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
    if judged.unresolved {
        rec.flag(flags::PATH_UNRESOLVED);
    }
    if judged.by_identity {
        rec.flag(flags::MATCHED_IDENTITY);
    }
    let p: &mut FileOpen = rec.payload();
    p.syscall = c.syscall;
    p.dfd = c.dfd;
    p.flags = c.flags;
    p.mode = c.mode;
    p.ret = c.ret as i32;
    p.resolved_len = judged.resolved_len as u32;
    // SAFETY: a tail call to a tracepoint program; on success control does not come back.
    unsafe { OPEN_STAGES.tail_call(ctx, STAGE_RECORD) };
    // Only when the record stage is missing: send what is known.
    p.resolved_len = 0;
    rec.emit();
    Ok(0)
}

/// Last stage of an open: the record's strings (see `push_open_paths`),
/// appended to the header and payload `open_judge` left in the record
/// scratch buffer.
#[tracepoint]
pub fn open_record(_ctx: TracePointContext) -> u32 {
    let Some(mut rec) = Record::resume() else { return 0 };
    // SAFETY: a per-CPU map value, filled by the first stage.
    let Some(filename) = OPEN_CALL.get_ptr(0).map(|c| unsafe { (*c).filename }) else { return 0 };
    push_open_paths(&mut rec, current_task(), filename);
    rec.emit();
    0
}

/// Appends an open record's strings — the path as passed; when it is
/// relative and the file was not resolved, the directory it is relative to;
/// the resolved path (still at the front of the policy scratch buffer) —
/// and sets their lengths. `resolved_len` and `dfd` come from the payload.
#[inline(never)]
fn push_open_paths(rec: &mut Record, task: u64, filename: u64) {
    let (resolved_len, dfd) = {
        let p: &mut FileOpen = rec.payload();
        // SAFETY: reading the payload this record just wrote.
        unsafe { (core::ptr::read_volatile(&p.resolved_len) as usize, core::ptr::read_volatile(&p.dfd)) }
    };
    let path_start = rec.len();
    let path_len = if filename != 0 { rec.push_user_str(filename) } else { 0 };
    let mut dir_len = 0;
    // The directory a relative path is relative to is only needed when the
    // resolved path is not already known.
    if path_len > 0 && resolved_len == 0 && rec.byte_at(path_start) != b'/' {
        dir_len = if dfd == AT_FDCWD { push_cwd(rec, task) } else { push_fd_path(rec, task, dfd as i64) };
    }
    let mut resolved = 0;
    if resolved_len > 0 {
        if let Some(buf) = policy::scratch() {
            resolved = rec.push_kernel_bytes(buf, resolved_len);
        }
    }
    let p: &mut FileOpen = rec.payload();
    p.path_len = path_len;
    p.dir_len = dir_len;
    p.resolved_len = resolved;
}

/// What `open_judge` came to.
#[derive(Clone, Copy)]
enum Resolved {
    /// No policy applies to the cgroup (or nothing to match): no verdict.
    NoPolicy = 0,
    /// An opened file whose path could not be resolved.
    Unresolved = 1,
    /// A path to match at the front of the policy scratch buffer.
    Path = 2,
}

/// How an open was judged.
struct OpenVerdict {
    verdict: policy::Verdict,
    /// Its path could not be resolved: logged as such.
    unresolved: bool,
    /// The verdict came from the file's identity, not its name.
    by_identity: bool,
    /// Length of the resolved path left at the front of the policy scratch
    /// buffer (0: none).
    resolved_len: usize,
}

impl OpenVerdict {
    const NONE: OpenVerdict = OpenVerdict {
        verdict: policy::Verdict::NONE,
        unresolved: false,
        by_identity: false,
        resolved_len: 0,
    };
    const UNRESOLVED: OpenVerdict = OpenVerdict {
        verdict: policy::Verdict { rule: 0, action: action::LOG },
        unresolved: true,
        by_identity: false,
        resolved_len: 0,
    };
}

/// What an open is judged on (`open_verdict` matches it). A successful open is matched on the
/// opened file's own path (resolved: `..`, symlinks and relative paths cannot
/// dodge a rule) and on its identity (device and inode of the file and of
/// every directory above it: a hardlink or bind mount cannot either); a
/// refused one on the path it asked for when that is absolute (nothing was
/// opened, so a relative refused open is only counted). A successful open
/// whose path cannot be resolved, in a cgroup some policy applies to, is
/// logged as unresolved rather than passed as unmatched.
#[inline(always)]
fn resolve_open(
    task: u64,
    ret: i64,
    fd: i64,
    filename: u64,
    st: (u8, u64),
    ops: u8,
) -> (Resolved, usize, u32) {
    // No policy applies to this cgroup: no path work at all.
    if st.1 == 0 {
        return (Resolved::NoPolicy, 0, 0);
    }
    let Some(buf) = policy::scratch() else { return (Resolved::NoPolicy, 0, 0) };
    // The path to match: the one asked for when the open failed (nothing
    // was opened), the opened file's own otherwise — with its identity.
    if ret < 0 {
        if filename == 0 {
            return (Resolved::NoPolicy, 0, 0);
        }
        return (Resolved::Path, policy::user_path(buf, filename), 0);
    }
    let Ok(root) = task_root(task) else { return (Resolved::Unresolved, 0, 0) };
    let Ok(file) = fd_file(task, fd) else { return (Resolved::Unresolved, 0, 0) };
    let Ok((dentry, mnt)) = path_at(file, off!(file_path)) else { return (Resolved::Unresolved, 0, 0) };
    policy::identity_begin(buf, st, ops, false);
    let len = forward_path(buf, dentry, mnt, root);
    let by_id = policy::identity_scan(buf, file_inode(file));
    if len == 0 {
        return (Resolved::Unresolved, 0, by_id);
    }
    (Resolved::Path, len, by_id)
}

/// The verdict on a path `resolve_open` left at the front of the policy
/// scratch buffer: by name, or by identity when that is stronger.
#[inline(always)]
fn match_resolved(len: usize, failed: bool, by_id: policy::Verdict, st: (u8, u64), ops: u8) -> OpenVerdict {
    let Some(buf) = policy::scratch() else { return OpenVerdict::NONE };
    if st.1 == 0 || len == 0 {
        return OpenVerdict::NONE;
    }
    let by_name = policy::match_file(buf, len, st, ops);
    let resolved_len = if failed { 0 } else { len };
    if by_id.action > by_name.action {
        return OpenVerdict { verdict: by_id, by_identity: true, resolved_len, unresolved: false };
    }
    OpenVerdict { verdict: by_name, resolved_len, ..OpenVerdict::NONE }
}

/// Reads through a descriptor opened elsewhere — inherited across exec,
/// passed over a unix socket, opened before the policy loaded — of a file a
/// kill rule guards: the reader dies before the syscall returns to it, as it
/// would have at the open. Checked at syscall entry, by the file's identity
/// (no path walk); only while some kill rule guards a file, and only for
/// descriptors open for reading. One program attached to the entry of each
/// read-family syscall; the record's `__syscall_nr` says which, and where the
/// descriptor is.
#[tracepoint]
pub fn sys_enter_read_family(ctx: TracePointContext) -> u32 {
    match try_guard_read(&ctx) {
        Ok(v) | Err(v) => v,
    }
}

// x86_64 syscall numbers of the read family.
const NR_READ: u64 = 0;
const NR_MMAP: u64 = 9;
const NR_PREAD64: u64 = 17;
const NR_READV: u64 = 19;
const NR_SENDFILE: u64 = 40;
const NR_SPLICE: u64 = 275;
const NR_PREADV: u64 = 295;
const NR_COPY_FILE_RANGE: u64 = 326;
const NR_PREADV2: u64 = 327;
const NR_IO_URING_ENTER: u64 = 426;

/// `FMODE_READ`.
pub const FMODE_READ: u32 = 1;

/// A read-family syscall number: which argument holds the descriptor read
/// from (8 when none does: io_uring), and its `open_syscall` name.
#[inline(always)]
fn read_syscall(nr: u64) -> Option<(usize, u32)> {
    Some(match nr {
        NR_READ => (0, open_syscall::READ),
        NR_READV => (0, open_syscall::READV),
        NR_PREAD64 => (0, open_syscall::PREAD64),
        NR_PREADV => (0, open_syscall::PREADV),
        NR_PREADV2 => (0, open_syscall::PREADV2),
        NR_SENDFILE => (1, open_syscall::SENDFILE),
        NR_SPLICE => (0, open_syscall::SPLICE),
        NR_COPY_FILE_RANGE => (0, open_syscall::COPY_FILE_RANGE),
        NR_MMAP => (4, open_syscall::MMAP),
        NR_IO_URING_ENTER => (8, open_syscall::IO_URING_READ),
        _ => return None,
    })
}

fn try_guard_read(ctx: &TracePointContext) -> Result<u32, u32> {
    // The cheapest fact first: an array read, on every read on the node.
    if !policy::guarding_reads() || current_is_agent() || !has(offsets::FILES | offsets::IDENTITY) {
        return Ok(0);
    }
    // sys_enter_* records: the syscall number at 8, the arguments from 16.
    // SAFETY: reading a field of the tracepoint record.
    let nr: i32 = unsafe { ctx.read_at::<i32>(8) }.map_err(|_| 0u32)?;
    let (arg, syscall) = read_syscall(nr as u64).ok_or(0u32)?;
    let arg = policy::launder(0, arg as u64) as usize & 7;
    let syscall = policy::launder(1, syscall as u64) as u32;
    let fd = field(ctx, 16 + 8 * arg)? as i64;
    let task = current_task();
    let file = fd_file(task, fd)?;
    let mode: u32 = read(file, off!(file_mode))?;
    if mode & FMODE_READ == 0 {
        return Ok(0);
    }
    guard_read(task, file, fd, syscall)?;
    Ok(0)
}

/// The read-family syscall the current task is in, from the registers its
/// entry saved: (the descriptor read from, -1 for io_uring; the syscall).
/// None inside any other syscall (the kernel reading a file for exec, say:
/// the tracepoint guard never sees those either).
#[inline(always)]
pub fn current_read_syscall(task: u64) -> Option<(i64, u32)> {
    let stack: u64 = read(task, off!(task_stack)).ok()?;
    let r: SyscallRegs = read(stack + THREAD_SIZE - PT_REGS_SIZE, REGS_R10).ok()?;
    let (arg, syscall) = read_syscall(r.orig_ax)?;
    let fd = match arg {
        0 => r.di,
        1 => r.si,
        4 => r.r8,
        _ => u64::MAX,
    };
    Some((fd as i64, syscall))
}

/// Judges a read of `file` (through descriptor `fd`, in `syscall`) against
/// the kill rules that guard files by identity: kills the reader, counts
/// and reports it. True when it killed.
#[inline(always)]
pub fn guard_read(task: u64, file: u64, fd: i64, syscall: u32) -> Result<bool, u32> {
    // SAFETY: helper without arguments.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    let st = policy::state(cgroup_id);
    if st.1 == 0 {
        return Ok(false);
    }
    let buf = policy::scratch().ok_or(0u32)?;
    policy::identity_begin(buf, st, 1 << file_op::READ, false);
    let verdict = policy::unpack(policy::identity_scan(buf, file_inode(file)));
    if verdict.action != action::KILL {
        return Ok(false); // opens are where files are logged; reads only enforce
    }
    // SAFETY: helper with a signal number.
    unsafe { aya_ebpf::helpers::generated::bpf_send_signal(9) };
    let mut k = counters::key(cgroup_id, counter::FILE, file_op::READ, 0, 0);
    k.rule = verdict.rule;
    k.action = verdict.action;
    counters::add(&k, 0, 0);
    let mut rec = Record::new(kind::FILE_OPEN).ok_or(0u32)?;
    rec.set_verdict(verdict.rule, verdict.action);
    rec.flag(flags::MATCHED_IDENTITY);
    let mut resolved = 0;
    if let (Ok(root), Ok((dentry, mnt))) = (task_root(task), path_at(file, off!(file_path))) {
        let len = forward_path(buf, dentry, mnt, root);
        resolved = rec.push_kernel_bytes(buf, len);
    }
    let p: &mut FileOpen = rec.payload();
    p.syscall = syscall;
    p.dfd = AT_FDCWD;
    p.ret = fd as i32;
    p.resolved_len = resolved;
    rec.emit();
    Ok(true)
}

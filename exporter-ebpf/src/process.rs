//! Process lifecycle: exec (binary, argv, cwd, parent, credentials and
//! namespaces), exit (code or signal),
//! fork (so userspace knows the tree and children inherit binary and args).

use aya_ebpf::{
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
    EbpfContext,
};
use podwatch_common::{
    action, counter, flags, kind, offsets, Exec, Exit, Fork, FNV_OFFSET, FNV_PRIME, HASHED_PATH, MAX_STR,
};

use crate::{
    counters,
    kernel::{current_task, exe_path, file_inode, has, off, parent_tgid, push_cwd, read, tp_field},
    policy,
    record::{current_is_agent, Record},
};

// sched:sched_process_exec field offsets (stable ABI of the tracepoint format).
const EXEC_FILENAME_LOC: usize = 8;

#[tracepoint]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    match try_exec(&ctx) {
        Ok(v) | Err(v) => v,
    }
}

fn try_exec(ctx: &TracePointContext) -> Result<u32, u32> {
    let mut rec = Record::new(kind::EXEC).ok_or(0u32)?;
    let task = current_task();

    // __data_loc: low 16 bits offset from the record start, high 16 bits length.
    let loc: u32 = tp_field(ctx, EXEC_FILENAME_LOC);
    let filename = ctx.as_ptr() as u64 + (loc & 0xffff) as u64;
    let filename_start = rec.len();
    let filename_len = rec.push_kernel_str(filename, MAX_STR as u32);

    let mut key = counters::key(rec.header().cgroup_id, counter::EXEC, 0, 0, 0);
    if counters::by_binary() {
        let mut h = FNV_OFFSET;
        for i in 0..HASHED_PATH {
            let b = rec.byte_at(filename_start + i);
            if b == 0 {
                break;
            }
            h ^= b as u64;
            h = h.wrapping_mul(FNV_PRIME);
        }
        key.binary = h;
    }
    // Policy: the path the process asked for and the resolved path of the
    // file that actually runs (relative paths, `..`, symlinks, `/dev/fd/N`
    // from fexecve, `/proc/self/root/...` all end there); the stronger verdict
    // wins. A kill rule stops the new image before it runs.
    let mut verdict = policy::Verdict::NONE;
    let mut exe_len = 0;
    let st = policy::state(key.cgroup_id);
    if let Some(buf) = policy::scratch() {
        if filename_len > 1 {
            let len = (filename_len - 1) as usize;
            if rec.copy_out(filename_start, len, buf) {
                verdict = policy::match_exec(buf, len, st);
            }
        }
        // The walk also checks the binary's identity (and its directories').
        policy::identity_begin(buf, st, 0, true);
        let (len, exe) = exe_path(task, buf);
        let len = policy::launder(1, len as u64) as usize;
        let by_id = policy::unpack(policy::identity_scan(buf, file_inode(exe)));
        if by_id.action > verdict.action {
            verdict = by_id;
            rec.flag(flags::MATCHED_IDENTITY);
        }
        if len > 0 {
            let resolved = policy::match_exec(buf, len, st);
            if resolved.action > verdict.action {
                verdict = resolved;
                rec.flag(flags::MATCHED_EXECUTABLE);
            }
            exe_len = len as u32;
        } else if st.1 != 0 && verdict.action < action::LOG {
            // A policy applies and the executed file's path is unknown: say so.
            rec.flag(flags::PATH_UNRESOLVED);
            verdict.action = action::LOG;
        }
    }
    key.rule = verdict.rule;
    key.action = verdict.action;
    rec.set_verdict(verdict.rule, verdict.action);
    if verdict.action == action::KILL {
        // SAFETY: helper with a signal number.
        unsafe { aya_ebpf::helpers::generated::bpf_send_signal(9) };
    }
    counters::add(&key, 0, 0);

    // The strings are appended by one subprogram that reads what it needs
    // back from the record: the verifier checks that code once, not once
    // per way the verdict came out.
    let p: &mut Exec = rec.payload();
    p.filename_len = filename_len;
    p.exe_len = exe_len;
    push_exec_strings(&mut rec, task);
    rec.emit_counted();
    Ok(0)
}

#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    match try_exit(&ctx) {
        Ok(v) | Err(v) => v,
    }
}

fn try_exit(ctx: &TracePointContext) -> Result<u32, u32> {
    // Only the last thread of a process reports the process's exit. Kernels
    // whose tracepoint lacks `group_dead` fall back to the thread-group leader.
    let group_dead_at = off!(tp_exit_group_dead) as usize;
    let last = if group_dead_at != 0 {
        // SAFETY: reading a field of the tracepoint record at the offset its format gives.
        unsafe { ctx.read_at::<u8>(group_dead_at) }.map_err(|_| 0u32)? != 0
    } else {
        let pid_tgid = aya_ebpf::helpers::bpf_get_current_pid_tgid();
        pid_tgid as u32 == (pid_tgid >> 32) as u32
    };
    if !last {
        return Ok(0);
    }
    let mut rec = Record::new(kind::EXIT).ok_or(0u32)?;
    let code =
        if has(offsets::TASK) { read::<u32>(current_task(), off!(task_exit_code)).unwrap_or(0) } else { 0 };
    let signaled = (code & 0x7f != 0) as u8;
    counters::add(&counters::key(rec.header().cgroup_id, counter::EXIT, 0, signaled, 0), 0, 0);
    let p: &mut Exit = rec.payload();
    p.exit_code = code;
    rec.emit_counted();
    Ok(0)
}

/// Raw tracepoint: args are (struct task_struct *parent, struct task_struct *child).
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn sched_process_fork(ctx: RawTracePointContext) -> i32 {
    match try_fork(&ctx) {
        Ok(v) | Err(v) => v as i32,
    }
}

fn try_fork(ctx: &RawTracePointContext) -> Result<u32, u32> {
    if !has(offsets::TASK) || current_is_agent() {
        return Ok(0);
    }
    let child: u64 = ctx.arg(1);
    let child_pid: u32 = read(child, off!(task_pid))?;
    let child_tgid: u32 = read(child, off!(task_tgid))?;
    if child_pid != child_tgid {
        return Ok(0); // a new thread, not a new process
    }
    let parent = parent_tgid(child)?;
    let mut rec = Record::new(kind::FORK).ok_or(0u32)?;
    let p: &mut Fork = rec.payload();
    p.child_tgid = child_tgid;
    p.parent_tgid = parent;
    rec.emit();
    Ok(0)
}

/// Appends an exec record's argv, cwd and the executed file's resolved path
/// (still at the front of the policy scratch buffer; its length is in the
/// payload), and sets ppid and the lengths.
#[inline(never)]
fn push_exec_strings(rec: &mut Record, task: u64) {
    let exe_len = {
        let p: &mut Exec = rec.payload();
        // SAFETY: reading the payload this record just wrote.
        unsafe { core::ptr::read_volatile(&p.exe_len) as usize }
    };
    let mut ppid = 0;
    let mut args_len = 0;
    if has(offsets::TASK) {
        ppid = parent_tgid(task).unwrap_or(0);
    }
    if has(offsets::ARGS) {
        if let Ok(mm) = read::<u64>(task, off!(task_mm)) {
            let start: u64 = read(mm, off!(mm_arg_start)).unwrap_or(0);
            let end: u64 = read(mm, off!(mm_arg_end)).unwrap_or(0);
            if end > start {
                let len = (end - start) as usize;
                if len > MAX_STR {
                    rec.flag(flags::ARGS_TRUNCATED);
                }
                args_len = rec.push_user_bytes(start, len);
            }
        }
    }
    let cwd_len = push_cwd(rec, task);
    let mut pushed = 0;
    if exe_len > 0 {
        if let Some(buf) = policy::scratch() {
            pushed = rec.push_kernel_bytes(buf, exe_len);
        }
    }
    let p: &mut Exec = rec.payload();
    p.ppid = ppid;
    p.args_len = args_len;
    p.cwd_len = cwd_len;
    p.exe_len = pushed;
    crate::privilege::read_creds(task, &mut p.creds, true);
}

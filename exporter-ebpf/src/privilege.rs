//! Credentials and namespaces: what a process runs with (read on every
//! exec), and before → after around the syscalls that change them (the
//! setuid and setgid families, capset, unshare, setns) and around an exec
//! that changes them (a setuid binary, file capabilities).
//!
//! One program is attached to the entry of all those syscalls and one to
//! their exit (every `sys_enter_*` / `sys_exit_*` record has the same layout):
//! the entry stashes the thread's credentials, the exit compares, judges the
//! privilege rules, counts, and sends a record when something changed or
//! failed. A kill rule's SIGKILL is pending when the syscall returns: the
//! process dies before it runs one more instruction with what it gained.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::generated::bpf_probe_read_kernel,
    macros::{map, tracepoint},
    maps::{Array, HashMap, PerCpuArray},
    programs::TracePointContext,
};
use podwatch_common::{
    action, capset, change, counter, id, kind, ns, offsets, policy::MAX_PRIVILEGE_RULES, priv_syscall,
    Credentials, Privilege, PrivilegeRule,
};

use crate::{
    counters,
    kernel::{current_task, has, off, read},
    policy,
    record::{current_is_agent, Record},
};

/// Credentials before a privilege syscall, by thread (`pid_tgid`); before an
/// exec by process (`exec_key`): a thread that execs takes the leader's pid.
#[map]
static PRIV_BEFORE: HashMap<u64, Credentials> = HashMap::with_max_entries(16384, 0);

/// Each generation's privilege rules, `MAX_PRIVILEGE_RULES` per generation.
#[map]
static PRIV_RULES: Array<PrivilegeRule> = Array::with_max_entries(2 * MAX_PRIVILEGE_RULES as u32, 0);

/// Where the entry program assembles the credentials it stashes.
#[map]
static CREDS_SCRATCH: PerCpuArray<Credentials> = PerCpuArray::with_max_entries(1, 0);

// sys_enter_* / sys_exit_* record fields.
const SYSCALL_NR: usize = 8;
const SYSCALL_RET: usize = 16;

/// The stash key: per thread, except an exec's (per process, see above).
#[inline(always)]
fn stash_key(nr: u32) -> u64 {
    let pid_tgid = aya_ebpf::helpers::bpf_get_current_pid_tgid();
    if nr == priv_syscall::EXECVE || nr == priv_syscall::EXECVEAT {
        pid_tgid | 0xffff_ffff
    } else {
        pid_tgid
    }
}

#[inline(always)]
fn read_into(dst: *mut u8, len: u32, src: u64) -> bool {
    // SAFETY: the helper checks the source; `dst` points at `len` bytes of a map value.
    unsafe { bpf_probe_read_kernel(dst as *mut c_void, len, src as *const c_void) == 0 }
}

/// A task's credentials, and its namespaces unless `with_ns` is false (an
/// exec cannot change them). Fills every field: `valid` says whether the ids
/// and capabilities were read.
#[inline(never)]
pub fn read_creds(task: u64, out: &mut Credentials, with_ns: bool) {
    out.valid = 0;
    out.ids = [0; 8];
    out.caps = [0; 5];
    out.ns = [0; ns::COUNT];
    if !has(offsets::CREDS) {
        return;
    }
    let Ok(cred) = read::<u64>(task, off!(task_real_cred)) else { return };
    if read_into(out.ids.as_mut_ptr() as *mut u8, 32, cred + off!(cred_uid))
        && read_into(out.caps.as_mut_ptr() as *mut u8, 40, cred + off!(cred_caps))
    {
        out.valid = 1;
    }
    if !with_ns || !has(offsets::NAMESPACES) {
        return;
    }
    let inum = off!(ns_common_inum);
    if let Ok(user_ns) = read::<u64>(cred, off!(cred_user_ns)) {
        // SAFETY: plain read of a static.
        let at = unsafe { core::ptr::read_volatile(&crate::kernel::OFFSETS.ns_common_at[ns::USER]) } as u64;
        out.ns[ns::USER] = read::<u32>(user_ns, at + inum).unwrap_or(0);
    }
    let Ok(nsproxy) = read::<u64>(task, off!(task_nsproxy)) else { return };
    for i in 0..ns::COUNT {
        if i == ns::USER {
            continue;
        }
        // SAFETY: plain reads of a static.
        let (member, at) = unsafe {
            (
                core::ptr::read_volatile(&crate::kernel::OFFSETS.nsproxy_member[i]) as u64,
                core::ptr::read_volatile(&crate::kernel::OFFSETS.ns_common_at[i]) as u64,
            )
        };
        if let Ok(p) = read::<u64>(nsproxy, member) {
            out.ns[i] = read::<u32>(p, at + inum).unwrap_or(0);
        }
    }
}

#[tracepoint]
pub fn sys_enter_privilege(ctx: TracePointContext) -> u32 {
    match try_enter(&ctx) {
        Ok(v) | Err(v) => v,
    }
}

fn try_enter(ctx: &TracePointContext) -> Result<u32, u32> {
    if !has(offsets::CREDS) || current_is_agent() {
        return Ok(0);
    }
    // SAFETY: reading a field of the tracepoint record.
    let nr = unsafe { ctx.read_at::<i32>(SYSCALL_NR) }.map_err(|_| 0u32)? as u32;
    let Some(what) = priv_syscall::change_of(nr) else { return Ok(0) };
    let buf = CREDS_SCRATCH.get_ptr_mut(0).ok_or(0u32)?;
    // SAFETY: per-CPU scratch value, ours until the program returns.
    let creds = unsafe { &mut *buf };
    read_creds(current_task(), creds, what != change::EXEC);
    let _ = PRIV_BEFORE.insert(&stash_key(nr), creds, 0);
    Ok(0)
}

#[tracepoint]
pub fn sys_exit_privilege(ctx: TracePointContext) -> u32 {
    match try_exit(&ctx) {
        Ok(v) | Err(v) => v,
    }
}

fn try_exit(ctx: &TracePointContext) -> Result<u32, u32> {
    if !has(offsets::CREDS) {
        return Ok(0);
    }
    // SAFETY: reading fields of the tracepoint record.
    let nr = unsafe { ctx.read_at::<i32>(SYSCALL_NR) }.map_err(|_| 0u32)? as u32;
    // SAFETY: as above.
    let ret = unsafe { ctx.read_at::<i64>(SYSCALL_RET) }.map_err(|_| 0u32)?;
    let what = priv_syscall::change_of(nr).ok_or(0u32)?;
    let key = stash_key(nr);
    // SAFETY: read-only use of the looked-up value, copied out below.
    let Some(before) = (unsafe { PRIV_BEFORE.get(&key) }) else { return Ok(0) };
    if what == change::EXEC && ret != 0 {
        // A failed exec changes nothing.
        let _ = PRIV_BEFORE.remove(&key);
        return Ok(0);
    }
    let mut rec = Record::new(kind::PRIVILEGE).ok_or(0u32)?;
    let cgroup_id = rec.header().cgroup_id;
    let p: &mut Privilege = rec.payload();
    p.syscall = nr;
    p.ret = ret as i32;
    p.change = what;
    p._pad = [0; 7];
    p.before = *before;
    let _ = PRIV_BEFORE.remove(&key);
    read_creds(current_task(), &mut p.after, what != change::EXEC);
    let changed = p.before.ids != p.after.ids || p.before.caps != p.after.caps || p.before.ns != p.after.ns;

    let verdict = policy::unpack(judge(cgroup_id, p));
    if !changed && ret == 0 && verdict.action == action::NONE {
        // Nothing changed (setuid to the uid it has; an exec of an ordinary binary).
        return Ok(0);
    }
    let mut key = counters::key(cgroup_id, counter::PRIVILEGE, what, (ret < 0) as u8, 0);
    key.rule = verdict.rule;
    key.action = verdict.action;
    counters::add(&key, 0, 0);
    rec.set_verdict(verdict.rule, verdict.action);
    if verdict.action == action::KILL {
        // SAFETY: helper with a signal number.
        unsafe { aya_ebpf::helpers::generated::bpf_send_signal(9) };
    }
    if !policy::filtering() || verdict.action >= action::LOG {
        rec.emit();
    }
    Ok(0)
}

/// The strongest privilege rule of the cgroup's policies that this change
/// matches, packed as `rule | action << 16` (a BPF function takes five
/// arguments and returns one register).
// Indexed loops over three arrays at once: plain bounded indexes for the verifier.
#[allow(clippy::needless_range_loop)]
#[inline(never)]
fn judge(cgroup_id: u64, p: &Privilege) -> u32 {
    let mut verdict = policy::Verdict::NONE;
    let (gen, mask) = policy::state(cgroup_id);
    let count = policy::privilege_rules(gen) as usize;
    if count == 0 || mask == 0 {
        return 0;
    }
    let (what, before, after) = (p.change, &p.before, &p.after);
    // A call that succeeded and changed nothing (an exec of an ordinary
    // binary, setuid to the uid it has) is judged by capabilitiesHeld only.
    let unchanged =
        p.ret == 0 && before.ids == after.ids && before.caps == after.caps && before.ns == after.ns;
    let host = policy::host_namespaces();
    let mut ns_changed = 0u8;
    let mut host_entered = 0u8;
    for i in 0..ns::COUNT {
        if before.ns[i] != after.ns[i] {
            ns_changed |= 1 << i;
            if after.ns[i] != 0 && after.ns[i] == host[i] {
                host_entered |= 1 << i;
            }
        }
    }
    let gained = after.caps[capset::EFFECTIVE] & !before.caps[capset::EFFECTIVE];
    let held = after.caps[capset::EFFECTIVE];
    let uid_to = if after.ids[id::UID] != before.ids[id::UID] { after.ids[id::UID] } else { u32::MAX };
    let euid_to = if after.ids[id::EUID] != before.ids[id::EUID] { after.ids[id::EUID] } else { u32::MAX };
    for i in 0..MAX_PRIVILEGE_RULES {
        if i >= count {
            break;
        }
        let Some(r) = PRIV_RULES.get((gen as usize * MAX_PRIVILEGE_RULES + i) as u32) else { break };
        if mask & (1u64 << (r.policy & 63)) == 0 || r.action <= verdict.action {
            continue;
        }
        if (r.changes != 0 && r.changes & (1 << what) == 0) || (unchanged && r.caps_held == 0) {
            continue;
        }
        if r.caps_held != 0 && held & r.caps_held == 0 {
            continue;
        }
        if r.caps_gained != 0 && gained & r.caps_gained == 0 {
            continue;
        }
        if r.ns_changed != 0 && ns_changed & r.ns_changed == 0 {
            continue;
        }
        if r.ns_host_entered != 0 && host_entered & r.ns_host_entered == 0 {
            continue;
        }
        if r.has_uids != 0 {
            let hit = r.uids.iter().any(|&u| u != u32::MAX && (u == uid_to || u == euid_to));
            if !hit {
                continue;
            }
        }
        verdict = policy::Verdict { rule: r.rule, action: r.action };
    }
    verdict.rule as u32 | (verdict.action as u32) << 16
}

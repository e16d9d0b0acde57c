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
    kernel::{current_task, has, off, read, tp_field},
    policy,
    record::{current_is_agent, opaque, Record},
};

/// Credentials before a privilege syscall, by thread (`pid_tgid`); before an
/// exec by process (`exec_key`): a thread that execs takes the leader's pid.
#[map]
static PRIV_BEFORE: HashMap<u64, Credentials> = HashMap::with_max_entries(16384, 0);

/// Each generation's privilege rules, `MAX_PRIVILEGE_RULES` per generation.
#[map]
static PRIV_RULES: Array<PrivilegeRule> = Array::with_max_entries(2 * MAX_PRIVILEGE_RULES as u32, 0);

/// Where `judge` passes its facts through map memory (see there).
#[map]
static FACTS: PerCpuArray<[u64; 10]> = PerCpuArray::with_max_entries(1, 0);

/// `read_creds`' copy of a task's `nsproxy` namespace pointers.
#[map]
static NS_POINTERS: PerCpuArray<[u64; 8]> = PerCpuArray::with_max_entries(1, 0);

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
    // Word by word, volatile: an array assignment becomes a call to a
    // byte-loop memset, which the verifier walks byte by byte.
    let words = out as *mut Credentials as *mut u64;
    for i in 0..core::mem::size_of::<Credentials>() / 8 {
        // SAFETY: inside `out`.
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
    }
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
    // The namespace pointers in one read (the loader checks they lie in
    // these 64 bytes), into map memory: indexed by a variable there, where
    // older verifiers refuse a variable index into the stack.
    let Some(ptrs) = NS_POINTERS.get_ptr_mut(0) else { return };
    if !read_into(ptrs as *mut u8, 64, nsproxy + off!(nsproxy_first)) {
        return;
    }
    let first = off!(nsproxy_first);
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
        let slot = (member.wrapping_sub(first) >> 3) as usize & 7;
        // SAFETY: a per-CPU value of eight pointers, the slot masked into it.
        let p = unsafe { core::ptr::read_volatile((ptrs as *const u64).add(slot)) };
        out.ns[i] = read::<u32>(p, at + inum).unwrap_or(0);
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
    let nr = tp_field::<i32>(ctx, SYSCALL_NR) as u32;
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
    let nr = tp_field::<i32>(ctx, SYSCALL_NR) as u32;
    let ret: i64 = tp_field(ctx, SYSCALL_RET);
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
    // One helper call, not a struct copy (a byte-loop memcpy to the verifier).
    let copied = read_into(
        &mut p.before as *mut Credentials as *mut u8,
        core::mem::size_of::<Credentials>() as u32,
        before as *const Credentials as u64,
    );
    let _ = PRIV_BEFORE.remove(&key);
    if !copied {
        return Ok(0);
    }
    read_creds(current_task(), &mut p.after, what != change::EXEC);

    let judged = judge(cgroup_id, p);
    let verdict = policy::unpack(judged);
    let changed = judged & CHANGED != 0;
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

/// 1 when `x` is not zero, 0 when it is, without a branch: `x | -x` has its
/// top bit set exactly when `x` is not zero. (`opaque` keeps LLVM from
/// folding this back into a comparison, which BPF can only do with a jump.)
#[inline(always)]
fn nonzero(x: u64) -> u64 {
    (x | opaque(x.wrapping_neg() as usize) as u64) >> 63
}

/// `judge`'s bit for "the credentials or namespaces changed".
const CHANGED: u32 = 1 << 24;

/// The strongest privilege rule of the cgroup's policies that this change
/// matches, packed as `rule | action << 16`, plus `CHANGED` (a BPF function
/// takes five arguments and returns one register).
///
// Indexed loops over parallel arrays: plain bounded indexes for the verifier.
#[allow(clippy::needless_range_loop)]
#[inline(never)]
fn judge(cgroup_id: u64, p: &Privilege) -> u32 {
    let (before, after) = (&p.before, &p.after);
    let host = policy::host_namespaces();
    let mut ns_changed = 0u64;
    let mut host_entered = 0u64;
    let mut differs = 0u64;
    for i in 0..ns::COUNT {
        let (b, a) = (before.ns[i] as u64, after.ns[i] as u64);
        let changed = nonzero(b ^ a);
        ns_changed |= changed << i;
        host_entered |= (changed & nonzero(a) & (nonzero(a ^ host[i] as u64) ^ 1)) << i;
    }
    differs |= ns_changed;
    for i in 0..8 {
        differs |= before.ids[i] as u64 ^ after.ids[i] as u64;
    }
    for i in 0..5 {
        differs |= before.caps[i] ^ after.caps[i];
    }
    let changed = if differs != 0 { CHANGED } else { 0 };
    let (gen, mask) = policy::state(cgroup_id);
    let count = policy::privilege_rules(gen) as usize;
    if count == 0 || mask == 0 {
        return changed;
    }
    // A call that succeeded and changed nothing (an exec of an ordinary
    // binary, setuid to the uid it has) is judged by capabilitiesHeld only.
    let unchanged = (nonzero(differs) | nonzero(p.ret as i64 as u64)) ^ 1;
    let what = 1u64 << (p.change & 7);
    let held = after.caps[capset::EFFECTIVE];
    let gained = held & !before.caps[capset::EFFECTIVE];
    // Unchanged ids become u64::MAX, which no rule's uid (a u32) equals.
    let uid_to = {
        let (b, a) = (before.ids[id::UID] as u64, after.ids[id::UID] as u64);
        a | (nonzero(a ^ b) ^ 1).wrapping_neg()
    };
    let euid_to = {
        let (b, a) = (before.ids[id::EUID] as u64, after.ids[id::EUID] as u64);
        a | (nonzero(a ^ b) ^ 1).wrapping_neg()
    };
    // The facts live in map memory and each iteration reads them there:
    // to the verifier they are unknown values, so the paths that computed
    // them (LLVM lowers some of the arithmetic to jumps) merge, nothing in
    // the loop is decided by a constant, and no register a comparison
    // narrowed is carried into the next iteration — each of those would be
    // one more state per iteration for the verifier to walk.
    let Some(f) = FACTS.get_ptr_mut(0) else { return changed };
    let f = f as *mut u64;
    let facts =
        [what, unchanged, held, gained, ns_changed, host_entered, uid_to, euid_to, mask, changed as u64];
    for (k, v) in facts.iter().enumerate() {
        // SAFETY: inside the per-CPU value, ours until the program returns.
        unsafe { core::ptr::write_volatile(f.add(k), *v) };
    }
    // SAFETY: as above.
    let fact = |k: usize| unsafe { core::ptr::read_volatile(f.add(k)) };
    // Userspace orders the rules strongest action first: the first that
    // matches is the verdict, and no "best so far" travels through the loop.
    for i in 0..MAX_PRIVILEGE_RULES {
        if i >= count {
            break;
        }
        let Some(r) = PRIV_RULES.get((gen as usize * MAX_PRIVILEGE_RULES + i) as u32) else { break };
        if fact(8) & (1u64 << (r.policy & 63)) == 0
            || (r.changes != 0 && fact(0) & r.changes as u64 == 0)
            || (fact(1) != 0 && r.caps_held == 0)
            || (r.caps_held != 0 && fact(2) & r.caps_held == 0)
            || (r.caps_gained != 0 && fact(3) & r.caps_gained == 0)
            || (r.ns_changed != 0 && fact(4) & r.ns_changed as u64 == 0)
            || (r.ns_host_entered != 0 && fact(5) & r.ns_host_entered as u64 == 0)
        {
            continue;
        }
        if r.has_uids != 0 {
            let (uid_to, euid_to) = (fact(6), fact(7));
            let [a, b, c, d] = r.uids.map(|u| u as u64);
            let hit = a == uid_to
                || a == euid_to
                || b == uid_to
                || b == euid_to
                || c == uid_to
                || c == euid_to
                || d == uid_to
                || d == euid_to;
            if !hit {
                continue;
            }
        }
        return r.rule as u32 | (r.action as u32) << 16 | fact(9) as u32;
    }
    fact(9) as u32
}

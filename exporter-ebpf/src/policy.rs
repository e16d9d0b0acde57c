//! In-kernel policy matching: tries of rules, per-cgroup policy masks, and the
//! verdict (rule, action) for an exec, an open or a connection.
//!
//! Every trie key starts with a generation byte. Userspace writes a new
//! generation beside the active one and flips `PolicyConfig::active` with one
//! map update, so a probe always matches against one complete policy set.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_NOEXIST},
    helpers::generated::bpf_probe_read_kernel,
    macros::map,
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, PerCpuArray},
};
use podwatch_common::{
    action, identity, offsets,
    policy::{MAX_MATCH_PATH, REFS},
    suffix_filter, InodeKey, MatchSet, PolicyConfig, ADDR_KEY_LEN, PATH_KEY_LEN,
};

use crate::kernel::{has, off, read, FORWARD_POS, FORWARD_WINDOW};

#[map]
static POLICY_CONFIG: Array<PolicyConfig> = Array::with_max_entries(1, 0);

/// Each generation's per-cgroup policy masks, in a map of its own: a reload
/// writes only the inactive generation's map, so no element a probe may be
/// reading is replaced under it (a preallocated hash map recycles a replaced
/// element at once, and a probe holding it would read another cgroup's mask).
#[map]
static CGROUP_MASKS_0: HashMap<u64, u64> = HashMap::with_max_entries(65536, 0);
#[map]
static CGROUP_MASKS_1: HashMap<u64, u64> = HashMap::with_max_entries(65536, 0);

#[map]
static EXEC_PATHS: LpmTrie<[u8; PATH_KEY_LEN], MatchSet> = LpmTrie::with_max_entries(8192, BPF_F_NO_PREALLOC);
#[map]
static EXEC_SUFFIXES: LpmTrie<[u8; PATH_KEY_LEN], MatchSet> =
    LpmTrie::with_max_entries(8192, BPF_F_NO_PREALLOC);
#[map]
static FILE_PATHS: LpmTrie<[u8; PATH_KEY_LEN], MatchSet> = LpmTrie::with_max_entries(8192, BPF_F_NO_PREALLOC);
#[map]
static FILE_SUFFIXES: LpmTrie<[u8; PATH_KEY_LEN], MatchSet> =
    LpmTrie::with_max_entries(8192, BPF_F_NO_PREALLOC);
#[map]
static NET_ADDRS: LpmTrie<[u8; ADDR_KEY_LEN], MatchSet> = LpmTrie::with_max_entries(8192, BPF_F_NO_PREALLOC);

/// Files and directories rules name, by device and inode (both generations).
#[map]
static IDENTITIES: HashMap<InodeKey, MatchSet> = HashMap::with_max_entries(4096, BPF_F_NO_PREALLOC);
/// One bit per hashed inode number of any identity entry: a directory a
/// path walk passes costs one inlined array read unless its bit is set.
/// See `podwatch_common::suffix_filter`.
#[map]
static SUFFIX_FILTER: Array<u64> = Array::with_max_entries(suffix_filter::SLOTS, 0);

#[map]
static IDENTITY_FILTER: Array<u64> = Array::with_max_entries(identity::FILTER_WORDS, 0);

/// Per-CPU room for a path (`[0, 1024)`), the window `forward_path`
/// assembles it in (`[1024, 2048)`), the two trie keys built from it and
/// `forward_path`'s write position.
const FWD_KEY: usize = 2 * FORWARD_WINDOW;
const REV_KEY: usize = FWD_KEY + 512;
/// Identity checks during `forward_path`: the cgroup's mask (u64), then
/// generation, operations, the two roles to look up (0xff: none), whether
/// the next component is the leaf, and the best verdict so far (rule, action).
const ID_MASK: usize = FORWARD_POS + 8;
const ID_GEN: usize = ID_MASK + 8;
const ID_OPS: usize = ID_GEN + 1;
const ID_SELF: usize = ID_GEN + 2;
const ID_DIR: usize = ID_GEN + 3;
const ID_COUNT: usize = ID_GEN + 4;
const ID_RULE: usize = ID_GEN + 8;
const ID_ACTION: usize = ID_GEN + 10;
/// The mount roots a walk left.
const ID_INODES: usize = ID_GEN + 16;
/// Mount roots noted per walk (paths cross few mounts).
const ID_MAX: usize = 2;
/// `match_path`'s key length.
const HEAD_SLOT: usize = ID_INODES + 8 * ID_MAX;
/// `launder`'s slots.
const LAUNDER: usize = HEAD_SLOT + 8;
const SCRATCH: usize = 4096;
const _: () = assert!(LAUNDER + 8 * 8 <= SCRATCH);
const _: () = assert!(REV_KEY + 4 + PATH_KEY_LEN <= FORWARD_POS && ID_INODES + 8 * ID_MAX <= SCRATCH);
const _: () = assert!(ID_MAX.is_power_of_two());
const _: () = assert!(MAX_MATCH_PATH < FORWARD_WINDOW);
#[map]
static KEY_SCRATCH: PerCpuArray<[u8; SCRATCH]> = PerCpuArray::with_max_entries(1, 0);

#[derive(Clone, Copy)]
pub struct Verdict {
    pub rule: u16,
    pub action: u8,
}

impl Verdict {
    pub const NONE: Verdict = Verdict { rule: 0, action: action::NONE };
}

/// Whether detailed file and network records need a matching log/kill/deny rule.
#[inline(always)]
pub fn filtering() -> bool {
    POLICY_CONFIG.get(0).is_some_and(|c| c.filter != 0)
}

/// Whether some kill rule of the active generation guards a file by its
/// identity: only then do reads through descriptors need a look.
#[inline(always)]
pub fn guarding_reads() -> bool {
    POLICY_CONFIG.get(0).is_some_and(|c| c.guard_reads[(c.active & 1) as usize] != 0)
}

/// Whether the active generation holds deny rules of kind `bit`
/// (`DENY_FILES`, `DENY_EXECS`): the LSM hooks have work only then.
#[inline(always)]
pub fn denying(bit: u32) -> bool {
    POLICY_CONFIG.get(0).is_some_and(|c| c.deny[(c.active & 1) as usize] & bit != 0)
}

/// How many privilege rules generation `gen` holds.
#[inline(always)]
pub fn privilege_rules(gen: u8) -> u32 {
    POLICY_CONFIG.get(0).map(|c| c.privilege_rules[(gen & 1) as usize]).unwrap_or(0)
}

/// The host's namespaces (init's), as the agent found them.
#[inline(always)]
pub fn host_namespaces() -> [u32; podwatch_common::ns::COUNT] {
    POLICY_CONFIG.get(0).map(|c| c.host_ns).unwrap_or([0; podwatch_common::ns::COUNT])
}

/// (generation, policy mask) for a cgroup.
#[inline(always)]
pub fn state(cgroup_id: u64) -> (u8, u64) {
    let Some(cfg) = POLICY_CONFIG.get(0) else { return (0, 0) };
    let gen = (cfg.active & 1) as usize;
    // SAFETY: read-only use of the looked-up value.
    let found = if gen == 0 {
        unsafe { CGROUP_MASKS_0.get(&cgroup_id) }
    } else {
        unsafe { CGROUP_MASKS_1.get(&cgroup_id) }
    };
    let mask = match found {
        Some(m) => *m,
        None => cfg.default_masks[gen],
    };
    (gen as u8, mask)
}

/// Arms identity checks for the next path walk: files (`exec` false) or
/// binaries. The walk notes the root of each mount it leaves
/// (`identity_note`); `identity_scan` then looks up the file itself and
/// those directories. A directory's path is unique within its mount, so a
/// protected directory can only be reached under another name through a
/// mount whose root it is (a bind mount, a hostPath volume); a file, also
/// through a hardlink.
#[inline(always)]
pub fn identity_begin(buf: *mut u8, st: (u8, u64), ops: u8, exec: bool) {
    let (gen, mask) = st;
    let bits = POLICY_CONFIG.get(0).map(|c| c.identity[(gen & 1) as usize]).unwrap_or(0);
    let (self_role, dir_role) = if exec {
        (identity::EXEC_SELF, identity::EXEC_DIR)
    } else {
        (identity::FILE_SELF, identity::FILE_DIR)
    };
    let on =
        |role: u8| if mask != 0 && bits & (1 << role) != 0 && has(offsets::IDENTITY) { role } else { 0xff };
    // SAFETY: the slots lie inside the scratch value (asserted above).
    unsafe {
        core::ptr::write_volatile(buf.add(ID_MASK) as *mut u64, mask);
        *buf.add(ID_GEN) = gen;
        *buf.add(ID_OPS) = ops;
        *buf.add(ID_SELF) = on(self_role);
        *buf.add(ID_DIR) = on(dir_role);
        core::ptr::write_volatile(buf.add(ID_COUNT) as *mut u32, 0);
        core::ptr::write_volatile(buf.add(ID_RULE) as *mut u16, 0);
        *buf.add(ID_ACTION) = action::NONE;
    }
}

/// Whether the walk should note mount roots.
#[inline(always)]
pub fn identity_armed(buf: *mut u8) -> bool {
    // SAFETY: the slots lie inside the scratch value.
    unsafe { core::ptr::read_volatile(buf.add(ID_DIR)) != 0xff }
}

/// Notes the inode of a mount root a walk left.
#[inline(always)]
pub fn identity_note(buf: *mut u8, inode: u64) {
    // SAFETY: the slots lie inside the scratch value; the index is masked.
    unsafe {
        let n = core::ptr::read_volatile(buf.add(ID_COUNT) as *const u32) as usize;
        if n < ID_MAX {
            core::ptr::write_volatile(buf.add(ID_INODES + (n & (ID_MAX - 1)) * 8) as *mut u64, inode);
            core::ptr::write_volatile(buf.add(ID_COUNT) as *mut u32, (n + 1) as u32);
        }
    }
}

/// Looks up `inode` (the opened or executed file) as the file a rule names
/// and the noted mount roots as directories a rule names. Returns the
/// strongest verdict, packed (`unpack`).
#[inline(never)]
pub fn identity_scan(buf: *mut u8, inode: u64) -> u32 {
    // SAFETY: the slots lie inside the scratch value; indexes are masked.
    unsafe {
        let role = core::ptr::read_volatile(buf.add(ID_SELF));
        if role != 0xff && inode != 0 {
            identity_check(buf, inode, role);
        }
        let role = core::ptr::read_volatile(buf.add(ID_DIR));
        if role != 0xff {
            for i in 0..ID_MAX {
                let n = core::ptr::read_volatile(buf.add(ID_COUNT) as *const u32) as usize;
                if i >= n {
                    break;
                }
                let inode =
                    core::ptr::read_volatile(buf.add(ID_INODES + (i & (ID_MAX - 1)) * 8) as *const u64);
                if inode != 0 {
                    identity_check(buf, inode, role);
                }
            }
        }
    }
    let v = identity_verdict(buf);
    v.rule as u32 | (v.action as u32) << 16
}

#[inline(always)]
fn identity_check(buf: *mut u8, inode: u64, role: u8) {
    let Ok(ino) = read::<u64>(inode, off!(inode_ino)) else { return };
    let bit = identity::filter_bit(ino);
    match IDENTITY_FILTER.get(bit >> 6) {
        Some(w) if *w & (1u64 << (bit & 63)) != 0 => {}
        _ => return,
    }
    let Ok(sb) = read::<u64>(inode, off!(inode_sb)) else { return };
    let Ok(dev) = read::<u32>(sb, off!(sb_dev)) else { return };
    // SAFETY: the slots lie inside the scratch value.
    let (gen, ops, mask) = unsafe {
        (*buf.add(ID_GEN), *buf.add(ID_OPS), core::ptr::read_volatile(buf.add(ID_MASK) as *const u64))
    };
    let key = InodeKey { ino, dev, gen, role, _pad: 0 };
    // SAFETY: read-only use of the looked-up value.
    if let Some(set) = unsafe { IDENTITIES.get(&key) } {
        let mut v = identity_verdict(buf);
        pick(set, mask, ops, 0, true, &mut v);
        // SAFETY: as above.
        unsafe {
            core::ptr::write_volatile(buf.add(ID_RULE) as *mut u16, v.rule);
            core::ptr::write_volatile(buf.add(ID_ACTION), v.action);
        }
    }
}

/// The strongest verdict the identity checks found.
#[inline(always)]
fn identity_verdict(buf: *mut u8) -> Verdict {
    // SAFETY: the slots lie inside the scratch value.
    unsafe {
        Verdict {
            rule: core::ptr::read_volatile(buf.add(ID_RULE) as *const u16),
            action: core::ptr::read_volatile(buf.add(ID_ACTION)),
        }
    }
}

/// `identity_scan`'s packed result as a verdict.
#[inline(always)]
pub fn unpack(v: u32) -> Verdict {
    Verdict { rule: v as u16, action: (v >> 16) as u8 }
}

/// A new cgroup starts with its parent's masks, in both generations (an
/// entry userspace has already written is left alone). Userspace replaces
/// them once it has read the new cgroup's record and knows its pod.
#[inline(always)]
pub fn inherit_masks(child: u64, parent: u64) {
    // SAFETY: read-only use of the looked-up values.
    if let Some(m) = unsafe { CGROUP_MASKS_0.get(&parent) } {
        let m = *m;
        let _ = CGROUP_MASKS_0.insert(&child, &m, BPF_NOEXIST as u64);
    }
    if let Some(m) = unsafe { CGROUP_MASKS_1.get(&parent) } {
        let m = *m;
        let _ = CGROUP_MASKS_1.insert(&child, &m, BPF_NOEXIST as u64);
    }
}

/// Keeps the strongest action among the refs of `set` that apply. `any`:
/// a rule applies when it shares one bit with `ops` (files: an open that reads
/// and writes meets a read rule; execs pass no operation and every rule
/// applies); else it must allow every bit (network: protocol and direction both).
#[inline(always)]
fn pick(set: &MatchSet, mask: u64, ops: u8, port: u16, any: bool, v: &mut Verdict) {
    for i in 0..REFS {
        let r = set.refs[i];
        if r.rule == 0 || (r.policy as u64) >= 64 || mask & (1u64 << r.policy) == 0 {
            continue;
        }
        // Userspace stores every bit a rule allows (all operations, both
        // protocols... when unconstrained), so "rule covers event" is one test.
        let shared = r.ops & ops;
        if if any { ops != 0 && shared == 0 } else { shared != ops } {
            continue;
        }
        if r.port != 0 && r.port != port {
            continue;
        }
        if r.action > v.action {
            *v = Verdict { rule: r.rule, action: r.action };
        }
    }
}

/// The scratch buffer: `[0, 1024)` a path, then room for `forward_path` and the keys.
#[inline(always)]
pub fn scratch() -> Option<*mut u8> {
    KEY_SCRATCH.get_ptr_mut(0).map(|p| p as *mut u8)
}

/// Copies an absolute user path into `buf[0..len]` (no NUL) for matching;
/// 0 for a relative path, an unreadable one or one longer than `MAX_MATCH_PATH`.
#[inline(always)]
pub fn user_path(buf: *mut u8, filename: u64) -> usize {
    // SAFETY: buf is the 1024-byte path region of the scratch value; at most
    // MAX_MATCH_PATH + 1 bytes are written.
    let n = unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_user_str(
            buf as *mut c_void,
            (MAX_MATCH_PATH + 1) as u32,
            filename as *const c_void,
        )
    };
    // n counts the NUL; a path that filled the window may have been cut.
    if n <= 1 || n as usize > MAX_MATCH_PATH || unsafe { *buf } != b'/' {
        return 0;
    }
    (n - 1) as usize
}

/// `v`, as the verifier will see it: an unknown value, after a round trip
/// through map memory (slot 0..8). A value known exactly on each of several
/// paths (which syscall this is, which argument holds the descriptor) keeps
/// those paths apart in the verifier for the rest of the program, each
/// checked on its own; laundered, they merge. On 5.10/6.1, whose verifiers
/// prune less, that is the difference between fitting the one-million
/// instruction budget and not.
#[inline(always)]
pub fn launder(slot: usize, v: u64) -> u64 {
    let Some(buf) = scratch() else { return v };
    // SAFETY: the slot lies inside the scratch value (asserted above).
    unsafe {
        let p = buf.add(LAUNDER + (slot & 7) * 8) as *mut u64;
        core::ptr::write_volatile(p, v);
        core::ptr::read_volatile(p)
    }
}

/// Copies an absolute kernel path string into `buf[0..len]` (no NUL) for
/// matching; 0 for a relative one or one longer than `MAX_MATCH_PATH`.
#[inline(always)]
pub fn kernel_path(buf: *mut u8, path: u64) -> usize {
    // SAFETY: buf is the 1024-byte path region of the scratch value; at most
    // MAX_MATCH_PATH + 1 bytes are written.
    let n = unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_kernel_str(
            buf as *mut c_void,
            (MAX_MATCH_PATH + 1) as u32,
            path as *const c_void,
        )
    };
    if n <= 1 || n as usize > MAX_MATCH_PATH || unsafe { *buf } != b'/' {
        return 0;
    }
    (n - 1) as usize
}

/// Matches the path in `scratch[0..len]` (no NUL) against a prefix/exact
/// trie and a suffix trie. A path longer than a key is matched on its leading
/// bytes (prefix and directory rules; no exact rule is that long) and its
/// trailing bytes (suffix rules).
#[inline(always)]
fn match_path(
    buf: *mut u8,
    len: usize,
    (gen, mask): (u8, u64),
    ops: u8,
    paths: &LpmTrie<[u8; PATH_KEY_LEN], MatchSet>,
    suffixes: &LpmTrie<[u8; PATH_KEY_LEN], MatchSet>,
    kind: u32,
) -> Verdict {
    const KEY: usize = PATH_KEY_LEN - 2;
    let mut v = Verdict::NONE;
    if mask == 0 || len == 0 || len > MAX_MATCH_PATH {
        return v;
    }
    let len = crate::record::opaque(len) & (FORWARD_WINDOW - 1);
    let exact = len <= KEY;
    // The key's length goes through map memory: 6.1's verifier kept
    // contradictory bounds for it from the two branches of the min
    // (umin 255 > umax 253) and refused the key write as a scalar access.
    // SAFETY: the slot lies inside the scratch value.
    let head = unsafe {
        let slot = buf.add(HEAD_SLOT) as *mut u32;
        core::ptr::write_volatile(slot, if exact { len } else { KEY } as u32);
        core::ptr::read_volatile(slot) as usize & 255
    };
    // SAFETY: every offset below is masked into the scratch value.
    unsafe {
        // Forward key: prefix_len u32, gen, path, NUL (the NUL only when the
        // whole path fits: a cut path must not meet an exact rule).
        let fwd = buf.add(FWD_KEY);
        *(fwd as *mut u32) = ((head + 1 + exact as usize) * 8) as u32;
        *fwd.add(4) = gen;
        bpf_probe_read_kernel(fwd.add(5) as *mut c_void, (head & 511) as u32, buf as *const c_void);
        *fwd.add(5 + (head & 511)) = 0;
        let key = &*(fwd as *const Key<[u8; PATH_KEY_LEN]>);
        if let Some(set) = paths.get(key) {
            pick(set, mask, ops, 0, true, &mut v);
        }
        // The prefilter first: when no suffix rule ends in the path's last
        // two bytes, no reversed key and no lookup.
        if len >= 2 {
            let last = *buf.add((len - 1) & (FORWARD_WINDOW - 1));
            let prev = *buf.add((len - 2) & (FORWARD_WINDOW - 1));
            let bit = suffix_filter::bit(last, prev);
            match SUFFIX_FILTER.get(suffix_filter::slot(gen, kind, bit)) {
                Some(w) if *w & (1u64 << (bit & 63)) != 0 => {}
                _ => return v,
            }
        }
        // Reversed key: prefix_len, gen, the path's last bytes reversed.
        let rev = buf.add(REV_KEY);
        *(rev as *mut u32) = ((head + 1) * 8) as u32;
        *rev.add(4) = gen;
        for i in 0..KEY {
            if i >= len {
                break;
            }
            *rev.add(5 + (i & 255)) = *buf.add((len - 1 - i) & (FORWARD_WINDOW - 1));
        }
        let key = &*(rev as *const Key<[u8; PATH_KEY_LEN]>);
        if let Some(set) = suffixes.get(key) {
            pick(set, mask, ops, 0, true, &mut v);
        }
    }
    v
}

/// `st`: the cgroup's (generation, mask) from `state`, looked up once per event.
#[inline(always)]
pub fn match_exec(buf: *mut u8, len: usize, st: (u8, u64)) -> Verdict {
    match_path(buf, len, st, 0, &EXEC_PATHS, &EXEC_SUFFIXES, suffix_filter::EXEC)
}

#[inline(always)]
pub fn match_file(buf: *mut u8, len: usize, st: (u8, u64), ops: u8) -> Verdict {
    match_path(buf, len, st, ops, &FILE_PATHS, &FILE_SUFFIXES, suffix_filter::FILE)
}

/// Destination address (4 or 16 bytes, network order) and port.
#[inline(always)]
pub fn match_addr(addr: &[u8; 16], v6: bool, port: u16, cgroup_id: u64, ops: u8) -> Verdict {
    let mut v = Verdict::NONE;
    let (gen, mask) = state(cgroup_id);
    if mask == 0 {
        return v;
    }
    // An IPv4-mapped IPv6 destination (::ffff:a.b.c.d through an AF_INET6
    // socket) reaches the IPv4 host: judge it by the IPv4 rules.
    let mapped = v6 && addr[..10] == [0u8; 10] && addr[10] == 0xff && addr[11] == 0xff;
    let mut v4 = [0u8; 16];
    let (addr, v6) = if mapped {
        v4[..4].copy_from_slice(&addr[12..16]);
        (&v4, false)
    } else {
        (addr, v6)
    };
    let mut data = [0u8; ADDR_KEY_LEN];
    // Generation and family share the first byte: an IPv6 /0 must not cover IPv4 keys.
    data[0] = (gen << 1) | v6 as u8;
    let bits = if v6 {
        data[1..17].copy_from_slice(addr);
        8 + 128
    } else {
        data[1..5].copy_from_slice(&addr[..4]);
        8 + 32
    };
    let key = Key::new(bits, data);
    if let Some(set) = NET_ADDRS.get(&key) {
        pick(set, mask, ops, port, false, &mut v);
    }
    v
}

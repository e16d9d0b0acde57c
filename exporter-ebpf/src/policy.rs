//! In-kernel policy matching: tries of rules, per-cgroup policy masks, and the
//! verdict (rule, action) for an exec, an open or a connection.
//!
//! Every trie key starts with a generation byte. Userspace writes a new
//! generation beside the active one and flips `PolicyConfig::active` with one
//! map update, so a probe always matches against one complete policy set.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    helpers::generated::bpf_probe_read_kernel,
    macros::map,
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, PerCpuArray},
};
use podwatch_common::{action, policy::REFS, MatchSet, PolicyConfig, ADDR_KEY_LEN, PATH_KEY_LEN};

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

/// Per-CPU room for a path and the two trie keys built from it.
const PATH_BUF: usize = 512;
const FWD_KEY: usize = PATH_BUF;
const REV_KEY: usize = PATH_BUF + 512;
#[map]
static KEY_SCRATCH: PerCpuArray<[u8; 1536]> = PerCpuArray::with_max_entries(1, 0);

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

/// Keeps the strongest action among the refs of `set` that apply.
#[inline(always)]
fn pick(set: &MatchSet, mask: u64, ops: u8, port: u16, v: &mut Verdict) {
    for i in 0..REFS {
        let r = set.refs[i];
        if r.rule == 0 || (r.policy as u64) >= 64 || mask & (1u64 << r.policy) == 0 {
            continue;
        }
        // Userspace stores every bit a rule allows (all operations, both
        // protocols... when unconstrained), so "rule covers event" is one test.
        if r.ops & ops != ops {
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

/// The scratch buffer: [0, 512) a path, then the forward and reversed keys.
#[inline(always)]
pub fn scratch() -> Option<*mut u8> {
    KEY_SCRATCH.get_ptr_mut(0).map(|p| p as *mut u8)
}

/// Copies an absolute user path into `buf[0..len]` (no NUL) for matching;
/// 0 for a relative path, an unreadable one or one too long for a rule key.
#[inline(always)]
pub fn user_path(buf: *mut u8, filename: u64) -> usize {
    // SAFETY: buf is the 512-byte path region of the scratch value; at most
    // PATH_KEY_LEN bytes are written.
    let n = unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_user_str(
            buf as *mut c_void,
            PATH_KEY_LEN as u32,
            filename as *const c_void,
        )
    };
    // n counts the NUL; a path that filled the window may have been cut.
    if n <= 1 || n as usize >= PATH_KEY_LEN || unsafe { *buf } != b'/' {
        return 0;
    }
    (n - 1) as usize
}

/// Matches the path in `scratch[0..len]` (no NUL) against a prefix/exact
/// trie and a suffix trie.
#[inline(always)]
fn match_path(
    buf: *mut u8,
    len: usize,
    gen: u8,
    mask: u64,
    ops: u8,
    paths: &LpmTrie<[u8; PATH_KEY_LEN], MatchSet>,
    suffixes: &LpmTrie<[u8; PATH_KEY_LEN], MatchSet>,
) -> Verdict {
    let mut v = Verdict::NONE;
    if mask == 0 || len == 0 || len > PATH_KEY_LEN - 2 {
        return v;
    }
    let len = crate::record::opaque(len) & 511;
    // SAFETY: every offset below is masked into the 1536-byte scratch value.
    unsafe {
        // Forward key: prefix_len u32, gen, path, NUL.
        let fwd = buf.add(FWD_KEY);
        *(fwd as *mut u32) = ((len + 2) * 8) as u32;
        *fwd.add(4) = gen;
        bpf_probe_read_kernel(fwd.add(5) as *mut c_void, len as u32, buf as *const c_void);
        *fwd.add(5 + (len & 511)) = 0;
        let key = &*(fwd as *const Key<[u8; PATH_KEY_LEN]>);
        if let Some(set) = paths.get(key) {
            pick(set, mask, ops, 0, &mut v);
        }
        // Reversed key: prefix_len, gen, path reversed.
        let rev = buf.add(REV_KEY);
        *(rev as *mut u32) = ((len + 1) * 8) as u32;
        *rev.add(4) = gen;
        for i in 0..(PATH_KEY_LEN - 2) {
            if i >= len {
                break;
            }
            *rev.add(5 + (i & 255)) = *buf.add((len - 1 - i) & 255);
        }
        let key = &*(rev as *const Key<[u8; PATH_KEY_LEN]>);
        if let Some(set) = suffixes.get(key) {
            pick(set, mask, ops, 0, &mut v);
        }
    }
    v
}

pub fn match_exec(buf: *mut u8, len: usize, cgroup_id: u64) -> Verdict {
    let (gen, mask) = state(cgroup_id);
    match_path(buf, len, gen, mask, 0, &EXEC_PATHS, &EXEC_SUFFIXES)
}

pub fn match_file(buf: *mut u8, len: usize, cgroup_id: u64, ops: u8) -> Verdict {
    let (gen, mask) = state(cgroup_id);
    match_path(buf, len, gen, mask, ops, &FILE_PATHS, &FILE_SUFFIXES)
}

/// Destination address (4 or 16 bytes, network order) and port.
#[inline(always)]
pub fn match_addr(addr: &[u8; 16], v6: bool, port: u16, cgroup_id: u64, ops: u8) -> Verdict {
    let mut v = Verdict::NONE;
    let (gen, mask) = state(cgroup_id);
    if mask == 0 {
        return v;
    }
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
        pick(set, mask, ops, port, &mut v);
    }
    v
}

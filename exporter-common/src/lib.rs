//! Records shared by podwatch's kernel programs and its userspace agent.
//!
//! Every record in the ring buffer is `Header` + one fixed payload per kind + a
//! variable-length tail of strings whose lengths the payload gives. Records are
//! variable-length so a 12-byte path does not ship 4 KiB of zeros. Userspace must
//! treat every byte as untrusted: lengths are checked against the record before use.
//!
//! Directory paths (cwd, the directory of a dirfd) are walked in the kernel from the
//! leaf up, so they travel as NUL-terminated components in *reverse* order
//! (`"shadow\0etc\0"` for `/etc/shadow`); userspace reverses them.
#![no_std]

pub const TASK_COMM_LEN: usize = 16;

/// Longest user string (path or argv block) copied from user memory.
pub const MAX_STR: usize = 4096;
/// Longest single path component (NAME_MAX + NUL).
pub const MAX_NAME: usize = 256;
/// Most components walked up a dentry chain, mount crossings included.
pub const MAX_PATH_DEPTH: usize = 48;
/// Largest record a program emits; the scratch buffer has room for one more read past it.
pub const MAX_RECORD: usize = 16384;
/// Per-CPU scratch buffer a record is assembled in (≤ 32 KiB: the per-CPU value limit).
pub const SCRATCH_SIZE: usize = MAX_RECORD + 2 * MAX_STR;

/// Record kinds. `u16` on the wire; unknown values are counted and skipped in userspace.
pub mod kind {
    pub const EXEC: u16 = 1;
    pub const EXIT: u16 = 2;
    pub const FORK: u16 = 3;
    pub const FILE_OPEN: u16 = 4;
    pub const TCP_CONNECT: u16 = 5;
    pub const TCP_ACCEPT: u16 = 6;
    pub const TCP_CLOSE: u16 = 7;
    pub const UDP_CONNECT: u16 = 8;
    pub const UDP_SEND: u16 = 9;
    pub const CGROUP_MKDIR: u16 = 10;
    /// A change of credentials or namespaces (`Privilege`).
    pub const PRIVILEGE: u16 = 11;
}

/// What a `Privilege` record (and its counter's `op`) is about.
pub mod change {
    /// setuid, setreuid, setresuid, setfsuid.
    pub const SETUID: u8 = 0;
    /// setgid, setregid, setresgid, setfsgid.
    pub const SETGID: u8 = 1;
    pub const CAPSET: u8 = 2;
    pub const UNSHARE: u8 = 3;
    pub const SETNS: u8 = 4;
    /// An exec that changed the credentials (a setuid binary, file capabilities).
    pub const EXEC: u8 = 5;
    pub const COUNT: u8 = 6;
}

/// The syscalls the privilege programs are attached to, by x86_64 number
/// (the `__syscall_nr` of their tracepoint records).
pub mod priv_syscall {
    pub const SETUID: u32 = 105;
    pub const SETGID: u32 = 106;
    pub const SETREUID: u32 = 113;
    pub const SETREGID: u32 = 114;
    pub const SETRESUID: u32 = 117;
    pub const SETRESGID: u32 = 119;
    pub const SETFSUID: u32 = 122;
    pub const SETFSGID: u32 = 123;
    pub const CAPSET: u32 = 126;
    pub const UNSHARE: u32 = 272;
    pub const SETNS: u32 = 308;
    pub const EXECVE: u32 = 59;
    pub const EXECVEAT: u32 = 322;

    /// The change a syscall makes (`change::*`), or `None` for one that is
    /// not a privilege syscall.
    pub const fn change_of(nr: u32) -> Option<u8> {
        use super::change;
        Some(match nr {
            SETUID | SETREUID | SETRESUID | SETFSUID => change::SETUID,
            SETGID | SETREGID | SETRESGID | SETFSGID => change::SETGID,
            CAPSET => change::CAPSET,
            UNSHARE => change::UNSHARE,
            SETNS => change::SETNS,
            EXECVE | EXECVEAT => change::EXEC,
            _ => return None,
        })
    }
}

/// Namespaces, in `Credentials::ns` order.
pub mod ns {
    pub const MNT: usize = 0;
    pub const PID: usize = 1;
    pub const NET: usize = 2;
    pub const UTS: usize = 3;
    pub const IPC: usize = 4;
    pub const USER: usize = 5;
    pub const CGROUP: usize = 6;
    pub const COUNT: usize = 7;
    /// Names as `/proc/PID/ns/` has them (pid: the namespace the process's
    /// children are created in, `pid_for_children`, which is what `unshare`
    /// and `setns` change).
    pub const NAMES: [&str; COUNT] = ["mnt", "pid", "net", "uts", "ipc", "user", "cgroup"];
}

/// `Header::flags` bits.
pub mod flags {
    /// argv was longer than `MAX_STR`.
    pub const ARGS_TRUNCATED: u16 = 1 << 0;
    /// A user path string filled `MAX_STR`.
    pub const PATH_TRUNCATED: u16 = 1 << 1;
    /// A dentry walk stopped at `MAX_PATH_DEPTH` or `MAX_RECORD` before reaching the root.
    pub const DIR_TRUNCATED: u16 = 1 << 2;
    /// A kernel read failed; some fields are missing.
    pub const READ_FAILED: u16 = 1 << 3;
    /// The path a policy judges could not be resolved or compared (deeper
    /// than `MAX_PATH_DEPTH`, longer than `policy::MAX_MATCH_PATH`, or a failed
    /// walk): the event is logged as such instead of passing unmatched.
    pub const PATH_UNRESOLVED: u16 = 1 << 4;
    /// Exec: the verdict came from the resolved path of the executed file,
    /// not from the path string the process passed.
    pub const MATCHED_EXECUTABLE: u16 = 1 << 5;
    /// The verdict came from the file's identity (device + inode of the file
    /// or of a directory above it), not from its name.
    pub const MATCHED_IDENTITY: u16 = 1 << 6;
    /// Exec: refused by the BPF LSM hook (a deny rule): the process did not
    /// change its image; the record describes the attempt.
    pub const EXEC_DENIED: u16 = 1 << 7;
}

/// Which open-family syscall a `FileOpen` record came from.
pub mod open_syscall {
    pub const OPEN: u32 = 0;
    pub const OPENAT: u32 = 1;
    pub const OPENAT2: u32 = 2;
    pub const CREAT: u32 = 3;
    pub const OPEN_BY_HANDLE_AT: u32 = 4;
    /// io_uring's IORING_OP_OPENAT / IORING_OP_OPENAT2, seen at completion.
    pub const IO_URING_OPENAT: u32 = 5;
    pub const IO_URING_OPENAT2: u32 = 6;
    /// A read through a descriptor (opened elsewhere: inherited, passed over
    /// a unix socket) of a file a kill rule guards: the syscall that tried.
    pub const READ: u32 = 7;
    pub const READV: u32 = 8;
    pub const PREAD64: u32 = 9;
    pub const PREADV: u32 = 10;
    pub const PREADV2: u32 = 11;
    pub const SENDFILE: u32 = 12;
    pub const SPLICE: u32 = 13;
    pub const COPY_FILE_RANGE: u32 = 14;
    pub const MMAP: u32 = 15;
    /// A read io_uring issued from `io_uring_enter` (BPF LSM kernels).
    pub const IO_URING_READ: u32 = 16;
}

/// Indexes of the kernel-side counters in the `STATS` per-CPU array.
pub mod stat {
    /// Records that did not fit in the ring buffer (lost).
    pub const RINGBUF_LOST: u32 = 0;
    /// Open exits whose arguments could not be read from the saved syscall
    /// registers (the register block was not where x86_64 keeps it).
    pub const OPEN_ARGS_MISS: u32 = 1;
    /// TCP closes of sockets whose owner was never seen.
    pub const SOCK_OWNER_MISS: u32 = 2;
    /// Kernel memory reads that failed.
    pub const READ_ERRORS: u32 = 3;
    /// Records emitted (successfully written to the ring buffer).
    pub const RECORDS: u32 = 4;
    /// Per-pod counter entries that could not be created: the COUNTERS map is full.
    pub const COUNTER_FULL: u32 = 5;
    /// Opens a hook saw but could not hand to the judging stage (its tail
    /// call failed): neither judged nor counted.
    pub const OPEN_STAGE_MISS: u32 = 6;
    pub const COUNT: u32 = 7;
}

/// What a `CounterKey` counts. Counters live in the kernel and are updated in
/// every probe whether or not a record is sent, so they stay exact when the
/// ring buffer or an output overflows.
pub mod counter {
    pub const EXEC: u16 = 1;
    pub const EXIT: u16 = 2;
    pub const FILE: u16 = 3;
    pub const CONNECT: u16 = 4;
    pub const ACCEPT: u16 = 5;
    pub const CLOSE: u16 = 6;
    pub const SEND: u16 = 7;
    /// Records of this cgroup the ring buffer could not take; `op` is the record kind.
    pub const LOST: u16 = 8;
    /// Records of this cgroup written to the ring buffer; `op` is the record
    /// kind. Not kept for exec and exit records: every exec and exit is
    /// counted under `EXEC` / `EXIT` and sent, so the records sent are those
    /// counts minus the `LOST` ones (the agent's metrics derive them).
    pub const RECORD: u16 = 9;
    /// Credential and namespace changes; `op` is the `change::*`.
    pub const PRIVILEGE: u16 = 10;
}

/// File operations, from open flags (`file_op`).
pub mod file_op {
    pub const READ: u8 = 0;
    pub const WRITE: u8 = 1;
    pub const CREATE: u8 = 2;
    pub const TRUNCATE: u8 = 3;
    /// O_PATH: names a file without reading or writing it.
    pub const OPEN: u8 = 4;
}

/// Policy actions (`CounterKey::action`).
pub mod action {
    pub const NONE: u8 = 0;
    pub const COUNT: u8 = 1;
    pub const LOG: u8 = 2;
    pub const KILL: u8 = 3;
    pub const DENY: u8 = 4;
}

pub const DIRECTION_EGRESS: u8 = 0;
pub const DIRECTION_INGRESS: u8 = 1;

/// One word for what an open is about to do: create beats truncate beats
/// write beats read. Shared by the kernel counters and the events.
pub const fn file_op(flags: u64) -> u8 {
    const O_ACCMODE: u64 = 0o3;
    const O_CREAT: u64 = 0o100;
    const O_TRUNC: u64 = 0o1000;
    const O_PATH: u64 = 0o10000000;
    if flags & O_PATH != 0 {
        file_op::OPEN
    } else if flags & O_CREAT != 0 {
        file_op::CREATE
    } else if flags & O_TRUNC != 0 {
        file_op::TRUNCATE
    } else if flags & O_ACCMODE != 0 {
        file_op::WRITE
    } else {
        file_op::READ
    }
}

/// Every operation an open performs, one bit per `file_op` (`1 << op`), for
/// policy matching: `O_RDWR` is a read and a write, `O_CREAT` on an existing
/// file still opens it for its access mode, `O_PATH` neither reads nor writes.
/// (`file_op` keeps one word for the counters; a rule matches an open when
/// the two share a bit, so `O_RDWR` cannot dodge a read rule.)
pub const fn file_ops(flags: u64) -> u8 {
    const O_ACCMODE: u64 = 0o3;
    const O_CREAT: u64 = 0o100;
    const O_TRUNC: u64 = 0o1000;
    const O_PATH: u64 = 0o10000000;
    if flags & O_PATH != 0 {
        return 1 << file_op::OPEN;
    }
    let mode = flags & O_ACCMODE;
    let mut ops = 0u8;
    // 3 is Linux's "no access, ioctl only" mode: treat it as both, the safe side.
    if mode != 1 {
        ops |= 1 << file_op::READ;
    }
    if mode != 0 {
        ops |= 1 << file_op::WRITE;
    }
    if flags & O_CREAT != 0 {
        ops |= 1 << file_op::CREATE;
    }
    if flags & O_TRUNC != 0 {
        ops |= 1 << file_op::TRUNCATE;
    }
    ops
}

/// Key of the in-kernel per-cgroup counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CounterKey {
    pub cgroup_id: u64,
    /// FNV-1a of the exec'd path (first `HASHED_PATH` bytes) when counting execs
    /// per binary is on; 0 otherwise and for other kinds.
    pub binary: u64,
    /// One of `counter::*`.
    pub kind: u16,
    /// Policy rule that matched; 0 = none.
    pub rule: u16,
    /// File: `file_op::*`. Network: IP protocol. LOST: record kind.
    pub op: u8,
    /// 0 = succeeded, 1 = failed (open/connect errno; exit by signal).
    pub outcome: u8,
    /// Policy action taken; 0 = none.
    pub action: u8,
    /// `DIRECTION_*` for network counters.
    pub direction: u8,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterValue {
    pub events: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

pub const FNV_OFFSET: u64 = 0xcbf29ce484222325;
pub const FNV_PRIME: u64 = 0x100000001b3;
/// Bytes of an exec path that go into its hash.
pub const HASHED_PATH: usize = 256;

/// FNV-1a over at most `HASHED_PATH` bytes, stopping at a NUL: the same as the
/// kernel's loop over the exec filename.
pub fn path_hash(path: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    for &b in path.iter().take(HASHED_PATH) {
        if b == 0 {
            break;
        }
        h ^= b as u64;
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// In-kernel policy matching. Rules compile into LPM tries whose first key byte
/// is a generation (0 or 1): a reload writes the new generation beside the
/// active one, flips `PolicyConfig::active`, then deletes the old entries, so
/// the kernel always matches against one complete set.
pub mod policy {
    /// Bytes of a rule's path: LPM keys hold at most 256 data bytes
    /// (LPM_DATA_SIZE_MAX), one for the generation, one for the NUL.
    pub const PATH_KEY: usize = 254;
    /// Longest path the kernel resolves for matching. Longer than `PATH_KEY`:
    /// a path's leading `PATH_KEY` bytes still meet prefix and directory
    /// rules, its trailing ones suffix rules. Longer still is "unresolved".
    pub const MAX_MATCH_PATH: usize = 1023;
    /// Rule refs per trie entry.
    pub const REFS: usize = 8;
    /// Policies per generation (bits of a cgroup's mask).
    pub const MAX_POLICIES: usize = 64;
    /// Privilege rules per generation (`PrivilegeRule`s, scanned in order).
    pub const MAX_PRIVILEGE_RULES: usize = 16;

    /// `RuleRef::ops` bits for file rules.
    pub const OP_READ: u8 = 1 << 0;
    pub const OP_WRITE: u8 = 1 << 1;
    pub const OP_CREATE: u8 = 1 << 2;
    pub const OP_TRUNCATE: u8 = 1 << 3;
    pub const OP_OPEN: u8 = 1 << 4;
    /// `RuleRef::ops` bits for network rules.
    pub const NET_TCP: u8 = 1 << 0;
    pub const NET_UDP: u8 = 1 << 1;
    pub const NET_EGRESS: u8 = 1 << 2;
    pub const NET_INGRESS: u8 = 1 << 3;
}

/// One rule a trie entry can match. `rule == 0` marks an empty slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleRef {
    pub rule: u16,
    /// Network rules: destination port, 0 = any.
    pub port: u16,
    /// Bit index of the policy in a cgroup's mask.
    pub policy: u8,
    pub action: u8,
    /// File operations / network protocol and direction (`policy::OP_*`, `policy::NET_*`); 0 = any.
    pub ops: u8,
    pub _pad: u8,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MatchSet {
    pub refs: [RuleRef; policy::REFS],
}

/// Key of the identity map: a file or directory a rule names, by device and
/// inode, so a hardlink or a bind mount of it meets the rule under any name.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct InodeKey {
    pub ino: u64,
    /// The kernel's `dev_t` (`MKDEV(major, minor)`: major << 20 | minor).
    pub dev: u32,
    pub gen: u8,
    /// `identity::*`: which rules the entry holds.
    pub role: u8,
    pub _pad: u16,
}

/// Identity entries and the roles they play (`InodeKey::role`, and the
/// per-generation bits of `PolicyConfig::identity`).
pub mod identity {
    /// The file a file rule names (exact, or a directory rule's directory itself).
    pub const FILE_SELF: u8 = 0;
    /// A directory everything below which a file rule covers.
    pub const FILE_DIR: u8 = 1;
    /// The binary an exec rule names.
    pub const EXEC_SELF: u8 = 2;
    /// A directory everything below which an exec rule covers.
    pub const EXEC_DIR: u8 = 3;
    /// Words in the prefilter: one bit per hashed inode number, tested
    /// before a hash-map lookup for every directory a path walk passes.
    pub const FILTER_WORDS: u32 = 1024;

    /// The prefilter bit of an inode number.
    pub const fn filter_bit(ino: u64) -> u32 {
        (ino.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 48) as u32
    }

    /// A userspace `st_dev` (glibc's encoding) as the kernel's `dev_t`.
    pub const fn kernel_dev(st_dev: u64) -> u32 {
        let major = ((st_dev >> 8) & 0xfff) | ((st_dev >> 32) & !0xfff);
        let minor = (st_dev & 0xff) | ((st_dev >> 12) & !0xff);
        ((major << 20) | (minor & 0xfffff)) as u32
    }
}

/// A prefilter for the suffix tries: one bit per (last byte, byte before it)
/// of every suffix a rule names, per generation and kind. Most paths end in
/// two bytes no suffix rule ends in (`.6`, `at`) and skip the reversed key
/// and the trie lookup.
pub mod suffix_filter {
    pub const FILE: u32 = 0;
    pub const EXEC: u32 = 1;
    /// Words per generation and kind: 65,536 bits.
    pub const WORDS: u32 = 1024;
    /// Array slots: both generations of both kinds.
    pub const SLOTS: u32 = 4 * WORDS;

    /// The bit of a path whose last byte is `last` and the one before `prev`.
    pub const fn bit(last: u8, prev: u8) -> u32 {
        (last as u32) << 8 | prev as u32
    }

    /// The array slot holding `bit` for generation `gen` and `kind`.
    pub const fn slot(gen: u8, kind: u32, bit: u32) -> u32 {
        ((gen as u32 & 1) * 2 + (kind & 1)) * WORDS + (bit >> 6)
    }
}

/// A rule on credentials and namespaces. It matches a change (or an exec)
/// when every condition it sets holds; a zero field sets none.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrivilegeRule {
    pub rule: u16,
    /// Bit index of the policy in a cgroup's mask.
    pub policy: u8,
    pub action: u8,
    /// `1 << change::*` the rule is about; 0 = every change and every exec.
    pub changes: u8,
    /// `1 << ns::*`: one of these namespaces changed.
    pub ns_changed: u8,
    /// `1 << ns::*`: one of these is, after the change, the host's (and was not before).
    pub ns_host_entered: u8,
    /// 1 when `uids` is set.
    pub has_uids: u8,
    /// The real or effective uid became one of these (it was not before):
    /// up to four, `u32::MAX` = unused slot.
    pub uids: [u32; 4],
    /// Capabilities (bit = CAP_* number) of which one is in the effective set after.
    pub caps_held: u64,
    /// Capabilities of which one entered the effective set.
    pub caps_gained: u64,
}

/// Path trie keys are `Key<[u8; PATH_KEY_LEN]>`: data[0] is the generation,
/// then the path. Exact paths are stored with their NUL (`/etc/shadow\0`),
/// prefixes without; suffix tries hold reversed paths.
pub const PATH_KEY_LEN: usize = policy::PATH_KEY + 2;
/// Address trie keys are `Key<[u8; 17]>`: generation, then 4 or 16 bytes.
pub const ADDR_KEY_LEN: usize = 17;

/// Runtime policy state shared with the kernel (array map, one element).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyConfig {
    /// Generation the kernel matches against (0 or 1).
    pub active: u32,
    /// 1 = only records for rules whose action is log, kill or deny reach
    /// userspace; 0 = every record (no policy loaded: trace everything).
    pub filter: u32,
    /// Masks for cgroups absent from the cgroup map (host processes), per generation.
    pub default_masks: [u64; 2],
    /// Per generation, `1 << identity::*` for each role the identity map
    /// holds entries of: the probes skip identity checks nobody asked for.
    pub identity: [u32; 2],
    /// Per generation, 1 when some kill rule guards a file by identity:
    /// reads through descriptors opened elsewhere are then checked.
    pub guard_reads: [u32; 2],
    /// Per generation, `DENY_FILES | DENY_EXECS` for the deny rules it holds:
    /// the BPF LSM hooks return at once when there is nothing to refuse.
    pub deny: [u32; 2],
    /// Per generation, how many `PrivilegeRule`s it holds.
    pub privilege_rules: [u32; 2],
    /// The host's namespaces (init's, `ns::*` order), for "enters the host's".
    pub host_ns: [u32; ns::COUNT],
    pub _pad: u32,
}

/// `PolicyConfig::deny` bits.
pub const DENY_FILES: u32 = 1;
pub const DENY_EXECS: u32 = 2;

/// A deny verdict the LSM open hook leaves for the syscall's exit program,
/// keyed by pid_tgid.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Denial {
    pub rule: u16,
    pub action: u8,
    pub _pad: u8,
    /// `flags::*` to set on the record (MATCHED_IDENTITY...).
    pub flags: u16,
    pub _pad2: u16,
}

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const IPPROTO_TCP: u16 = 6;
pub const IPPROTO_UDP: u16 = 17;
pub const AT_FDCWD: i32 = -100;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub kind: u16,
    pub flags: u16,
    /// Total record length in bytes, header included.
    pub len: u32,
    /// `bpf_ktime_get_boot_ns()`: monotonic including suspend.
    pub ktime_ns: u64,
    pub tgid: u32,
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    /// cgroup v2 id (the cgroup directory's inode number).
    pub cgroup_id: u64,
    pub comm: [u8; TASK_COMM_LEN],
    /// Policy rule that matched (0 = none) and the action taken (`action::*`).
    pub rule: u16,
    pub action: u8,
    pub _pad: [u8; 5],
}

/// A process's credentials and namespaces (`struct cred` and `nsproxy`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    /// The kernel's order: uid, gid, suid, sgid, euid, egid, fsuid, fsgid.
    pub ids: [u32; 8],
    /// inheritable, permitted, effective, bounding, ambient (bit = CAP_* number).
    pub caps: [u64; 5],
    /// Namespace inode numbers, `ns::*` order; 0 = unknown.
    pub ns: [u32; ns::COUNT],
    /// 1 when the fields were read (the kernel's BTF has them).
    pub valid: u32,
}

/// `Credentials::ids` indexes.
pub mod id {
    pub const UID: usize = 0;
    pub const GID: usize = 1;
    pub const SUID: usize = 2;
    pub const SGID: usize = 3;
    pub const EUID: usize = 4;
    pub const EGID: usize = 5;
    pub const FSUID: usize = 6;
    pub const FSGID: usize = 7;
}

/// `Credentials::caps` indexes.
pub mod capset {
    pub const INHERITABLE: usize = 0;
    pub const PERMITTED: usize = 1;
    pub const EFFECTIVE: usize = 2;
    pub const BOUNDING: usize = 3;
    pub const AMBIENT: usize = 4;
}

/// A privilege syscall that changed something or failed, or an exec that
/// changed credentials: what the process had before and has after.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Privilege {
    /// `priv_syscall::*`.
    pub syscall: u32,
    /// 0 or `-errno`.
    pub ret: i32,
    /// `change::*`.
    pub change: u8,
    pub _pad: [u8; 7],
    pub before: Credentials,
    pub after: Credentials,
}

/// Tail: filename (as the process passed it), argv block (NUL-separated),
/// cwd components (reversed), then the executed file's resolved absolute path
/// (`mm->exe_file`: symlinks, `..`, relative paths and `/dev/fd/N` resolved).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exec {
    /// tgid of `real_parent`.
    pub ppid: u32,
    pub filename_len: u32,
    pub args_len: u32,
    pub cwd_len: u32,
    pub exe_len: u32,
    pub _pad: u32,
    /// The credentials and namespaces the new image runs with.
    pub creds: Credentials,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exit {
    /// `task->exit_code`: `(code << 8) | signal`, as `wait(2)` reports it.
    pub exit_code: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fork {
    pub child_tgid: u32,
    pub parent_tgid: u32,
}

/// Tail: path as the process passed it (none for open_by_handle_at and
/// io_uring), then (only when that path is relative) the base directory's
/// components, reversed, then the opened file's resolved absolute path when
/// the kernel resolved it to judge the open (a policy applies to the cgroup).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileOpen {
    /// One of `open_syscall::*`.
    pub syscall: u32,
    pub dfd: i32,
    pub flags: u64,
    pub mode: u32,
    /// New fd, or `-errno`.
    pub ret: i32,
    pub path_len: u32,
    pub dir_len: u32,
    pub resolved_len: u32,
    pub _pad: u32,
}

/// Connect, accept, close and UDP destinations. Addresses are in network byte
/// order (IPv4 in the first four bytes), ports in host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Net {
    pub family: u16,
    pub protocol: u16,
    pub sport: u16,
    pub dport: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// 0 on success, `-errno` on failure (connect refused, unreachable...).
    pub result: i32,
    /// `kind::TCP_CONNECT` or `kind::TCP_ACCEPT`: which end the process is
    /// (a close inherits it from the connect or accept that opened the socket).
    pub side: u16,
    pub _pad: u16,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

/// Tail: the cgroup's path relative to the cgroup2 root.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupMkdir {
    pub id: u64,
    pub level: u32,
    pub path_len: u32,
}

/// Kernel struct field offsets, read at start-up from the running kernel's BTF
/// (`/sys/kernel/btf/vmlinux`) and handed to the programs as a read-only global.
/// Rust eBPF has no CO-RE relocations; this is the run-time equivalent.
/// `available` says which groups of fields were found; programs skip what is missing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub available: u32,
    pub task_real_parent: u32,
    pub task_tgid: u32,
    pub task_pid: u32,
    pub task_fs: u32,
    pub task_files: u32,
    pub task_mm: u32,
    pub task_exit_code: u32,
    /// `task_struct.stack`: the kernel stack, whose top holds the saved
    /// syscall registers (the open programs read their arguments there).
    pub task_stack: u32,
    pub fs_root: u32,
    pub fs_pwd: u32,
    pub path_mnt: u32,
    pub path_dentry: u32,
    pub dentry_parent: u32,
    pub dentry_name: u32,
    pub qstr_name: u32,
    pub qstr_len: u32,
    pub mount_mnt: u32,
    pub mount_parent: u32,
    pub mount_mountpoint: u32,
    pub vfsmount_root: u32,
    pub files_fdt: u32,
    pub fdtable_max_fds: u32,
    pub fdtable_fd: u32,
    pub file_path: u32,
    pub file_private_data: u32,
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    /// `mm_struct.exe_file`: the file the process image was loaded from.
    pub mm_exe_file: u32,
    /// `dentry.d_inode` (right after `d_name`: read with it), `file.f_inode`,
    /// `inode.i_ino`, `inode.i_sb`, `super_block.s_dev`: a file's identity.
    pub dentry_inode: u32,
    pub file_inode: u32,
    /// `file.f_mode` (FMODE_READ: the descriptor can read).
    pub file_mode: u32,
    /// `file.f_flags` (the open flags, for the LSM open hook) and
    /// `linux_binprm.file` / `.filename` (the LSM exec hook).
    pub file_flags: u32,
    pub bprm_file: u32,
    pub bprm_filename: u32,
    pub inode_ino: u32,
    pub inode_sb: u32,
    pub sb_dev: u32,
    pub socket_sk: u32,
    pub skc_daddr: u32,
    pub skc_rcv_saddr: u32,
    pub skc_dport: u32,
    pub skc_num: u32,
    pub skc_family: u32,
    pub skc_v6_daddr: u32,
    pub skc_v6_rcv_saddr: u32,
    pub sk_err: u32,
    pub sk_shutdown: u32,
    pub tcp_bytes_received: u32,
    pub tcp_bytes_sent: u32,
    /// Offset of `group_dead` in the `sched_process_exit` tracepoint record
    /// (from its format file; the field is recent). 0 = absent.
    pub tp_exit_group_dead: u32,
    /// `io_kiocb.opcode`, and `io_open.file_slot` / `io_open.how` (an
    /// openat request's arguments, at the start of its `io_kiocb`).
    pub io_kiocb_opcode: u32,
    pub io_open_file_slot: u32,
    pub io_open_how: u32,
    /// Offsets of `req` and `res` in the `io_uring_complete` tracepoint
    /// record (from its format file: `req` exists since 5.19).
    pub tp_uring_req: u32,
    pub tp_uring_res: u32,
    /// A new cgroup's parent and the hierarchy it is in: `cgroup.self`
    /// (its `cgroup_subsys_state`), `.kn`, `.root`; `css.parent`, `css.cgroup`;
    /// `kernfs_node.id` (the cgroup id); `cgroup_root.hierarchy_id`.
    pub cgroup_self: u32,
    pub cgroup_kn: u32,
    pub cgroup_root: u32,
    pub css_parent: u32,
    pub css_cgroup: u32,
    pub kernfs_node_id: u32,
    pub cgroup_root_hierarchy_id: u32,
    /// `task_struct.real_cred`; `cred.uid` (the eight ids follow it),
    /// `cred.cap_inheritable` (the five sets follow it), `cred.user_ns`.
    pub task_real_cred: u32,
    pub cred_uid: u32,
    pub cred_caps: u32,
    pub cred_user_ns: u32,
    /// `task_struct.nsproxy`, then per namespace (`ns::*` order, user
    /// unused) the `nsproxy` member, and per namespace type the offset of
    /// its `ns_common`; `ns_common.inum`.
    pub task_nsproxy: u32,
    pub nsproxy_member: [u32; ns::COUNT],
    pub ns_common_at: [u32; ns::COUNT],
    pub ns_common_inum: u32,
    /// The first of `nsproxy`'s namespace pointers: the programs read the
    /// 64 bytes from there at once (the loader checks every member is in them).
    pub nsproxy_first: u32,
}

/// `KernelOffsets::available` bits.
pub mod offsets {
    /// real_parent, tgid, pid, exit_code.
    pub const TASK: u32 = 1 << 0;
    /// fs_struct, path, dentry, mount: cwd and dirfd resolution.
    pub const PATHS: u32 = 1 << 1;
    /// files_struct/fdtable/file: fd → file; task_struct.stack: the open
    /// programs' syscall arguments.
    pub const FILES: u32 = 1 << 2;
    /// mm_struct arg_start/arg_end: argv.
    pub const ARGS: u32 = 1 << 3;
    /// socket and sock_common: accepted socket addresses.
    pub const SOCK: u32 = 1 << 4;
    /// tcp_sock byte counters, sk_err and sk_shutdown.
    pub const TCP_STATS: u32 = 1 << 5;
    /// mm_struct.exe_file: the executed file's resolved path.
    pub const EXE: u32 = 1 << 6;
    /// io_kiocb/io_open and the io_uring_complete record's req and res.
    pub const URING: u32 = 1 << 7;
    /// cgroup, cgroup_subsys_state, kernfs_node, cgroup_root: a new
    /// cgroup's parent, to inherit its policy mask in the kernel.
    pub const CGROUPS: u32 = 1 << 8;
    /// dentry.d_inode next to d_name, file.f_inode, inode.i_ino/i_sb,
    /// super_block.s_dev: rules matched by identity.
    pub const IDENTITY: u32 = 1 << 9;
    /// file.f_flags, linux_binprm.file/filename: the BPF LSM hooks (deny).
    pub const LSM: u32 = 1 << 10;
    /// cred ids and capability sets, task_struct.real_cred.
    pub const CREDS: u32 = 1 << 11;
    /// nsproxy, the namespaces' ns_common.inum, cred.user_ns.
    pub const NAMESPACES: u32 = 1 << 12;
}

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: plain-old-data, `#[repr(C)]`, no padding-dependent invariants.
    unsafe impl aya::Pod for KernelOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for CounterKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for CounterValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for MatchSet {}
    // SAFETY: as above.
    unsafe impl aya::Pod for PolicyConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for InodeKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for PrivilegeRule {}
}

/// Fixed part of a record of each kind: header + payload.
pub const fn fixed_len(kind: u16) -> usize {
    let payload = match kind {
        kind::EXEC => core::mem::size_of::<Exec>(),
        kind::EXIT => core::mem::size_of::<Exit>(),
        kind::FORK => core::mem::size_of::<Fork>(),
        kind::FILE_OPEN => core::mem::size_of::<FileOpen>(),
        kind::TCP_CONNECT | kind::TCP_ACCEPT | kind::TCP_CLOSE | kind::UDP_CONNECT | kind::UDP_SEND => {
            core::mem::size_of::<Net>()
        }
        kind::CGROUP_MKDIR => core::mem::size_of::<CgroupMkdir>(),
        kind::PRIVILEGE => core::mem::size_of::<Privilege>(),
        _ => 0,
    };
    core::mem::size_of::<Header>() + payload
}

const _: () = assert!(core::mem::size_of::<Header>() == 64);
const _: () = assert!(core::mem::size_of::<CounterKey>() == 24);
const _: () = assert!(core::mem::size_of::<Credentials>() == 104);
const _: () = assert!(core::mem::size_of::<PrivilegeRule>() == 40);
const _: () = assert!(SCRATCH_SIZE <= 32768);
const _: () = assert!(MAX_RECORD.is_power_of_two());

#[cfg(test)]
mod tests {
    use super::{file_op, file_ops};

    #[test]
    fn kernel_dev_is_mkdev() {
        use super::identity::kernel_dev;
        // glibc makedev(8, 1) = 0x801; the kernel's MKDEV(8, 1) = 8 << 20 | 1.
        assert_eq!(kernel_dev(0x801), (8 << 20) | 1);
        // makedev(259, 300): major above 255, minor above 255.
        let (major, minor) = (259u64, 300u64);
        let glibc =
            ((major & 0xfff) << 8) | ((major & !0xfff) << 32) | (minor & 0xff) | ((minor & !0xff) << 12);
        assert_eq!(kernel_dev(glibc), ((259 << 20) | 300) as u32);
        // An anonymous device (overlayfs, tmpfs): major 0.
        assert_eq!(kernel_dev(0x2d), 0x2d);
    }

    #[test]
    fn file_ops_name_every_operation_an_open_performs() {
        let bit = |op: u8| 1u8 << op;
        assert_eq!(file_ops(0), bit(file_op::READ)); // O_RDONLY
        assert_eq!(file_ops(0o1), bit(file_op::WRITE)); // O_WRONLY
        assert_eq!(file_ops(0o2), bit(file_op::READ) | bit(file_op::WRITE)); // O_RDWR
        assert_eq!(
            file_ops(0o2 | 0o100),
            bit(file_op::READ) | bit(file_op::WRITE) | bit(file_op::CREATE) // O_RDWR|O_CREAT
        );
        assert_eq!(file_ops(0o1 | 0o1000), bit(file_op::WRITE) | bit(file_op::TRUNCATE));
        assert_eq!(file_ops(0o10000000 | 0o2), bit(file_op::OPEN)); // O_PATH ignores the mode
                                                                    // The counters' single word is unchanged.
        assert_eq!(file_op(0o2), file_op::WRITE);
    }
}

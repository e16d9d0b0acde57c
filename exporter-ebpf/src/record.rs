//! Assembling a record in a per-CPU scratch buffer and copying exactly its
//! length into the ring buffer.

use core::{ffi::c_void, mem::size_of};

use crate::counters;
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::generated::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        bpf_ktime_get_boot_ns, bpf_probe_read_kernel_str, bpf_probe_read_user, bpf_probe_read_user_str,
    },
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use podwatch_common::{
    counter, fixed_len, flags, policy::MAX_MATCH_PATH, stat, Header, MAX_RECORD, MAX_STR, SCRATCH_SIZE,
    TASK_COMM_LEN,
};

/// Size is overridden from the agent's config at load time.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(8 << 20, 0);

#[map]
static SCRATCH: PerCpuArray<[u8; SCRATCH_SIZE]> = PerCpuArray::with_max_entries(1, 0);

#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

/// Wake the reader only once this many bytes are pending (set by the agent
/// from the ring size; 0: the kernel's default, a wakeup whenever the reader
/// has caught up). A wakeup is an irq_work, a self-IPI: on a VM that exit
/// costs the producing process microseconds per record. The reader also
/// drains on a short timer, which bounds the delay of a quiet ring.
#[no_mangle]
static WAKEUP_BYTES: u64 = 0;

/// The agent's own tgid: its file and socket activity is not reported (it would
/// feed back into itself).
#[no_mangle]
static AGENT_TGID: u32 = 0;

/// `v`, hidden from LLVM's range analysis by a volatile stack round trip, so
/// that a mask after a bounds check is kept. Without it LLVM drops the mask as
/// redundant and may check one copy of the value while using another reloaded
/// from the stack; verifiers before 6.3 or so do not carry the bound across
/// that spill and reject the program ("R1 unbounded memory access", "R2 min
/// value is negative": every open-exit program on 5.10 and 6.1).
#[inline(always)]
pub fn opaque(v: usize) -> usize {
    // SAFETY: reading a local.
    unsafe { core::ptr::read_volatile(&v) }
}

#[inline(always)]
pub fn count(idx: u32) {
    if let Some(p) = STATS.get_ptr_mut(idx) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
pub fn current_is_agent() -> bool {
    // SAFETY: helper without arguments.
    let tgid = (unsafe { bpf_get_current_pid_tgid() } >> 32) as u32;
    tgid == unsafe { core::ptr::read_volatile(&AGENT_TGID) }
}

/// Process identity copied into a record header; used where the hook does not
/// run in the acting process (softirq TCP state changes).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Owner {
    pub tgid: u32,
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    pub comm: [u8; TASK_COMM_LEN],
}

impl Owner {
    #[inline(always)]
    pub fn current() -> Owner {
        // SAFETY: helpers without pointer arguments, and comm into a local array.
        unsafe {
            let pid_tgid = bpf_get_current_pid_tgid();
            let uid_gid = bpf_get_current_uid_gid();
            let mut comm = [0u8; TASK_COMM_LEN];
            bpf_get_current_comm(comm.as_mut_ptr() as *mut c_void, TASK_COMM_LEN as u32);
            Owner {
                tgid: (pid_tgid >> 32) as u32,
                tid: pid_tgid as u32,
                uid: uid_gid as u32,
                gid: (uid_gid >> 32) as u32,
                cgroup_id: bpf_get_current_cgroup_id(),
                comm,
            }
        }
    }
}

/// A record being assembled in the per-CPU scratch buffer. Its length lives in
/// the buffer's header (read and written volatile), not in a register: a value
/// loaded from map memory is an unknown scalar to the verifier, so after the
/// bound check every path has the same range and loop states prune. Tracking
/// the exact length in a register made the dentry walk explode past the
/// verifier's one-million-instruction budget.
pub struct Record {
    buf: *mut u8,
}

impl Record {
    /// Starts a record of `kind` with the current task in the header.
    #[inline(always)]
    pub fn new(kind: u16) -> Option<Record> {
        let buf = SCRATCH.get_ptr_mut(0)? as *mut u8;
        let mut rec = Record { buf };
        // SAFETY: the scratch value is SCRATCH_SIZE bytes, far larger than a header
        // and payload; zeroing the payload keeps stale bytes out of the record.
        unsafe {
            let payload = buf.add(size_of::<Header>()) as *mut u64;
            for i in 0..8 {
                core::ptr::write_volatile(payload.add(i), 0);
            }
            let h = &mut *(buf as *mut Header);
            h.kind = kind;
            h.flags = 0;
            // The buffer is reused: a verdict left by the previous record must not stick.
            h.rule = 0;
            h.action = 0;
            h.ktime_ns = bpf_ktime_get_boot_ns();
            let pid_tgid = bpf_get_current_pid_tgid();
            let uid_gid = bpf_get_current_uid_gid();
            h.tgid = (pid_tgid >> 32) as u32;
            h.tid = pid_tgid as u32;
            h.uid = uid_gid as u32;
            h.gid = (uid_gid >> 32) as u32;
            h.cgroup_id = bpf_get_current_cgroup_id();
            bpf_get_current_comm(h.comm.as_mut_ptr() as *mut c_void, TASK_COMM_LEN as u32);
        }
        rec.set_len(fixed_len(kind));
        Some(rec)
    }

    /// The record a program that tail-called this one was assembling.
    #[inline(always)]
    pub fn resume() -> Option<Record> {
        Some(Record { buf: SCRATCH.get_ptr_mut(0)? as *mut u8 })
    }

    #[inline(always)]
    pub fn header(&mut self) -> &mut Header {
        // SAFETY: the header lives at offset 0 of the scratch buffer.
        unsafe { &mut *(self.buf as *mut Header) }
    }

    /// The fixed payload right after the header.
    #[inline(always)]
    pub fn payload<T>(&mut self) -> &mut T {
        // SAFETY: every payload lives right after the header, inside the
        // scratch buffer; `new` zeroes its first 64 bytes, and the programs
        // of larger payloads (Exec's and Privilege's credentials) write them whole.
        unsafe { &mut *(self.buf.add(size_of::<Header>()) as *mut T) }
    }

    #[inline(always)]
    pub fn set_owner(&mut self, o: &Owner) {
        let h = self.header();
        h.tgid = o.tgid;
        h.tid = o.tid;
        h.uid = o.uid;
        h.gid = o.gid;
        h.cgroup_id = o.cgroup_id;
        h.comm = o.comm;
    }

    #[inline(always)]
    pub fn flag(&mut self, bit: u16) {
        self.header().flags |= bit;
    }

    #[inline(always)]
    pub fn len(&self) -> usize {
        // SAFETY: header.len is inside the scratch buffer.
        unsafe { core::ptr::read_volatile(&(*(self.buf as *const Header)).len) as usize }
    }

    #[inline(always)]
    fn set_len(&mut self, len: usize) {
        // SAFETY: header.len is inside the scratch buffer.
        unsafe { core::ptr::write_volatile(&mut (*(self.buf as *mut Header)).len, len as u32) }
    }

    #[inline(always)]
    fn advance(&mut self, n: usize) {
        let len = self.len();
        self.set_len(len + n);
    }

    /// The byte at `off`, if inside the scratch buffer.
    #[inline(always)]
    pub fn byte_at(&self, off: usize) -> u8 {
        if off >= MAX_RECORD {
            return 0;
        }
        // SAFETY: bounds-checked above; the mask is for the verifier (see `opaque`).
        unsafe { *self.buf.add(opaque(off) & (MAX_RECORD - 1)) }
    }

    /// Copies `len` bytes of the record from `off` into `dst` (for policy
    /// matching, which needs the path in its own buffer). False if out of range.
    #[inline(always)]
    pub fn copy_out(&self, off: usize, len: usize, dst: *mut u8) -> bool {
        if off >= MAX_RECORD || len == 0 || len > MAX_MATCH_PATH {
            return false;
        }
        let (off, len) = (opaque(off), opaque(len));
        // SAFETY: source inside the scratch buffer (off < MAX_RECORD, len < 1024 <
        // SCRATCH_SIZE - MAX_RECORD); destination is a 1024-byte region.
        unsafe {
            aya_ebpf::helpers::generated::bpf_probe_read_kernel(
                dst as *mut c_void,
                (len & 1023) as u32,
                self.buf.add(off & (MAX_RECORD - 1)) as *const c_void,
            ) == 0
        }
    }

    /// Sets the policy verdict in the header.
    #[inline(always)]
    pub fn set_verdict(&mut self, rule: u16, action: u8) {
        let h = self.header();
        h.rule = rule;
        h.action = action;
    }

    /// Where the next string goes, or None when the record is full. The mask is
    /// redundant with the check but keeps the verifier's bound obvious.
    #[inline(always)]
    fn cursor(&mut self) -> Option<*mut c_void> {
        let len = self.len();
        if len >= MAX_RECORD {
            self.flag(flags::PATH_TRUNCATED);
            return None;
        }
        // SAFETY: len < MAX_RECORD and SCRATCH_SIZE = MAX_RECORD + 2 * MAX_STR.
        Some(unsafe { self.buf.add(len & (MAX_RECORD - 1)) } as *mut c_void)
    }

    /// Appends a NUL-terminated user string (at most MAX_STR bytes, NUL
    /// included). Returns the bytes appended; flags truncation.
    #[inline(always)]
    pub fn push_user_str(&mut self, src: u64) -> u32 {
        let Some(dst) = self.cursor() else { return 0 };
        // SAFETY: dst has MAX_STR bytes of room (see cursor).
        let n = unsafe { bpf_probe_read_user_str(dst, MAX_STR as u32, src as *const c_void) };
        if n <= 0 {
            count(stat::READ_ERRORS);
            self.flag(flags::READ_FAILED);
            return 0;
        }
        let n = (n as usize) & (MAX_STR * 2 - 1);
        if n >= MAX_STR {
            self.flag(flags::PATH_TRUNCATED);
        }
        self.advance(n);
        n as u32
    }

    /// Appends `len` bytes of user memory (len is clamped to MAX_STR).
    #[inline(always)]
    pub fn push_user_bytes(&mut self, src: u64, len: usize) -> u32 {
        let Some(dst) = self.cursor() else { return 0 };
        let len = if len > MAX_STR { MAX_STR } else { len };
        let len = len & (MAX_STR * 2 - 1);
        if len == 0 {
            return 0;
        }
        // SAFETY: dst has MAX_STR bytes of room, len <= MAX_STR.
        let r = unsafe { bpf_probe_read_user(dst, len as u32, src as *const c_void) };
        if r < 0 {
            count(stat::READ_ERRORS);
            self.flag(flags::READ_FAILED);
            return 0;
        }
        self.advance(len);
        len as u32
    }

    /// Appends `len` bytes of kernel memory (len is clamped to MAX_STR).
    #[inline(always)]
    pub fn push_kernel_bytes(&mut self, src: *const u8, len: usize) -> u32 {
        let Some(dst) = self.cursor() else { return 0 };
        let len = opaque(if len > MAX_STR { MAX_STR } else { len }) & (MAX_STR * 2 - 1);
        if len == 0 {
            return 0;
        }
        // SAFETY: dst has MAX_STR bytes of room, len <= MAX_STR.
        if unsafe {
            aya_ebpf::helpers::generated::bpf_probe_read_kernel(dst, len as u32, src as *const c_void)
        } < 0
        {
            count(stat::READ_ERRORS);
            self.flag(flags::READ_FAILED);
            return 0;
        }
        self.advance(len);
        len as u32
    }

    /// Appends a NUL-terminated kernel string of at most `max` bytes (max <= MAX_STR).
    #[inline(always)]
    pub fn push_kernel_str(&mut self, src: u64, max: u32) -> u32 {
        let Some(dst) = self.cursor() else { return 0 };
        // SAFETY: dst has MAX_STR bytes of room and max <= MAX_STR.
        let n = unsafe { bpf_probe_read_kernel_str(dst, max, src as *const c_void) };
        if n <= 0 {
            count(stat::READ_ERRORS);
            self.flag(flags::READ_FAILED);
            return 0;
        }
        let n = (n as usize) & (MAX_STR * 2 - 1);
        self.advance(n);
        n as u32
    }

    /// Copies the record into the ring buffer and counts it, per cgroup and
    /// kind, as sent, or as lost if it does not fit.
    #[inline(always)]
    pub fn emit(self) {
        self.send(true)
    }

    /// `emit` for the records of a program whose own counter counts every
    /// record it sends (each exec and exit is counted and sent): user space
    /// takes the records sent as that counter minus the lost ones, and the
    /// program saves a counter update per record (a hash lookup: a third of
    /// the exit program's time, perf).
    #[inline(always)]
    pub fn emit_counted(self) {
        self.send(false)
    }

    #[inline(always)]
    fn send(mut self, count_sent: bool) {
        let len = self.len();
        let len = if len > SCRATCH_SIZE { SCRATCH_SIZE } else { len };
        self.set_len(len);
        // SAFETY: buf holds SCRATCH_SIZE bytes and len <= SCRATCH_SIZE.
        let data = unsafe { core::slice::from_raw_parts(self.buf as *const u8, len) };
        // SAFETY: plain read of a static.
        let wakeup = unsafe { core::ptr::read_volatile(&WAKEUP_BYTES) };
        let flags = if wakeup == 0 {
            0
        } else if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= wakeup {
            BPF_RB_FORCE_WAKEUP as u64
        } else {
            BPF_RB_NO_WAKEUP as u64
        };
        if EVENTS.output::<[u8]>(data, flags).is_err() {
            count(stat::RINGBUF_LOST);
            let h = self.header();
            let (cgroup_id, kind) = (h.cgroup_id, h.kind);
            counters::add(&counters::key(cgroup_id, counter::LOST, kind as u8, 0, 0), 0, 0);
        } else {
            count(stat::RECORDS);
            if count_sent {
                let h = self.header();
                let (cgroup_id, kind) = (h.cgroup_id, h.kind);
                counters::add(&counters::key(cgroup_id, counter::RECORD, kind as u8, 0, 0), 0, 0);
            }
        }
    }
}

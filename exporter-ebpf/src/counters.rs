//! Per-cgroup counters, kept in the kernel and updated by every probe whether
//! or not it sends a record: they stay exact when the ring buffer overflows.

use aya_ebpf::{bindings::BPF_NOEXIST, macros::map, maps::PerCpuHashMap};
use podwatch_common::{stat, CounterKey, CounterValue};

use crate::record::count;

/// Capacity is set from the agent's config at load time.
#[map]
static COUNTERS: PerCpuHashMap<CounterKey, CounterValue> = PerCpuHashMap::with_max_entries(16384, 0);

/// When non-zero, exec counters are split by binary (hash of the path).
#[no_mangle]
static COUNT_EXEC_BY_BINARY: u32 = 0;

#[inline(always)]
pub fn by_binary() -> bool {
    // SAFETY: plain read of a static.
    (unsafe { core::ptr::read_volatile(&COUNT_EXEC_BY_BINARY) }) != 0
}

#[inline(always)]
pub fn key(cgroup_id: u64, kind: u16, op: u8, outcome: u8, direction: u8) -> CounterKey {
    CounterKey { cgroup_id, binary: 0, kind, rule: 0, op, outcome, action: 0, direction }
}

/// Adds one event (and bytes) to the counter for `key`, creating it if needed.
#[inline(always)]
pub fn add(key: &CounterKey, bytes_sent: u64, bytes_received: u64) {
    if let Some(v) = COUNTERS.get_ptr_mut(key) {
        // SAFETY: per-CPU value: no other writer on this CPU.
        unsafe {
            (*v).events += 1;
            (*v).bytes_sent += bytes_sent;
            (*v).bytes_received += bytes_received;
        }
        return;
    }
    let v = CounterValue { events: 1, bytes_sent, bytes_received };
    // From a program, an insert sets this CPU's slot; another CPU may have
    // created the key meanwhile (EEXIST), in which case add to our slot.
    if COUNTERS.insert(key, &v, BPF_NOEXIST as u64).is_ok() {
        return;
    }
    match COUNTERS.get_ptr_mut(key) {
        // SAFETY: as above.
        Some(p) => unsafe {
            (*p).events += 1;
            (*p).bytes_sent += bytes_sent;
            (*p).bytes_received += bytes_received;
        },
        None => count(stat::COUNTER_FULL),
    }
}

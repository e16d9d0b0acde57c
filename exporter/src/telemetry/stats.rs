//! The agent's own counters: every place an event can be lost has one.
//! Plain atomics so any task can bump them without locks; /stats serves them
//! and the metrics endpoint will read the same values.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use aya::maps::{MapData, PerCpuArray};
use podwatch_common::stat;
use serde::Serialize;

#[derive(Default, Debug)]
pub struct AgentStats {
    /// Records the kernel could not put in the ring buffer (from the STATS map).
    pub kernel_ringbuf_lost: AtomicU64,
    /// Records the kernel wrote to the ring buffer.
    pub kernel_records: AtomicU64,
    pub kernel_read_errors: AtomicU64,
    pub kernel_open_args_misses: AtomicU64,
    pub kernel_open_stage_misses: AtomicU64,
    pub kernel_sock_owner_misses: AtomicU64,
    /// Per-pod counter entries the kernel could not create (map full).
    pub kernel_counter_full: AtomicU64,
    /// Records read from the ring buffer in userspace.
    pub records_read: AtomicU64,
    pub decode_short: AtomicU64,
    pub decode_unknown_kind: AtomicU64,
    pub decode_bad_length: AtomicU64,
    pub decode_bad_tail: AtomicU64,
    pub events_emitted: AtomicU64,
    /// Events dropped because the output queue was full.
    pub output_queue_drops: AtomicU64,
    /// Events a slow live-stream subscriber missed.
    pub stream_lagged: AtomicU64,
    pub output_write_errors: AtomicU64,
    pub process_cache_size: AtomicU64,
    pub process_cache_misses: AtomicU64,
    pub process_cache_evictions: AtomicU64,
    pub cgroup_cache_size: AtomicU64,
    pub cgroup_misses: AtomicU64,
}

#[derive(Debug, Serialize, serde::Deserialize, Clone, Default, PartialEq)]
pub struct StatsSnapshot {
    pub kernel_ringbuf_lost: u64,
    pub kernel_records: u64,
    pub kernel_read_errors: u64,
    pub kernel_open_args_misses: u64,
    pub kernel_open_stage_misses: u64,
    pub kernel_sock_owner_misses: u64,
    pub records_read: u64,
    pub decode_errors: DecodeErrors,
    pub events_emitted: u64,
    pub output_queue_drops: u64,
    pub stream_lagged: u64,
    pub output_write_errors: u64,
    pub process_cache_size: u64,
    pub process_cache_misses: u64,
    pub process_cache_evictions: u64,
    pub cgroup_cache_size: u64,
    pub cgroup_misses: u64,
}

#[derive(Debug, Serialize, serde::Deserialize, Clone, Default, PartialEq)]
pub struct DecodeErrors {
    pub short: u64,
    pub unknown_kind: u64,
    pub bad_length: u64,
    pub bad_tail: u64,
}

impl AgentStats {
    /// Copies the kernel's own counters (summed over CPUs) from its STATS map.
    pub fn poll_kernel(&self, map: &PerCpuArray<MapData, u64>) {
        let sum = |idx: u32| -> u64 { map.get(&idx, 0).map(|v| v.iter().copied().sum()).unwrap_or(0) };
        self.kernel_ringbuf_lost.store(sum(stat::RINGBUF_LOST), Relaxed);
        self.kernel_records.store(sum(stat::RECORDS), Relaxed);
        self.kernel_read_errors.store(sum(stat::READ_ERRORS), Relaxed);
        self.kernel_open_args_misses.store(sum(stat::OPEN_ARGS_MISS), Relaxed);
        self.kernel_open_stage_misses.store(sum(stat::OPEN_STAGE_MISS), Relaxed);
        self.kernel_sock_owner_misses.store(sum(stat::SOCK_OWNER_MISS), Relaxed);
        self.kernel_counter_full.store(sum(stat::COUNTER_FULL), Relaxed);
    }

    pub fn decode_error(&self, e: crate::pipeline::decode::DecodeError) {
        use crate::pipeline::decode::DecodeError::*;
        match e {
            Short => &self.decode_short,
            UnknownKind => &self.decode_unknown_kind,
            BadLength => &self.decode_bad_length,
            BadTail => &self.decode_bad_tail,
        }
        .fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let g = |a: &AtomicU64| a.load(Relaxed);
        StatsSnapshot {
            kernel_ringbuf_lost: g(&self.kernel_ringbuf_lost),
            kernel_records: g(&self.kernel_records),
            kernel_read_errors: g(&self.kernel_read_errors),
            kernel_open_args_misses: g(&self.kernel_open_args_misses),
            kernel_open_stage_misses: g(&self.kernel_open_stage_misses),
            kernel_sock_owner_misses: g(&self.kernel_sock_owner_misses),
            records_read: g(&self.records_read),
            decode_errors: DecodeErrors {
                short: g(&self.decode_short),
                unknown_kind: g(&self.decode_unknown_kind),
                bad_length: g(&self.decode_bad_length),
                bad_tail: g(&self.decode_bad_tail),
            },
            events_emitted: g(&self.events_emitted),
            output_queue_drops: g(&self.output_queue_drops),
            stream_lagged: g(&self.stream_lagged),
            output_write_errors: g(&self.output_write_errors),
            process_cache_size: g(&self.process_cache_size),
            process_cache_misses: g(&self.process_cache_misses),
            process_cache_evictions: g(&self.process_cache_evictions),
            cgroup_cache_size: g(&self.cgroup_cache_size),
            cgroup_misses: g(&self.cgroup_misses),
        }
    }
}

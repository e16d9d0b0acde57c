//! Where the per-pod counters come from: the kernel's per-CPU COUNTERS map
//! (summed over CPUs at scrape time), or a fixed list for the bench and tests.

use std::sync::Mutex;

use aya::maps::{MapData, PerCpuHashMap};
use podwatch_common::{CounterKey, CounterValue};

/// Where the per-pod counters come from: the kernel map, or a fixed list (bench, tests).
pub trait CounterSource: Send + Sync {
    fn read(&self) -> Vec<(CounterKey, CounterValue)>;
    fn remove_cgroups(&self, ids: &[u64]);
    fn capacity(&self) -> u32;
}

pub struct KernelCounters {
    map: Mutex<PerCpuHashMap<MapData, CounterKey, CounterValue>>,
    capacity: u32,
}

impl KernelCounters {
    pub fn new(map: PerCpuHashMap<MapData, CounterKey, CounterValue>, capacity: u32) -> KernelCounters {
        KernelCounters { map: Mutex::new(map), capacity }
    }
}

impl CounterSource for KernelCounters {
    fn read(&self) -> Vec<(CounterKey, CounterValue)> {
        let Ok(map) = self.map.lock() else { return Vec::new() };
        map.iter()
            .filter_map(Result::ok)
            .map(|(k, per_cpu)| {
                let mut sum = CounterValue::default();
                for v in per_cpu.iter() {
                    sum.events += v.events;
                    sum.bytes_sent += v.bytes_sent;
                    sum.bytes_received += v.bytes_received;
                }
                (k, sum)
            })
            .collect()
    }

    fn remove_cgroups(&self, ids: &[u64]) {
        let Ok(mut map) = self.map.lock() else { return };
        let doomed: Vec<CounterKey> =
            map.keys().filter_map(Result::ok).filter(|k| ids.contains(&k.cgroup_id)).collect();
        for k in doomed {
            let _ = map.remove(&k);
        }
    }

    fn capacity(&self) -> u32 {
        self.capacity
    }
}

/// A fixed counter list: for the scrape bench and unit tests.
pub struct StaticCounters(pub Mutex<Vec<(CounterKey, CounterValue)>>);

impl CounterSource for StaticCounters {
    fn read(&self) -> Vec<(CounterKey, CounterValue)> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
    fn remove_cgroups(&self, ids: &[u64]) {
        if let Ok(mut v) = self.0.lock() {
            v.retain(|(k, _)| !ids.contains(&k.cgroup_id));
        }
    }
    fn capacity(&self) -> u32 {
        u32::MAX
    }
}

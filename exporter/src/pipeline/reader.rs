//! The ring-buffer reader: the one task every kernel record passes through.
//! It decodes, enriches and offers each event to every output; offers never
//! wait (each output has its own bounded queue), so a slow disk, sink or
//! viewer can never back up into the kernel.

use std::{
    sync::{atomic::Ordering::Relaxed, Arc},
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use tokio::{io::unix::AsyncFd, sync::broadcast};

use crate::{
    outputs::{local::OutputHandle, sinks::Sinks},
    pipeline::{decode::decode, enrich::Enricher, event::Event},
    telemetry::stats::AgentStats,
};

/// Everything downstream of the ring buffer.
pub struct Fanout {
    pub local: OutputHandle,
    pub sinks: Arc<Sinks>,
    pub live: broadcast::Sender<Arc<Event>>,
}

/// How often the reader drains the ring without being woken. The kernel
/// wakes it only when an eighth of the ring is pending (kernel::loader::
/// wakeup_bytes), so this bounds how late a quiet node's events are.
pub const POLL: Duration = Duration::from_millis(10);

/// Records after which a drain hands its lines to the local output and
/// publishes its counters, at most: large enough that the output thread
/// wakes rarely, small enough that neither waits long on a drain that
/// keeps finding records.
const BATCH: u64 = 512;

pub struct Reader {
    ring: AsyncFd<RingBuf<MapData>>,
    tick: tokio::time::Interval,
    enricher: Enricher,
    stats: Arc<AgentStats>,
    last_tick: Instant,
}

impl Reader {
    pub fn new(ring: RingBuf<MapData>, enricher: Enricher, stats: Arc<AgentStats>) -> anyhow::Result<Reader> {
        // SAFETY: the RingBuf owns its map fd for as long as the AsyncFd owns it.
        let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| anyhow::anyhow!("polling the ring buffer: {e}"))?;
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(Reader { ring, tick, enricher, stats, last_tick: Instant::now() })
    }

    /// Waits until the kernel wakes the reader or the poll interval passes,
    /// then drains the ring buffer into `out`.
    pub async fn read_batch(&mut self, out: &mut Fanout) -> anyhow::Result<()> {
        tokio::select! {
            guard = self.ring.readable_mut() => {
                // Cleared before draining: a record committed during the drain
                // sets readiness again instead of being missed.
                guard?.clear_ready();
            }
            _ = self.tick.tick() => {}
        }
        self.drain(out);
        if self.last_tick.elapsed() >= Duration::from_secs(1) {
            self.housekeeping();
        }
        Ok(())
    }

    /// Reads every record the ring buffer holds now (also at shutdown, so
    /// nothing committed before the stop is left behind).
    pub fn drain(&mut self, out: &mut Fanout) {
        // Counted locally and published once per drain: an atomic add per
        // record on a cache line /metrics also reads was a tenth of the
        // reader's time under load (perf).
        let (mut read, mut emitted) = (0u64, 0u64);
        let rb = self.ring.get_mut();
        while let Some(item) = rb.next() {
            read += 1;
            match decode(&item) {
                Ok(rec) => {
                    drop(item);
                    if let Some(ev) = self.enricher.enrich(rec) {
                        let ev = Arc::new(ev);
                        emitted += 1;
                        out.local.offer(&ev, &self.stats);
                        out.sinks.offer(&ev);
                        let _ = out.live.send(ev);
                    }
                }
                Err(e) => self.stats.decode_error(e),
            }
            if read >= BATCH {
                // A drain lasts as long as producers keep up with it.
                out.local.flush();
                self.stats.records_read.fetch_add(std::mem::take(&mut read), Relaxed);
                self.stats.events_emitted.fetch_add(std::mem::take(&mut emitted), Relaxed);
            }
        }
        out.local.flush();
        self.stats.records_read.fetch_add(read, Relaxed);
        self.stats.events_emitted.fetch_add(emitted, Relaxed);
    }

    /// Once a second: expire exited processes, publish cache sizes.
    fn housekeeping(&mut self) {
        self.last_tick = Instant::now();
        let e = &mut self.enricher;
        e.tick(self.last_tick);
        self.stats.process_cache_size.store(e.procs.len() as u64, Relaxed);
        self.stats.process_cache_misses.store(e.procs.misses, Relaxed);
        self.stats.process_cache_evictions.store(e.procs.evictions, Relaxed);
        if let Ok(c) = e.cgroups.lock() {
            self.stats.cgroup_cache_size.store(c.len() as u64, Relaxed);
            self.stats.cgroup_misses.store(c.misses, Relaxed);
        }
    }
}

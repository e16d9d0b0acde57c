//! The agent's own health and loss counters: ring buffer, decode, queues,
//! caches, metadata source, kernel maps, sensors, sinks, policies.

use std::sync::atomic::Ordering::Relaxed;

use prometheus_client::{
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
    registry::Unit,
};

use super::Metrics;

impl Metrics {
    pub(super) fn encode_self(
        &self,
        encoder: &mut DescriptorEncoder,
        map_entries: usize,
    ) -> Result<(), std::fmt::Error> {
        let s = self.stats.snapshot();
        let counter =
            |e: &mut DescriptorEncoder, name: &str, help: &str, v: u64| -> Result<(), std::fmt::Error> {
                ConstCounter::new(v).encode(e.encode_descriptor(name, help, None, MetricType::Counter)?)
            };
        let gauge =
            |e: &mut DescriptorEncoder, name: &str, help: &str, v: i64| -> Result<(), std::fmt::Error> {
                ConstGauge::new(v).encode(e.encode_descriptor(name, help, None, MetricType::Gauge)?)
            };
        counter(
            encoder,
            "podwatch_kernel_records",
            "Records the kernel wrote to the ring buffer.",
            s.kernel_records,
        )?;
        counter(
            encoder,
            "podwatch_kernel_read_errors",
            "Kernel memory reads that failed in the probes.",
            s.kernel_read_errors,
        )?;
        counter(
            encoder,
            "podwatch_kernel_opens_unjudged",
            "Opens a hook saw but could not hand to the judging program (neither judged nor counted).",
            s.kernel_open_stage_misses,
        )?;
        {
            let mut m = encoder.encode_descriptor(
                "podwatch_kernel_map_insert_failures",
                "Entries a kernel map could not take because it was full (per-pod counters lost).",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(self.stats.kernel_counter_full.load(Relaxed))
                .encode(m.encode_family(&[("map", "counters")])?)?;
        }
        counter(encoder, "podwatch_records_read", "Records read from the ring buffer.", s.records_read)?;
        {
            let mut m = encoder.encode_descriptor(
                "podwatch_decode_errors",
                "Ring buffer records that could not be decoded, by reason (skipped).",
                None,
                MetricType::Counter,
            )?;
            for (reason, v) in [
                ("short", s.decode_errors.short),
                ("unknown_kind", s.decode_errors.unknown_kind),
                ("bad_length", s.decode_errors.bad_length),
                ("bad_tail", s.decode_errors.bad_tail),
            ] {
                ConstCounter::new(v).encode(m.encode_family(&[("reason", reason)])?)?;
            }
        }
        counter(encoder, "podwatch_events", "Events produced after enrichment.", s.events_emitted)?;
        {
            let mut m = encoder.encode_descriptor(
                "podwatch_queue_dropped_events",
                "Events dropped because a queue was full (the reader never waits).",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(s.output_queue_drops).encode(m.encode_family(&[("queue", "output")])?)?;
            ConstCounter::new(s.stream_lagged).encode(m.encode_family(&[("queue", "live_stream")])?)?;
        }
        counter(
            encoder,
            "podwatch_output_write_errors",
            "Failed writes to the local output.",
            s.output_write_errors,
        )?;
        gauge(
            encoder,
            "podwatch_process_cache_entries",
            "Processes in the process cache.",
            s.process_cache_size as i64,
        )?;
        counter(
            encoder,
            "podwatch_process_cache_misses",
            "Process lookups not in the cache (read from /proc).",
            s.process_cache_misses,
        )?;
        counter(
            encoder,
            "podwatch_process_cache_evictions",
            "Processes evicted from the full cache.",
            s.process_cache_evictions,
        )?;
        gauge(
            encoder,
            "podwatch_cgroup_cache_entries",
            "cgroup ids with a known path.",
            s.cgroup_cache_size as i64,
        )?;
        counter(
            encoder,
            "podwatch_cgroup_cache_misses",
            "cgroup ids looked up without a known path.",
            s.cgroup_misses,
        )?;
        {
            let st = &self.pods.state;
            let source = st.name.read().map(|n| n.clone()).unwrap_or_default();
            let l = [("source", source.as_str())];
            let mut m = encoder.encode_descriptor(
                "podwatch_metadata_synced",
                "1 once the pod metadata source has completed its first full sync.",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(st.synced.load(Relaxed) as i64).encode(m.encode_family(&l)?)?;
            let mut m = encoder.encode_descriptor(
                "podwatch_metadata_errors",
                "Errors from the pod metadata source.",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(st.errors.load(Relaxed)).encode(m.encode_family(&l)?)?;
            let mut m = encoder.encode_descriptor(
                "podwatch_metadata_relists",
                "Full re-lists of pods (initial, after 410 Gone or errors).",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(st.relists.load(Relaxed)).encode(m.encode_family(&l)?)?;
            let mut m = encoder.encode_descriptor(
                "podwatch_metadata_pods",
                "Live pods known to the metadata source.",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(self.pods.live_count() as i64).encode(m.encode_family(&l)?)?;
        }
        {
            let entries = map_entries as i64;
            let mut m = encoder.encode_descriptor(
                "podwatch_kernel_map_entries",
                "Entries in a kernel map.",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(entries).encode(m.encode_family(&[("map", "counters")])?)?;
            let mut m = encoder.encode_descriptor(
                "podwatch_kernel_map_capacity",
                "Capacity of a kernel map.",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(self.counters.capacity() as i64)
                .encode(m.encode_family(&[("map", "counters")])?)?;
        }
        {
            let mut m = encoder.encode_descriptor(
                "podwatch_sensor_attached",
                "1 when a kernel program is attached to its hook.",
                None,
                MetricType::Gauge,
            )?;
            for s in &self.sensors {
                ConstGauge::new(s.attached as i64).encode(m.encode_family(&[
                    ("sensor", crate::kernel::loader::sensor_of(&s.program)),
                    ("program", s.program.as_str()),
                    ("hook", s.hook.as_str()),
                ])?)?;
            }
            let mut m = encoder.encode_descriptor(
                "podwatch_kernel_feature",
                "1 when the running kernel offers a hook kind (probed by attaching an empty program).",
                None,
                MetricType::Gauge,
            )?;
            for (feature, on) in crate::kernel::probe::features().into_iter().flat_map(|f| f.flags()) {
                ConstGauge::new(on as i64).encode(m.encode_family(&[("feature", feature)])?)?;
            }
        }
        self.encode_sinks(encoder)?;
        {
            use std::sync::atomic::Ordering::Relaxed;
            let st = &self.policy_status;
            gauge(
                encoder,
                "podwatch_policies_loaded",
                "Policies in the active set.",
                st.policies.load(Relaxed) as i64,
            )?;
            gauge(
                encoder,
                "podwatch_policy_rules_loaded",
                "Rules in the active set.",
                st.rules.load(Relaxed) as i64,
            )?;
            gauge(
                encoder,
                "podwatch_read_guard_attached",
                "1 while the read-family programs are attached: only while a loaded kill rule guards reading a file.",
                st.read_guard_attached.load(Relaxed) as i64,
            )?;
            let mut m = encoder.encode_descriptor(
                "podwatch_policy_reloads",
                "Policy set loads by result (a failed load keeps the running set).",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(st.reloads_ok.load(Relaxed)).encode(m.encode_family(&[("result", "ok")])?)?;
            ConstCounter::new(st.reloads_failed.load(Relaxed))
                .encode(m.encode_family(&[("result", "error")])?)?;
            let m = encoder.encode_descriptor(
                "podwatch_policy_last_reload_success_timestamp",
                "When the active policy set was loaded (Unix time).",
                Some(&Unit::Seconds),
                MetricType::Gauge,
            )?;
            ConstGauge::new(st.last_success.load(Relaxed) as i64).encode(m)?;
            let mut m = encoder.encode_descriptor(
                "podwatch_policy_rule_unenforced",
                "1 for a loaded rule a kernel program it needs is not attached for (the agent is not ready).",
                None,
                MetricType::Gauge,
            )?;
            for g in st.unenforced.read().iter().flat_map(|u| u.iter()) {
                for (program, _) in &g.missing {
                    ConstGauge::new(1i64).encode(m.encode_family(&[
                        ("policy", g.policy.as_str()),
                        ("rule", g.rule.as_str()),
                        ("program", program.as_str()),
                    ])?)?;
                }
            }
        }
        {
            let secs = self.last_scrape_seconds.lock().map(|v| *v).unwrap_or(0.0);
            let m = encoder.encode_descriptor(
                "podwatch_last_scrape_duration",
                "Time the previous /metrics scrape took.",
                Some(&Unit::Seconds),
                MetricType::Gauge,
            )?;
            ConstGauge::new(secs).encode(m)?;
        }
        {
            // A gauge of 1 (the `*_build_info` convention), not the OpenMetrics info
            // type: the classic text parser (promtool, older scrapers) rejects `info`.
            let mut m = encoder.encode_descriptor(
                "podwatch_build_info",
                "Build information; the value is always 1.",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(1i64).encode(m.encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?)?;
        }
        Ok(())
    }

    fn encode_sinks(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.sinks.lock().ok().and_then(|s| s.as_ref().map(|s| s.stats())).unwrap_or_default();
        let mut m = encoder.encode_descriptor(
            "podwatch_sink_events",
            "Events per sink by outcome: sent, failed (given up), dropped (queue full or oversized), retried.",
            None,
            MetricType::Counter,
        )?;
        for (sink, s) in &stats {
            for (outcome, v) in
                [("sent", s.sent), ("failed", s.failed), ("dropped", s.dropped), ("retried", s.retried)]
            {
                ConstCounter::new(v)
                    .encode(m.encode_family(&[("sink", sink.as_str()), ("outcome", outcome)])?)?;
            }
        }
        let mut m = encoder.encode_descriptor(
            "podwatch_sink_batches",
            "Batches a sink sent.",
            None,
            MetricType::Counter,
        )?;
        for (sink, s) in &stats {
            ConstCounter::new(s.batches).encode(m.encode_family(&[("sink", sink.as_str())])?)?;
        }
        for (name, help, get) in [
            (
                "podwatch_sink_queue_depth",
                "Events waiting in a sink's queue.",
                (|s| s.queue_depth) as fn(&crate::outputs::sinks::SinkStatsSnapshot) -> u64,
            ),
            ("podwatch_sink_queue_capacity", "Capacity of a sink's queue.", |s| s.queue_capacity),
            ("podwatch_sink_in_flight", "Events a sink has taken but not yet settled.", |s| s.in_flight),
        ] {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (sink, s) in &stats {
                ConstGauge::new(get(s) as i64).encode(m.encode_family(&[("sink", sink.as_str())])?)?;
            }
        }
        let mut m = encoder.encode_descriptor(
            "podwatch_sink_last_success_timestamp",
            "When a sink last delivered (Unix time).",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        for (sink, s) in &stats {
            ConstGauge::new(s.last_success_unix.unwrap_or(0.0))
                .encode(m.encode_family(&[("sink", sink.as_str())])?)?;
        }
        Ok(())
    }
}

//! The per-pod families (exec, exits, file access, connections, bytes, privilege changes,
//! enforcement, ring-buffer records and losses, rule matches), aggregated
//! from the kernel's counter entries.

use std::collections::{BTreeMap, HashMap};

use podwatch_common::{action, counter, kind, CounterKey, CounterValue};
use prometheus_client::registry::Unit;

use super::{
    labels::{Labels, PodLabels},
    Metrics,
};
use crate::pipeline::names::{
    action_name, change_name, direction, file_op_name, protocol, record_kind_name, result,
};

/// A per-pod family: name (without `_total`/unit suffix), help, unit.
pub(super) struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub unit: Option<Unit>,
    pub series: BTreeMap<Labels, u64>,
}

impl Family {
    fn new(name: &'static str, help: &'static str, unit: Option<Unit>) -> Family {
        Family { name, help, unit, series: BTreeMap::new() }
    }
    fn add(&mut self, labels: Labels, v: u64) {
        *self.series.entry(labels).or_default() += v;
    }
}

impl Metrics {
    /// Aggregates counter entries into families (pure: used by scrapes and the bench).
    pub(super) fn families(&self, entries: &[(CounterKey, CounterValue)]) -> Vec<Family> {
        let mut exec = Family::new("podwatch_exec", "Processes executed (execve) per pod.", None);
        let mut exits =
            Family::new("podwatch_process_exits", "Processes that ended, by reason (exit or signal).", None);
        let mut files =
            Family::new("podwatch_file_access", "File opens per pod by operation and result.", None);
        let mut conns = Family::new(
            "podwatch_network_connections",
            "Connections per pod: TCP connects (egress) and accepts (ingress), UDP connects.",
            None,
        );
        let mut datagrams = Family::new(
            "podwatch_network_datagrams",
            "UDP datagrams sent to an explicit destination (e.g. DNS).",
            None,
        );
        let mut sent = Family::new(
            "podwatch_network_sent",
            "TCP payload bytes sent, counted when connections close.",
            Some(Unit::Bytes),
        );
        let mut received = Family::new(
            "podwatch_network_received",
            "TCP payload bytes received, counted when connections close.",
            Some(Unit::Bytes),
        );
        let mut privileges = Family::new(
            "podwatch_privilege_changes",
            "Credential and namespace changes per pod (setuid/setgid families, capset, unshare, setns, \
             execs that changed credentials), and failed attempts.",
            None,
        );
        let mut enforced =
            Family::new("podwatch_enforcement_actions", "Acts stopped by a policy (kill or deny).", None);
        let mut lost = Family::new(
            "podwatch_ringbuf_lost_records",
            "Detailed records the kernel ring buffer could not take (counters stay exact).",
            None,
        );

        let mut records = Family::new(
            "podwatch_ringbuf_records",
            "Detailed records the kernel sent to user space (what policies asked to log).",
            None,
        );
        let mut matches = Family::new(
            "podwatch_policy_rule_matches",
            "Events each policy rule matched, on every pod (counted in the kernel).",
            None,
        );
        let mut pod_cache: HashMap<u64, PodLabels> = HashMap::new();
        // Exec and exit records are not counted as sent in the kernel (every
        // exec and exit is both counted and sent, see `counter::RECORD`):
        // (cgroup, record kind) → (events counted, records lost).
        let mut sent_with_event: BTreeMap<(u64, u16), (u64, u64)> = BTreeMap::new();
        for (k, v) in entries {
            match (k.kind, k.op as u16) {
                (counter::EXEC, _) => {
                    sent_with_event.entry((k.cgroup_id, kind::EXEC)).or_default().0 += v.events
                }
                (counter::EXIT, _) => {
                    sent_with_event.entry((k.cgroup_id, kind::EXIT)).or_default().0 += v.events
                }
                (counter::LOST, r @ (kind::EXEC | kind::EXIT)) => {
                    sent_with_event.entry((k.cgroup_id, r)).or_default().1 += v.events
                }
                _ => {}
            }
        }
        for (&(cgroup_id, record_kind), &(counted, lost)) in &sent_with_event {
            let p = pod_cache.entry(cgroup_id).or_insert_with(|| self.pod_labels(cgroup_id));
            let mut l = self.base(p);
            l.push(("kind", record_kind_name(record_kind as u8)));
            records.add(l, counted.saturating_sub(lost));
        }
        for (k, v) in entries {
            let p = pod_cache.entry(k.cgroup_id).or_insert_with(|| self.pod_labels(k.cgroup_id));
            let mut l = self.base(p);
            let rule = (k.rule != 0).then(|| self.rules.get(k.rule)).flatten();
            let policy_name = match (&rule, k.rule) {
                (Some(r), _) => r.policy.to_string(),
                (None, 0) => String::new(),
                (None, id) => format!("rule-{id}"),
            };
            let policy = |l: &mut Labels| {
                l.push(("policy", policy_name.clone()));
                l.push(("action", action_name(k.action)));
            };
            if k.rule != 0 && !matches!(k.kind, counter::LOST | counter::RECORD | counter::CLOSE) {
                let rule_name =
                    rule.as_ref().map(|r| r.rule.to_string()).unwrap_or_else(|| format!("rule-{}", k.rule));
                matches.add(
                    vec![
                        ("policy", policy_name.clone()),
                        ("rule", rule_name),
                        ("action", action_name(k.action)),
                    ],
                    v.events,
                );
            }
            match k.kind {
                counter::EXEC => {
                    if self.labels.binary {
                        l.push(("binary", self.binaries.get(k.binary)));
                    }
                    policy(&mut l);
                    exec.add(l, v.events);
                }
                counter::EXIT => {
                    l.push(("reason", if k.outcome == 0 { "exit" } else { "signal" }.to_owned()));
                    exits.add(l, v.events);
                }
                counter::FILE => {
                    l.push(("operation", file_op_name(k.op).to_owned()));
                    l.push(("result", result(k.outcome)));
                    policy(&mut l);
                    files.add(l, v.events);
                }
                counter::CONNECT | counter::ACCEPT => {
                    l.push(("direction", direction(k.direction)));
                    l.push(("protocol", protocol(k.op)));
                    l.push(("result", result(k.outcome)));
                    policy(&mut l);
                    conns.add(l, v.events);
                }
                counter::SEND => {
                    l.push(("protocol", protocol(k.op)));
                    policy(&mut l);
                    datagrams.add(l, v.events);
                }
                counter::CLOSE => {
                    l.push(("direction", direction(k.direction)));
                    l.push(("protocol", protocol(k.op)));
                    sent.add(l.clone(), v.bytes_sent);
                    received.add(l, v.bytes_received);
                }
                counter::PRIVILEGE => {
                    l.push(("change", change_name(k.op).to_owned()));
                    l.push(("result", result(k.outcome)));
                    policy(&mut l);
                    privileges.add(l, v.events);
                }
                counter::LOST => {
                    l.push(("kind", record_kind_name(k.op)));
                    lost.add(l, v.events);
                }
                counter::RECORD => {
                    l.push(("kind", record_kind_name(k.op)));
                    records.add(l, v.events);
                }
                _ => {}
            }
            if k.action == action::KILL || k.action == action::DENY {
                let mut l = self.base(p);
                policy(&mut l);
                enforced.add(l, v.events);
            }
        }
        vec![
            exec, exits, files, conns, datagrams, sent, received, privileges, enforced, lost, records,
            matches,
        ]
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{Arc, Mutex},
        time::Duration,
    };

    use podwatch_common::{counter, kind, CounterKey, CounterValue};

    use crate::{
        pipeline::names::BinaryNames,
        pods::{cgroup::CgroupResolver, PodStore},
        telemetry::{
            metrics::{LabelConfig, Metrics, StaticCounters},
            stats::AgentStats,
        },
    };

    fn entry(
        cgroup_id: u64,
        kind: u16,
        op: u8,
        outcome: u8,
        rule: u16,
        events: u64,
    ) -> (CounterKey, CounterValue) {
        let key = CounterKey { cgroup_id, binary: 0, kind, rule, op, outcome, action: 0, direction: 0 };
        (key, CounterValue { events, bytes_sent: 0, bytes_received: 0 })
    }

    /// Exec and exit records are the exec and exit counts minus the lost
    /// records (the kernel does not count them as sent); others are counted.
    #[test]
    fn exec_and_exit_records_are_derived_from_their_counts_and_losses() {
        let pod = "6b1f0a52-2c3d-4e5f-8a9b-0c1d2e3f4a5b";
        let mut cgroups = CgroupResolver::new(None);
        cgroups.insert(7, format!("/kubepods/burstable/pod{pod}/4f2b8e"));
        let entries = vec![
            // Execs split by outcome and rule: 5 + 2 + 1 (a denied one).
            entry(7, counter::EXEC, 0, 0, 0, 5),
            entry(7, counter::EXEC, 0, 0, 3, 2),
            entry(7, counter::EXEC, 0, 1, 4, 1),
            entry(7, counter::LOST, kind::EXEC as u8, 0, 0, 3),
            // Exits by reason, none lost.
            entry(7, counter::EXIT, 0, 0, 0, 4),
            entry(7, counter::EXIT, 0, 1, 0, 2),
            // File records are counted as sent by the kernel.
            entry(7, counter::FILE, 0, 0, 0, 100),
            entry(7, counter::RECORD, kind::FILE_OPEN as u8, 0, 0, 9),
            entry(7, counter::LOST, kind::FILE_OPEN as u8, 0, 0, 1),
        ];
        let metrics = Metrics::new(
            Box::new(StaticCounters(Mutex::new(entries.clone()))),
            Arc::new(AgentStats::default()),
            Arc::new(Mutex::new(cgroups)),
            Arc::new(PodStore::default()),
            Arc::new(BinaryNames::default()),
            LabelConfig::default(),
            Vec::new(),
            Duration::from_secs(300),
        );
        let families = metrics.families(&entries);
        let records = families.iter().find(|f| f.name == "podwatch_ringbuf_records").expect("records family");
        let sent = |k: &str| -> u64 {
            records
                .series
                .iter()
                .filter(|(l, _)| {
                    l.iter().any(|(n, v)| *n == "kind" && v == k)
                        && l.iter().any(|(n, v)| *n == "pod" && v == pod)
                })
                .map(|(_, v)| *v)
                .sum()
        };
        assert_eq!((sent("exec"), sent("exit"), sent("file")), (5, 6, 9));
        let lost = families.iter().find(|f| f.name == "podwatch_ringbuf_lost_records").expect("lost family");
        assert_eq!(lost.series.values().sum::<u64>(), 4, "losses are reported as they are");
    }
}

//! The per-pod families (exec, exits, file access, connections, bytes, privilege changes,
//! enforcement, ring-buffer records and losses, rule matches), aggregated
//! from the kernel's counter entries.

use std::collections::{BTreeMap, HashMap};

use podwatch_common::{action, counter, CounterKey, CounterValue};
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

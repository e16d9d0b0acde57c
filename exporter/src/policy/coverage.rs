//! Which kernel programs each policy rule needs. "Ready" means every loaded
//! rule is enforced: a file kill rule on a kernel where the open programs
//! failed to load would otherwise do nothing while the agent looks healthy.

use std::fmt;

use crate::{
    kernel::loader::SensorStatus,
    policy::{Action, Direction, Matcher, Policy, Protocol, Rule},
};

/// Every open-family syscall: a rule enforced on some of them is dodged
/// through another. (io_uring's opens are judged by `io_uring_complete`
/// where the kernel names the request, 5.19 and later; `podwatch probe`
/// and the log say when it is not.)
const FILE: &[&str] =
    &["sys_exit_open", "sys_exit_openat", "sys_exit_openat2", "sys_exit_creat", "sys_exit_open_by_handle_at"];
/// A kill rule on files also guards reads through descriptors opened
/// elsewhere (inherited, passed over a unix socket): at the entry of the
/// read-family syscalls, or where the kernel runs BPF LSM in its
/// `file_permission` and `mmap_file` hooks (the loader uses one or the other).
const FILE_KILL_TRACEPOINTS: &[&str] = &[
    "sys_exit_open",
    "sys_exit_openat",
    "sys_exit_openat2",
    "sys_exit_creat",
    "sys_exit_open_by_handle_at",
    "sys_enter_read",
    "sys_enter_readv",
    "sys_enter_pread64",
    "sys_enter_preadv",
    "sys_enter_preadv2",
    "sys_enter_sendfile64",
    "sys_enter_splice",
    "sys_enter_copy_file_range",
    "sys_enter_mmap",
];
const FILE_KILL_LSM: &[&str] = &[
    "sys_exit_open",
    "sys_exit_openat",
    "sys_exit_openat2",
    "sys_exit_creat",
    "sys_exit_open_by_handle_at",
    "lsm_file_permission",
    "lsm_mmap_file",
];
const EXEC: &[&str] = &["sched_process_exec"];
/// Deny refuses in the BPF LSM hooks; the tracepoints report.
const FILE_DENY: &[&str] = &[
    "lsm_file_open",
    "sys_exit_open",
    "sys_exit_openat",
    "sys_exit_openat2",
    "sys_exit_creat",
    "sys_exit_open_by_handle_at",
];
const EXEC_DENY: &[&str] = &["lsm_bprm_check_security", "sched_process_exec"];
const TCP_EGRESS: &[&str] = &["connect4", "connect6"];
const EGRESS: &[&str] = &["connect4", "connect6", "sendmsg4", "sendmsg6"];
const INGRESS: &[&str] = &["sys_exit_accept", "sys_exit_accept4"];
/// Privilege rules are judged at the exit of each syscall that changes
/// credentials or namespaces, against what its entry saw.
const PRIVILEGES: &[&str] = &[
    "sys_enter_setuid",
    "sys_enter_setgid",
    "sys_enter_setreuid",
    "sys_enter_setregid",
    "sys_enter_setresuid",
    "sys_enter_setresgid",
    "sys_enter_setfsuid",
    "sys_enter_setfsgid",
    "sys_enter_capset",
    "sys_enter_unshare",
    "sys_enter_setns",
    "sys_enter_execve",
    "sys_enter_execveat",
    "sys_exit_setuid",
    "sys_exit_setgid",
    "sys_exit_setreuid",
    "sys_exit_setregid",
    "sys_exit_setresuid",
    "sys_exit_setresgid",
    "sys_exit_setfsuid",
    "sys_exit_setfsgid",
    "sys_exit_capset",
    "sys_exit_unshare",
    "sys_exit_setns",
    "sys_exit_execve",
    "sys_exit_execveat",
];

/// The programs a rule is judged in: one set of them, or another that does
/// the same on other kernels.
pub fn required(r: &Rule) -> &'static [&'static [&'static str]] {
    match &r.matcher {
        Matcher::Exec(_) if r.action == Action::Deny => &[EXEC_DENY],
        Matcher::Exec(_) => &[EXEC],
        Matcher::File(_) if r.action == Action::Kill => &[FILE_KILL_LSM, FILE_KILL_TRACEPOINTS],
        Matcher::File(_) if r.action == Action::Deny => &[FILE_DENY],
        Matcher::File(_) => &[FILE],
        Matcher::Privileges(_) => &[PRIVILEGES],
        Matcher::Network(n) => match (n.direction, n.protocol) {
            (Direction::Ingress, _) => &[INGRESS],
            (Direction::Egress, Protocol::Tcp) => &[TCP_EGRESS],
            (Direction::Egress, _) => &[EGRESS],
        },
    }
}

/// A loaded rule some of whose programs are not attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unenforced {
    pub policy: String,
    pub rule: String,
    pub source: String,
    /// Program names, each with why it is missing.
    pub missing: Vec<(String, String)>,
}

impl fmt::Display for Unenforced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "policy {} rule {} ({}) is not enforced: ", self.policy, self.rule, self.source)?;
        for (i, (program, why)) in self.missing.iter().enumerate() {
            let sep = if i == 0 { "" } else { "; " };
            // Verifier logs are long: the first line says enough here, the
            // agent's log and /stats carry the rest.
            write!(f, "{sep}{program} not attached ({})", why.lines().next().unwrap_or(why))?;
        }
        Ok(())
    }
}

fn missing(programs: &[&str], sensors: &[SensorStatus]) -> Vec<(String, String)> {
    programs
        .iter()
        .filter_map(|name| match sensors.iter().find(|s| s.program == *name) {
            Some(s) if s.attached => None,
            Some(s) => Some((s.program.clone(), s.error.clone().unwrap_or_default())),
            None => Some(((*name).to_owned(), "no such program".to_owned())),
        })
        .collect()
}

pub fn unenforced(policies: &[Policy], sensors: &[SensorStatus]) -> Vec<Unenforced> {
    let mut out = Vec::new();
    for p in policies {
        for r in &p.rules {
            // The set with the fewest programs missing: none when enforced.
            let missing =
                required(r).iter().map(|set| missing(set, sensors)).min_by_key(Vec::len).unwrap_or_default();
            if !missing.is_empty() {
                out.push(Unenforced {
                    policy: p.name.clone(),
                    rule: r.name.clone(),
                    source: p.source.clone(),
                    missing,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{parse, Capabilities};

    fn sensor(program: &str, attached: bool) -> SensorStatus {
        SensorStatus {
            program: program.into(),
            hook: String::new(),
            attached,
            available: true,
            error: (!attached).then(|| "verifier said no\nmore".into()),
            load_ms: 0,
            verified_insns: None,
            on_demand: false,
        }
    }

    #[test]
    fn rules_whose_programs_are_missing_are_named() {
        let doc = "apiVersion: podwatch.dev/v1alpha1\nkind: Policy\nmetadata: {name: p}\nspec:\n  selector: {allPods: true}\n  rules:\n  - {name: shadow, action: kill, file: {exact: [/etc/shadow]}}\n  - {name: sh, action: log, exec: {suffix: [/sh]}}\n  - {name: web, action: deny, network: {cidrs: [0.0.0.0/0], protocol: tcp}}\n  - {name: dns, action: log, network: {ports: [53], protocol: udp}}\n";
        let policies = parse(doc, "p.yaml", Capabilities { bpf_lsm: false }).expect("parse");
        let mut sensors: Vec<_> =
            FILE_KILL_TRACEPOINTS.iter().chain(EGRESS).chain(EXEC).map(|p| sensor(p, true)).collect();
        assert!(unenforced(&policies, &sensors).is_empty());
        sensors.retain(|s| s.program != "sendmsg6");
        sensors
            .iter_mut()
            .filter(|s| s.program == "sys_exit_openat")
            .for_each(|s| *s = sensor(&s.program, false));
        let gaps = unenforced(&policies, &sensors);
        let names: Vec<_> = gaps.iter().map(|g| g.rule.as_str()).collect();
        assert_eq!(names, ["shadow", "dns"], "tcp egress needs only connect4/6");
        assert_eq!(
            gaps[0].to_string(),
            "policy p rule shadow (p.yaml) is not enforced: sys_exit_openat not attached (verifier said no)"
        );
        assert_eq!(gaps[1].missing, [("sendmsg6".to_owned(), "no such program".to_owned())]);
    }

    #[test]
    fn a_file_kill_rule_is_enforced_by_either_read_guard() {
        let doc = "apiVersion: podwatch.dev/v1alpha1\nkind: Policy\nmetadata: {name: p}\nspec:\n  selector: {allPods: true}\n  rules:\n  - {name: shadow, action: kill, file: {exact: [/etc/shadow]}}\n";
        let policies = parse(doc, "p.yaml", Capabilities { bpf_lsm: true }).expect("parse");
        let lsm: Vec<_> = FILE_KILL_LSM.iter().map(|p| sensor(p, true)).collect();
        assert!(
            unenforced(&policies, &lsm).is_empty(),
            "BPF LSM's file_permission and mmap_file guard reads"
        );
        let mut half: Vec<_> = FILE_KILL_LSM.iter().map(|p| sensor(p, *p != "lsm_mmap_file")).collect();
        half.extend(["sys_enter_read", "sys_enter_pread64"].map(|p| sensor(p, true)));
        let gaps = unenforced(&policies, &half);
        assert_eq!(gaps.len(), 1, "mmap unguarded: {gaps:?}");
        assert_eq!(gaps[0].missing[0].0, "lsm_mmap_file", "the nearest set is named");
    }
}

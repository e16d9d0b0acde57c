//! Start-up check of the agent's Linux capabilities (capget on itself).
//!
//! Without it, a container started with too few capabilities fails with an
//! EPERM from deep inside the BPF loader, or quietly loses a sensor. Here a
//! missing capability is named with what it costs: a fatal error when nothing
//! can work, a warning per sensor or action that is off otherwise.
//!
//! What needs what was measured on kernel 6.18 by running the image with
//! every capability but one (tests/integration/image.rs keeps it honest):
//! - CAP_BPF: creating maps, loading programs and BTF (bpf(2)).
//! - CAP_PERFMON: tracepoint and raw-tracepoint programs, their attach
//!   through perf_event_open, and the kernel memory reads the programs do.
//! - CAP_NET_ADMIN: the cgroup socket programs (connect4/6, sendmsg4/6): UDP
//!   events and network `deny`.
//! - CAP_SYS_PTRACE: reading /proc/PID/exe and cwd of processes owned by
//!   other users or holding capabilities the agent lacks, for processes that
//!   were already running at start-up (later ones come from the kernel).
//!
//! CAP_SYS_ADMIN covers CAP_BPF and CAP_PERFMON (and is the only way on
//! kernels before 5.8, which lack them). A seccomp filter that refuses bpf(2)
//! or perf_event_open(2) (runtimes' default profiles do without
//! CAP_SYS_ADMIN) is named too.

use std::fmt;

use tracing::{info, warn};

/// Capability numbers from linux/capability.h.
pub const CAP_NET_ADMIN: u32 = 12;
pub const CAP_SYS_PTRACE: u32 = 19;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

pub fn name(cap: u32) -> &'static str {
    crate::pipeline::names::CAPABILITIES.get(cap as usize).copied().unwrap_or("an unnamed capability")
}

/// How much a missing capability costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Nothing can work: the agent refuses to start.
    Required,
    /// A sensor or an action is off: a warning.
    Sensor,
    /// A detail is missing from some events: a note.
    Detail,
}

/// One capability the agent uses and what is lost without it.
pub struct Need {
    pub cap: u32,
    pub level: Level,
    pub cost: &'static str,
}

pub const NEEDS: &[Need] = &[
    Need {
        cap: CAP_BPF,
        level: Level::Required,
        cost: "no BPF map or program can be created, so no sensor can run",
    },
    Need {
        cap: CAP_PERFMON,
        level: Level::Required,
        cost: "no tracepoint program can load or attach (exec, exit, file and TCP sensors, kill)",
    },
    Need {
        cap: CAP_NET_ADMIN,
        level: Level::Sensor,
        cost: "the cgroup socket sensors are off: no UDP connect/send events and no network `deny`",
    },
    Need {
        cap: CAP_SYS_PTRACE,
        level: Level::Detail,
        cost: "processes already running at start-up show no binary or cwd until they exec \
               again (in a container nearly all: they hold capabilities the agent lacks)",
    },
];

/// The effective capability set of this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapSet(pub u64);

impl CapSet {
    pub fn has(self, cap: u32) -> bool {
        cap < 64 && self.0 & (1u64 << cap) != 0
    }
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// _LINUX_CAPABILITY_VERSION_3: two 32-bit words per set.
const VERSION_3: u32 = 0x2008_0522;

/// capget(2) on this process.
pub fn effective() -> std::io::Result<CapSet> {
    let mut hdr = CapHeader { version: VERSION_3, pid: 0 };
    let mut data = [CapData::default(); 2];
    // SAFETY: the header and a two-element data array, as capget(2) expects for version 3.
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut hdr as *mut CapHeader, data.as_mut_ptr()) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(CapSet(u64::from(data[0].effective) | (u64::from(data[1].effective) << 32)))
}

/// The syscalls the agent lives on that a seccomp filter refuses: called
/// with arguments the kernel rejects (an unknown bpf command: EINVAL; a NULL
/// perf_event_attr: EFAULT), so only a filter answers EPERM.
fn seccomp_refused() -> Vec<&'static str> {
    let eperm =
        |r: libc::c_long| r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    let mut refused = Vec::new();
    // SAFETY: an unknown command with no attribute buffer; the kernel reads nothing.
    if eperm(unsafe { libc::syscall(libc::SYS_bpf, 0xffff_i64, 0usize, 0u32) }) {
        refused.push("bpf(2)");
    }
    // SAFETY: a NULL attribute pointer; the kernel fails to copy it and opens nothing.
    if eperm(unsafe { libc::syscall(libc::SYS_perf_event_open, 0usize, 0i32, -1i32, -1i32, 0u64) }) {
        refused.push("perf_event_open(2)");
    }
    refused
}

/// The highest capability this kernel knows (CAP_BPF and CAP_PERFMON exist from 5.8).
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(CAP_BPF)
}

/// What the check found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Missing capabilities without which nothing works, with their cost.
    pub fatal: Vec<(&'static str, &'static str)>,
    /// Missing capabilities that switch a sensor or action off, with the cost.
    pub degraded: Vec<(&'static str, &'static str)>,
    /// Missing capabilities that leave a detail out of some events.
    pub details: Vec<(&'static str, &'static str)>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.fatal.iter().map(|(n, _)| *n).collect();
        write!(f, "missing capability {}: ", names.join(" and "))?;
        for (i, (n, cost)) in self.fatal.iter().enumerate() {
            write!(f, "{}without {n} {cost}", if i > 0 { "; " } else { "" })?;
        }
        write!(
            f,
            ". Add it to the container's securityContext.capabilities.add \
             (deploy/kustomize/base/daemonset.yaml lists what podwatch needs), \
             or use the privileged overlay"
        )
    }
}

/// Judges a capability set against [`NEEDS`] on a kernel whose highest
/// capability is `last_cap`.
pub fn judge(caps: CapSet, last_cap: u32) -> Report {
    let mut report = Report::default();
    if last_cap < CAP_PERFMON {
        // Before 5.8 everything BPF and perf goes through CAP_SYS_ADMIN.
        if !caps.has(CAP_SYS_ADMIN) {
            report.fatal.push((
                "CAP_SYS_ADMIN",
                "(this kernel predates CAP_BPF and CAP_PERFMON) no BPF program can load",
            ));
        }
    }
    for need in NEEDS {
        if need.cap > last_cap || caps.has(need.cap) {
            continue;
        }
        let covered = matches!(need.cap, CAP_BPF | CAP_PERFMON) && caps.has(CAP_SYS_ADMIN);
        if covered {
            continue;
        }
        let entry = (name(need.cap), need.cost);
        match need.level {
            Level::Required => report.fatal.push(entry),
            Level::Sensor => report.degraded.push(entry),
            Level::Detail => report.details.push(entry),
        }
    }
    report
}

/// Checks this process's capabilities: an error naming every missing one
/// when nothing can work, a warning per missing optional one.
pub fn check() -> anyhow::Result<()> {
    let caps = match effective() {
        Ok(c) => c,
        Err(e) => {
            warn!("cannot read this process's capabilities (capget: {e}); loading the sensors anyway");
            return Ok(());
        }
    };
    let report = judge(caps, last_cap());
    if !report.fatal.is_empty() {
        anyhow::bail!("{report}");
    }
    let refused = seccomp_refused();
    if !refused.is_empty() {
        let mode = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| s.lines().find(|l| l.starts_with("Seccomp:")).map(|l| l.trim().to_owned()))
            .unwrap_or_default();
        anyhow::bail!(
            "{} refused with EPERM although the capabilities are there: a seccomp filter blocks \
             {} ({mode}; runtimes' default profiles allow these only with CAP_SYS_ADMIN). Run the \
             container with seccompProfile Unconfined (deploy/kustomize/base/daemonset.yaml does) \
             or a profile that allows bpf and perf_event_open",
            refused.join(" and "),
            if refused.len() > 1 { "them" } else { "it" }
        );
    }
    for (cap, cost) in &report.degraded {
        warn!(capability = cap, "missing capability {cap}: {cost}");
    }
    for (cap, cost) in &report.details {
        info!(capability = cap, "without capability {cap}: {cost}");
    }
    info!(effective = format!("{:#x}", caps.0), "capabilities checked");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(caps: &[u32]) -> CapSet {
        CapSet(caps.iter().fold(0, |a, c| a | (1u64 << c)))
    }

    #[test]
    fn full_set_is_clean() {
        let r = judge(set(&[CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN, CAP_SYS_PTRACE]), 40);
        assert_eq!(r, Report::default());
    }

    #[test]
    fn missing_required_is_fatal_and_named() {
        let r = judge(set(&[CAP_BPF, CAP_NET_ADMIN]), 40);
        assert_eq!(r.fatal.len(), 1);
        let msg = r.to_string();
        assert!(msg.starts_with("missing capability CAP_PERFMON: "), "{msg}");
        assert!(msg.contains("tracepoint"), "{msg}");
        assert!(r.degraded.is_empty());
        assert_eq!(r.details.iter().map(|d| d.0).collect::<Vec<_>>(), ["CAP_SYS_PTRACE"]);
        let r = judge(set(&[]), 40);
        assert!(r.to_string().starts_with("missing capability CAP_BPF and CAP_PERFMON: "), "{r}");
    }

    #[test]
    fn sys_admin_covers_bpf_and_perfmon() {
        let r = judge(set(&[CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_SYS_PTRACE]), 40);
        assert_eq!(r, Report::default());
        // Before 5.8 only CAP_SYS_ADMIN works.
        let r = judge(set(&[CAP_NET_ADMIN]), 37);
        assert_eq!(r.fatal.iter().map(|d| d.0).collect::<Vec<_>>(), ["CAP_SYS_ADMIN"]);
    }

    #[test]
    fn optional_missing_degrades() {
        let r = judge(set(&[CAP_BPF, CAP_PERFMON]), 40);
        assert!(r.fatal.is_empty());
        assert_eq!(r.degraded.iter().map(|d| d.0).collect::<Vec<_>>(), ["CAP_NET_ADMIN"]);
        assert_eq!(r.details.iter().map(|d| d.0).collect::<Vec<_>>(), ["CAP_SYS_PTRACE"]);
    }

    #[test]
    fn reads_own_capabilities() {
        // Whatever the test runs with, capget on itself must answer.
        effective().expect("capget");
    }
}

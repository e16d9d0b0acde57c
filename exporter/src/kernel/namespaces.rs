//! The host's namespaces: init's (`/proc/1/ns/*`), read once. The agent runs
//! in the host's PID namespace (`hostPID` in the DaemonSet), so pid 1 is the
//! node's init. "Enters the host's network namespace" compares against these.

use std::{os::unix::fs::MetadataExt, sync::OnceLock};

use podwatch_common::ns;
use tracing::warn;

/// The inode numbers the kernel gives its initial uts, ipc, user, pid and
/// cgroup namespaces (`PROC_*_INIT_INO`, fixed since 3.8 / 4.6).
const FIXED_INIT: [(usize, u32); 5] = [
    (ns::IPC, 0xEFFF_FFFF),
    (ns::UTS, 0xEFFF_FFFE),
    (ns::USER, 0xEFFF_FFFD),
    (ns::PID, 0xEFFF_FFFC),
    (ns::CGROUP, 0xEFFF_FFFB),
];

/// Inode numbers in `ns::*` order; 0 where unknown (then nothing is "the
/// host's" of that type).
pub fn host() -> [u32; ns::COUNT] {
    static HOST: OnceLock<[u32; ns::COUNT]> = OnceLock::new();
    *HOST.get_or_init(|| {
        let read = |pid: &str, name: &str| {
            // pid: the namespace children are created in, as the kernel side reads it.
            let file = if name == "pid" { "pid_for_children" } else { name };
            std::fs::metadata(format!("/proc/{pid}/ns/{file}")).map(|m| m.ino() as u32)
        };
        let mut out = [0; ns::COUNT];
        let mut unreadable = Vec::new();
        for (i, name) in ns::NAMES.iter().enumerate() {
            match read("1", name) {
                Ok(ino) => out[i] = ino,
                Err(e) => unreadable.push((i, *name, e)),
            }
        }
        if unreadable.is_empty() {
            return out;
        }
        // A supervisor as pid 1 that hides itself (a sandbox) or a missing
        // hostPID: the fixed initial inodes where the kernel has them, else
        // the agent's own namespaces, which the DaemonSet shares with the host.
        let mut own = Vec::new();
        for (i, name, e) in unreadable {
            match FIXED_INIT.iter().find(|(n, _)| *n == i) {
                Some((_, ino)) => out[i] = *ino,
                None => {
                    out[i] = read("self", name).unwrap_or(0);
                    own.push(format!("{name} ({e})"));
                }
            }
        }
        if !own.is_empty() {
            warn!(
                namespaces = %own.join(", "),
                "cannot read init's namespaces in /proc/1/ns: taking the agent's own as the host's"
            );
        }
        out
    })
}

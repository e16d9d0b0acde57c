//! Names for the kernel's numeric codes (file operations, record kinds,
//! actions, directions, capabilities, privilege changes) and the exec-path hash → binary table: one table
//! shared by enrichment (event fields) and /metrics (label values).

use std::{collections::HashMap, sync::Mutex};

use podwatch_common::{action, change, file_op, kind, priv_syscall, IPPROTO_UDP};

use super::event::Name;

/// Exec path by hash, learnt from exec events, for the `binary` label.
#[derive(Default, Debug)]
pub struct BinaryNames {
    names: Mutex<HashMap<u64, String>>,
}

const MAX_BINARY_NAMES: usize = 16384;

impl BinaryNames {
    pub fn learn(&self, hash: u64, name: &str) {
        if let Ok(mut m) = self.names.lock() {
            if m.len() >= MAX_BINARY_NAMES && !m.contains_key(&hash) {
                m.clear();
            }
            m.entry(hash).or_insert_with(|| name.to_owned());
        }
    }

    pub fn get(&self, hash: u64) -> String {
        self.names
            .lock()
            .ok()
            .and_then(|m| m.get(&hash).cloned())
            .unwrap_or_else(|| format!("unknown:{hash:016x}"))
    }
}

pub fn result(outcome: u8) -> String {
    if outcome == 0 { "ok" } else { "error" }.to_owned()
}

pub fn protocol(op: u8) -> String {
    if op == IPPROTO_UDP as u8 { "udp" } else { "tcp" }.to_owned()
}

pub fn direction(d: u8) -> String {
    if d == podwatch_common::DIRECTION_INGRESS { "ingress" } else { "egress" }.to_owned()
}

pub fn file_op_name(op: u8) -> &'static str {
    match op {
        file_op::READ => "read",
        file_op::WRITE => "write",
        file_op::CREATE => "create",
        file_op::TRUNCATE => "truncate",
        _ => "open",
    }
}

pub fn record_kind_name(k: u8) -> String {
    match k as u16 {
        kind::EXEC => "exec",
        kind::EXIT => "exit",
        kind::FORK => "fork",
        kind::FILE_OPEN => "file",
        kind::TCP_CONNECT | kind::UDP_CONNECT => "connect",
        kind::TCP_ACCEPT => "accept",
        kind::TCP_CLOSE => "close",
        kind::UDP_SEND => "send",
        kind::CGROUP_MKDIR => "cgroup",
        kind::PRIVILEGE => "privilege",
        _ => "other",
    }
    .to_owned()
}

pub fn action_name(a: u8) -> String {
    match a {
        action::NONE => "",
        action::COUNT => "count",
        action::LOG => "log",
        action::KILL => "kill",
        action::DENY => "deny",
        _ => "other",
    }
    .to_owned()
}

/// Linux capabilities by number (`include/uapi/linux/capability.h`).
pub const CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// A capability set (bit = number) → names, lowest first; bits this table
/// does not know are named `CAP_<n>`.
pub fn capability_names(set: u64) -> Vec<Name> {
    (0..64)
        .filter(|b| set & (1u64 << b) != 0)
        .map(|b| CAPABILITIES.get(b).map(|n| Name::Borrowed(n)).unwrap_or_else(|| format!("CAP_{b}").into()))
        .collect()
}

/// `CAP_SYS_ADMIN` (or `sys_admin`, any case) → its number.
pub fn capability_number(name: &str) -> Option<u32> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") { upper } else { format!("CAP_{upper}") };
    CAPABILITIES.iter().position(|c| *c == full).map(|p| p as u32)
}

/// `change::*` → the word in events, metrics and policies.
pub fn change_name(c: u8) -> &'static str {
    match c {
        change::SETUID => "setuid",
        change::SETGID => "setgid",
        change::CAPSET => "capset",
        change::UNSHARE => "unshare",
        change::SETNS => "setns",
        change::EXEC => "exec",
        _ => "other",
    }
}

/// A privilege syscall's name (`priv_syscall::*`).
pub fn privilege_syscall_name(nr: u32) -> &'static str {
    match nr {
        priv_syscall::SETUID => "setuid",
        priv_syscall::SETGID => "setgid",
        priv_syscall::SETREUID => "setreuid",
        priv_syscall::SETREGID => "setregid",
        priv_syscall::SETRESUID => "setresuid",
        priv_syscall::SETRESGID => "setresgid",
        priv_syscall::SETFSUID => "setfsuid",
        priv_syscall::SETFSGID => "setfsgid",
        priv_syscall::CAPSET => "capset",
        priv_syscall::UNSHARE => "unshare",
        priv_syscall::SETNS => "setns",
        priv_syscall::EXECVE => "execve",
        priv_syscall::EXECVEAT => "execveat",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_names_round_trip() {
        assert_eq!(capability_number("CAP_SYS_ADMIN"), Some(21));
        assert_eq!(capability_number("sys_admin"), Some(21));
        assert_eq!(capability_number("CAP_NOPE"), None);
        assert_eq!(
            capability_names((1 << 21) | (1 << 0) | (1 << 50)),
            ["CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_50"]
        );
        for (i, n) in CAPABILITIES.iter().enumerate() {
            assert_eq!(capability_number(n), Some(i as u32));
        }
        for c in 0..change::COUNT {
            assert_ne!(change_name(c), "other");
        }
    }
}

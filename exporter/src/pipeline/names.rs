//! Names for the kernel's numeric codes (file operations, record kinds,
//! actions, directions) and the exec-path hash → binary table: one table
//! shared by enrichment (event fields) and /metrics (label values).

use std::{collections::HashMap, sync::Mutex};

use podwatch_common::{action, file_op, kind, IPPROTO_UDP};

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

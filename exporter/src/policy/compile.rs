//! Policies → trie entries for the kernel.
//!
//! LPM tries return only the longest matching prefix, so each entry carries
//! every rule whose own entries are prefixes of it (`/etc/` rules ride along in
//! the `/etc/ssh/` entry), minus rules with an `except` prefix of it. A lookup
//! then sees all rules that apply to the key with one map access.

use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

use podwatch_common::{
    identity,
    policy::{
        MAX_PRIVILEGE_RULES, NET_EGRESS, NET_INGRESS, NET_TCP, NET_UDP, OP_CREATE, OP_OPEN, OP_READ,
        OP_TRUNCATE, OP_WRITE, REFS,
    },
    MatchSet, PrivilegeRule, RuleRef,
};

use super::{Action, Cidr, Direction, FileOperation, Matcher, PathMatch, Policy, PrivilegeMatch, Protocol};

/// A trie key without its generation byte: `bits` significant bits of `data`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix {
    pub bits: u32,
    pub data: Vec<u8>,
}

impl Prefix {
    fn bytes(data: Vec<u8>) -> Prefix {
        Prefix { bits: data.len() as u32 * 8, data }
    }

    /// Whether `self` is a prefix of (or equal to) `other`.
    fn covers(&self, other: &Prefix) -> bool {
        if self.bits > other.bits {
            return false;
        }
        let full = (self.bits / 8) as usize;
        if self.data[..full] != other.data[..full] {
            return false;
        }
        let rest = self.bits % 8;
        if rest == 0 {
            return true;
        }
        let mask = 0xffu8 << (8 - rest);
        (self.data[full] & mask) == (other.data[full] & mask)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleInfo {
    pub id: u16,
    pub policy: Arc<str>,
    pub rule: Arc<str>,
    pub action: Action,
}

/// Kernel-ready entries of one policy set.
#[derive(Debug, Clone, Default)]
pub struct Compiled {
    pub exec_paths: Vec<(Prefix, MatchSet)>,
    pub exec_suffixes: Vec<(Prefix, MatchSet)>,
    pub file_paths: Vec<(Prefix, MatchSet)>,
    pub file_suffixes: Vec<(Prefix, MatchSet)>,
    /// (is IPv6, prefix, set)
    pub addrs: Vec<(bool, Prefix, MatchSet)>,
    pub rules: Vec<RuleInfo>,
    /// Files and directories rules name, to be matched by identity as well
    /// (the engine stats them: compiling touches no file system).
    pub identities: Vec<IdentityWant>,
    /// Privilege rules, scanned in order by the kernel.
    pub privileges: Vec<PrivilegeRule>,
}

/// A path whose device and inode a rule also matches by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityWant {
    pub path: String,
    /// `identity::*`.
    pub role: u8,
    pub rule: RuleRef,
}

#[derive(Default)]
struct Table {
    adds: BTreeMap<Prefix, Vec<RuleRef>>,
    removes: BTreeMap<Prefix, Vec<u16>>,
}

impl Table {
    fn add(&mut self, p: Prefix, r: RuleRef) {
        self.adds.entry(p).or_default().push(r);
    }

    fn remove(&mut self, p: Prefix, rule: u16) {
        self.removes.entry(p).or_default().push(rule);
    }

    fn close(self, what: &str) -> Result<Vec<(Prefix, MatchSet)>, String> {
        let keys: Vec<Prefix> = self.adds.keys().chain(self.removes.keys()).cloned().collect();
        let mut out = Vec::new();
        let mut done = std::collections::BTreeSet::new();
        for key in keys {
            if !done.insert(key.clone()) {
                continue;
            }
            let removed: Vec<u16> = self
                .removes
                .iter()
                .filter(|(p, _)| p.covers(&key))
                .flat_map(|(_, r)| r.iter().copied())
                .collect();
            let mut refs: Vec<RuleRef> = self
                .adds
                .iter()
                .filter(|(p, _)| p.covers(&key))
                .flat_map(|(_, r)| r.iter().copied())
                .filter(|r| !removed.contains(&r.rule))
                .collect();
            refs.sort_by_key(|r| (r.rule, r.port));
            refs.dedup();
            if refs.len() > REFS {
                return Err(format!(
                    "{} rules apply to the same {what} {}; the kernel holds at most {REFS} per entry",
                    refs.len(),
                    String::from_utf8_lossy(&key.data)
                ));
            }
            let mut set = MatchSet::default();
            for (slot, r) in set.refs.iter_mut().zip(refs) {
                *slot = r;
            }
            out.push((key, set));
        }
        Ok(out)
    }
}

/// The identities a path rule asks for: the files it names exactly, the
/// directories it covers (a directory rule, a prefix ending in `/`) as
/// themselves and as everything below them.
fn add_identities(out: &mut Vec<IdentityWant>, m: &PathMatch, r: RuleRef, exec: bool) {
    let (own, below) = if exec {
        (identity::EXEC_SELF, identity::EXEC_DIR)
    } else {
        (identity::FILE_SELF, identity::FILE_DIR)
    };
    for p in &m.exact {
        out.push(IdentityWant { path: p.clone(), role: own, rule: r });
    }
    for d in &m.directory {
        out.push(IdentityWant { path: d.clone(), role: own, rule: r });
        out.push(IdentityWant { path: d.clone(), role: below, rule: r });
    }
    for p in m.prefix.iter().filter(|p| p.ends_with('/') && p.len() > 1) {
        out.push(IdentityWant { path: p.trim_end_matches('/').to_owned(), role: below, rule: r });
    }
}

fn add_paths(fwd: &mut Table, rev: &mut Table, m: &PathMatch, r: RuleRef) {
    for p in &m.exact {
        let mut d = p.as_bytes().to_vec();
        d.push(0);
        fwd.add(Prefix::bytes(d), r);
    }
    for p in &m.prefix {
        fwd.add(Prefix::bytes(p.as_bytes().to_vec()), r);
    }
    for d in &m.directory {
        let dir = d.trim_end_matches('/');
        let dir = if dir.is_empty() { "/" } else { dir };
        let mut exact = dir.as_bytes().to_vec();
        exact.push(0);
        fwd.add(Prefix::bytes(exact), r);
        let below = if dir == "/" { "/".to_owned() } else { format!("{dir}/") };
        fwd.add(Prefix::bytes(below.into_bytes()), r);
    }
    for s in &m.suffix {
        let mut d = s.as_bytes().to_vec();
        d.reverse();
        rev.add(Prefix::bytes(d), r);
    }
}

fn cidr_prefix(c: &Cidr) -> (bool, Prefix) {
    match c.addr {
        IpAddr::V4(a) => (false, Prefix { bits: c.prefix as u32, data: a.octets().to_vec() }),
        IpAddr::V6(a) => (true, Prefix { bits: c.prefix as u32, data: a.octets().to_vec() }),
    }
}

fn file_ops(ops: &[FileOperation]) -> u8 {
    if ops.is_empty() {
        return OP_READ | OP_WRITE | OP_CREATE | OP_TRUNCATE | OP_OPEN;
    }
    ops.iter().fold(0, |acc, o| {
        acc | match o {
            FileOperation::Read => OP_READ,
            FileOperation::Write => OP_WRITE,
            FileOperation::Create => OP_CREATE,
            FileOperation::Truncate => OP_TRUNCATE,
            FileOperation::Open => OP_OPEN,
        }
    })
}

/// Compiles a policy set; rule ids start at `first_rule_id` (ids stay unique
/// across reloads so counters of an old set keep their names).
pub fn compile(policies: &[Policy], first_rule_id: u16) -> Result<Compiled, String> {
    let mut exec = (Table::default(), Table::default());
    let mut file = (Table::default(), Table::default());
    let mut v4 = Table::default();
    let mut v6 = Table::default();
    let mut rules = Vec::new();
    let mut identities = Vec::new();
    let mut privileges = Vec::new();
    let mut id = first_rule_id.max(1);
    for (bit, p) in policies.iter().enumerate() {
        for rule in &p.rules {
            let base =
                RuleRef { rule: id, port: 0, policy: bit as u8, action: rule.action.code(), ops: 0, _pad: 0 };
            match &rule.matcher {
                Matcher::Privileges(m) => privileges.push(privilege_rule(m, base)),
                Matcher::Exec(e) => {
                    add_paths(&mut exec.0, &mut exec.1, &e.binary, base);
                    add_identities(&mut identities, &e.binary, base, true);
                }
                Matcher::File(f) => {
                    let r = RuleRef { ops: file_ops(&f.operations), ..base };
                    add_paths(&mut file.0, &mut file.1, &f.path, r);
                    add_identities(&mut identities, &f.path, r, false);
                }
                Matcher::Network(n) => {
                    let proto = match n.protocol {
                        Protocol::Tcp => NET_TCP,
                        Protocol::Udp => NET_UDP,
                        Protocol::Any => NET_TCP | NET_UDP,
                    };
                    let dir = match n.direction {
                        Direction::Egress => NET_EGRESS,
                        Direction::Ingress => NET_INGRESS,
                    };
                    let ports: Vec<u16> = if n.ports.is_empty() { vec![0] } else { n.ports.clone() };
                    let cidrs = if n.cidrs.is_empty() {
                        vec![
                            Cidr { addr: IpAddr::from([0u8; 4]), prefix: 0 },
                            Cidr { addr: IpAddr::from([0u8; 16]), prefix: 0 },
                        ]
                    } else {
                        n.cidrs.clone()
                    };
                    for c in &cidrs {
                        let (is6, pre) = cidr_prefix(c);
                        for port in &ports {
                            let r = RuleRef { port: *port, ops: proto | dir, ..base };
                            if is6 {
                                v6.add(pre.clone(), r)
                            } else {
                                v4.add(pre.clone(), r)
                            }
                        }
                    }
                    for c in &n.except {
                        let (is6, pre) = cidr_prefix(c);
                        if is6 {
                            v6.remove(pre, id)
                        } else {
                            v4.remove(pre, id)
                        }
                    }
                }
            }
            rules.push(RuleInfo {
                id,
                policy: p.name.as_str().into(),
                rule: rule.name.as_str().into(),
                action: rule.action,
            });
            id = id.checked_add(1).unwrap_or(1);
        }
    }
    // The kernel takes the first privilege rule that matches: strongest first.
    privileges.sort_by_key(|r: &PrivilegeRule| std::cmp::Reverse(r.action));
    if privileges.len() > MAX_PRIVILEGE_RULES {
        return Err(format!(
            "{} privilege rules; the kernel holds at most {MAX_PRIVILEGE_RULES} per policy set",
            privileges.len()
        ));
    }
    let mut addrs: Vec<(bool, Prefix, MatchSet)> =
        v4.close("address")?.into_iter().map(|(p, s)| (false, p, s)).collect();
    addrs.extend(v6.close("address")?.into_iter().map(|(p, s)| (true, p, s)));
    Ok(Compiled {
        exec_paths: exec.0.close("exec path")?,
        exec_suffixes: exec.1.close("exec suffix")?,
        file_paths: file.0.close("file path")?,
        file_suffixes: file.1.close("file suffix")?,
        addrs,
        rules,
        identities,
        privileges,
    })
}

/// A privilege rule as the kernel scans it: sets as bitmasks.
fn privilege_rule(m: &PrivilegeMatch, base: RuleRef) -> PrivilegeRule {
    let caps = |list: &[super::Capability]| list.iter().fold(0u64, |acc, c| acc | 1u64 << (c.0 & 63));
    let nss = |list: &[super::Namespace]| list.iter().fold(0u8, |acc, n| acc | 1 << n.index());
    let mut uids = [u32::MAX; 4];
    for (slot, u) in uids.iter_mut().zip(&m.uid_becomes) {
        *slot = *u;
    }
    PrivilegeRule {
        rule: base.rule,
        policy: base.policy,
        action: base.action,
        changes: m.changes.iter().fold(0u8, |acc, c| acc | 1 << c.code()),
        ns_changed: nss(&m.namespaces_changed),
        ns_host_entered: nss(&m.host_namespaces_entered),
        has_uids: (!m.uid_becomes.is_empty()) as u8,
        uids,
        caps_held: caps(&m.capabilities_held),
        caps_gained: caps(&m.capabilities_gained),
    }
}

/// What the kernel will decide for a path, by walking the entries the way its
/// LPM lookup would (used by tests and `podwatch policy check --explain`).
pub fn lookup<'a>(entries: &'a [(Prefix, MatchSet)], key: &[u8]) -> Option<&'a MatchSet> {
    let k = Prefix::bytes(key.to_vec());
    entries.iter().filter(|(p, _)| p.covers(&k)).max_by_key(|(p, _)| p.bits).map(|(_, s)| s)
}

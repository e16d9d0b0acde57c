//! Policies: Kubernetes-style YAML documents that say which pods they apply to
//! and which execs, file opens, connections and privilege changes to count,
//! log, kill or deny.
//!
//! ```yaml
//! apiVersion: podwatch.dev/v1alpha1
//! kind: Policy
//! metadata: {name: sensitive-files}
//! spec:
//!   selector: {namespaces: [shop], podLabels: {app: web}}   # or allPods: true, host: true
//!   rules:
//!   - name: read-shadow
//!     action: kill                      # count | log | kill | deny
//!     file: {exact: [/etc/shadow], operations: [read]}
//!   - name: joins-host-network
//!     action: kill
//!     privileges: {hostNamespacesEntered: [net]}   # or capabilitiesGained, uidBecomes...
//! ```
//!
//! Validation happens while deserializing (`try_from`), so every error carries
//! the file, line and column serde_yaml saw, and the field it is about. A set
//! that fails to load leaves the running set in force.

pub mod compile;
pub mod coverage;
pub mod engine;
pub mod reload;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;

pub const API_VERSION: &str = "podwatch.dev/v1alpha1";
pub const KIND: &str = "Policy";

/// The observe-only policy `podwatch run` uses when no directory is given.
pub const BUILTIN_DEFAULT: &str = include_str!("../../../policies/builtin/default.yaml");

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Counters only.
    Count,
    /// Counters and a detailed event.
    Log,
    /// SIGKILL the process (as Tetragon's Sigkill), plus counters and event.
    Kill,
    /// Make the act fail before it happens (connect/sendmsg: EPERM).
    Deny,
}

impl Action {
    pub fn code(self) -> u8 {
        use podwatch_common::action;
        match self {
            Action::Count => action::COUNT,
            Action::Log => action::LOG,
            Action::Kill => action::KILL,
            Action::Deny => action::DENY,
        }
    }

    pub fn name_of(code: u8) -> Option<&'static str> {
        use podwatch_common::action;
        Some(match code {
            action::COUNT => "count",
            action::LOG => "log",
            action::KILL => "kill",
            action::DENY => "deny",
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileOperation {
    Read,
    Write,
    Create,
    Truncate,
    /// O_PATH opens.
    Open,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    #[default]
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    #[default]
    Egress,
    Ingress,
}

/// What the kernel this agent runs on can enforce, found by probing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// BPF LSM programs (needed to deny execs and opens).
    pub bpf_lsm: bool,
}

impl Capabilities {
    /// BPF LSM is usable when the kernel's active LSM list names `bpf`.
    pub fn probe() -> Capabilities {
        let lsm = std::fs::read_to_string("/sys/kernel/security/lsm").unwrap_or_default();
        Capabilities { bpf_lsm: lsm.split(',').any(|l| l.trim() == "bpf") }
    }
}

thread_local! {
    /// Deserialization checks `deny` against this (serde has no context argument).
    static CAPS: std::cell::Cell<Capabilities> = const { std::cell::Cell::new(Capabilities { bpf_lsm: false }) };
}

/// A CIDR such as `10.0.0.0/8` or `::/0` (a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl TryFrom<String> for Cidr {
    type Error = String;
    fn try_from(s: String) -> Result<Cidr, String> {
        let (a, p) = s.split_once('/').unwrap_or((&s, ""));
        let addr: IpAddr =
            a.trim().parse().map_err(|_| format!("{s:?} is not a CIDR (address {a:?} does not parse)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = if p.is_empty() {
            max
        } else {
            p.parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: prefix must be 0..={max}"))?
        };
        Ok(Cidr { addr, prefix })
    }
}

/// Absolute path matchers shared by exec and file rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathMatch {
    #[serde(default)]
    pub exact: Vec<String>,
    #[serde(default)]
    pub prefix: Vec<String>,
    #[serde(default)]
    pub suffix: Vec<String>,
    /// The directory itself and everything below it.
    #[serde(default)]
    pub directory: Vec<String>,
}

const MAX_PATH: usize = podwatch_common::policy::PATH_KEY;

impl PathMatch {
    fn check(&self, what: &str) -> Result<(), String> {
        if self.exact.is_empty()
            && self.prefix.is_empty()
            && self.suffix.is_empty()
            && self.directory.is_empty()
        {
            return Err(format!("{what}: give at least one of exact, prefix, suffix, directory"));
        }
        for (field, list, absolute) in [
            ("exact", &self.exact, true),
            ("prefix", &self.prefix, true),
            ("directory", &self.directory, true),
            ("suffix", &self.suffix, false),
        ] {
            for p in list {
                if p.is_empty() {
                    return Err(format!("{what}.{field}: empty path"));
                }
                if absolute && !p.starts_with('/') {
                    return Err(format!("{what}.{field}: {p:?} is not absolute (paths are matched as the process sees them, from /)"));
                }
                if p.len() > MAX_PATH - 1 {
                    return Err(format!(
                        "{what}.{field}: {p:?} is longer than the {} bytes the kernel matches",
                        MAX_PATH - 1
                    ));
                }
                if p.contains('\0') {
                    return Err(format!("{what}.{field}: {p:?} contains a NUL byte"));
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecMatch {
    #[serde(flatten)]
    pub binary: PathMatch,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileMatch {
    #[serde(flatten)]
    pub path: PathMatch,
    /// Empty: every operation.
    #[serde(default)]
    pub operations: Vec<FileOperation>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkMatch {
    /// Destinations (egress) or peers (ingress); empty: any address.
    #[serde(default)]
    pub cidrs: Vec<Cidr>,
    /// Carved out of `cidrs`.
    #[serde(default)]
    pub except: Vec<Cidr>,
    /// Destination port (egress) or local port (ingress); empty: any.
    #[serde(default)]
    pub ports: Vec<u16>,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default)]
    pub direction: Direction,
}

/// What a privilege change is (`change::*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// setuid, setreuid, setresuid, setfsuid.
    Setuid,
    /// setgid, setregid, setresgid, setfsgid.
    Setgid,
    Capset,
    Unshare,
    Setns,
    /// An exec that changed the credentials (every exec, for `capabilitiesHeld`).
    Exec,
}

impl Change {
    pub fn code(self) -> u8 {
        use podwatch_common::change;
        match self {
            Change::Setuid => change::SETUID,
            Change::Setgid => change::SETGID,
            Change::Capset => change::CAPSET,
            Change::Unshare => change::UNSHARE,
            Change::Setns => change::SETNS,
            Change::Exec => change::EXEC,
        }
    }
}

/// A namespace type, as `/proc/PID/ns/` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Namespace {
    Mnt,
    Pid,
    Net,
    Uts,
    Ipc,
    User,
    Cgroup,
}

impl Namespace {
    /// Its index in `ns::*` order.
    pub fn index(self) -> usize {
        use podwatch_common::ns;
        match self {
            Namespace::Mnt => ns::MNT,
            Namespace::Pid => ns::PID,
            Namespace::Net => ns::NET,
            Namespace::Uts => ns::UTS,
            Namespace::Ipc => ns::IPC,
            Namespace::User => ns::USER,
            Namespace::Cgroup => ns::CGROUP,
        }
    }
}

/// A capability by name (`CAP_SYS_ADMIN`, or `sys_admin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct Capability(pub u32);

impl TryFrom<String> for Capability {
    type Error = String;
    fn try_from(s: String) -> Result<Capability, String> {
        crate::pipeline::names::capability_number(&s)
            .map(Capability)
            .ok_or_else(|| format!("{s:?} is not a Linux capability (CAP_SYS_ADMIN, CAP_NET_ADMIN, ...)"))
    }
}

/// Most uids one rule names (`PrivilegeRule::uids`).
pub const MAX_RULE_UIDS: usize = 4;

/// Credentials and namespaces: a rule matches a change when every condition
/// it gives holds. A call that changed nothing (an ordinary exec, setuid to
/// the uid it has) meets only rules with `capabilitiesHeld`; a failed call
/// meets rules that name only `changes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PrivilegeMatch {
    /// Which changes; empty: all of them.
    #[serde(default)]
    pub changes: Vec<Change>,
    /// After the change the effective set holds one of these (an exec of a
    /// process that runs with it counts).
    #[serde(default)]
    pub capabilities_held: Vec<Capability>,
    /// One of these entered the effective set.
    #[serde(default)]
    pub capabilities_gained: Vec<Capability>,
    /// The real or effective uid became one of these.
    #[serde(default)]
    pub uid_becomes: Vec<u32>,
    /// One of these namespaces changed (unshare, setns).
    #[serde(default)]
    pub namespaces_changed: Vec<Namespace>,
    /// One of these is, after the change, the host's namespace.
    #[serde(default)]
    pub host_namespaces_entered: Vec<Namespace>,
}

impl PrivilegeMatch {
    fn check(&self, what: &str) -> Result<(), String> {
        if self.capabilities_held.is_empty()
            && self.capabilities_gained.is_empty()
            && self.uid_becomes.is_empty()
            && self.namespaces_changed.is_empty()
            && self.host_namespaces_entered.is_empty()
            && self.changes.is_empty()
        {
            return Err(format!(
                "{what}: give at least one of changes, capabilitiesHeld, capabilitiesGained, uidBecomes, \
                 namespacesChanged, hostNamespacesEntered"
            ));
        }
        if self.uid_becomes.len() > MAX_RULE_UIDS {
            return Err(format!("{what}.uidBecomes: at most {MAX_RULE_UIDS} uids per rule"));
        }
        if self.uid_becomes.contains(&u32::MAX) {
            return Err(format!("{what}.uidBecomes: 4294967295 is not a uid (it is -1, \"unchanged\")"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    action: Action,
    #[serde(default)]
    exec: Option<ExecMatch>,
    #[serde(default)]
    file: Option<FileMatch>,
    #[serde(default)]
    network: Option<NetworkMatch>,
    #[serde(default)]
    privileges: Option<PrivilegeMatch>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    Exec(ExecMatch),
    File(FileMatch),
    Network(NetworkMatch),
    Privileges(PrivilegeMatch),
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawRule")]
pub struct Rule {
    pub name: String,
    pub action: Action,
    pub matcher: Matcher,
}

impl TryFrom<RawRule> for Rule {
    type Error = String;
    fn try_from(r: RawRule) -> Result<Rule, String> {
        let at = format!("rule {:?}", r.name);
        if r.name.trim().is_empty() {
            return Err("rule: name must not be empty".into());
        }
        let matcher = match (r.exec, r.file, r.network, r.privileges) {
            (Some(e), None, None, None) => {
                e.binary.check(&format!("{at}: exec"))?;
                Matcher::Exec(e)
            }
            (None, Some(f), None, None) => {
                f.path.check(&format!("{at}: file"))?;
                Matcher::File(f)
            }
            (None, None, None, Some(p)) => {
                p.check(&format!("{at}: privileges"))?;
                Matcher::Privileges(p)
            }
            (None, None, Some(n), None) => {
                if n.ports.contains(&0) {
                    return Err(format!("{at}: network.ports: 0 is not a port"));
                }
                if n.cidrs.is_empty() && !n.except.is_empty() {
                    return Err(format!("{at}: network.except needs cidrs to carve from"));
                }
                Matcher::Network(n)
            }
            (None, None, None, None) => {
                return Err(format!("{at}: give one of exec, file, network, privileges"))
            }
            _ => return Err(format!("{at}: give only one of exec, file, network, privileges per rule")),
        };
        let caps = CAPS.with(|c| c.get());
        match (&matcher, r.action) {
            (Matcher::Exec(_) | Matcher::File(_), Action::Deny) if !caps.bpf_lsm => {
                return Err(format!(
                    "{at}: action deny on exec and file needs BPF LSM, which this kernel does not offer \
                     (/sys/kernel/security/lsm lacks bpf); use kill to stop the process, or log"
                ))
            }
            (Matcher::Network(n), Action::Kill) => {
                return Err(format!(
                    "{at}: action kill is not available for network rules ({:?}); use deny, which refuses the connection",
                    n.direction
                ))
            }
            (Matcher::Privileges(_), Action::Deny) => {
                return Err(format!(
                    "{at}: action deny is not available for privilege rules; use kill: the process dies as the \
                     syscall returns, before it runs one more instruction with what it gained"
                ))
            }
            (Matcher::Network(n), Action::Deny) if n.direction == Direction::Ingress => {
                return Err(format!("{at}: action deny works for egress (connect/sendmsg); ingress rules can count or log"))
            }
            _ => {}
        }
        Ok(Rule { name: r.name, action: r.action, matcher })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSelector {
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default)]
    pod_labels: BTreeMap<String, String>,
    #[serde(default)]
    all_pods: bool,
    #[serde(default)]
    host: bool,
}

/// Where a policy applies. Pods: every pod (`allPods`), or those in one of
/// `namespaces` and carrying all `podLabels`. `host`: processes outside pods.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawSelector")]
pub struct Selector {
    pub namespaces: Vec<String>,
    pub pod_labels: BTreeMap<String, String>,
    pub all_pods: bool,
    pub host: bool,
}

impl TryFrom<RawSelector> for Selector {
    type Error = String;
    fn try_from(s: RawSelector) -> Result<Selector, String> {
        if !s.all_pods && !s.host && s.namespaces.is_empty() && s.pod_labels.is_empty() {
            return Err(
                "selector: empty selector selects nothing; set namespaces, podLabels, allPods or host".into(),
            );
        }
        if s.all_pods && (!s.namespaces.is_empty() || !s.pod_labels.is_empty()) {
            return Err("selector: allPods cannot be combined with namespaces or podLabels".into());
        }
        Ok(Selector {
            namespaces: s.namespaces,
            pod_labels: s.pod_labels,
            all_pods: s.all_pods,
            host: s.host,
        })
    }
}

impl Selector {
    /// Whether the selector picks a pod with this metadata (None: unknown pod,
    /// picked only by allPods).
    pub fn selects_pod(&self, pod: Option<(&str, &BTreeMap<String, String>)>) -> bool {
        if self.all_pods {
            return true;
        }
        let Some((ns, labels)) = pod else { return false };
        if !self.namespaces.is_empty() && !self.namespaces.iter().any(|n| n == ns) {
            return false;
        }
        self.pod_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && (!self.namespaces.is_empty() || !self.pod_labels.is_empty())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    selector: Selector,
    rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct Metadata {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawDocument {
    api_version: String,
    kind: String,
    metadata: Metadata,
    spec: RawSpec,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub name: String,
    pub selector: Selector,
    pub rules: Vec<Rule>,
    /// Where it came from, for messages.
    pub source: String,
}

impl TryFrom<RawDocument> for Policy {
    type Error = String;
    fn try_from(d: RawDocument) -> Result<Policy, String> {
        if d.api_version != API_VERSION {
            return Err(format!("apiVersion: {:?} is not {API_VERSION:?}", d.api_version));
        }
        if d.kind != KIND {
            return Err(format!("kind: {:?} is not {KIND:?}", d.kind));
        }
        let name = d.metadata.name;
        if name.is_empty()
            || name.len() > 253
            || !name.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.')
        {
            return Err(format!(
                "metadata.name: {name:?} must be a DNS subdomain (lowercase letters, digits, - and .)"
            ));
        }
        if d.spec.rules.is_empty() {
            return Err(format!("policy {name:?}: spec.rules is empty"));
        }
        let mut seen = BTreeSet::new();
        for r in &d.spec.rules {
            if !seen.insert(r.name.clone()) {
                return Err(format!("policy {name:?}: spec.rules: rule name {:?} is used twice", r.name));
            }
        }
        Ok(Policy { name, selector: d.spec.selector, rules: d.spec.rules, source: String::new() })
    }
}

/// A policy load error: what, where, why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct PolicyError {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

/// Splits YAML text into documents: (first line number, text).
fn documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = vec![(1usize, String::new())];
    for (i, line) in text.lines().enumerate() {
        if line.trim_end() == "---" || line.starts_with("--- ") {
            docs.push((i + 2, String::new()));
            continue;
        }
        if let Some((_, d)) = docs.last_mut() {
            d.push_str(line);
            d.push('\n');
        }
    }
    docs.retain(|(_, d)| d.lines().any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')));
    docs
}

/// Parses one file's documents (separated by `---`).
pub fn parse(text: &str, file: &str, caps: Capabilities) -> Result<Vec<Policy>, PolicyError> {
    CAPS.with(|c| c.set(caps));
    let mut out = Vec::new();
    for (start, doc) in documents(text) {
        let raw: RawDocument = serde_yaml::from_str(&doc).map_err(|e| PolicyError {
            file: file.to_owned(),
            line: Some(e.location().map(|l| l.line() + start - 1).unwrap_or(start)),
            message: e.to_string(),
        })?;
        let mut p = Policy::try_from(raw).map_err(|message| PolicyError {
            file: file.to_owned(),
            line: Some(start + key_line(&doc, &message).unwrap_or(0)),
            message,
        })?;
        p.source = file.to_owned();
        out.push(p);
    }
    Ok(out)
}

/// For document-level errors ("apiVersion: ...", "metadata.name: ..."), the
/// 0-based line of the key the message starts with.
fn key_line(doc: &str, message: &str) -> Option<usize> {
    let field = message.split(':').next()?.rsplit('.').next()?.trim();
    doc.lines().position(|l| l.trim_start().starts_with(&format!("{field}:")))
}

/// Every `*.yaml`/`*.yml` file in a directory, in name order, parsed and
/// checked together (policy names must be unique across files).
pub fn load_dir(dir: &Path, caps: Capabilities) -> Result<Vec<Policy>, PolicyError> {
    let entries = std::fs::read_dir(dir).map_err(|e| PolicyError {
        file: dir.display().to_string(),
        line: None,
        message: format!("cannot read the policy directory: {e}"),
    })?;
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            // ConfigMap volumes add ..data symlinks and hidden dirs; skip dotfiles.
            let hidden = p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
            !hidden && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        })
        .collect();
    files.sort();
    let mut all = Vec::new();
    for f in files {
        let name = f.display().to_string();
        let text = std::fs::read_to_string(&f).map_err(|e| PolicyError {
            file: name.clone(),
            line: None,
            message: format!("cannot read: {e}"),
        })?;
        let policies = parse(&text, &name, caps)?;
        // A file caught half-written (truncated, not yet filled: an editor or
        // `cat >` writing in place) would otherwise load as "no policies" and
        // lift every rule until the next reload.
        if policies.is_empty() {
            return Err(PolicyError {
                file: name,
                line: None,
                message: "holds no policy document (remove the file to drop its policies)".to_owned(),
            });
        }
        all.extend(policies);
    }
    check_set(&all)?;
    Ok(all)
}

/// Checks across documents: unique names, at most 64 policies.
pub fn check_set(policies: &[Policy]) -> Result<(), PolicyError> {
    let mut names: BTreeMap<&str, &str> = BTreeMap::new();
    for p in policies {
        if let Some(first) = names.insert(&p.name, &p.source) {
            return Err(PolicyError {
                file: p.source.clone(),
                line: None,
                message: format!("metadata.name: policy {:?} is already defined in {first}", p.name),
            });
        }
    }
    let max = podwatch_common::policy::MAX_POLICIES;
    if policies.len() > max {
        return Err(PolicyError {
            file: policies.last().map(|p| p.source.clone()).unwrap_or_default(),
            line: None,
            message: format!("{} policies; at most {max} can be active", policies.len()),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;

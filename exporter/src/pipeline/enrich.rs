//! Decoded records → events: process details from the cache, pod and
//! container from the cgroup, absolute file paths, oriented addresses.
//! Fork and cgroup-mkdir records only update state and produce no event.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, Ipv6Addr},
    time::{Instant, UNIX_EPOCH},
};

use std::sync::{Arc, Mutex};

use podwatch_common::{
    capset, file_op, flags, id, kind, ns, open_syscall, path_hash, Header, Net, AF_INET6, IPPROTO_UDP,
};

use crate::{
    pipeline::{
        decode::{Payload, Record},
        event::{
            errno_name, exit_status, lossless_string, Cgroup, Container, Credentials, Encoded, Endpoint,
            Event, File, Kind, Name, Network, Parent, Pod, PrivilegeChange, Process, Timestamp,
        },
        names::{capability_names, change_name, file_op_name, privilege_syscall_name, BinaryNames},
        proc_cache::{ProcessCache, ProcessInfo, ShownProcess},
    },
    pods::{
        cgroup::{parse_kubelet_path, CgroupResolver, PodRef},
        PodMeta, PodStore,
    },
    policy::{compile::RuleInfo, engine::RuleNames, Action},
};

pub struct Enricher {
    pub node: Arc<str>,
    pub procs: ProcessCache,
    /// Shared with /metrics, which labels counters by the same cgroup → pod map.
    pub cgroups: Arc<Mutex<CgroupResolver>>,
    pub pods: Arc<PodStore>,
    pub binaries: Arc<BinaryNames>,
    pub rules: Arc<RuleNames>,
    /// The reader's copy of `rules`, indexed by rule id, valid for
    /// `rules_version`: a logged event then costs no lock and no hash.
    rule_cache: Vec<Option<RuleInfo>>,
    rules_version: u64,
    /// Woken when a cgroup is created, so its policy mask is set at once.
    pub cgroup_created: Option<Arc<tokio::sync::Notify>>,
    /// realtime − boottime, to turn `bpf_ktime_get_boot_ns` into wall-clock time.
    boot_to_unix_ns: i128,
    /// cgroup id → its path and pod, built once per cgroup (and again when
    /// the pod's metadata changes) instead of for every event.
    by_cgroup: HashMap<u64, CgroupEntry, foldhash::fast::RandomState>,
}

/// What every event of one cgroup shares.
struct CgroupEntry {
    cgroup: Arc<Encoded<Cgroup>>,
    pod_ref: Option<PodRef>,
    /// The metadata `pod` was built from; another Arc in the store means it changed.
    meta: Option<Arc<PodMeta>>,
    pod: Option<Arc<Encoded<Pod>>>,
}

/// More cgroups than this and the cache starts again (a node has a few
/// thousand); housekeeping also drops the ones the resolver forgot.
const MAX_CGROUP_ENTRIES: usize = 65_536;

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a local timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

impl Enricher {
    pub fn new(
        node: String,
        procs: ProcessCache,
        cgroups: Arc<Mutex<CgroupResolver>>,
        pods: Arc<PodStore>,
        binaries: Arc<BinaryNames>,
        rules: Arc<RuleNames>,
    ) -> Enricher {
        let boot_to_unix_ns = clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_BOOTTIME);
        Enricher {
            node: node.into(),
            procs,
            cgroups,
            pods,
            binaries,
            rules,
            rule_cache: Vec::new(),
            rules_version: 0,
            cgroup_created: None,
            boot_to_unix_ns,
            by_cgroup: HashMap::default(),
        }
    }

    fn time(&self, ktime_ns: u64) -> Timestamp {
        let ns = (self.boot_to_unix_ns + ktime_ns as i128).max(0) as u128;
        Timestamp(UNIX_EPOCH + std::time::Duration::from_nanos(ns.min(u64::MAX as u128) as u64))
    }

    /// The event's process: shared with the process's previous event when
    /// nothing it shows changed (see `ProcessInfo::shown`), built otherwise.
    fn process(&mut self, h: &Header) -> Arc<Encoded<Process>> {
        let comm = &h.comm[..h.comm.iter().position(|&c| c == 0).unwrap_or(16)];
        let build = |info: Option<&ProcessInfo>, parent: Option<Parent>| Process {
            pid: h.tgid,
            tid: h.tid,
            uid: h.uid,
            gid: h.gid,
            comm: lossless_string(comm),
            binary: info.and_then(|i| i.binary.clone()),
            executable: info.and_then(|i| i.executable.clone()),
            args: info.map(|i| i.args.clone()).unwrap_or_default(),
            args_truncated: info.is_some_and(|i| i.args_truncated),
            cwd: info.and_then(|i| i.cwd.clone()),
            parent,
            credentials: None,
        };
        let Some(ppid) = self.procs.get(h.tgid).map(|i| i.ppid) else {
            return Arc::new(build(None, None).into());
        };
        let parent_binary =
            if ppid != 0 { self.procs.get(ppid).and_then(|p| p.binary.clone()) } else { None };
        let Some(info) = self.procs.get_mut(h.tgid) else {
            return Arc::new(build(None, None).into());
        };
        if let Some(s) = &info.shown.last {
            let same_parent = match (&s.parent_binary, &parent_binary) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            };
            if s.tid == h.tid
                && s.uid == h.uid
                && s.gid == h.gid
                && s.comm[..comm.len()] == *comm
                && s.comm[comm.len()..].iter().all(|&c| c == 0)
                && same_parent
            {
                return s.process.clone();
            }
        }
        let parent = (ppid != 0).then(|| Parent { pid: ppid, binary: parent_binary.clone() });
        let process = Arc::new(Encoded::new(build(Some(info), parent)));
        if !std::mem::replace(&mut info.shown.seen, true) {
            return process;
        }
        let mut c = [0u8; 16];
        c[..comm.len()].copy_from_slice(comm);
        info.shown.last = Some(ShownProcess {
            tid: h.tid,
            uid: h.uid,
            gid: h.gid,
            comm: c,
            parent_binary,
            process: process.clone(),
        });
        process
    }

    fn pod(&mut self, cgroup_id: u64) -> (Arc<Encoded<Cgroup>>, Option<Arc<Encoded<Pod>>>) {
        let unresolved = || Arc::new(Cgroup { id: cgroup_id, path: None }.into());
        if !self.by_cgroup.contains_key(&cgroup_id) {
            // Unresolved cgroups are not cached: the next event asks again.
            let Some(path) = self.cgroups.lock().ok().and_then(|mut c| c.resolve(cgroup_id)) else {
                return (unresolved(), None);
            };
            if self.by_cgroup.len() >= MAX_CGROUP_ENTRIES {
                self.by_cgroup.clear();
            }
            let pod_ref = parse_kubelet_path(&path);
            let cgroup = Arc::new(Cgroup { id: cgroup_id, path: Some(path.into()) }.into());
            let entry = CgroupEntry { cgroup, pod_ref, meta: None, pod: None };
            self.by_cgroup.insert(cgroup_id, entry);
        }
        let Some(entry) = self.by_cgroup.get_mut(&cgroup_id) else {
            return (unresolved(), None);
        };
        let cgroup = entry.cgroup.clone();
        let Some(r) = &entry.pod_ref else {
            return (cgroup, None);
        };
        let meta = self.pods.get(&r.pod_uid);
        let same = match (&meta, &entry.meta) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if !same || entry.pod.is_none() {
            entry.pod = Some(Arc::new(pod_of(r, meta.as_deref()).into()));
            entry.meta = meta;
        }
        (cgroup, entry.pod.clone())
    }

    fn base(&mut self, h: &Header, kind: Kind) -> Event {
        let process = self.process(h);
        let (cgroup, pod) = self.pod(h.cgroup_id);
        let mut ev = Event {
            time: self.time(h.ktime_ns),
            node: self.node.clone(),
            kind,
            process,
            pod,
            cgroup,
            file: None,
            network: None,
            exit: None,
            privilege: None,
            policy: None,
            rule: None,
            action: None,
            matched_on: None,
            encoded: Default::default(),
        };
        ev.matched_on = matched_on(h.flags, h.rule).map(Name::Borrowed);
        if h.rule != 0 {
            if let Some(info) = self.rule(h.rule) {
                ev.policy = Some(info.policy.clone());
                ev.rule = Some(info.rule.clone());
            }
        }
        ev.action = Action::name_of(h.action).map(Name::Borrowed);
        ev
    }

    /// A rule's names, from the reader's copy (filled from `rules` on first
    /// use, dropped whenever a policy set brings new ones).
    fn rule(&mut self, id: u16) -> Option<&RuleInfo> {
        let version = self.rules.version();
        if version != self.rules_version {
            self.rule_cache.clear();
            self.rules_version = version;
        }
        let i = id as usize;
        if self.rule_cache.len() <= i {
            self.rule_cache.resize(i + 1, None);
        }
        if self.rule_cache[i].is_none() {
            self.rule_cache[i] = self.rules.get(id);
        }
        self.rule_cache[i].as_ref()
    }

    /// Housekeeping between batches: expire exited processes, forget the
    /// cgroups the resolver forgot (removed directories).
    pub fn tick(&mut self, now: Instant) {
        self.procs.expire(now);
        if let Ok(c) = self.cgroups.lock() {
            self.by_cgroup.retain(|id, _| c.knows(*id));
        }
    }

    pub fn enrich(&mut self, rec: Record) -> Option<Event> {
        let h = rec.header;
        match rec.payload {
            Payload::Fork { child_tgid, parent_tgid } => {
                self.procs.on_fork(child_tgid, parent_tgid);
                None
            }
            Payload::CgroupMkdir { id, path } => {
                if let Ok(mut c) = self.cgroups.lock() {
                    c.insert(id, lossless_string(&path));
                }
                if let Some(n) = &self.cgroup_created {
                    n.notify_one();
                }
                None
            }
            Payload::Privilege(p) => {
                let mut ev = self.base(&h, Kind::Privilege);
                ev.privilege = Some(Box::new(privilege_change(&p)));
                Some(ev)
            }
            Payload::Exec { filename, cwd, executable, creds, .. } if h.flags & flags::EXEC_DENIED != 0 => {
                // Refused by a deny rule: the process keeps its image, so the
                // cache is left alone; the event describes the attempt.
                let cwd = cwd.map(|c| lossless_string(&c));
                let mut binary = lossless_string(&filename);
                if let (false, Some(c)) = (binary.starts_with('/'), &cwd) {
                    binary = normalize(&format!("{c}/{binary}"));
                }
                let mut ev = self.base(&h, Kind::Exec);
                let p = Arc::make_mut(&mut ev.process);
                p.binary = Some(binary.into());
                p.executable = executable.map(|e| lossless_string(&e).into());
                p.args = Vec::new().into();
                p.credentials = creds.map(|c| Box::new(credentials(&c)));
                Some(ev)
            }
            Payload::Exec { ppid, filename, args, cwd, executable, creds } => {
                let cwd = cwd.map(|c| lossless_string(&c));
                let mut binary = lossless_string(&filename);
                self.binaries.learn(path_hash(&filename), &binary);
                if !binary.starts_with('/') {
                    if let Some(c) = &cwd {
                        binary = normalize(&format!("{c}/{binary}"));
                    }
                }
                let parent_pid =
                    if ppid != 0 { ppid } else { self.procs.peek(h.tgid).map(|p| p.ppid).unwrap_or(0) };
                let mut args: Vec<String> = args.iter().map(|a| lossless_string(a)).collect();
                self.procs.redactor.redact(&mut args);
                self.procs.on_exec(
                    h.tgid,
                    ProcessInfo {
                        ppid: parent_pid,
                        binary: Some(binary.into()),
                        executable: executable.map(|e| lossless_string(&e).into()),
                        args: args.into(),
                        args_truncated: h.flags & flags::ARGS_TRUNCATED != 0,
                        cwd: cwd.map(Into::into),
                        shown: Default::default(),
                    },
                );
                let mut ev = self.base(&h, Kind::Exec);
                // The credentials are the exec event's own: the shared process stays without.
                Arc::make_mut(&mut ev.process).credentials = creds.map(|c| Box::new(credentials(&c)));
                Some(ev)
            }
            Payload::Exit { exit_code } => {
                let mut ev = self.base(&h, Kind::Exit);
                ev.exit = Some(exit_status(exit_code));
                self.procs.on_exit(h.tgid, Instant::now());
                Some(ev)
            }
            Payload::FileOpen { syscall, dfd: _, flags: oflags, mode: _, ret, path, dir, resolved } => {
                let raw = lossless_string(&path);
                let abs = if let Some(r) = resolved {
                    lossless_string(&r)
                } else if raw.starts_with('/') {
                    normalize(&raw)
                } else {
                    let base = dir.map(|d| lossless_string(&d)).or_else(|| {
                        self.procs.peek(h.tgid).and_then(|p| p.cwd.as_deref().map(str::to_owned))
                    });
                    match base {
                        Some(b) => normalize(&format!("{b}/{raw}")),
                        None => raw.clone(),
                    }
                };
                let requested = (!raw.is_empty() && raw != abs).then_some(raw);
                let mut ev = self.base(&h, Kind::File);
                ev.file = Some(File {
                    path: abs,
                    requested,
                    operation: file_op_name(file_op(oflags)).into(),
                    flags: open_flag_names(oflags),
                    syscall: match syscall {
                        open_syscall::OPEN => "open",
                        open_syscall::OPENAT => "openat",
                        open_syscall::OPENAT2 => "openat2",
                        open_syscall::CREAT => "creat",
                        open_syscall::OPEN_BY_HANDLE_AT => "open_by_handle_at",
                        open_syscall::IO_URING_OPENAT => "io_uring_openat",
                        open_syscall::IO_URING_OPENAT2 => "io_uring_openat2",
                        open_syscall::READ => "read",
                        open_syscall::READV => "readv",
                        open_syscall::PREAD64 => "pread64",
                        open_syscall::PREADV => "preadv",
                        open_syscall::PREADV2 => "preadv2",
                        open_syscall::IO_URING_READ => "io_uring_read",
                        open_syscall::SENDFILE => "sendfile",
                        open_syscall::SPLICE => "splice",
                        open_syscall::COPY_FILE_RANGE => "copy_file_range",
                        open_syscall::MMAP => "mmap",
                        _ => "unknown",
                    }
                    .into(),
                    result: if ret >= 0 { "ok".into() } else { errno_name(errno_of(ret)) },
                    errno: (ret < 0).then_some(errno_of(ret)),
                    fd: (ret >= 0).then_some(ret),
                    path_truncated: h.flags & (flags::PATH_TRUNCATED | flags::DIR_TRUNCATED) != 0,
                });
                Some(ev)
            }
            Payload::Net { kind: k, net } => {
                let event_kind = match k {
                    kind::TCP_CONNECT | kind::UDP_CONNECT => Kind::Connect,
                    kind::TCP_ACCEPT => Kind::Accept,
                    kind::TCP_CLOSE => Kind::Close,
                    _ => Kind::Send,
                };
                let mut ev = self.base(&h, event_kind);
                ev.network = Some(network(k, &net));
                Some(ev)
            }
        }
    }
}

/// A pod as events show it: what the cgroup path says, named from the
/// metadata when the agent has it.
fn pod_of(r: &PodRef, meta: Option<&PodMeta>) -> Pod {
    Pod {
        namespace: meta.map(|m| m.namespace.clone()),
        name: meta.map(|m| m.name.clone()),
        workload: meta
            .and_then(|m| m.workload.as_ref().map(|w| format!("{}/{}", w.kind.to_lowercase(), w.name))),
        container: r.container_id.as_ref().map(|id| Container {
            name: meta.and_then(|m| m.container_name(id).map(str::to_owned)),
            id: id.clone(),
            runtime: r.runtime.map(str::to_owned),
        }),
        uid: r.pod_uid.clone(),
    }
}

/// Kernel credentials → the event's shape: names for capabilities, the
/// namespaces by type and which of them are the host's.
pub fn credentials(c: &podwatch_common::Credentials) -> Credentials {
    let host = crate::kernel::namespaces::host();
    let known = c.ns.iter().any(|&n| n != 0);
    Credentials {
        uid: c.ids[id::UID],
        euid: c.ids[id::EUID],
        suid: c.ids[id::SUID],
        fsuid: c.ids[id::FSUID],
        gid: c.ids[id::GID],
        egid: c.ids[id::EGID],
        sgid: c.ids[id::SGID],
        fsgid: c.ids[id::FSGID],
        capabilities_effective: capability_names(c.caps[capset::EFFECTIVE]),
        capabilities_permitted: capability_names(c.caps[capset::PERMITTED]),
        capabilities_inheritable: capability_names(c.caps[capset::INHERITABLE]),
        capabilities_ambient: capability_names(c.caps[capset::AMBIENT]),
        namespaces: known.then(|| ns::NAMES.iter().zip(c.ns).map(|(n, i)| (Name::Borrowed(n), i)).collect()),
        host_namespaces: ns::NAMES
            .iter()
            .zip(c.ns.iter().zip(host))
            .filter(|(_, (&n, h))| n != 0 && n == *h)
            .map(|(n, _)| Name::Borrowed(n))
            .collect(),
    }
}

fn privilege_change(p: &podwatch_common::Privilege) -> PrivilegeChange {
    let host = crate::kernel::namespaces::host();
    let (b, a) = (&p.before, &p.after);
    let (eb, ea) = (b.caps[capset::EFFECTIVE], a.caps[capset::EFFECTIVE]);
    let changed: Vec<usize> = (0..ns::COUNT).filter(|&i| b.ns[i] != a.ns[i]).collect();
    PrivilegeChange {
        change: change_name(p.change).into(),
        syscall: privilege_syscall_name(p.syscall).into(),
        result: if p.ret >= 0 { "ok".into() } else { errno_name(errno_of(p.ret)) },
        errno: (p.ret < 0).then_some(errno_of(p.ret)),
        before: credentials(b),
        after: credentials(a),
        capabilities_gained: capability_names(ea & !eb),
        capabilities_lost: capability_names(eb & !ea),
        namespaces_changed: changed.iter().map(|&i| Name::Borrowed(ns::NAMES[i])).collect(),
        host_namespaces_entered: changed
            .iter()
            .filter(|&&i| a.ns[i] != 0 && a.ns[i] == host[i])
            .map(|&i| Name::Borrowed(ns::NAMES[i]))
            .collect(),
    }
}

/// How the kernel judged an event (`Event::matched_on`), from the header flags.
fn matched_on(f: u16, rule: u16) -> Option<&'static str> {
    if f & flags::PATH_UNRESOLVED != 0 {
        Some("unresolved")
    } else if rule == 0 {
        None
    } else if f & flags::MATCHED_IDENTITY != 0 {
        Some("identity")
    } else if f & flags::MATCHED_EXECUTABLE != 0 {
        Some("executable")
    } else {
        Some("path")
    }
}

/// The errno of a failed call's `-errno` result. The kernel only gives -1..=-4095;
/// a record claiming `i32::MIN`, which has no negation, saturates to
/// `i32::MAX` instead of overflowing.
fn errno_of(ret: i32) -> i32 {
    ret.saturating_neg()
}

fn addr(family: u16, b: &[u8; 16]) -> String {
    if family == AF_INET6 {
        Ipv6Addr::from(*b).to_string()
    } else {
        Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string()
    }
}

fn network(k: u16, n: &Net) -> Network {
    let local = Endpoint { address: addr(n.family, &n.saddr), port: n.sport };
    let remote = Endpoint { address: addr(n.family, &n.daddr), port: n.dport };
    // The record keeps local (s) and remote (d); events orient by who initiated.
    let ingress = k == kind::TCP_ACCEPT || (k == kind::TCP_CLOSE && n.side == kind::TCP_ACCEPT);
    let (src, dst) = if ingress { (remote, local) } else { (local, remote) };
    let close = k == kind::TCP_CLOSE;
    Network {
        protocol: if n.protocol == IPPROTO_UDP { "udp" } else { "tcp" }.into(),
        family: if n.family == AF_INET6 { "ipv6" } else { "ipv4" }.into(),
        direction: if ingress { "ingress" } else { "egress" }.into(),
        src,
        dst,
        result: if n.result == 0 { "ok".into() } else { errno_name(errno_of(n.result)) },
        bytes_sent: close.then_some(n.bytes_sent),
        bytes_received: close.then_some(n.bytes_received),
    }
}

const O_ACCMODE: u64 = 0o3;
pub fn open_flag_names(f: u64) -> Vec<Name> {
    const NAMES: [(u64, &str); 17] = [
        (0o100, "O_CREAT"),
        (0o200, "O_EXCL"),
        (0o400, "O_NOCTTY"),
        (0o1000, "O_TRUNC"),
        (0o2000, "O_APPEND"),
        (0o4000, "O_NONBLOCK"),
        (0o10000, "O_DSYNC"),
        (0o20000, "O_ASYNC"),
        (0o40000, "O_DIRECT"),
        (0o100000, "O_LARGEFILE"),
        (0o200000, "O_DIRECTORY"),
        (0o400000, "O_NOFOLLOW"),
        (0o1000000, "O_NOATIME"),
        (0o2000000, "O_CLOEXEC"),
        (0o4000000, "O_SYNC"),
        (0o10000000, "O_PATH"),
        (0o20000000, "O_TMPFILE"),
    ];
    let mut out = vec![match f & O_ACCMODE {
        0 => "O_RDONLY",
        1 => "O_WRONLY",
        _ => "O_RDWR",
    }
    .into()];
    out.extend(NAMES.iter().filter(|(bit, _)| f & bit == *bit).map(|(_, n)| Name::Borrowed(n)));
    out
}

/// Folds `.` and `..` lexically ("/tmp/../etc/shadow" → "/etc/shadow").
/// Symlinks are not resolved: the path is the one the process asked for.
pub fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_relative_walks() {
        assert_eq!(normalize("/tmp/../etc/shadow"), "/etc/shadow");
        assert_eq!(normalize("/etc/./shadow"), "/etc/shadow");
        assert_eq!(normalize("/../../etc//passwd"), "/etc/passwd");
        assert_eq!(normalize("/"), "/");
    }

    #[test]
    fn operations_from_flags() {
        let operation = |f| file_op_name(file_op(f));
        assert_eq!(operation(0), "read");
        assert_eq!(operation(0o1), "write");
        assert_eq!(operation(0o2 | 0o1000), "truncate");
        assert_eq!(operation(0o1 | 0o100 | 0o1000), "create");
        assert_eq!(operation(0o10000000), "open");
        assert_eq!(open_flag_names(0o2000000), vec!["O_RDONLY", "O_CLOEXEC"]);
    }

    fn enricher() -> Enricher {
        Enricher::new(
            "node-1".into(),
            ProcessCache::with_proc_root(16, std::time::Duration::from_secs(30), "/nonexistent"),
            Arc::new(Mutex::new(CgroupResolver::new(None))),
            Arc::new(PodStore::new("none")),
            Arc::new(BinaryNames::default()),
            Arc::new(RuleNames::default()),
        )
    }

    /// Found by fuzzing (decode_record): `-ret` overflowed for a record whose
    /// open result was i32::MIN.
    #[test]
    fn an_open_failing_with_i32_min_is_an_error_not_an_overflow() {
        let rec = Record {
            header: Header { kind: kind::FILE_OPEN, tgid: 7, ..Default::default() },
            payload: Payload::FileOpen {
                syscall: open_syscall::OPENAT,
                dfd: podwatch_common::AT_FDCWD,
                flags: 0,
                mode: 0,
                ret: i32::MIN,
                path: b"/etc/shadow".to_vec(),
                dir: None,
                resolved: None,
            },
        };
        let f = enricher().enrich(rec).and_then(|ev| ev.file).expect("a file event");
        assert_eq!(f.errno, Some(i32::MAX));
        assert_eq!(f.result, "E2147483647");
        assert_eq!(f.fd, None);
    }

    /// Found by fuzzing (decode_record): `-n.result` overflowed for a
    /// connection record whose result was i32::MIN.
    #[test]
    fn a_connection_failing_with_i32_min_is_an_error_not_an_overflow() {
        let n = Net { family: 2, protocol: 6, result: i32::MIN, ..Default::default() };
        assert_eq!(network(kind::TCP_CONNECT, &n).result, "E2147483647");
        let n = Net { result: -111, ..n };
        assert_eq!(network(kind::TCP_CONNECT, &n).result, "ECONNREFUSED");
    }

    /// The pod is built once per cgroup, rebuilt when its metadata arrives
    /// or changes, and forgotten with the cgroup.
    #[test]
    fn a_cgroups_pod_is_shared_and_follows_its_metadata() {
        let mut e = enricher();
        let uid = "6b1f0a52-2c3d-4e5f-8a9b-0c1d2e3f4a5b";
        const CID: &str = "4f2b8e1c9d0a4f2b8e1c9d0a4f2b8e1c9d0a4f2b8e1c9d0a4f2b8e1c9d0a1234";
        let path =
            format!("/kubepods.slice/kubepods-pod{}.slice/cri-containerd-{CID}.scope", uid.replace('-', "_"));
        e.enrich(Record {
            header: Header { kind: kind::CGROUP_MKDIR, ..Default::default() },
            payload: Payload::CgroupMkdir { id: 77, path: path.clone().into_bytes() },
        });
        let exit = |e: &mut Enricher| {
            let h = Header { kind: kind::EXIT, tgid: 9, cgroup_id: 77, ..Default::default() };
            e.enrich(Record { header: h, payload: Payload::Exit { exit_code: 0 } }).expect("an event")
        };
        let (a, b) = (exit(&mut e), exit(&mut e));
        let pod = a.pod.clone().expect("a pod from the cgroup path");
        assert_eq!((pod.uid.as_str(), pod.name.as_deref()), (uid, None));
        assert!(Arc::ptr_eq(&pod, b.pod.as_ref().expect("pod")), "one pod for the cgroup's events");
        assert_eq!(a.cgroup.path.as_deref(), Some(path.as_str()));

        let meta = |name: &str| crate::pods::PodMeta {
            uid: uid.into(),
            namespace: "shop".into(),
            name: name.into(),
            labels: Default::default(),
            workload: None,
            containers: vec![crate::pods::ContainerMeta { id: CID.into(), name: "web".into() }],
        };
        e.pods.upsert(meta("web-1"));
        let c = exit(&mut e);
        let p = c.pod.as_ref().expect("pod");
        assert_eq!((p.namespace.as_deref(), p.name.as_deref()), (Some("shop"), Some("web-1")));
        assert_eq!(p.container.as_ref().and_then(|c| c.name.as_deref()), Some("web"));
        e.pods.upsert(meta("web-2"));
        assert_eq!(exit(&mut e).pod.and_then(|p| p.name.clone()).as_deref(), Some("web-2"));

        if let Ok(mut c) = e.cgroups.lock() {
            c.forget(77);
        }
        e.tick(Instant::now());
        assert!(exit(&mut e).pod.is_none(), "a forgotten cgroup is not served from the cache");
    }

    #[test]
    fn a_processs_binary_args_and_cwd_are_shared_by_its_events() {
        let mut e = enricher();
        e.procs.on_exec(
            9,
            ProcessInfo {
                ppid: 1,
                binary: Some("/usr/bin/cat".into()),
                executable: Some("/usr/bin/cat".into()),
                args: vec!["cat".to_owned(), "/etc/passwd".to_owned()].into(),
                args_truncated: false,
                cwd: Some("/srv".into()),
                shown: Default::default(),
            },
        );
        let exit = |e: &mut Enricher| {
            let h = Header { kind: kind::EXIT, tgid: 9, ..Default::default() };
            e.enrich(Record { header: h, payload: Payload::Exit { exit_code: 0 } }).expect("an event")
        };
        let (a, b) = (exit(&mut e), exit(&mut e));
        assert_eq!(a.process.args[..], ["cat", "/etc/passwd"]);
        assert_eq!(
            (a.process.binary.as_deref(), a.process.cwd.as_deref()),
            (Some("/usr/bin/cat"), Some("/srv"))
        );
        assert!(Arc::ptr_eq(&a.process.args, &b.process.args), "argv is shared, not copied per event");
        let (ab, bb) =
            (a.process.binary.as_ref().expect("binary"), b.process.binary.as_ref().expect("binary"));
        assert!(Arc::ptr_eq(ab, bb));
        // Serialized as before: plain strings and an array.
        let json: serde_json::Value = serde_json::from_str(a.json().expect("json")).expect("valid JSON");
        assert_eq!(json["process"]["args"], serde_json::json!(["cat", "/etc/passwd"]));
        assert_eq!(json["process"]["binary"], "/usr/bin/cat");
    }

    #[test]
    fn a_process_is_shared_by_its_events_until_what_it_shows_changes() {
        let mut e = enricher();
        let info = |b: &str, ppid| ProcessInfo { ppid, binary: Some(b.into()), ..Default::default() };
        e.procs.on_exec(1, info("/sbin/init", 0));
        e.procs.on_exec(9, info("/usr/bin/cat", 1));
        let exit = |e: &mut Enricher, tid: u32, uid: u32, comm: &[u8]| {
            let mut h = Header { kind: kind::EXIT, tgid: 9, tid, uid, ..Default::default() };
            h.comm[..comm.len()].copy_from_slice(comm);
            e.enrich(Record { header: h, payload: Payload::Exit { exit_code: 0 } }).expect("an event").process
        };
        let first = exit(&mut e, 9, 0, b"cat");
        let a = exit(&mut e, 9, 0, b"cat");
        assert!(!Arc::ptr_eq(&first, &a), "a process's first event leaves no copy in the cache");
        assert_eq!(first, a);
        assert!(Arc::ptr_eq(&a, &exit(&mut e, 9, 0, b"cat")), "the same facts share one process");
        // Each fact the header brings, changed, shows.
        let by_uid = exit(&mut e, 9, 1000, b"cat");
        assert_eq!(by_uid.uid, 1000);
        let by_tid = exit(&mut e, 10, 1000, b"cat");
        assert_eq!(by_tid.tid, 10);
        let renamed = exit(&mut e, 10, 1000, b"ca");
        assert_eq!(renamed.comm, "ca", "a shorter name is not taken for the longer one");
        assert_eq!(exit(&mut e, 10, 1000, b"cat2").comm, "cat2");
        // The parent execs: its new binary shows.
        assert_eq!(
            exit(&mut e, 10, 1000, b"cat2").parent.as_ref().and_then(|p| p.binary.clone()).as_deref(),
            Some("/sbin/init")
        );
        e.procs.on_exec(1, info("/usr/lib/systemd/systemd", 0));
        let p = exit(&mut e, 10, 1000, b"cat2");
        assert_eq!(p.parent.as_ref().and_then(|p| p.binary.as_deref()), Some("/usr/lib/systemd/systemd"));
        // The process execs: everything is new, its old JSON too.
        e.procs.on_exec(9, info("/usr/bin/tac", 1));
        let p = exit(&mut e, 10, 1000, b"cat2");
        assert_eq!(p.binary.as_deref(), Some("/usr/bin/tac"));
        assert!(p.json().expect("encodes").get().contains("/usr/bin/tac"));
        // A fork's child starts from its parent's entry, not its parent's shown process.
        e.procs.on_fork(11, 9);
        let h = Header { kind: kind::EXIT, tgid: 11, tid: 11, ..Default::default() };
        let child =
            e.enrich(Record { header: h, payload: Payload::Exit { exit_code: 0 } }).expect("an event");
        assert_eq!((child.process.pid, child.process.parent.as_ref().map(|p| p.pid)), (11, Some(9)));
    }

    #[test]
    fn accept_and_its_close_are_ingress() {
        let mut n = Net { family: 2, protocol: 6, sport: 8080, dport: 5555, ..Default::default() };
        n.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        n.daddr[..4].copy_from_slice(&[127, 0, 0, 2]);
        let a = network(kind::TCP_ACCEPT, &n);
        assert_eq!((a.direction.as_ref(), a.src.port, a.dst.port), ("ingress", 5555, 8080));
        assert_eq!(a.src.address, "127.0.0.2");
        n.side = kind::TCP_ACCEPT;
        let c = network(kind::TCP_CLOSE, &n);
        assert_eq!(c.direction, "ingress");
        assert_eq!(c.bytes_sent, Some(0));
        n.side = kind::TCP_CONNECT;
        let c = network(kind::TCP_CONNECT, &n);
        assert_eq!((c.direction.as_ref(), c.src.port, c.dst.port), ("egress", 8080, 5555));
        assert_eq!(c.bytes_sent, None);
    }
}

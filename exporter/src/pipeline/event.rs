//! The one JSON shape every output and sink sees, close to what Tetragon users
//! know: `time, node, kind, process{..., parent}, pod{...}` plus the kind's own
//! object (`file`, `network`, `exit`).

use std::{
    borrow::Cow,
    sync::{Arc, OnceLock},
    time::SystemTime,
};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Exec,
    Exit,
    File,
    Connect,
    Accept,
    Close,
    /// A UDP datagram sent to an explicit destination (sendto/sendmsg), e.g. DNS.
    Send,
    /// A change of credentials or namespaces (setuid, capset, unshare, setns,
    /// an exec of a setuid binary).
    Privilege,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Exec,
        Kind::Exit,
        Kind::File,
        Kind::Connect,
        Kind::Accept,
        Kind::Close,
        Kind::Send,
        Kind::Privilege,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Exec => "exec",
            Kind::Exit => "exit",
            Kind::File => "file",
            Kind::Connect => "connect",
            Kind::Accept => "accept",
            Kind::Close => "close",
            Kind::Send => "send",
            Kind::Privilege => "privilege",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A name from a fixed set (an operation, a flag, a syscall, an errno, an
/// action): static for the events the agent builds, so an event costs no
/// allocation per name; owned only when an event is read back from JSON.
pub type Name = Cow<'static, str>;

/// When the event happened. Kept as a time, written as RFC 3339 with
/// nanoseconds in UTC: the JSON line formats it without an intermediate
/// string and the sinks that need nanoseconds (Loki, OTLP) take them as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp(pub SystemTime);

impl Timestamp {
    /// `humantime::format_rfc3339_nanos`, with the date and time of day
    /// (which change once a second) formatted once per second per thread and
    /// only the nanoseconds every time: a tenth of the reader's encoding
    /// time went to the calendar arithmetic.
    ///
    /// Times humantime cannot write (it panics before 1970 and fails after
    /// 9999) are clamped to the first and last it can.
    fn rfc3339(&self) -> [u8; 30] {
        const LAST: std::time::Duration = std::time::Duration::new(253_402_300_799, 999_999_999);
        let d = self.0.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().min(LAST);
        thread_local!(static SECOND: std::cell::RefCell<(u64, [u8; 19])> =
            const { std::cell::RefCell::new((u64::MAX, [0; 19])) });
        let mut out = [0u8; 30];
        SECOND.with_borrow_mut(|(secs, prefix)| {
            if *secs != d.as_secs() {
                // "YYYY-MM-DDTHH:MM:SSZ": the first 19 bytes are the prefix.
                let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(d.as_secs());
                let whole = humantime::format_rfc3339_seconds(t).to_string();
                prefix.copy_from_slice(&whole.as_bytes()[..19]);
                *secs = d.as_secs();
            }
            out[..19].copy_from_slice(prefix);
        });
        out[19] = b'.';
        let mut ns = d.subsec_nanos();
        for b in out[20..29].iter_mut().rev() {
            *b = b'0' + (ns % 10) as u8;
            ns /= 10;
        }
        out[29] = b'Z';
        out
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(std::str::from_utf8(&self.rfc3339()).map_err(|_| std::fmt::Error)?)
    }
}

impl Serialize for Timestamp {
    /// As a string: `collect_str` would write it through `fmt::Write`, each
    /// piece escaped on its own (a twentieth of the reader's time).
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let buf = self.rfc3339();
        s.serialize_str(std::str::from_utf8(&buf).map_err(serde::ser::Error::custom)?)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let s = Cow::<str>::deserialize(d)?;
        humantime::parse_rfc3339(&s).map(Timestamp).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// RFC 3339, nanoseconds, UTC.
    pub time: Timestamp,
    /// Shared by every event of the agent.
    pub node: Arc<str>,
    pub kind: Kind,
    /// Shared by the events of one process while what it shows stays the
    /// same (the reader's process cache keeps the last one shown).
    pub process: Arc<Encoded<Process>>,
    /// Absent for host processes. Shared by every event of the cgroup
    /// while the pod's metadata stays the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<Arc<Encoded<Pod>>>,
    /// Shared by every event of the cgroup.
    pub cgroup: Arc<Encoded<Cgroup>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<File>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privilege: Option<Box<PrivilegeChange>>,
    /// The policy whose rule matched, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Arc<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<Arc<str>>,
    /// What the rule did: count | log | kill | deny.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Name>,
    /// How the kernel judged the event, when a policy applied: `path` (the
    /// resolved path of the file), `executable` (an exec judged on the
    /// resolved path of the file that runs rather than the path it was
    /// given), `identity` (device and inode of the file or a directory above
    /// it, where its name says otherwise: a hardlink or a bind mount) or
    /// `unresolved` (the path could not be resolved or compared, so the event
    /// is logged as such instead of passing unmatched).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_on: Option<Name>,
    /// The JSON line, encoded once and shared (see [`Event::json_line`]).
    #[serde(skip)]
    pub encoded: EncodedOnce,
}

impl Event {
    /// The event as one JSON line (newline included): encoded by the first
    /// output that needs it and shared with every other output, sink and
    /// `/events` subscriber, which clone the bytes instead of encoding again.
    /// `None` only if serde_json refuses the event (it cannot for this shape).
    pub fn json_line(&self) -> Option<&Bytes> {
        self.encoded
            .0
            .get_or_init(|| {
                // Encoded in a reused buffer, then copied out at its exact size:
                // no reallocations as the line grows, and a queued line holds
                // no more memory than its length.
                thread_local!(static LINE: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(4096)));
                LINE.with_borrow_mut(|line| {
                    line.clear();
                    serde_json::to_writer(&mut *line, self).ok()?;
                    line.push(b'\n');
                    Some(Bytes::copy_from_slice(line))
                })
            })
            .as_ref()
    }

    /// The JSON line without its newline, as text (Loki lines, OTLP bodies).
    pub fn json(&self) -> Option<&str> {
        let line = self.json_line()?;
        std::str::from_utf8(&line[..line.len() - 1]).ok()
    }
}

/// A value's JSON, once encoded (an event's line, a process's object). A
/// clone starts empty (a clone may be changed before it is encoded) and it
/// never makes two values unequal.
pub struct EncodedOnce<T = Bytes>(OnceLock<Option<T>>);

impl<T> Default for EncodedOnce<T> {
    fn default() -> Self {
        EncodedOnce(OnceLock::new())
    }
}

impl<T> Clone for EncodedOnce<T> {
    fn clone(&self) -> Self {
        EncodedOnce::default()
    }
}

impl<T> PartialEq for EncodedOnce<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<T> std::fmt::Debug for EncodedOnce<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() { "encoded" } else { "not encoded" })
    }
}

/// A part of events shared by many of them (a process, a pod, a cgroup),
/// its JSON object encoded once, by the first line that needs it, and
/// spliced into every line after as it is: the process is about half of a
/// file event's line, a pod's metadata as much again. serde_json writes a
/// `RawValue` verbatim (and `to_value` parses it back); events meet no other
/// serializer. Changing the value through `DerefMut` drops the encoding.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded<T> {
    value: T,
    json: EncodedOnce<Box<serde_json::value::RawValue>>,
}

impl<T> Encoded<T> {
    pub fn new(value: T) -> Encoded<T> {
        Encoded { value, json: EncodedOnce::default() }
    }
}

impl<T: Serialize> Encoded<T> {
    /// The value's JSON object (None only if serde_json refuses it).
    pub fn json(&self) -> Option<&serde_json::value::RawValue> {
        self.json.0.get_or_init(|| serde_json::value::to_raw_value(&self.value).ok()).as_deref()
    }
}

impl<T> From<T> for Encoded<T> {
    fn from(value: T) -> Encoded<T> {
        Encoded::new(value)
    }
}

impl<T> std::ops::Deref for Encoded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> std::ops::DerefMut for Encoded<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.json = EncodedOnce::default();
        &mut self.value
    }
}

impl<T: Serialize> Serialize for Encoded<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.json() {
            Some(raw) => raw.serialize(s),
            None => self.value.serialize(s),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Encoded<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Encoded<T>, D::Error> {
        T::deserialize(d).map(Encoded::new)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Process {
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    /// The kernel's 16-byte task name.
    pub comm: String,
    /// The path exec was given (made absolute against the cwd).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary: Option<Arc<str>>,
    /// The resolved path of the file the kernel runs (symlinks, `..`,
    /// `/proc/self/root/...` and fexecve's `/dev/fd/N` resolved); for a
    /// script, its interpreter. Exec rules judge both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executable: Option<Arc<str>>,
    /// Full argv, argv[0] included.
    #[serde(default)]
    pub args: Arc<[String]>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub args_truncated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<Arc<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Parent>,
    /// Exec events: what the new image runs with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Box<Credentials>>,
}

/// Ids, capabilities (names) and namespaces (inode numbers) of a process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Credentials {
    pub uid: u32,
    pub euid: u32,
    pub suid: u32,
    pub fsuid: u32,
    pub gid: u32,
    pub egid: u32,
    pub sgid: u32,
    pub fsgid: u32,
    pub capabilities_effective: Vec<Name>,
    pub capabilities_permitted: Vec<Name>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities_inheritable: Vec<Name>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities_ambient: Vec<Name>,
    /// mnt, pid (children's), net, uts, ipc, user, cgroup → inode number
    /// (as `/proc/PID/ns/*` links show them). Absent for exec changes,
    /// which cannot change namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<std::collections::BTreeMap<Name, u32>>,
    /// Which of them are the host's (init's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_namespaces: Vec<Name>,
}

/// A change of credentials or namespaces: before and after.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrivilegeChange {
    /// setuid | setgid | capset | unshare | setns | exec
    pub change: Name,
    /// The syscall (setresuid, capset, unshare, setns, execve...).
    pub syscall: Name,
    /// "ok" or the errno name (EPERM...).
    pub result: Name,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<i32>,
    pub before: Credentials,
    pub after: Credentials,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities_gained: Vec<Name>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities_lost: Vec<Name>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces_changed: Vec<Name>,
    /// Namespaces that are the host's after the change and were not before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_namespaces_entered: Vec<Name>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Parent {
    pub pid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary: Option<Arc<str>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pod {
    pub uid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Container {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// containerd, cri-o or docker, from the cgroup name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cgroup {
    pub id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<Arc<str>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct File {
    /// Absolute, as the process sees it (its root applied). The opened file's
    /// resolved path where the kernel resolved it (a policy applies to the
    /// pod: symlinks followed), else the path asked for with the cwd applied
    /// and `..` folded.
    pub path: String,
    /// The path string the process passed, when it is not `path` (relative,
    /// through a symlink...). Absent for open_by_handle_at and io_uring opens,
    /// which pass none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested: Option<String>,
    /// read | write | create | truncate | open (O_PATH).
    pub operation: Name,
    pub flags: Vec<Name>,
    pub syscall: Name,
    /// "ok" or the errno name (EACCES...).
    pub result: Name,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fd: Option<i32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub path_truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    pub address: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Network {
    /// tcp | udp
    pub protocol: Name,
    /// ipv4 | ipv6
    pub family: Name,
    /// egress (this process initiated) | ingress (this process accepted).
    pub direction: Name,
    /// Initiator of the connection.
    pub src: Endpoint,
    /// Target of the connection.
    pub dst: Endpoint,
    /// "ok" or the errno name (ECONNREFUSED...).
    pub result: Name,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_sent: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_received: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// Exit code when the process exited normally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// Terminating signal (SIGKILL...) when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<Name>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub core_dumped: bool,
}

/// Bytes from the kernel → String. Valid UTF-8 passes through; each invalid
/// byte becomes `\xNN`, so nothing is silently replaced.
pub fn lossless_string(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_owned(),
        Err(_) => {
            let mut out = String::with_capacity(b.len() + 8);
            let mut rest = b;
            while !rest.is_empty() {
                match std::str::from_utf8(rest) {
                    Ok(s) => {
                        out.push_str(s);
                        break;
                    }
                    Err(e) => {
                        let (ok, bad) = rest.split_at(e.valid_up_to());
                        // SAFETY-free: valid_up_to guarantees `ok` is UTF-8.
                        out.push_str(std::str::from_utf8(ok).unwrap_or_default());
                        let n = e.error_len().unwrap_or(bad.len()).max(1);
                        for byte in &bad[..n] {
                            out.push_str(&format!("\\x{byte:02x}"));
                        }
                        rest = &bad[n..];
                    }
                }
            }
            out
        }
    }
}

pub fn errno_name(errno: i32) -> Name {
    let name = match errno {
        1 => "EPERM",
        2 => "ENOENT",
        4 => "EINTR",
        6 => "ENXIO",
        11 => "EAGAIN",
        13 => "EACCES",
        16 => "EBUSY",
        17 => "EEXIST",
        19 => "ENODEV",
        20 => "ENOTDIR",
        21 => "EISDIR",
        22 => "EINVAL",
        23 => "ENFILE",
        24 => "EMFILE",
        26 => "ETXTBSY",
        30 => "EROFS",
        36 => "ENAMETOOLONG",
        40 => "ELOOP",
        95 => "EOPNOTSUPP",
        97 => "EAFNOSUPPORT",
        98 => "EADDRINUSE",
        99 => "EADDRNOTAVAIL",
        101 => "ENETUNREACH",
        103 => "ECONNABORTED",
        104 => "ECONNRESET",
        110 => "ETIMEDOUT",
        111 => "ECONNREFUSED",
        113 => "EHOSTUNREACH",
        _ => return Cow::Owned(format!("E{errno}")),
    };
    Cow::Borrowed(name)
}

pub fn signal_name(sig: u32) -> Name {
    let name = match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        31 => "SIGSYS",
        _ => return Cow::Owned(format!("SIG{sig}")),
    };
    Cow::Borrowed(name)
}

/// Decodes `task->exit_code` the way `wait(2)` does.
pub fn exit_status(raw: u32) -> ExitStatus {
    let sig = raw & 0x7f;
    if sig == 0 {
        ExitStatus { code: Some(((raw >> 8) & 0xff) as i32), signal: None, core_dumped: false }
    } else {
        ExitStatus { code: None, signal: Some(signal_name(sig)), core_dumped: raw & 0x80 != 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_line_is_encoded_once_and_a_clone_encodes_its_own() {
        let ev = crate::outputs::sinks::testdata::exec_in_pod(7, "2026-12-07T11:00:00Z");
        let line = ev.json_line().expect("encodes");
        let mut expected = serde_json::to_vec(&*ev).expect("encodes");
        expected.push(b'\n');
        assert_eq!(&line[..], &expected[..]);
        // Every output asking again gets the same bytes, not a new encoding.
        assert_eq!(ev.json_line().expect("encodes").as_ptr(), line.as_ptr());
        assert_eq!(ev.json(), std::str::from_utf8(&expected[..expected.len() - 1]).ok());
        // A clone that is changed afterwards is encoded as changed.
        let mut other = (*ev).clone();
        assert_eq!(other, *ev, "the encoding never makes events unequal");
        Arc::make_mut(&mut other.process).pid = 8;
        let back: Event = serde_json::from_slice(other.json_line().expect("encodes")).expect("reads back");
        assert_eq!(back.process.pid, 8);
    }

    #[test]
    fn a_shared_process_is_encoded_once_and_spliced_into_each_line() {
        let ev = crate::outputs::sinks::testdata::exec_in_pod(7, "2026-12-07T11:00:00Z");
        let mut second = (*ev).clone();
        second.process = ev.process.clone();
        second.time = Timestamp(ev.time.0 + std::time::Duration::from_nanos(1));
        let (a, b) = (ev.json().expect("encodes"), second.json().expect("encodes"));
        // One encoding of the process, shared by both events...
        let raw = ev.process.json().expect("encodes");
        assert_eq!(raw.get().as_ptr(), second.process.json().expect("encodes").get().as_ptr());
        // ...spliced verbatim, and what the fields encode to.
        assert!(a.contains(&format!(r#""process":{},"#, raw.get())), "{a}");
        let fields = serde_json::to_value(&**ev.process).expect("encodes");
        for line in [a, b] {
            let v: serde_json::Value = serde_json::from_str(line).expect("JSON");
            assert_eq!(v["process"], fields);
            let back: Event = serde_json::from_str(line).expect("reads back");
            assert_eq!(*back.process, *ev.process);
        }
        // serde_json::to_value sees the same object as the line.
        assert_eq!(serde_json::to_value(&*ev).expect("encodes")["process"], fields);
        // Changed through a clone, the clone's line shows the change and the original's does not.
        let mut changed = (*ev.process).clone();
        changed.comm = "wget".into();
        assert!(changed.json().expect("encodes").get().contains(r#""comm":"wget""#));
        assert!(!ev.process.json().expect("encodes").get().contains("wget"));
        // In place, too: the old encoding is dropped.
        let mut p = Encoded::new((**ev.process).clone());
        assert!(p.json().expect("encodes").get().contains(r#""comm":"curl""#));
        p.comm = "wget".into();
        assert!(p.json().expect("encodes").get().contains(r#""comm":"wget""#));
        // The pod and cgroup objects are shared and spliced the same way.
        let v: serde_json::Value = serde_json::from_str(a).expect("JSON");
        assert_eq!(v["pod"], serde_json::to_value(&**ev.pod.as_ref().expect("pod")).expect("encodes"));
        assert_eq!(v["cgroup"], serde_json::to_value(&**ev.cgroup).expect("encodes"));
    }

    #[test]
    fn times_are_written_in_rfc3339_nanoseconds_and_malformed_ones_are_refused() {
        let t = "2026-11-22T17:57:57.192572679Z";
        let ev = crate::outputs::sinks::testdata::exec_in_pod(1, t);
        let v: serde_json::Value = serde_json::from_str(ev.json().expect("encodes")).expect("JSON");
        assert_eq!(v["time"], t);
        // Whole seconds keep their nine digits, as every event's time does.
        let ev = crate::outputs::sinks::testdata::exec_in_pod(1, "2026-01-01T00:00:00Z");
        assert!(ev.json().expect("encodes").starts_with(r#"{"time":"2026-01-01T00:00:00.000000000Z","#));
        let mut v = serde_json::to_value(&*ev).expect("encodes");
        v["time"] = "yesterday".into();
        let err = serde_json::from_value::<Event>(v).expect_err("not a time");
        assert!(err.to_string().contains("time") || err.to_string().contains("invalid"), "{err}");
    }

    #[test]
    fn timestamps_read_as_humantime_writes_them() {
        use std::time::{Duration, UNIX_EPOCH};
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut times = vec![UNIX_EPOCH, UNIX_EPOCH + Duration::new(1, 999_999_999)];
        for _ in 0..2000 {
            // xorshift: seconds up to year 2500, any nanosecond; every other
            // one in the same second as the one before.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let prev = times.last().copied().unwrap_or(UNIX_EPOCH);
            times.push(if x.is_multiple_of(2) {
                UNIX_EPOCH + Duration::new(x % 16_725_225_600, (x >> 32) as u32 % 1_000_000_000)
            } else {
                let secs = prev.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
                UNIX_EPOCH + Duration::new(secs, (x >> 20) as u32 % 1_000_000_000)
            });
        }
        times.push(UNIX_EPOCH + Duration::from_secs(253_402_300_799));
        for t in times {
            assert_eq!(Timestamp(t).to_string(), humantime::format_rfc3339_nanos(t).to_string(), "{t:?}");
        }
        // Beyond what humantime writes: clamped, never a panic or an error.
        let before = Timestamp(UNIX_EPOCH - Duration::from_secs(1)).to_string();
        assert_eq!(before, "1970-01-01T00:00:00.000000000Z");
        let after = Timestamp(UNIX_EPOCH + Duration::from_secs(300_000_000_000)).to_string();
        assert_eq!(after, "9999-12-31T23:59:59.999999999Z");
    }

    #[test]
    fn exit_codes_and_signals() {
        assert_eq!(exit_status(0).code, Some(0));
        assert_eq!(exit_status(3 << 8).code, Some(3));
        let k = exit_status(9);
        assert_eq!((k.code, k.signal.as_deref()), (None, Some("SIGKILL")));
        assert!(exit_status(11 | 0x80).core_dumped);
    }

    #[test]
    fn invalid_utf8_is_escaped_not_replaced() {
        assert_eq!(lossless_string(b"abc"), "abc");
        assert_eq!(lossless_string(b"a\xffb"), "a\\xffb");
        assert_eq!(lossless_string(b"\xe2\x82"), "\\xe2\\x82");
    }
}

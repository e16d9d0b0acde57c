//! Process cache: tgid → binary, args, cwd, parent. Seeded from /proc at
//! start-up so processes older than the agent are still described, kept
//! current by exec/fork/exit records, and bounded: exited processes linger a
//! while (late events still resolve), then go; past capacity the oldest exited
//! go first.

use std::{
    collections::{HashMap, VecDeque},
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::pipeline::event::lossless_string;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessInfo {
    pub ppid: u32,
    /// The path exec was given, made absolute.
    pub binary: Option<Arc<str>>,
    /// The resolved path of the file that runs (symlinks followed); for a
    /// script, its interpreter.
    pub executable: Option<Arc<str>>,
    pub args: Arc<[String]>,
    pub args_truncated: bool,
    pub cwd: Option<Arc<str>>,
    /// The `Process` its last event showed, for the next to share.
    pub shown: Shown,
}

/// The process an event showed and what it was built from besides the
/// cache entry (the record header's thread, ids and name, the parent's
/// binary): the next event whose facts are the same shares it, JSON
/// included. Kept from a process's second event on (`seen`: a process with
/// one event, most of a node's, holds no copy: ~600 bytes each), forgotten
/// when the entry is cloned (a fork) or replaced (an exec).
#[derive(Default)]
pub struct Shown {
    pub last: Option<ShownProcess>,
    pub seen: bool,
}

pub struct ShownProcess {
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    pub comm: [u8; 16],
    pub parent_binary: Option<Arc<str>>,
    pub process: Arc<crate::pipeline::event::Encoded<crate::pipeline::event::Process>>,
}

impl Clone for Shown {
    fn clone(&self) -> Self {
        Shown::default()
    }
}

impl PartialEq for Shown {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.last.is_some() { "shown" } else { "not shown" })
    }
}

pub struct ProcessCache {
    map: HashMap<u32, ProcessInfo, foldhash::fast::RandomState>,
    exited: VecDeque<(u32, Instant)>,
    capacity: usize,
    linger: Duration,
    proc_root: std::path::PathBuf,
    /// Masks secrets in argv before anything is stored.
    pub redactor: std::sync::Arc<crate::pipeline::redact::Redactor>,
    pub misses: u64,
    pub evictions: u64,
}

impl ProcessCache {
    pub fn new(capacity: usize, linger: Duration) -> ProcessCache {
        ProcessCache::with_proc_root(capacity, linger, "/proc")
    }

    pub fn with_proc_root(capacity: usize, linger: Duration, root: impl AsRef<Path>) -> ProcessCache {
        ProcessCache {
            map: HashMap::default(),
            exited: VecDeque::new(),
            capacity: capacity.max(16),
            linger,
            proc_root: root.as_ref().to_path_buf(),
            redactor: Default::default(),
            misses: 0,
            evictions: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Reads every process in /proc. Returns how many were loaded.
    pub fn seed(&mut self) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.proc_root) else {
            return 0;
        };
        let mut n = 0;
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(info) = read_proc(&self.proc_root, pid, &self.redactor) {
                self.insert(pid, info);
                n += 1;
            }
        }
        n
    }

    fn insert(&mut self, pid: u32, info: ProcessInfo) {
        if self.map.len() >= self.capacity && !self.map.contains_key(&pid) {
            self.evict_one();
        }
        self.map.insert(pid, info);
    }

    fn evict_one(&mut self) {
        while let Some((pid, _)) = self.exited.pop_front() {
            if self.map.remove(&pid).is_some() {
                self.evictions += 1;
                return;
            }
        }
        // No exited process left: drop an arbitrary live one; it is re-read
        // from /proc if it shows up again.
        if let Some(&pid) = self.map.keys().next() {
            self.map.remove(&pid);
            self.evictions += 1;
        }
    }

    pub fn on_exec(&mut self, pid: u32, info: ProcessInfo) {
        self.insert(pid, info);
    }

    /// A child starts as a copy of its parent (same binary and args until it execs).
    pub fn on_fork(&mut self, child: u32, parent: u32) {
        let mut info = self.get(parent).cloned().unwrap_or_default();
        info.ppid = parent;
        self.insert(child, info);
    }

    pub fn on_exit(&mut self, pid: u32, now: Instant) {
        self.exited.push_back((pid, now));
    }

    /// Drops processes that exited more than `linger` ago.
    pub fn expire(&mut self, now: Instant) {
        while let Some(&(pid, t)) = self.exited.front() {
            if now.duration_since(t) < self.linger {
                break;
            }
            self.exited.pop_front();
            self.map.remove(&pid);
        }
    }

    pub fn peek(&self, pid: u32) -> Option<&ProcessInfo> {
        self.map.get(&pid)
    }

    /// Looks a process up, reading /proc on a miss (counted). None if it is
    /// gone already: the event is still emitted with what the kernel gave.
    pub fn get(&mut self, pid: u32) -> Option<&ProcessInfo> {
        self.get_mut(pid).map(|i| &*i)
    }

    /// As `get`, to update what the entry keeps ([`ProcessInfo::shown`]).
    pub fn get_mut(&mut self, pid: u32) -> Option<&mut ProcessInfo> {
        if !self.map.contains_key(&pid) {
            self.misses += 1;
            let info = read_proc(&self.proc_root, pid, &self.redactor)?;
            self.insert(pid, info);
        }
        self.map.get_mut(&pid)
    }
}

/// A process as /proc shows it, its argv redacted before it is stored.
fn read_proc(root: &Path, pid: u32, redactor: &crate::pipeline::redact::Redactor) -> Option<ProcessInfo> {
    let dir = root.join(pid.to_string());
    let status = std::fs::read_to_string(dir.join("status")).ok()?;
    let ppid =
        status.lines().find_map(|l| l.strip_prefix("PPid:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    let binary: Option<Arc<str>> = std::fs::read_link(dir.join("exe")).ok().map(|p| {
        use std::os::unix::ffi::OsStrExt;
        lossless_string(p.as_os_str().as_bytes()).into()
    });
    let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
    let mut args: Vec<String> = cmdline.split(|&c| c == 0).map(lossless_string).collect();
    if args.last().is_some_and(|a| a.is_empty()) {
        args.pop();
    }
    redactor.redact(&mut args);
    let cwd = std::fs::read_link(dir.join("cwd")).ok().map(|p| {
        use std::os::unix::ffi::OsStrExt;
        lossless_string(p.as_os_str().as_bytes()).into()
    });
    // /proc/PID/exe is the resolved executable; it is the best "binary" there is.
    Some(ProcessInfo {
        ppid,
        executable: binary.clone(),
        binary,
        args: args.into(),
        args_truncated: false,
        cwd,
        shown: Shown::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(b: &str) -> ProcessInfo {
        ProcessInfo { binary: Some(b.into()), ..Default::default() }
    }

    #[test]
    fn seeds_from_proc_including_this_process() {
        let mut c = ProcessCache::new(1 << 16, Duration::from_secs(30));
        assert!(c.seed() > 0);
        let me = std::process::id();
        let p = c.peek(me).expect("self in cache");
        assert!(p.binary.is_some());
        assert!(!p.args.is_empty());
    }

    #[test]
    fn fork_copies_parent_and_exec_replaces() {
        let mut c = ProcessCache::with_proc_root(100, Duration::from_secs(30), "/nonexistent");
        c.on_exec(10, info("/bin/bash"));
        c.on_fork(11, 10);
        assert_eq!(c.peek(11).and_then(|p| p.binary.as_deref()), Some("/bin/bash"));
        assert_eq!(c.peek(11).map(|p| p.ppid), Some(10));
        c.on_exec(11, info("/bin/cat"));
        assert_eq!(c.peek(11).and_then(|p| p.binary.as_deref()), Some("/bin/cat"));
    }

    #[test]
    fn bounded_and_exited_go_first() {
        let mut c = ProcessCache::with_proc_root(16, Duration::from_secs(3600), "/nonexistent");
        for pid in 0..16 {
            c.on_exec(pid, info("/x"));
        }
        c.on_exit(3, Instant::now());
        c.on_exec(100, info("/y"));
        assert_eq!(c.len(), 16);
        assert!(c.peek(3).is_none(), "the exited process is evicted first");
        for pid in 200..300 {
            c.on_exec(pid, info("/z"));
        }
        assert_eq!(c.len(), 16);
    }

    #[test]
    fn exited_linger_then_expire() {
        let mut c = ProcessCache::with_proc_root(100, Duration::from_secs(5), "/nonexistent");
        let t0 = Instant::now();
        c.on_exec(7, info("/x"));
        c.on_exit(7, t0);
        c.expire(t0 + Duration::from_secs(1));
        assert!(c.peek(7).is_some(), "late events still resolve");
        c.expire(t0 + Duration::from_secs(6));
        assert!(c.peek(7).is_none());
    }

    #[test]
    fn gone_process_is_a_counted_miss() {
        let mut c = ProcessCache::with_proc_root(100, Duration::from_secs(5), "/nonexistent");
        assert!(c.get(12345).is_none());
        assert_eq!(c.misses, 1);
    }
}

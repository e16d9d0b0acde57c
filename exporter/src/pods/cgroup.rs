//! cgroup id → cgroup path → pod uid and container id.
//!
//! A cgroup's id is its cgroup2 inode number. Paths come from `cgroup_mkdir`
//! records as cgroups are created, from a walk of the cgroup2 tree at start-up,
//! and from a (rate-limited) re-walk on a miss. The pod and container are read
//! from kubelet's naming, for both cgroup drivers:
//!
//! - systemd: `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope`
//! - cgroupfs: `kubepods/burstable/pod<uid>/<id>`
//!
//! and the runtimes' scope prefixes (`cri-containerd-`, `crio-`, `docker-`).

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// Where the cgroup2 hierarchy is mounted, from /proc/self/mountinfo
/// (`/sys/fs/cgroup` on unified hosts, `/sys/fs/cgroup/unified` on hybrid ones).
pub fn cgroup2_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    parse_mountinfo_cgroup2(&info)
}

fn parse_mountinfo_cgroup2(info: &str) -> Option<PathBuf> {
    for line in info.lines() {
        // "36 25 0:31 / /sys/fs/cgroup/unified rw,... shared:10 - cgroup2 cgroup2 rw,..."
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if right.split_whitespace().next() == Some("cgroup2") {
            let mount_point = left.split_whitespace().nth(4)?;
            return Some(PathBuf::from(mount_point.replace("\\040", " ")));
        }
    }
    None
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    pub pod_uid: String,
    pub container_id: Option<String>,
    pub runtime: Option<&'static str>,
}

fn is_uid(s: &str) -> bool {
    s.len() >= 8 && s.bytes().all(|c| c.is_ascii_hexdigit() || c == b'-')
}

fn is_container_id(s: &str) -> bool {
    s.len() >= 12 && s.len() <= 128 && s.bytes().all(|c| c.is_ascii_hexdigit())
}

fn pod_uid_of(component: &str) -> Option<String> {
    // systemd driver: "...-pod<uid>.slice", underscores for dashes.
    if let Some(stem) = component.strip_suffix(".slice") {
        let idx = stem.rfind("-pod")?;
        let uid = stem[idx + 4..].replace('_', "-");
        return is_uid(&uid).then_some(uid);
    }
    // cgroupfs driver: "pod<uid>".
    let uid = component.strip_prefix("pod")?;
    is_uid(uid).then(|| uid.to_owned())
}

fn container_of(component: &str) -> Option<(String, Option<&'static str>)> {
    let stem = component.strip_suffix(".scope").unwrap_or(component);
    const RUNTIMES: [(&str, &str); 5] = [
        ("cri-containerd-", "containerd"),
        ("crio-conmon-", "cri-o"),
        ("crio-", "cri-o"),
        ("docker-", "docker"),
        ("containerd-", "containerd"),
    ];
    for (prefix, runtime) in RUNTIMES {
        if let Some(id) = stem.strip_prefix(prefix) {
            return is_container_id(id).then(|| (id.to_owned(), Some(runtime)));
        }
    }
    is_container_id(stem).then(|| (stem.to_owned(), None))
}

/// Reads kubelet's naming out of a cgroup path. None for anything not under a
/// `kubepods` cgroup (host processes, system services) or of unknown shape.
pub fn parse_kubelet_path(path: &str) -> Option<PodRef> {
    if !path.contains("kubepods") {
        return None;
    }
    let mut components = path.split('/').filter(|c| !c.is_empty());
    let pod_uid = components.by_ref().find_map(pod_uid_of)?;
    let (container_id, runtime) = match components.next().and_then(container_of) {
        Some((id, rt)) => (Some(id), rt),
        None => (None, None),
    };
    Some(PodRef { pod_uid, container_id, runtime })
}

/// Maps cgroup ids to paths relative to the cgroup2 root ("/kubepods.slice/...").
pub struct CgroupResolver {
    root: Option<PathBuf>,
    paths: HashMap<u64, String>,
    last_walk: Option<Instant>,
    pub misses: u64,
}

const MAX_DEPTH: usize = 12;
const MAX_ENTRIES: usize = 200_000;
const REWALK_EVERY: Duration = Duration::from_millis(500);

impl CgroupResolver {
    pub fn new(root: Option<PathBuf>) -> CgroupResolver {
        let mut r = CgroupResolver { root, paths: HashMap::new(), last_walk: None, misses: 0 };
        r.walk();
        r
    }

    pub fn len(&self) -> usize {
        self.paths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// From a `cgroup_mkdir` record: the kernel gives the path directly.
    pub fn insert(&mut self, id: u64, path: String) {
        if self.paths.len() >= MAX_ENTRIES {
            self.paths.clear(); // rebuilt by the next walk; bounded memory beats perfect recall
        }
        self.paths.insert(id, path);
    }

    pub fn resolve(&mut self, id: u64) -> Option<String> {
        if let Some(p) = self.paths.get(&id) {
            return Some(p.clone());
        }
        self.misses += 1;
        if self.last_walk.is_none_or(|t| t.elapsed() >= REWALK_EVERY) {
            self.walk();
        }
        self.paths.get(&id).cloned()
    }

    /// Every known (id, path).
    pub fn entries(&self) -> Vec<(u64, String)> {
        self.paths.iter().map(|(id, p)| (*id, p.clone())).collect()
    }

    /// Forgets a cgroup (its directory is gone).
    pub fn forget(&mut self, id: u64) {
        self.paths.remove(&id);
    }

    /// Whether the id is known (without re-walking).
    pub fn knows(&self, id: u64) -> bool {
        self.paths.contains_key(&id)
    }

    /// The known path, without re-walking on a miss.
    pub fn peek(&self, id: u64) -> Option<String> {
        self.paths.get(&id).cloned()
    }

    /// Whether a cgroup path (relative to the cgroup2 root) still exists.
    pub fn exists(&self, path: &str) -> bool {
        self.clone_probe().exists(path)
    }

    /// A handle that checks paths without holding the resolver.
    pub fn clone_probe(&self) -> CgroupProbe {
        CgroupProbe { root: self.root.clone() }
    }

    fn walk(&mut self) {
        self.last_walk = Some(Instant::now());
        let Some(root) = self.root.clone() else {
            return;
        };
        let mut stack = vec![(root.clone(), 0usize)];
        while let Some((dir, depth)) = stack.pop() {
            let Ok(meta) = std::fs::metadata(&dir) else {
                continue;
            };
            let rel = relative(&root, &dir);
            if self.paths.len() < MAX_ENTRIES {
                self.paths.insert(meta.ino(), rel);
            }
            if depth >= MAX_DEPTH {
                continue;
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push((e.path(), depth + 1));
                }
            }
        }
    }
}

/// Checks whether cgroup paths still exist, without the resolver's lock.
pub struct CgroupProbe {
    root: Option<PathBuf>,
}

impl CgroupProbe {
    pub fn exists(&self, path: &str) -> bool {
        match &self.root {
            Some(root) => root.join(path.trim_start_matches('/')).exists(),
            None => true,
        }
    }
}

fn relative(root: &Path, dir: &Path) -> String {
    match dir.strip_prefix(root) {
        Ok(p) if p.as_os_str().is_empty() => "/".to_owned(),
        Ok(p) => format!("/{}", p.to_string_lossy()),
        Err(_) => dir.to_string_lossy().into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f2b1c6a8e9d0b3c5a7f1e2d4c6b8a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b";

    #[test]
    fn systemd_driver_containerd() {
        let p = format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod6b1f0a52_2c3d_4e5f_8a9b_0c1d2e3f4a5b.slice/cri-containerd-{ID}.scope");
        let r = parse_kubelet_path(&p).expect("parsed");
        assert_eq!(r.pod_uid, "6b1f0a52-2c3d-4e5f-8a9b-0c1d2e3f4a5b");
        assert_eq!(r.container_id.as_deref(), Some(ID));
        assert_eq!(r.runtime, Some("containerd"));
    }

    #[test]
    fn systemd_guaranteed_crio_and_docker() {
        let p =
            format!("/kubepods.slice/kubepods-pod0c1d2e3f_4a5b_6c7d_8e9f_a0b1c2d3e4f5.slice/crio-{ID}.scope");
        let r = parse_kubelet_path(&p).expect("parsed");
        assert_eq!(r.pod_uid, "0c1d2e3f-4a5b-6c7d-8e9f-a0b1c2d3e4f5");
        assert_eq!(r.runtime, Some("cri-o"));
        let p = format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0c1d2e3f_4a5b_6c7d_8e9f_a0b1c2d3e4f5.slice/docker-{ID}.scope");
        assert_eq!(parse_kubelet_path(&p).expect("parsed").runtime, Some("docker"));
    }

    #[test]
    fn cgroupfs_driver() {
        let p = format!("/kubepods/burstable/pod6b1f0a52-2c3d-4e5f-8a9b-0c1d2e3f4a5b/{ID}");
        let r = parse_kubelet_path(&p).expect("parsed");
        assert_eq!(r.pod_uid, "6b1f0a52-2c3d-4e5f-8a9b-0c1d2e3f4a5b");
        assert_eq!(r.container_id.as_deref(), Some(ID));
        assert_eq!(r.runtime, None);
        // Pod-level cgroup (the pause sandbox's parent): pod known, container not.
        let r = parse_kubelet_path("/kubepods/pod6b1f0a52-2c3d-4e5f-8a9b-0c1d2e3f4a5b").expect("parsed");
        assert_eq!(r.container_id, None);
    }

    #[test]
    fn nested_under_kind_or_containerd_service() {
        let p = format!("/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod6b1f0a52_2c3d_4e5f_8a9b_0c1d2e3f4a5b.slice/cri-containerd-{ID}.scope");
        assert!(parse_kubelet_path(&p).is_some());
    }

    #[test]
    fn unknown_shapes_are_not_pods() {
        for p in [
            "/",
            "/system.slice/sshd.service",
            "/user.slice/user-0.slice/session-1.scope",
            "/kubepods.slice",
            "/kubepods.slice/kubepods-besteffort.slice",
            "/kubepods/burstable/podZZZ/abc",
            "/kubepods.slice/kubepods-pod.slice",
            "",
        ] {
            assert_eq!(parse_kubelet_path(p), None, "{p}");
        }
        // Pod known, container component of unknown shape: keep the pod, drop the container.
        let r = parse_kubelet_path("/kubepods/pod6b1f0a52-2c3d-4e5f-8a9b-0c1d2e3f4a5b/not-an-id")
            .expect("parsed");
        assert_eq!(r.container_id, None);
    }

    #[test]
    fn mountinfo_hybrid_and_unified() {
        let hybrid = "35 24 0:30 / /sys/fs/cgroup/unified rw,nosuid shared:9 - cgroup2 cgroup2 rw\n36 24 0:31 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        assert_eq!(parse_mountinfo_cgroup2(hybrid), Some(PathBuf::from("/sys/fs/cgroup/unified")));
        let unified = "30 24 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(parse_mountinfo_cgroup2(unified), Some(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(parse_mountinfo_cgroup2("garbage\n\n - \n"), None);
    }
}

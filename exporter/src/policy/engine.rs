//! Puts a compiled policy set into the kernel, atomically, and keeps each
//! cgroup's policy mask in step with pods and policies.
//!
//! Reload protocol (no event sees no policy or half a policy):
//! 1. write every entry of the new set under the inactive generation byte;
//! 2. write the new generation's mask of every known cgroup into that
//!    generation's own map (the active map is not touched);
//! 3. flip `PolicyConfig::active` — one array-element update, which the kernel
//!    reads once per event;
//! 4. wait until every program run that may have read the old generation has
//!    ended (an RCU grace period: BPF programs run inside RCU read-side
//!    sections), then delete the old generation's entries.
//!
//! Until step 3 every probe matches the old set completely; after it, the new
//! one completely. The probes never stop, so no event is missed. Without the
//! wait in step 4, a probe that read the old generation just before the flip
//! and was interrupted before its trie lookup (a descheduled vCPU is enough)
//! found the old entries gone and judged its event by no policy.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, RwLock},
};

use anyhow::Context as _;
use aya::maps::{lpm_trie::Key, Array, HashMap as BpfHashMap, LpmTrie, MapData};
use podwatch_common::{
    identity, policy::MAX_PRIVILEGE_RULES, suffix_filter, InodeKey, MatchSet, PolicyConfig, PrivilegeRule,
    ADDR_KEY_LEN, PATH_KEY_LEN,
};

use super::{
    compile::{compile, Compiled, IdentityWant, Prefix, RuleInfo},
    Policy,
};
use crate::{
    kernel::read_guard::ReadGuard,
    pods::{cgroup::parse_kubelet_path, PodStore},
};

type PathTrie = LpmTrie<MapData, [u8; PATH_KEY_LEN], MatchSet>;
type AddrTrie = LpmTrie<MapData, [u8; ADDR_KEY_LEN], MatchSet>;

/// The kernel maps policies live in.
pub struct PolicyMaps {
    pub config: Array<MapData, PolicyConfig>,
    /// Per-cgroup policy masks, one map per generation (see the kernel's
    /// CGROUP_MASKS_0/1: a reload writes only the inactive one).
    pub cgroups: [BpfHashMap<MapData, u64, u64>; 2],
    pub exec_paths: PathTrie,
    pub exec_suffixes: PathTrie,
    pub file_paths: PathTrie,
    pub file_suffixes: PathTrie,
    pub addrs: AddrTrie,
    /// Rules by the device and inode of the files and directories they name.
    pub identities: BpfHashMap<MapData, InodeKey, MatchSet>,
    /// One bit per hashed inode number in `identities` (either generation).
    pub identity_filter: Array<MapData, u64>,
    /// Privilege rules, `MAX_PRIVILEGE_RULES` slots per generation.
    pub privilege_rules: Array<MapData, PrivilegeRule>,
    /// The suffix tries' prefilter (`suffix_filter`), per generation and kind.
    pub suffix_filter: Array<MapData, u64>,
}

/// The identity entries of one generation: (role, dev, ino) → rules, as the
/// engine last wrote them.
type Identities = BTreeMap<(u8, u32, u64), Vec<podwatch_common::RuleRef>>;

/// Stats what `wants` name (following symlinks): the identity entries of a
/// set as the file system is now. Paths that do not exist, and directories
/// wanted as directories that are not, give no entry.
fn resolve_identities(wants: &[IdentityWant]) -> Identities {
    use std::os::unix::fs::MetadataExt;
    let mut out = Identities::new();
    for w in wants {
        let Ok(m) = std::fs::metadata(&w.path) else { continue };
        let is_dir_role = w.role == identity::FILE_DIR || w.role == identity::EXEC_DIR;
        if is_dir_role && !m.is_dir() {
            continue;
        }
        let refs = out.entry((w.role, identity::kernel_dev(m.dev()), m.ino())).or_default();
        if !refs.contains(&w.rule) {
            refs.push(w.rule);
        }
    }
    out
}

fn identity_set(refs: &[podwatch_common::RuleRef]) -> MatchSet {
    let mut set = MatchSet::default();
    // More rules than an entry holds on one file: the strongest actions win a slot.
    let mut refs = refs.to_vec();
    refs.sort_by_key(|r| std::cmp::Reverse(r.action));
    for (slot, r) in set.refs.iter_mut().zip(refs) {
        *slot = r;
    }
    set
}

/// `PolicyConfig::deny` bits: which kinds of deny rule a set holds.
fn deny_bits(policies: &[Policy]) -> u32 {
    use super::{Action, Matcher};
    policies.iter().flat_map(|p| &p.rules).filter(|r| r.action == Action::Deny).fold(0, |bits, r| {
        bits | match r.matcher {
            Matcher::File(_) => podwatch_common::DENY_FILES,
            Matcher::Exec(_) => podwatch_common::DENY_EXECS,
            Matcher::Network(_) | Matcher::Privileges(_) => 0,
        }
    })
}

/// A rule the read guard enforces: kill on reading a file it names.
fn guards_read(role: u8, r: &podwatch_common::RuleRef) -> bool {
    role == identity::FILE_SELF
        && r.action == podwatch_common::action::KILL
        && r.ops & podwatch_common::policy::OP_READ != 0
}

/// Whether a generation's identity entries hold a kill rule on reading a
/// file itself (`PolicyConfig::guard_reads`).
fn guards_reads(ids: &Identities) -> u32 {
    ids.iter().any(|((role, _, _), refs)| refs.iter().any(|r| guards_read(*role, r))) as u32
}

/// Whether a set needs the read guard attached: whether it names such a
/// file, present now or not (it may appear later).
fn needs_read_guard(wants: &[IdentityWant]) -> bool {
    wants.iter().any(|w| guards_read(w.role, &w.rule))
}

/// `PolicyConfig::identity` bits of a generation's entries.
fn identity_bits(ids: &Identities) -> u32 {
    ids.keys().fold(0, |bits, (role, _, _)| bits | 1 << role)
}

/// Rule id → (policy, rule, action), for events and metrics. Old sets' rules
/// stay (their counters may still be in the kernel).
#[derive(Default, Debug)]
pub struct RuleNames {
    names: RwLock<HashMap<u16, RuleInfo>>,
    /// Bumped by every change, so a reader's own copy knows when it is stale.
    version: std::sync::atomic::AtomicU64,
}

impl RuleNames {
    pub fn get(&self, id: u16) -> Option<RuleInfo> {
        self.names.read().ok()?.get(&id).cloned()
    }

    pub fn version(&self) -> u64 {
        self.version.load(std::sync::atomic::Ordering::Acquire)
    }

    fn extend(&self, rules: &[RuleInfo]) {
        if let Ok(mut n) = self.names.write() {
            for r in rules {
                n.insert(r.id, r.clone());
            }
        }
        self.version.fetch_add(1, std::sync::atomic::Ordering::Release);
    }
}

/// Load state for /metrics.
#[derive(Default, Debug)]
pub struct PolicyStatus {
    pub policies: std::sync::atomic::AtomicU64,
    pub rules: std::sync::atomic::AtomicU64,
    pub reloads_ok: std::sync::atomic::AtomicU64,
    pub reloads_failed: std::sync::atomic::AtomicU64,
    pub generation: std::sync::atomic::AtomicU64,
    /// Unix seconds of the last successful load.
    pub last_success: std::sync::atomic::AtomicU64,
    pub last_error: RwLock<Option<String>>,
    /// Whether the read guard's attachments are in place (only while a
    /// loaded rule needs them: `kernel::read_guard`).
    pub read_guard_attached: std::sync::atomic::AtomicBool,
    /// Loaded rules whose kernel programs are not attached (not ready while any).
    pub unenforced: RwLock<Vec<crate::policy::coverage::Unenforced>>,
}

pub struct PolicyEngine {
    maps: PolicyMaps,
    active: u8,
    policies: Vec<Policy>,
    filter: bool,
    next_rule_id: u16,
    /// Mirror of the kernel's cgroup map.
    masks: HashMap<u64, [u64; 2]>,
    /// What the active set wants matched by identity, and the entries each
    /// generation has in the kernel (re-stated on `refresh`: a file replaced
    /// by rename gets a new inode).
    identity_wants: Vec<IdentityWant>,
    identities: [Identities; 2],
    /// Mirror of the kernel's suffix prefilter, `[generation][kind]`.
    suffix_words: [[Vec<u64>; 2]; 2],
    pub names: Arc<RuleNames>,
    pub status: Arc<PolicyStatus>,
    /// The programs' attach state, to check each loaded set against.
    sensors: Option<Vec<crate::kernel::loader::SensorStatus>>,
    /// Attached while the loaded set needs it (none before the programs
    /// are attached, and in tests).
    read_guard: Option<ReadGuard>,
}

fn path_key(gen: u8, p: &Prefix) -> Key<[u8; PATH_KEY_LEN]> {
    let mut data = [0u8; PATH_KEY_LEN];
    data[0] = gen;
    data[1..1 + p.data.len()].copy_from_slice(&p.data);
    Key::new(8 + p.bits, data)
}

fn addr_key(gen: u8, v6: bool, p: &Prefix) -> Key<[u8; ADDR_KEY_LEN]> {
    let mut data = [0u8; ADDR_KEY_LEN];
    data[0] = (gen << 1) | v6 as u8;
    data[1..1 + p.data.len()].copy_from_slice(&p.data);
    Key::new(8 + p.bits, data)
}

fn write_paths(trie: &mut PathTrie, gen: u8, entries: &[(Prefix, MatchSet)]) -> anyhow::Result<()> {
    for (p, set) in entries {
        trie.insert(&path_key(gen, p), set, 0).context("writing a path rule to the kernel")?;
    }
    Ok(())
}

/// The suffix prefilter's words for one kind of rule: the bit of each suffix
/// key's last two bytes (keys are stored reversed: `data[0]` is the path's
/// last byte). A one-byte suffix sets every bit it can end a path in, an
/// empty one every bit.
fn suffix_filter_words(entries: &[(Prefix, MatchSet)]) -> Vec<u64> {
    let mut words = vec![0u64; suffix_filter::WORDS as usize];
    let mut set = |bit: u32| words[(bit >> 6) as usize] |= 1 << (bit & 63);
    for (p, _) in entries {
        match (p.bits / 8, p.data.as_slice()) {
            (n, [last, prev, ..]) if n >= 2 => set(suffix_filter::bit(*last, *prev)),
            (1, [last, ..]) => (0..=255).for_each(|prev| set(suffix_filter::bit(*last, prev))),
            _ => (0..1 << 16).for_each(&mut set),
        }
    }
    words
}

fn clear_paths(trie: &mut PathTrie, gen: u8) {
    let old: Vec<_> = trie.keys().filter_map(Result::ok).filter(|k| k.data()[0] == gen).collect();
    for k in old {
        let _ = trie.remove(&k);
    }
}

impl PolicyEngine {
    pub fn new(maps: PolicyMaps, filter: bool) -> PolicyEngine {
        PolicyEngine {
            maps,
            active: 0,
            policies: Vec::new(),
            filter,
            next_rule_id: 1,
            masks: HashMap::new(),
            identity_wants: Vec::new(),
            identities: [Identities::new(), Identities::new()],
            suffix_words: Default::default(),
            names: Arc::new(RuleNames::default()),
            status: Arc::new(PolicyStatus::default()),
            sensors: None,
            read_guard: None,
        }
    }

    /// The mask of policies that apply to a cgroup path under `policies`.
    fn mask_for(policies: &[Policy], path: &str, pods: &PodStore) -> u64 {
        let pod = parse_kubelet_path(path);
        let meta = pod.as_ref().and_then(|r| pods.get(&r.pod_uid));
        let mut mask = 0u64;
        for (bit, p) in policies.iter().enumerate() {
            let applies = match &pod {
                None => p.selector.host,
                Some(_) => p.selector.selects_pod(meta.as_ref().map(|m| (m.namespace.as_str(), &m.labels))),
            };
            if applies {
                mask |= 1 << bit;
            }
        }
        mask
    }

    fn host_mask(policies: &[Policy]) -> u64 {
        policies.iter().enumerate().filter(|(_, p)| p.selector.host).fold(0, |m, (bit, _)| m | 1 << bit)
    }

    /// Loads a new policy set (see the module doc for the protocol). On error
    /// the running set stays in force.
    /// The programs' attach state, known once they are attached (after the
    /// first set is loaded): every loaded rule is checked against it.
    pub fn set_sensors(&mut self, sensors: Vec<crate::kernel::loader::SensorStatus>, read_guard: ReadGuard) {
        self.sensors = Some(sensors);
        self.read_guard = Some(read_guard);
        self.switch_read_guard(needs_read_guard(&self.identity_wants));
        self.check_coverage();
    }

    /// Attaches or detaches the read guard. When it cannot attach, the rules
    /// that need it are not enforced: its hooks are marked so and coverage
    /// says which rules (the agent is not ready).
    fn switch_read_guard(&mut self, on: bool) {
        let Some(guard) = self.read_guard.as_mut() else { return };
        let result = guard.set(on);
        self.status.read_guard_attached.store(guard.is_attached(), std::sync::atomic::Ordering::Relaxed);
        let Err(e) = result else { return };
        tracing::error!("read guard: {e:#}");
        if !on {
            return;
        }
        let hooks: Vec<_> = guard.hooks().collect();
        for s in self.sensors.iter_mut().flatten().filter(|s| hooks.contains(&s.program.as_str())) {
            s.attached = false;
            s.error = Some(format!("{e:#}"));
        }
    }

    fn check_coverage(&self) {
        if let Some(sensors) = &self.sensors {
            let gaps = crate::policy::coverage::unenforced(&self.policies, sensors);
            for g in &gaps {
                tracing::error!("{g}");
            }
            if let Ok(mut u) = self.status.unenforced.write() {
                *u = gaps;
            }
        }
    }

    pub fn apply(
        &mut self,
        policies: Vec<Policy>,
        cgroups: &[(u64, String)],
        pods: &PodStore,
    ) -> anyhow::Result<()> {
        let result = self.try_apply(policies, cgroups, pods);
        let status = &self.status;
        use std::sync::atomic::Ordering::Relaxed;
        match &result {
            Ok(()) => {
                status.reloads_ok.fetch_add(1, Relaxed);
                let now =
                    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                status.last_success.store(now.as_secs(), Relaxed);
                if let Ok(mut e) = status.last_error.write() {
                    *e = None;
                }
                self.check_coverage();
            }
            Err(e) => {
                status.reloads_failed.fetch_add(1, Relaxed);
                if let Ok(mut last) = status.last_error.write() {
                    *last = Some(format!("{e:#}"));
                }
            }
        }
        result
    }

    fn try_apply(
        &mut self,
        policies: Vec<Policy>,
        cgroups: &[(u64, String)],
        pods: &PodStore,
    ) -> anyhow::Result<()> {
        let compiled: Compiled = compile(&policies, self.next_rule_id).map_err(anyhow::Error::msg)?;
        let next = 1 - self.active;
        let m = &mut self.maps;
        // A failed earlier reload may have left entries in the inactive generation.
        for t in [&mut m.exec_paths, &mut m.exec_suffixes, &mut m.file_paths, &mut m.file_suffixes] {
            clear_paths(t, next);
        }
        self.clear_addrs(next);
        let m = &mut self.maps;
        write_paths(&mut m.exec_paths, next, &compiled.exec_paths)?;
        write_paths(&mut m.exec_suffixes, next, &compiled.exec_suffixes)?;
        write_paths(&mut m.file_paths, next, &compiled.file_paths)?;
        write_paths(&mut m.file_suffixes, next, &compiled.file_suffixes)?;
        self.write_suffix_filter(next, suffix_filter::FILE, &compiled.file_suffixes)?;
        self.write_suffix_filter(next, suffix_filter::EXEC, &compiled.exec_suffixes)?;
        let m = &mut self.maps;
        for (v6, p, set) in &compiled.addrs {
            m.addrs
                .insert(&addr_key(next, *v6, p), set, 0)
                .context("writing a network rule to the kernel")?;
        }
        // New generation's masks for every known cgroup.
        for (id, path) in cgroups {
            let mask = Self::mask_for(&policies, path, pods);
            let entry = self.masks.entry(*id).or_insert([0; 2]);
            entry[next as usize] = mask;
            self.maps.cgroups[next as usize].insert(id, mask, 0).context("writing a cgroup's policy mask")?;
        }
        for (i, r) in compiled.privileges.iter().enumerate() {
            let slot = (next as usize * MAX_PRIVILEGE_RULES + i) as u32;
            self.maps.privilege_rules.set(slot, r, 0).context("writing a privilege rule to the kernel")?;
        }
        let ids = resolve_identities(&compiled.identities);
        self.write_identities(next, ids)?;
        // The guard is in place before a set that needs it takes effect.
        let guard = needs_read_guard(&compiled.identities);
        if guard {
            self.switch_read_guard(true);
        }
        // Flip.
        let mut cfg = self.maps.config.get(&0, 0).unwrap_or_default();
        cfg.default_masks[next as usize] = Self::host_mask(&policies);
        cfg.identity[next as usize] = identity_bits(&self.identities[next as usize]);
        cfg.guard_reads[next as usize] = guards_reads(&self.identities[next as usize]);
        cfg.deny[next as usize] = deny_bits(&policies);
        cfg.privilege_rules[next as usize] = compiled.privileges.len() as u32;
        cfg.host_ns = crate::kernel::namespaces::host();
        cfg.active = next as u32;
        cfg.filter = self.filter as u32;
        self.names.extend(&compiled.rules);
        self.maps.config.set(0, cfg, 0).context("switching to the new policy set")?;
        // Retire the old generation, once no program can still be using it.
        wait_for_running_programs();
        let old = self.active;
        self.active = next;
        let m = &mut self.maps;
        for t in [&mut m.exec_paths, &mut m.exec_suffixes, &mut m.file_paths, &mut m.file_suffixes] {
            clear_paths(t, old);
        }
        self.clear_addrs(old);
        self.write_identities(old, Identities::new())?;
        self.identity_wants = compiled.identities;
        if !guard {
            self.switch_read_guard(false);
        }
        self.next_rule_id =
            compiled.rules.last().map(|r| r.id.wrapping_add(1).max(1)).unwrap_or(self.next_rule_id);
        use std::sync::atomic::Ordering::Relaxed;
        self.status.policies.store(policies.len() as u64, Relaxed);
        self.status.rules.store(compiled.rules.len() as u64, Relaxed);
        self.status.generation.store(next as u64, Relaxed);
        self.policies = policies;
        Ok(())
    }

    /// Makes generation `gen`'s suffix prefilter for `kind` cover `entries`
    /// (written before the generation becomes active; only changed words).
    fn write_suffix_filter(
        &mut self,
        gen: u8,
        kind: u32,
        entries: &[(Prefix, MatchSet)],
    ) -> anyhow::Result<()> {
        let want = suffix_filter_words(entries);
        let have = &mut self.suffix_words[gen as usize & 1][kind as usize & 1];
        have.resize(want.len(), 0);
        for (i, (w, h)) in want.iter().zip(have.iter_mut()).enumerate() {
            if w != h {
                let slot = suffix_filter::slot(gen, kind, (i as u32) << 6);
                self.maps.suffix_filter.set(slot, w, 0).context("writing the suffix filter")?;
                *h = *w;
            }
        }
        Ok(())
    }

    /// Makes generation `gen`'s identity entries `want`: new and changed
    /// entries (and their filter bits) first, stale ones last, so an entry
    /// that stays is never missing in between.
    fn write_identities(&mut self, gen: u8, want: Identities) -> anyhow::Result<()> {
        let g = gen as usize;
        let key = |(role, dev, ino): (u8, u32, u64)| InodeKey { ino, dev, gen, role, _pad: 0 };
        let mut filter = vec![0u64; identity::FILTER_WORDS as usize];
        for (_, _, ino) in self.identities[1 - g].keys().chain(self.identities[g].keys()).chain(want.keys()) {
            let bit = identity::filter_bit(*ino);
            filter[(bit >> 6) as usize] |= 1 << (bit & 63);
        }
        for (i, w) in filter.iter().enumerate() {
            self.maps.identity_filter.set(i as u32, w, 0).context("writing the identity filter")?;
        }
        for (k, refs) in &want {
            if self.identities[g].get(k) != Some(refs) {
                self.maps
                    .identities
                    .insert(key(*k), identity_set(refs), 0)
                    .context("writing an identity rule to the kernel")?;
            }
        }
        for k in self.identities[g].keys().filter(|k| !want.contains_key(k)) {
            let _ = self.maps.identities.remove(&key(*k));
        }
        self.identities[g] = want;
        Ok(())
    }

    /// Re-states the active set's identities; a file replaced since (a new
    /// inode: `passwd` renames a new /etc/shadow into place) is matched by
    /// its new identity at once.
    fn refresh_identities(&mut self) {
        let now = resolve_identities(&self.identity_wants);
        let g = self.active as usize;
        if now == self.identities[g] {
            return;
        }
        let (bits, guard) = (identity_bits(&now), guards_reads(&now));
        if let Err(e) = self.write_identities(self.active, now) {
            tracing::warn!("refreshing identity rules: {e:#}");
            return;
        }
        let mut cfg = self.maps.config.get(&0, 0).unwrap_or_default();
        // Only ever adds roles while entries are being written; the kernel
        // reads the bits as "worth looking".
        cfg.identity[g] = bits;
        cfg.guard_reads[g] = guard;
        let _ = self.maps.config.set(0, cfg, 0);
    }

    fn clear_addrs(&mut self, gen: u8) {
        let t = &mut self.maps.addrs;
        let old: Vec<_> = t.keys().filter_map(Result::ok).filter(|k| k.data()[0] >> 1 == gen).collect();
        for k in old {
            let _ = t.remove(&k);
        }
    }

    /// Brings cgroup masks of the active set up to date: new cgroups, pods
    /// whose metadata arrived or changed. Entries of cgroups that are gone are
    /// dropped from `gone`.
    pub fn refresh(&mut self, cgroups: &[(u64, String)], gone: &[u64], pods: &PodStore) {
        self.refresh_identities();
        let gen = self.active as usize;
        for (id, path) in cgroups {
            let mask = Self::mask_for(&self.policies, path, pods);
            // Every known cgroup gets an entry, mask 0 included: absent ones
            // fall back to the host policies.
            let changed = match self.masks.get_mut(id) {
                Some(e) if e[gen] == mask => false,
                Some(e) => {
                    e[gen] = mask;
                    true
                }
                None => {
                    let mut e = [0; 2];
                    e[gen] = mask;
                    self.masks.insert(*id, e);
                    true
                }
            };
            if changed {
                let _ = self.maps.cgroups[gen].insert(id, mask, 0);
            }
        }
        for id in gone {
            if self.masks.remove(id).is_some() {
                for m in &mut self.maps.cgroups {
                    let _ = m.remove(id);
                }
            }
        }
    }

    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }
}

/// Returns once every BPF program run that started before the call has ended.
/// `membarrier(MEMBARRIER_CMD_GLOBAL)` is a `synchronize_rcu()`, and
/// tracepoint, raw-tracepoint and cgroup programs run under
/// `rcu_read_lock()` — the wait the kernel itself does after updating a
/// map-in-map from user space.
fn wait_for_running_programs() {
    const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;
    // SAFETY: membarrier takes two integers and touches no memory of ours.
    let r = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0 as libc::c_long) };
    if r != 0 {
        // Kernels built without CONFIG_MEMBARRIER, or nohz_full CPUs. The
        // programs run for microseconds with preemption off; this is many
        // times that, but not a proof.
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            tracing::warn!(
                error = %std::io::Error::last_os_error(),
                "membarrier(GLOBAL) unavailable: policy reloads wait 50 ms before retiring the old rules"
            );
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suffix(s: &str) -> (Prefix, MatchSet) {
        let mut data = s.as_bytes().to_vec();
        data.reverse();
        (Prefix { bits: data.len() as u32 * 8, data }, MatchSet::default())
    }

    fn passes(words: &[u64], path: &str) -> bool {
        let b = path.as_bytes();
        let bit = suffix_filter::bit(b[b.len() - 1], b[b.len() - 2]);
        words[(bit >> 6) as usize] & (1 << (bit & 63)) != 0
    }

    #[test]
    fn the_suffix_filter_passes_every_path_a_suffix_rule_can_match() {
        let words = suffix_filter_words(&[suffix("/.ssh/id_rsa"), suffix("/.kube/config")]);
        assert!(passes(&words, "/root/.ssh/id_rsa"));
        assert!(passes(&words, "/home/a/.kube/config"));
        // Ends in bytes no rule ends in: skipped.
        assert!(!passes(&words, "/etc/hostname"));
        assert!(!passes(&words, "/usr/lib/x86_64-linux-gnu/libc.so.6"));
        // A one-byte suffix passes every path ending in that byte.
        let words = suffix_filter_words(&[suffix("~")]);
        assert!(passes(&words, "/etc/passwd~"));
        assert!(passes(&words, "/a~~"));
        assert!(!passes(&words, "/etc/passwd"));
        // An empty suffix passes everything; no rule, nothing.
        assert!(suffix_filter_words(&[suffix("")]).iter().all(|w| *w == !0));
        assert!(suffix_filter_words(&[]).iter().all(|w| *w == 0));
    }
}

//! Loading the kernel programs and attaching each to the best hook this kernel
//! has. A hook that cannot attach is reported and skipped, never fatal, except
//! exec: without it the agent has nothing to say.

use std::{
    fs::File,
    os::fd::AsFd,
    sync::{Arc, Mutex},
};

use anyhow::{bail, Context as _};
use aya::{
    maps::{Array, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{trace_point::TracePointLinkId, CgroupAttachMode, CgroupSockAddr, RawTracePoint, TracePoint},
    Ebpf, EbpfLoader,
};
use podwatch_common::{CounterKey, CounterValue, KernelOffsets, PolicyConfig};
use serde::Serialize;
use tracing::{debug, info, warn};

use crate::{
    kernel::{
        btf::{kernel_offsets, Btf},
        read_guard::{self, ReadGuard},
    },
    policy::engine::PolicyMaps,
};

#[derive(Debug, Clone, Serialize)]
pub struct SensorStatus {
    pub program: String,
    pub hook: String,
    pub attached: bool,
    /// False when this kernel lacks the hook (a fact about it, not a fault).
    pub available: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Time spent loading (verifying) and attaching it.
    pub load_ms: u64,
    /// Instructions the verifier processed (kernels since 5.16 say).
    pub verified_insns: Option<u32>,
    /// Attached only while a loaded rule needs it (`attached` then says it
    /// verified and attached at start-up, so it can be).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub on_demand: bool,
}

/// The programs and maps in the kernel, nothing attached yet: the policies
/// go into their maps (`policy_maps`) before any program runs (`attach`), so
/// no event is judged by no policy at start-up.
pub struct Loaded {
    ebpf: Ebpf,
    offsets: KernelOffsets,
    cgroup_fd: Option<File>,
    /// Programs this kernel cannot run, with the reason.
    unavailable: Vec<(&'static str, &'static str)>,
}

pub struct Sensors {
    /// Keeps programs and links alive.
    pub ebpf: Arc<Mutex<Ebpf>>,
    /// The read-family attachments, on only while a rule needs them.
    pub read_guard: ReadGuard,
    pub status: Vec<SensorStatus>,
    pub events: RingBuf<MapData>,
    pub stats: PerCpuArray<MapData, u64>,
    pub counters: PerCpuHashMap<MapData, CounterKey, CounterValue>,
    pub offsets: KernelOffsets,
}

enum Hook {
    Tracepoint(&'static str, &'static str),
    Raw(&'static str),
    Cgroup,
    /// A BPF LSM hook (needs `bpf` in the active LSM list).
    Lsm(&'static str),
}

const PROGRAMS: &[(&str, Hook)] = &[
    ("sched_process_exec", Hook::Tracepoint("sched", "sched_process_exec")),
    ("sched_process_exit", Hook::Tracepoint("sched", "sched_process_exit")),
    ("sched_process_fork", Hook::Raw("sched_process_fork")),
    ("cgroup_mkdir", Hook::Tracepoint("cgroup", "cgroup_mkdir")),
    ("cgroup_mkdir_inherit", Hook::Raw("cgroup_mkdir")),
    ("sys_exit_open", Hook::Tracepoint("syscalls", "sys_exit_open")),
    ("sys_exit_openat", Hook::Tracepoint("syscalls", "sys_exit_openat")),
    ("sys_exit_openat2", Hook::Tracepoint("syscalls", "sys_exit_openat2")),
    ("sys_exit_creat", Hook::Tracepoint("syscalls", "sys_exit_creat")),
    ("sys_exit_open_by_handle_at", Hook::Tracepoint("syscalls", "sys_exit_open_by_handle_at")),
    ("io_uring_complete", Hook::Tracepoint("io_uring", "io_uring_complete")),
    ("sys_enter_read", Hook::Tracepoint("syscalls", "sys_enter_read")),
    ("sys_enter_readv", Hook::Tracepoint("syscalls", "sys_enter_readv")),
    ("sys_enter_pread64", Hook::Tracepoint("syscalls", "sys_enter_pread64")),
    ("sys_enter_preadv", Hook::Tracepoint("syscalls", "sys_enter_preadv")),
    ("sys_enter_preadv2", Hook::Tracepoint("syscalls", "sys_enter_preadv2")),
    ("sys_enter_sendfile64", Hook::Tracepoint("syscalls", "sys_enter_sendfile64")),
    ("sys_enter_splice", Hook::Tracepoint("syscalls", "sys_enter_splice")),
    ("sys_enter_copy_file_range", Hook::Tracepoint("syscalls", "sys_enter_copy_file_range")),
    ("sys_enter_mmap", Hook::Tracepoint("syscalls", "sys_enter_mmap")),
    ("inet_sock_set_state", Hook::Tracepoint("sock", "inet_sock_set_state")),
    ("sys_exit_accept", Hook::Tracepoint("syscalls", "sys_exit_accept")),
    ("sys_exit_accept4", Hook::Tracepoint("syscalls", "sys_exit_accept4")),
    ("connect4", Hook::Cgroup),
    ("connect6", Hook::Cgroup),
    ("sendmsg4", Hook::Cgroup),
    ("sendmsg6", Hook::Cgroup),
    ("lsm_file_open", Hook::Lsm("file_open")),
    ("lsm_bprm_check_security", Hook::Lsm("bprm_check_security")),
    ("lsm_file_permission", Hook::Lsm("file_permission")),
    ("lsm_mmap_file", Hook::Lsm("mmap_file")),
    // Credentials and namespaces: before (entry) and after (exit) each
    // syscall that changes them, and each exec.
    ("sys_enter_setuid", Hook::Tracepoint("syscalls", "sys_enter_setuid")),
    ("sys_enter_setgid", Hook::Tracepoint("syscalls", "sys_enter_setgid")),
    ("sys_enter_setreuid", Hook::Tracepoint("syscalls", "sys_enter_setreuid")),
    ("sys_enter_setregid", Hook::Tracepoint("syscalls", "sys_enter_setregid")),
    ("sys_enter_setresuid", Hook::Tracepoint("syscalls", "sys_enter_setresuid")),
    ("sys_enter_setresgid", Hook::Tracepoint("syscalls", "sys_enter_setresgid")),
    ("sys_enter_setfsuid", Hook::Tracepoint("syscalls", "sys_enter_setfsuid")),
    ("sys_enter_setfsgid", Hook::Tracepoint("syscalls", "sys_enter_setfsgid")),
    ("sys_enter_capset", Hook::Tracepoint("syscalls", "sys_enter_capset")),
    ("sys_enter_unshare", Hook::Tracepoint("syscalls", "sys_enter_unshare")),
    ("sys_enter_setns", Hook::Tracepoint("syscalls", "sys_enter_setns")),
    ("sys_enter_execve", Hook::Tracepoint("syscalls", "sys_enter_execve")),
    ("sys_enter_execveat", Hook::Tracepoint("syscalls", "sys_enter_execveat")),
    ("sys_exit_setuid", Hook::Tracepoint("syscalls", "sys_exit_setuid")),
    ("sys_exit_setgid", Hook::Tracepoint("syscalls", "sys_exit_setgid")),
    ("sys_exit_setreuid", Hook::Tracepoint("syscalls", "sys_exit_setreuid")),
    ("sys_exit_setregid", Hook::Tracepoint("syscalls", "sys_exit_setregid")),
    ("sys_exit_setresuid", Hook::Tracepoint("syscalls", "sys_exit_setresuid")),
    ("sys_exit_setresgid", Hook::Tracepoint("syscalls", "sys_exit_setresgid")),
    ("sys_exit_setfsuid", Hook::Tracepoint("syscalls", "sys_exit_setfsuid")),
    ("sys_exit_setfsgid", Hook::Tracepoint("syscalls", "sys_exit_setfsgid")),
    ("sys_exit_capset", Hook::Tracepoint("syscalls", "sys_exit_capset")),
    ("sys_exit_unshare", Hook::Tracepoint("syscalls", "sys_exit_unshare")),
    ("sys_exit_setns", Hook::Tracepoint("syscalls", "sys_exit_setns")),
    ("sys_exit_execve", Hook::Tracepoint("syscalls", "sys_exit_execve")),
    ("sys_exit_execveat", Hook::Tracepoint("syscalls", "sys_exit_execveat")),
];

/// Every program the agent reports on, by name: the open pipeline's
/// tail-called stages, then one per hook (the attachments of a program
/// shared by several hooks are named after their hook).
pub fn program_names() -> impl Iterator<Item = &'static str> {
    OPEN_STAGES.iter().copied().chain(PROGRAMS.iter().map(|(name, _)| *name))
}

/// The kernel program behind an attachment. The open-family exits share one
/// program, as do the read-family entries: the verifier checks each program
/// once, however many hooks it is attached to.
fn program_of(attachment: &str) -> &str {
    match attachment {
        "sys_exit_open"
        | "sys_exit_openat"
        | "sys_exit_openat2"
        | "sys_exit_creat"
        | "sys_exit_open_by_handle_at" => "sys_exit_open_family",
        a if read_guard::TRACEPOINTS.contains(&a) => read_guard::TRACEPOINT_PROGRAM,
        a if a.starts_with("sys_enter_") => "sys_enter_privilege",
        a if a.starts_with("sys_exit_") && !a.starts_with("sys_exit_accept") => "sys_exit_privilege",
        a => a,
    }
}

/// The sensor a program belongs to, for people and /metrics.
pub fn sensor_of(program: &str) -> &'static str {
    match program {
        "sched_process_exec" | "lsm_bprm_check_security" => "exec",
        "sched_process_exit" => "exit",
        "sched_process_fork" => "fork",
        "cgroup_mkdir" | "cgroup_mkdir_inherit" => "cgroups",
        p if read_guard::is_guard(p) => "file-reads",
        "io_uring_complete" => "file",
        "inet_sock_set_state" | "sys_exit_accept" | "sys_exit_accept4" => "tcp",
        "connect4" | "connect6" => "connect",
        "sendmsg4" | "sendmsg6" => "udp",
        p if matches!(program_of(p), "sys_enter_privilege" | "sys_exit_privilege") => "privileges",
        p if p.contains("open") || p.contains("creat") => "file",
        _ => "other",
    }
}

/// Since 5.11 BPF memory is charged to the memory cgroup; older kernels need
/// RLIMIT_MEMLOCK raised. Failing to raise it is only worth a warning.
fn raise_memlock() {
    let rlim = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: valid pointer to a local rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut v = release.trim().split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0));
        if (v.next().unwrap_or(0), v.next().unwrap_or(0)) < (5, 11) {
            warn!("could not raise RLIMIT_MEMLOCK; loading may fail on this kernel ({})", release.trim());
        } else {
            debug!("RLIMIT_MEMLOCK not raised; kernel {} charges BPF memory to the cgroup", release.trim());
        }
    }
}

fn ensure_tracefs() {
    if std::path::Path::new("/sys/kernel/tracing/events").exists()
        || std::path::Path::new("/sys/kernel/debug/tracing/events").exists()
    {
        return;
    }
    let src = c"tracefs";
    let target = c"/sys/kernel/tracing";
    // SAFETY: NUL-terminated strings; mount(2) validates the rest.
    let r = unsafe { libc::mount(src.as_ptr(), target.as_ptr(), src.as_ptr(), 0, std::ptr::null()) };
    if r != 0 {
        warn!("tracefs is not mounted and mounting it failed: {}", std::io::Error::last_os_error());
    }
}

/// What the loader needs from the configuration.
pub struct LoadOptions<'a> {
    pub ring_buffer_bytes: u32,
    pub counter_capacity: u32,
    pub count_exec_by_binary: bool,
    pub cgroup_root: Option<&'a std::path::Path>,
    /// `--events matched`: set the kernel's record filter before any program
    /// is attached, so no unjudged record slips out before the policies load.
    pub filter_records: bool,
}

/// The kernel wakes the reader once this much is pending, and the reader
/// drains on its own every `pipeline::reader::POLL` otherwise (a wakeup per
/// record costs every producing process a self-IPI). An eighth of the ring
/// leaves seven eighths of headroom for the reader to catch up.
pub fn wakeup_bytes(ring_buffer_bytes: u32) -> u64 {
    (ring_buffer_bytes / 8).max(4096) as u64
}

pub fn load(opts: &LoadOptions) -> anyhow::Result<Loaded> {
    let LoadOptions {
        ring_buffer_bytes,
        counter_capacity,
        count_exec_by_binary,
        cgroup_root,
        filter_records,
    } = *opts;
    raise_memlock();
    ensure_tracefs();
    let btf = Btf::from_sys().context("reading /sys/kernel/btf/vmlinux (BTF is required)")?;
    let (offsets, missing) = kernel_offsets(&btf);
    if !missing.is_empty() {
        warn!(?missing, "kernel structs lack some fields; the fields that need them are left out");
    }
    let mut offsets = offsets;
    offsets.tp_exit_group_dead =
        tracepoint_field_offset("sched", "sched_process_exit", "group_dead").unwrap_or(0);
    if offsets.tp_exit_group_dead == 0 {
        warn!("sched_process_exit has no group_dead field: a process's exit is reported when its main thread exits");
    }
    // io_uring opens are judged at completion, which names its request only since 5.19.
    let mut unavailable: Vec<(&str, &str)> = Vec::new();
    // Deny for files and execs needs BPF LSM running: without it the hooks
    // would load and never be called.
    if !crate::policy::Capabilities::probe().bpf_lsm {
        for p in ["lsm_file_open", "lsm_bprm_check_security"] {
            unavailable.push((
                p,
                "BPF LSM is not active on this kernel (/sys/kernel/security/lsm lacks bpf): deny for files and execs is refused at load",
            ));
        }
        for p in read_guard::LSM_PROGRAMS {
            unavailable.push((
                p,
                "BPF LSM is not active on this kernel: the read guard uses the read-family sys_enter tracepoints",
            ));
        }
    } else {
        // The LSM hooks guard reads there: called for file reads only (not
        // for every syscall of every task), and they see io_uring's too.
        for p in read_guard::TRACEPOINTS {
            unavailable.push((p, "BPF LSM's file_permission and mmap_file guard reads on this kernel"));
        }
    }
    match (
        tracepoint_field_offset("io_uring", "io_uring_complete", "req"),
        tracepoint_field_offset("io_uring", "io_uring_complete", "res"),
    ) {
        (Some(req), Some(res)) if offsets.available & podwatch_common::offsets::URING != 0 => {
            offsets.tp_uring_req = req;
            offsets.tp_uring_res = res;
        }
        _ => {
            offsets.available &= !podwatch_common::offsets::URING;
            unavailable.push((
                "io_uring_complete",
                "this kernel's io_uring_complete tracepoint does not name its request (before 5.19) \
                 or io_kiocb/io_open are not in its BTF: io_uring opens are not judged",
            ));
        }
    }
    let agent_tgid = std::process::id();
    let mut ebpf = EbpfLoader::new()
        .override_global("OFFSETS", &offsets, true)
        .override_global("AGENT_TGID", &agent_tgid, true)
        .override_global("COUNT_EXEC_BY_BINARY", &(count_exec_by_binary as u32), true)
        .override_global("WAKEUP_BYTES", &wakeup_bytes(ring_buffer_bytes), true)
        .map_max_entries("COUNTERS", counter_capacity)
        .map_max_entries("EVENTS", ring_buffer_bytes)
        .load(aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/podwatch")))
        .context("loading the kernel programs")?;
    if filter_records {
        let mut config: Array<&mut MapData, PolicyConfig> =
            Array::try_from(ebpf.map_mut("POLICY_CONFIG").context("POLICY_CONFIG map")?)?;
        config
            .set(0, PolicyConfig { filter: 1, ..Default::default() }, 0)
            .context("setting the record filter")?;
    }

    let cgroup_fd = match cgroup_root {
        Some(p) => Some(File::open(p).with_context(|| format!("opening {}", p.display()))?),
        None => None,
    };
    Ok(Loaded { ebpf, offsets, cgroup_fd, unavailable })
}

impl Loaded {
    /// The maps policies live in (taken out: call once, before `attach`).
    pub fn policy_maps(&mut self) -> anyhow::Result<PolicyMaps> {
        let mut take = |name: &str| self.ebpf.take_map(name).with_context(|| format!("{name} map"));
        Ok(PolicyMaps {
            config: take("POLICY_CONFIG")?.try_into()?,
            cgroups: [take("CGROUP_MASKS_0")?.try_into()?, take("CGROUP_MASKS_1")?.try_into()?],
            exec_paths: take("EXEC_PATHS")?.try_into()?,
            exec_suffixes: take("EXEC_SUFFIXES")?.try_into()?,
            file_paths: take("FILE_PATHS")?.try_into()?,
            file_suffixes: take("FILE_SUFFIXES")?.try_into()?,
            addrs: take("NET_ADDRS")?.try_into()?,
            identities: take("IDENTITIES")?.try_into()?,
            identity_filter: take("IDENTITY_FILTER")?.try_into()?,
            privilege_rules: take("PRIV_RULES")?.try_into()?,
            suffix_filter: take("SUFFIX_FILTER")?.try_into()?,
        })
    }

    /// Attaches every program to its hook; a hook that cannot attach is
    /// reported and skipped, except exec.
    pub fn attach(self) -> anyhow::Result<Sensors> {
        let Loaded { mut ebpf, offsets, cgroup_fd, unavailable } = self;
        // The open programs hand every open to their later stages by tail
        // call: without those they judge nothing, so they do not attach.
        let (mut status, stages) = load_open_stages(&mut ebpf);
        // Operators (and the readiness tests) can leave programs out by name.
        let skip = std::env::var("PODWATCH_SKIP_PROGRAMS").unwrap_or_default();
        let mut guard_links = Vec::new();
        for (name, hook) in PROGRAMS {
            let started = std::time::Instant::now();
            let needs_stages = matches!(program_of(name), "sys_exit_open_family" | "io_uring_complete");
            let (hook_desc, result) = if skip.split(',').any(|s| s.trim() == *name) {
                (hook_desc(name, hook), Err(anyhow::anyhow!("left out by PODWATCH_SKIP_PROGRAMS")))
            } else if let Some((_, why)) = unavailable.iter().find(|(p, _)| p == name) {
                (hook_desc(name, hook), Err(anyhow::anyhow!("{why}")))
            } else if let (true, Err(why)) = (needs_stages, &stages) {
                (hook_desc(name, hook), Err(anyhow::anyhow!("the open stages did not load: {why}")))
            } else {
                attach(&mut ebpf, name, hook, cgroup_fd.as_ref())
            };
            let on_demand = read_guard::on_demand(name);
            let result = match (result, hook) {
                (Ok(Attached::Tracepoint(link)), Hook::Tracepoint(category, tp)) if on_demand => {
                    let link = Some(link);
                    guard_links.push(read_guard::Hook { name, category, tracepoint: tp, link });
                    Ok(())
                }
                (r, _) => r.map(|_| ()),
            };
            let load_ms = started.elapsed().as_millis() as u64;
            let verified_insns = ebpf
                .program(program_of(name))
                .and_then(|p| p.info().ok())
                .and_then(|i| i.verified_instruction_count());
            let expected = unavailable.iter().any(|(p, _)| p == name);
            match &result {
                Ok(()) => info!(program = name, hook = %hook_desc, load_ms, "attached"),
                // What this kernel cannot run is a fact about it, not a fault.
                Err(e) if expected => info!(program = name, hook = %hook_desc, "not used here: {e:#}"),
                Err(e) => warn!(program = name, hook = %hook_desc, load_ms, "not attached: {e:#}"),
            }
            status.push(SensorStatus {
                program: (*name).to_owned(),
                hook: hook_desc,
                attached: result.is_ok(),
                available: !expected,
                error: result.err().map(|e| format!("{e:#}")),
                load_ms,
                verified_insns,
                on_demand,
            });
        }
        let f = crate::kernel::probe::probe_hooks(&mut ebpf);
        info!(kernel = %f.release, lsm = %f.lsm_list, bpf_lsm = f.bpf_lsm.is_ok(), fentry = f.fentry.is_ok(), kprobe = f.kprobe.is_ok(), "kernel features");
        if !status.iter().any(|s| s.program == "sched_process_exec" && s.attached) {
            bail!("the exec sensor could not attach; nothing to observe");
        }
        let events = RingBuf::try_from(ebpf.take_map("EVENTS").context("EVENTS map")?)?;
        let stats = PerCpuArray::try_from(ebpf.take_map("STATS").context("STATS map")?)?;
        let counters = PerCpuHashMap::try_from(ebpf.take_map("COUNTERS").context("COUNTERS map")?)?;
        let ebpf = Arc::new(Mutex::new(ebpf));
        let lsm_guard =
            read_guard::LSM_PROGRAMS.iter().all(|p| status.iter().any(|s| s.program == *p && s.attached));
        let read_guard = ReadGuard::new(ebpf.clone(), guard_links, lsm_guard);
        Ok(Sensors { ebpf, read_guard, status, events, stats, counters, offsets })
    }
}

/// The open pipeline's tail-called stages, in `OPEN_STAGES` order.
const OPEN_STAGES: [&str; 3] = ["open_judge", "open_verdict", "open_record"];

/// Loads the open pipeline's later stages and puts them in `OPEN_STAGES`:
/// a status line for each (they are programs of their own, verified on
/// their own), and whether all of them are in place.
fn load_open_stages(ebpf: &mut Ebpf) -> (Vec<SensorStatus>, Result<(), String>) {
    let mut status = Vec::new();
    let mut fds = Vec::new();
    let mut failed = None;
    for name in OPEN_STAGES {
        let started = std::time::Instant::now();
        let loaded = (|| -> anyhow::Result<aya::programs::ProgramFd> {
            let prog: &mut TracePoint =
                ebpf.program_mut(name).with_context(|| format!("program {name} missing"))?.try_into()?;
            prog.load().with_context(|| format!("loading {name}"))?;
            Ok(prog.fd()?.try_clone()?)
        })();
        let load_ms = started.elapsed().as_millis() as u64;
        let verified_insns =
            ebpf.program(name).and_then(|p| p.info().ok()).and_then(|i| i.verified_instruction_count());
        match &loaded {
            Ok(_) => info!(program = name, load_ms, "loaded (tail-called by the open programs)"),
            Err(e) => warn!(program = name, load_ms, "not loaded: {e:#}"),
        }
        status.push(SensorStatus {
            program: name.to_owned(),
            hook: "tail call from the open programs".to_owned(),
            attached: loaded.is_ok(),
            available: true,
            error: loaded.as_ref().err().map(|e| format!("{e:#}")),
            load_ms,
            verified_insns,
            on_demand: false,
        });
        match loaded {
            Ok(fd) => fds.push(fd),
            Err(e) => failed = failed.or(Some(format!("{e:#}"))),
        }
    }
    if let Some(why) = failed {
        return (status, Err(why));
    }
    let filled = (|| -> anyhow::Result<()> {
        let mut array =
            aya::maps::ProgramArray::try_from(ebpf.map_mut("OPEN_STAGES").context("OPEN_STAGES map")?)?;
        for (i, fd) in fds.iter().enumerate() {
            array.set(i as u32, fd, 0).context("filling OPEN_STAGES")?;
        }
        Ok(())
    })();
    (status, filled.map_err(|e| format!("{e:#}")))
}

/// A field's offset in a tracepoint record, from tracefs's format file.
fn tracepoint_field_offset(category: &str, event: &str, field: &str) -> Option<u32> {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"].iter().find_map(|root| {
        let text = std::fs::read_to_string(format!("{root}/events/{category}/{event}/format")).ok()?;
        parse_format_offset(&text, field)
    })
}

/// `\tfield:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;` → 32
fn parse_format_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let mut parts = line.trim().split(';');
        let decl = parts.next()?.strip_prefix("field:")?;
        let name = decl.rsplit([' ', '*']).next()?;
        if name != field {
            return None;
        }
        parts.next()?.trim().strip_prefix("offset:")?.parse().ok()
    })
}

fn hook_desc(name: &str, hook: &Hook) -> String {
    match hook {
        Hook::Tracepoint(c, n) => format!("tracepoint/{c}/{n}"),
        Hook::Raw(n) => format!("raw_tracepoint/{n}"),
        Hook::Cgroup => format!("cgroup/{name}"),
        Hook::Lsm(h) => format!("lsm/{h}"),
    }
}

/// A link id the read guard keeps, to detach its own while no rule needs it.
enum Attached {
    Tracepoint(TracePointLinkId),
    Other,
}

/// Attaches `name` to its hook.
fn attach(
    ebpf: &mut Ebpf,
    name: &str,
    hook: &Hook,
    cgroup: Option<&File>,
) -> (String, anyhow::Result<Attached>) {
    let desc = hook_desc(name, hook);
    let r = (|| -> anyhow::Result<Attached> {
        let program = program_of(name);
        let prog = ebpf.program_mut(program).with_context(|| format!("program {program} missing"))?;
        match hook {
            Hook::Tracepoint(category, tp) => {
                let p: &mut TracePoint = prog.try_into()?;
                // Shared by several hooks: loaded (verified) once.
                if p.fd().is_err() {
                    p.load()?;
                }
                return Ok(Attached::Tracepoint(p.attach(category, tp)?));
            }
            Hook::Raw(tp) => {
                let p: &mut RawTracePoint = prog.try_into()?;
                p.load()?;
                p.attach(tp)?;
            }
            Hook::Cgroup => {
                let fd = cgroup.context("no cgroup2 hierarchy mounted")?;
                let p: &mut CgroupSockAddr = prog.try_into()?;
                p.load()?;
                // bpf_link_create takes no flags: cgroup links always coexist with others.
                p.attach(fd.as_fd(), CgroupAttachMode::Single)?;
            }
            Hook::Lsm(h) => {
                let btf = aya::Btf::from_sys_fs()?;
                let p: &mut aya::programs::Lsm = prog.try_into()?;
                p.load(h, &btf)?;
                p.attach()?;
            }
        }
        Ok(Attached::Other)
    })();
    (desc, r)
}

#[cfg(test)]
mod tests {
    use super::parse_format_offset;

    #[test]
    fn reads_offsets_from_tracepoint_formats() {
        let f = "name: sched_process_exit\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\n\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\tfield:pid_t pid;\toffset:24;\tsize:4;\tsigned:1;\n\tfield:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;\n";
        assert_eq!(parse_format_offset(f, "group_dead"), Some(32));
        assert_eq!(parse_format_offset(f, "pid"), Some(24));
        assert_eq!(parse_format_offset(f, "prio"), None);
        assert_eq!(parse_format_offset("garbage;;;\nfield:", "pid"), None);
    }
}

//! What the running kernel offers (BTF, BPF LSM, fentry, kprobes) and which
//! hook each sensor uses: `podwatch probe` prints it, the agent logs it and
//! /metrics carries it (`podwatch_kernel_feature`, `podwatch_sensor_attached`).
//!
//! fentry, kprobe and LSM support are probed by attaching empty programs
//! (exporter-ebpf/src/probe.rs) and detaching them at once: a program type
//! can load on kernels where attaching fails (no ftrace direct calls, no
//! CONFIG_KPROBES, `bpf` missing from the LSM list).

use std::sync::OnceLock;

use anyhow::Context as _;
use aya::{
    programs::{FEntry, KProbe, Lsm},
    Btf, Ebpf,
};

/// Whether a hook kind attaches here, with the kernel's reason when not.
pub type Probed = Result<(), String>;

#[derive(Debug, Clone)]
pub struct Features {
    pub release: String,
    pub btf: bool,
    /// The active LSM list (/sys/kernel/security/lsm).
    pub lsm_list: String,
    pub fentry: Probed,
    pub kprobe: Probed,
    pub bpf_lsm: Probed,
}

static FEATURES: OnceLock<Features> = OnceLock::new();

/// What the sensors' loader found, once it has run.
pub fn features() -> Option<&'static Features> {
    FEATURES.get()
}

impl Features {
    /// 0/1 per feature, for /metrics.
    pub fn flags(&self) -> [(&'static str, bool); 4] {
        [
            ("btf", self.btf),
            ("bpf_lsm", self.bpf_lsm.is_ok()),
            ("fentry", self.fentry.is_ok()),
            ("kprobe", self.kprobe.is_ok()),
        ]
    }
}

fn first_line(e: impl std::fmt::Display) -> String {
    let s = format!("{e:#}");
    s.lines().next().unwrap_or_default().to_owned()
}

/// A load error in one line: its first line and, for a verifier log, the
/// verifier's complaint (the line before its closing statistics).
pub fn reason(e: &str) -> String {
    let first = e.lines().next().unwrap_or_default();
    let complaint = e
        .lines()
        .take_while(|l| !l.starts_with("verification time") && !l.starts_with("processed "))
        .filter(|l| !l.trim().is_empty())
        .last()
        .filter(|l| *l != first);
    match complaint {
        Some(c) => format!("{first} ... {}", c.trim()),
        None => first.to_owned(),
    }
}

/// Probes with the loaded object's probe programs; records the result for
/// /metrics and returns it.
pub fn probe_hooks(ebpf: &mut Ebpf) -> Features {
    let btf = Btf::from_sys_fs().map_err(first_line);
    let mut attach = |name: &str| -> Probed {
        let btf = btf.as_ref().map_err(Clone::clone)?;
        let prog = ebpf.program_mut(name).ok_or("program missing")?;
        let r: anyhow::Result<()> = (|| {
            match name {
                "probe_fentry" => {
                    let p: &mut FEntry = prog.try_into()?;
                    p.load("bpf_fentry_test1", btf)?;
                    let link = p.attach()?;
                    p.detach(link)?;
                }
                "probe_kprobe" => {
                    let p: &mut KProbe = prog.try_into()?;
                    p.load()?;
                    let link = p.attach("bpf_fentry_test1", 0)?;
                    p.detach(link)?;
                }
                _ => {
                    let p: &mut Lsm = prog.try_into()?;
                    p.load("file_open", btf)?;
                    let link = p.attach()?;
                    p.detach(link)?;
                }
            }
            Ok(())
        })();
        r.map_err(first_line)
    };
    let fentry = attach("probe_fentry");
    let kprobe = attach("probe_kprobe");
    let lsm_list = std::fs::read_to_string("/sys/kernel/security/lsm").unwrap_or_default().trim().to_owned();
    let bpf_lsm = if lsm_list.split(',').any(|l| l == "bpf") {
        attach("probe_lsm")
    } else {
        Err(format!("bpf is not in the active LSM list ({lsm_list}); boot with lsm=...,bpf"))
    };
    let f = Features {
        release: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned(),
        btf: btf.is_ok(),
        lsm_list,
        fentry,
        kprobe,
        bpf_lsm,
    };
    let _ = FEATURES.set(f.clone());
    f
}

fn yes_no(p: &Probed) -> String {
    match p {
        Ok(()) => "yes".into(),
        Err(e) => format!("no ({e})"),
    }
}

/// `podwatch probe`: loads the sensors as the agent would, prints the
/// kernel's features and each program's hook and attach result, unloads.
pub fn run() -> anyhow::Result<()> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("kernel    {}", release.trim());
    let btf = std::path::Path::new("/sys/kernel/btf/vmlinux").exists();
    println!("btf       {}", if btf { "yes (/sys/kernel/btf/vmlinux)" } else { "no (the agent needs it)" });
    let cgroup_root = crate::pods::cgroup::cgroup2_mount();
    println!(
        "cgroup2   {}",
        cgroup_root.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "not mounted".into())
    );
    let sensors = crate::kernel::loader::load(&crate::kernel::loader::LoadOptions {
        ring_buffer_bytes: 4096,
        counter_capacity: 64,
        count_exec_by_binary: false,
        cgroup_root: cgroup_root.as_deref(),
        filter_records: false,
    })
    .and_then(|l| l.attach())
    .context("loading the kernel programs (needs root: CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN)")?;
    let f = features().context("hook probe did not run")?;
    println!("lsm       {}", f.lsm_list);
    println!("bpf_lsm   {}", yes_no(&f.bpf_lsm));
    println!("fentry    {}", yes_no(&f.fentry));
    println!("kprobe    {}", yes_no(&f.kprobe));
    for s in &sensors.status {
        let state = match &s.error {
            None => match s.verified_insns {
                Some(n) => format!("attached ({} ms, {n} insns verified)", s.load_ms),
                None => format!("attached ({} ms)", s.load_ms),
            },
            Some(e) => format!("NOT attached: {}", reason(e)),
        };
        let state = if s.on_demand && s.attached {
            format!("{state}, kept only while a file kill rule is loaded")
        } else {
            state
        };
        println!(
            "sensor    {:<8} {:<22} {:<42} {state}",
            crate::kernel::loader::sensor_of(&s.program),
            s.program,
            s.hook
        );
    }
    let up = sensors.status.iter().filter(|s| s.attached).count();
    let absent = sensors.status.iter().filter(|s| !s.attached && !s.available).count();
    println!(
        "summary   {up} of {} programs attached, {absent} not used on this kernel (its hook missing, or a better one used), {} failed",
        sensors.status.len(),
        sensors.status.len() - up - absent
    );
    Ok(())
}

//! The read guard's attachments, made only while a rule needs them.
//!
//! A file kill rule also judges reads through descriptors opened elsewhere.
//! Where the kernel runs BPF LSM that is `lsm_file_permission` and
//! `lsm_mmap_file`, called for file reads only: they stay attached (and 5.10
//! could not attach them again once detached: the first attach consumes a
//! tracing program's target until 5.11). Elsewhere it is
//! `sys_enter_read_family` at the entry of every read-family syscall, and
//! attached that costs every read on the node even with nothing to guard:
//! the bench measured a pread loop at 1.71× no agent with it attached and
//! idle, 1.18× without (an enabled syscall-entry tracepoint sends every
//! syscall through the tracing path). So that program is verified and
//! attached at start-up (a kernel that refuses it is known before any rule
//! needs it) and attached only while the loaded policies hold a kill rule on
//! reading a file; the policy engine switches it on before such a set takes
//! effect and off after the last such set is retired.

use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use aya::{
    programs::{trace_point::TracePointLinkId, TracePoint},
    Ebpf,
};
use tracing::info;

/// The tracepoint guard's program (attached to each read-family syscall).
pub const TRACEPOINT_PROGRAM: &str = "sys_enter_read_family";
/// The BPF LSM guard's programs, used instead where the kernel runs BPF LSM.
pub const LSM_PROGRAMS: [&str; 2] = ["lsm_file_permission", "lsm_mmap_file"];

/// The read-family syscalls whose entry the tracepoint guard is attached to.
pub const TRACEPOINTS: [&str; 9] = [
    "sys_enter_read",
    "sys_enter_readv",
    "sys_enter_pread64",
    "sys_enter_preadv",
    "sys_enter_preadv2",
    "sys_enter_sendfile64",
    "sys_enter_splice",
    "sys_enter_copy_file_range",
    "sys_enter_mmap",
];

/// Whether an attachment (by its name in the loader) belongs to the guard.
pub fn is_guard(attachment: &str) -> bool {
    TRACEPOINTS.contains(&attachment) || LSM_PROGRAMS.contains(&attachment)
}

/// Whether an attachment is made only while a rule needs it.
pub fn on_demand(attachment: &str) -> bool {
    TRACEPOINTS.contains(&attachment)
}

/// One tracepoint the guard attaches to, and its link while attached.
pub struct Hook {
    pub name: &'static str,
    pub category: &'static str,
    pub tracepoint: &'static str,
    pub link: Option<TracePointLinkId>,
}

pub struct ReadGuard {
    ebpf: Arc<Mutex<Ebpf>>,
    /// Every tracepoint attached at start-up (none on BPF LSM kernels).
    hooks: Vec<Hook>,
    attached: bool,
    /// The BPF LSM guard is attached (and stays).
    lsm: bool,
}

impl ReadGuard {
    /// Takes over the links the loader made (every hook attached).
    pub(crate) fn new(ebpf: Arc<Mutex<Ebpf>>, hooks: Vec<Hook>, lsm: bool) -> ReadGuard {
        ReadGuard { ebpf, attached: !hooks.is_empty(), hooks, lsm }
    }

    /// Whether reads are guarded now (when a rule asks).
    pub fn is_attached(&self) -> bool {
        self.lsm || self.attached
    }

    /// The on-demand hooks (attached or not): the attachments a rule that
    /// needs the guard can count on.
    pub fn hooks(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.hooks.iter().map(|h| h.name)
    }

    /// Attaches to (`on`) or detaches from every on-demand hook. Attaching
    /// is all or nothing: on an error the links made so far are undone and
    /// the error names the hook. A link that fails to detach stays attached:
    /// the guard then runs idle there (its own check of the policy config
    /// stops it).
    pub fn set(&mut self, on: bool) -> anyhow::Result<()> {
        if on == self.attached || self.hooks.is_empty() {
            return Ok(());
        }
        let mut ebpf = self.ebpf.lock().map_err(|_| anyhow::anyhow!("kernel programs lock poisoned"))?;
        let prog: &mut TracePoint = ebpf
            .program_mut(TRACEPOINT_PROGRAM)
            .with_context(|| format!("program {TRACEPOINT_PROGRAM} missing"))?
            .try_into()?;
        if on {
            for i in 0..self.hooks.len() {
                let h = &mut self.hooks[i];
                match prog.attach(h.category, h.tracepoint) {
                    Ok(link) => h.link = Some(link),
                    Err(e) => {
                        let name = h.name;
                        for h in &mut self.hooks[..i] {
                            if let Some(link) = h.link.take() {
                                let _ = prog.detach(link);
                            }
                        }
                        return Err(e).with_context(|| format!("attaching {name}"));
                    }
                }
            }
        } else {
            let mut failed = None;
            for h in &mut self.hooks {
                if let Some(link) = h.link.take() {
                    if let Err(e) = prog.detach(link) {
                        failed.get_or_insert(e);
                    }
                }
            }
            self.attached = false;
            if let Some(e) = failed {
                return Err(e).context("detaching the read guard");
            }
        }
        self.attached = on;
        info!(
            hooks = self.hooks.len(),
            "read guard {}",
            if on { "attached" } else { "detached: no rule needs it" }
        );
        Ok(())
    }
}

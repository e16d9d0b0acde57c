//! The read guard's attachments, made only while a rule needs them.
//!
//! A file kill rule also judges reads through descriptors opened elsewhere
//! (`sys_enter_read_family`, attached to the entry of every read-family
//! syscall; where the kernel runs BPF LSM, `lsm_file_permission` and
//! `lsm_mmap_file` instead, called for file reads only). Attached, that program runs on every read on the node even when
//! it has nothing to guard: the bench measured a pread loop at 1.71× no agent
//! with it attached and idle, 1.18× without. So the program is verified at
//! start-up (a kernel that refuses it is known before any rule needs it) and
//! attached only while the loaded policies hold a kill rule on reading a
//! file; the policy engine switches it on before such a set takes effect and
//! off after the last such set is retired.

use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use aya::{
    programs::{lsm::LsmLinkId, trace_point::TracePointLinkId, Lsm, TracePoint},
    Ebpf,
};
use tracing::info;

/// The tracepoint guard's program (attached to each read-family syscall).
pub const TRACEPOINT_PROGRAM: &str = "sys_enter_read_family";
/// The BPF LSM guard's programs, used instead where the kernel runs BPF LSM.
pub const LSM_PROGRAMS: [&str; 2] = ["lsm_file_permission", "lsm_mmap_file"];

/// Whether an attachment (by its name in the loader) belongs to the guard.
pub fn is_guard(attachment: &str) -> bool {
    attachment.starts_with("sys_enter_") || LSM_PROGRAMS.contains(&attachment)
}

/// One of the guard's attachments, as the loader made it.
pub enum Link {
    /// `sys_enter_read_family` on tracepoint `category/name`.
    Tracepoint { category: &'static str, name: &'static str, link: Option<TracePointLinkId> },
    /// A BPF LSM program of its own, on LSM hook `hook`.
    Lsm { hook: &'static str, link: Option<LsmLinkId> },
}

pub struct ReadGuard {
    ebpf: Arc<Mutex<Ebpf>>,
    /// (attachment name, link) for every hook attached at start-up.
    hooks: Vec<(&'static str, Link)>,
    attached: bool,
}

impl ReadGuard {
    /// Takes over the links the loader made (every hook attached).
    pub(crate) fn new(ebpf: Arc<Mutex<Ebpf>>, hooks: Vec<(&'static str, Link)>) -> ReadGuard {
        ReadGuard { ebpf, hooks, attached: true }
    }

    /// Whether the attachments are in place now.
    pub fn is_attached(&self) -> bool {
        self.attached
    }

    /// The hooks it covers (attached or not): the attachments a rule that
    /// needs the guard can count on.
    pub fn hooks(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.hooks.iter().map(|(name, _)| *name)
    }

    /// Attaches to (`on`) or detaches from every hook. Attaching is all or
    /// nothing: on an error the links made so far are undone and the error
    /// names the hook. A link that fails to detach stays attached: the guard
    /// then runs idle there (its own check of the policy config stops it).
    pub fn set(&mut self, on: bool) -> anyhow::Result<()> {
        if on == self.attached {
            return Ok(());
        }
        let mut ebpf = self.ebpf.lock().map_err(|_| anyhow::anyhow!("kernel programs lock poisoned"))?;
        if on {
            for i in 0..self.hooks.len() {
                let (name, link) = &mut self.hooks[i];
                let name = *name;
                if let Err(e) = attach(&mut ebpf, name, link) {
                    for (name, link) in &mut self.hooks[..i] {
                        let _ = detach(&mut ebpf, name, link);
                    }
                    return Err(e).with_context(|| format!("attaching {name}"));
                }
            }
        } else {
            let mut failed = None;
            for (name, link) in &mut self.hooks {
                if let Err(e) = detach(&mut ebpf, name, link) {
                    failed.get_or_insert(e);
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

fn attach(ebpf: &mut Ebpf, name: &str, link: &mut Link) -> anyhow::Result<()> {
    match link {
        Link::Tracepoint { category, name: tp, link } => {
            let prog: &mut TracePoint = program(ebpf, TRACEPOINT_PROGRAM)?.try_into()?;
            *link = Some(prog.attach(category, tp)?);
        }
        Link::Lsm { hook, link } => {
            let prog: &mut Lsm = program(ebpf, name)?.try_into()?;
            *link = Some(match prog.attach() {
                Ok(l) => l,
                // 5.10 attaches a loaded tracing program once (the first
                // attach consumes its trampoline target; 5.11 lifted that):
                // load it again.
                Err(_) => {
                    prog.unload()?;
                    prog.load(hook, &aya::Btf::from_sys_fs()?)?;
                    prog.attach()?
                }
            });
        }
    }
    Ok(())
}

fn detach(ebpf: &mut Ebpf, name: &str, link: &mut Link) -> anyhow::Result<()> {
    match link {
        Link::Tracepoint { link, .. } => {
            if let Some(l) = link.take() {
                let prog: &mut TracePoint = program(ebpf, TRACEPOINT_PROGRAM)?.try_into()?;
                prog.detach(l)?;
            }
        }
        Link::Lsm { link, .. } => {
            if let Some(l) = link.take() {
                let prog: &mut Lsm = program(ebpf, name)?.try_into()?;
                prog.detach(l)?;
            }
        }
    }
    Ok(())
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut aya::programs::Program> {
    ebpf.program_mut(name).with_context(|| format!("program {name} missing"))
}

//! The read guard's attachments, made only while a rule needs them.
//!
//! A file kill rule also judges reads through descriptors opened elsewhere
//! (`sys_enter_read_family`, attached to the entry of every read-family
//! syscall). Attached, that program runs on every read on the node even when
//! it has nothing to guard: the bench measured a pread loop at 1.71× no agent
//! with it attached and idle, 1.18× without. So the program is verified at
//! start-up (a kernel that refuses it is known before any rule needs it) and
//! attached only while the loaded policies hold a kill rule on reading a
//! file; the policy engine switches it on before such a set takes effect and
//! off after the last such set is retired.

use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use aya::{
    programs::{trace_point::TracePointLinkId, TracePoint},
    Ebpf,
};
use tracing::info;

pub const PROGRAM: &str = "sys_enter_read_family";

pub struct ReadGuard {
    ebpf: Arc<Mutex<Ebpf>>,
    /// (attachment name, tracepoint category, tracepoint name) of every hook
    /// the program attached to at start-up.
    hooks: Vec<(&'static str, &'static str, &'static str)>,
    links: Vec<TracePointLinkId>,
    attached: bool,
}

impl ReadGuard {
    /// Takes over the links the loader made (every hook attached).
    pub(crate) fn new(
        ebpf: Arc<Mutex<Ebpf>>,
        attached: Vec<(&'static str, &'static str, &'static str, TracePointLinkId)>,
    ) -> ReadGuard {
        let (hooks, links) = attached.into_iter().map(|(n, c, t, l)| ((n, c, t), l)).unzip();
        ReadGuard { ebpf, hooks, links, attached: true }
    }

    /// Whether the attachments are in place now.
    pub fn is_attached(&self) -> bool {
        self.attached
    }

    /// The hooks it covers (attached or not): the attachments a rule that
    /// needs the guard can count on.
    pub fn hooks(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.hooks.iter().map(|(name, _, _)| *name)
    }

    /// Attaches to (`on`) or detaches from every hook. Attaching is all or
    /// nothing: on an error the links made so far are undone and the error
    /// names the hook.
    pub fn set(&mut self, on: bool) -> anyhow::Result<()> {
        if on == self.attached {
            return Ok(());
        }
        let mut ebpf = self.ebpf.lock().map_err(|_| anyhow::anyhow!("kernel programs lock poisoned"))?;
        let prog: &mut TracePoint =
            ebpf.program_mut(PROGRAM).with_context(|| format!("program {PROGRAM} missing"))?.try_into()?;
        if on {
            for (name, category, tp) in &self.hooks {
                match prog.attach(category, tp) {
                    Ok(link) => self.links.push(link),
                    Err(e) => {
                        for link in self.links.drain(..) {
                            let _ = prog.detach(link);
                        }
                        return Err(e).with_context(|| format!("attaching {name}"));
                    }
                }
            }
        } else {
            // A link that fails to detach stays attached: the guard then
            // runs idle there (its own check of the policy config stops it).
            let mut failed = None;
            for link in std::mem::take(&mut self.links) {
                if let Err(e) = prog.detach(link) {
                    failed.get_or_insert(e);
                }
            }
            if let Some(e) = failed {
                self.attached = false;
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

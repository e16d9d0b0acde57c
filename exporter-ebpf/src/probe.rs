//! Empty programs the agent loads and attaches once to learn whether this
//! kernel really offers fentry, kprobes and BPF LSM (a program type can load
//! where attaching fails, as on kernels without ftrace direct calls). They
//! attach to `bpf_fentry_test1`, which only BPF_PROG_TEST_RUN calls, and are
//! detached at once.

use aya_ebpf::{
    macros::{fentry, kprobe, lsm},
    programs::{FEntryContext, LsmContext, ProbeContext},
};

#[fentry(function = "bpf_fentry_test1")]
pub fn probe_fentry(_ctx: FEntryContext) -> i32 {
    0
}

#[kprobe]
pub fn probe_kprobe(_ctx: ProbeContext) -> u32 {
    0
}

/// Returns 0 (allow): attached to file_open for an instant, it changes nothing.
#[lsm(hook = "file_open")]
pub fn probe_lsm(_ctx: LsmContext) -> i32 {
    0
}

//! podwatch's kernel programs. One module per hook family (process, file, net,
//! cgroup, privilege); `record` assembles variable-length records, `kernel` reads kernel
//! structs through offsets taken from the running kernel's BTF at start-up.
//!
//! Every program is `match try_x(ctx) { Ok(v) | Err(v) => v }`: a failed read
//! never aborts a hook, it just ends it early.
#![no_std]
#![no_main]
// Map helpers take pointers to keys and values: passing `&key` keeps that visible and
// avoids a by-value copy on the 512-byte BPF stack the verifier has to track.
#![allow(clippy::needless_borrows_for_generic_args)]

mod cgroup;
mod counters;
mod file;
mod kernel;
mod lsm;
mod net;
mod policy;
mod privilege;
mod probe;
mod process;
mod record;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// bpf_probe_read_kernel and bpf_send_signal are GPL-only helpers.
#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";

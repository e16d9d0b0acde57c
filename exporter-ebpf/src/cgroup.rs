//! cgroup creation: lets userspace map a new cgroup id to its path at once,
//! even when the cgroup (a short-lived pod) is gone before it is looked up.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext, EbpfContext};
use podwatch_common::{kind, CgroupMkdir, MAX_STR};

use crate::record::Record;

// cgroup:cgroup_mkdir field offsets.
const ROOT: usize = 8;
const LEVEL: usize = 12;
const ID: usize = 16;
const PATH_LOC: usize = 24;

#[tracepoint]
pub fn cgroup_mkdir(ctx: TracePointContext) -> u32 {
    match try_mkdir(&ctx) {
        Ok(v) | Err(v) => v,
    }
}

fn try_mkdir(ctx: &TracePointContext) -> Result<u32, u32> {
    // SAFETY: reading fields of the tracepoint record.
    let root: i32 = unsafe { ctx.read_at(ROOT) }.map_err(|_| 0u32)?;
    if root != 0 {
        return Ok(0); // a cgroup v1 hierarchy; ids are cgroup v2 only
    }
    let level: i32 = unsafe { ctx.read_at(LEVEL) }.map_err(|_| 0u32)?;
    let id: u64 = unsafe { ctx.read_at(ID) }.map_err(|_| 0u32)?;
    let loc: u32 = unsafe { ctx.read_at(PATH_LOC) }.map_err(|_| 0u32)?;
    let mut rec = Record::new(kind::CGROUP_MKDIR).ok_or(0u32)?;
    let path_len = rec.push_kernel_str(ctx.as_ptr() as u64 + (loc & 0xffff) as u64, MAX_STR as u32);
    let p: &mut CgroupMkdir = rec.payload();
    p.id = id;
    p.level = level as u32;
    p.path_len = path_len;
    rec.emit();
    Ok(0)
}

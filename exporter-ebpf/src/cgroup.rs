//! cgroup creation: lets userspace map a new cgroup id to its path at once,
//! even when the cgroup (a short-lived pod) is gone before it is looked up;
//! and gives the new cgroup its parent's policy masks before its first
//! process runs, so a container started in a pod is judged by the pod's
//! policies from its first instruction, not by the host's until userspace
//! has read the record.

use aya_ebpf::{
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
    EbpfContext,
};
use podwatch_common::{kind, offsets, CgroupMkdir, MAX_STR};

use crate::{
    kernel::{has, off, read, tp_field},
    policy,
    record::Record,
};

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
    let root: i32 = tp_field(ctx, ROOT);
    if root != 0 {
        return Ok(0); // a cgroup v1 hierarchy; ids are cgroup v2 only
    }
    let level: i32 = tp_field(ctx, LEVEL);
    let id: u64 = tp_field(ctx, ID);
    let loc: u32 = tp_field(ctx, PATH_LOC);
    let mut rec = Record::new(kind::CGROUP_MKDIR).ok_or(0u32)?;
    let path_len = rec.push_kernel_str(ctx.as_ptr() as u64 + (loc & 0xffff) as u64, MAX_STR as u32);
    let p: &mut CgroupMkdir = rec.payload();
    p.id = id;
    p.level = level as u32;
    p.path_len = path_len;
    rec.emit();
    Ok(0)
}

/// Raw tracepoint: args are (struct cgroup *cgrp, const char *path).
#[raw_tracepoint(tracepoint = "cgroup_mkdir")]
pub fn cgroup_mkdir_inherit(ctx: RawTracePointContext) -> i32 {
    match try_inherit(&ctx) {
        Ok(v) | Err(v) => v as i32,
    }
}

fn try_inherit(ctx: &RawTracePointContext) -> Result<u32, u32> {
    if !has(offsets::CGROUPS) {
        return Ok(0);
    }
    let cgrp: u64 = ctx.arg(0);
    let root: u64 = read(cgrp, off!(cgroup_root))?;
    let hierarchy: i32 = read(root, off!(cgroup_root_hierarchy_id))?;
    if hierarchy != 0 {
        return Ok(0); // a cgroup v1 hierarchy: its ids are another namespace
    }
    let id = cgroup_id(cgrp)?;
    let parent_css: u64 = read(cgrp, off!(cgroup_self) + off!(css_parent))?;
    let parent: u64 = read(parent_css, off!(css_cgroup))?;
    policy::inherit_masks(id, cgroup_id(parent)?);
    Ok(0)
}

#[inline(always)]
fn cgroup_id(cgrp: u64) -> Result<u64, u32> {
    let kn: u64 = read(cgrp, off!(cgroup_kn))?;
    read(kn, off!(kernfs_node_id))
}

//! Reading kernel structs through offsets the agent found in the running
//! kernel's BTF, and walking dentries into paths.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::generated::{bpf_get_current_task, bpf_probe_read_kernel},
    programs::TracePointContext,
    EbpfContext,
};
use podwatch_common::{flags, stat, KernelOffsets, MAX_NAME, MAX_PATH_DEPTH};

use crate::record::{count, Record};

/// Filled in by the agent before load (`EbpfLoader::override_global`).
#[no_mangle]
pub(crate) static OFFSETS: KernelOffsets = KernelOffsets {
    available: 0,
    task_real_parent: 0,
    task_tgid: 0,
    task_pid: 0,
    task_fs: 0,
    task_files: 0,
    task_mm: 0,
    task_exit_code: 0,
    task_stack: 0,
    fs_root: 0,
    fs_pwd: 0,
    path_mnt: 0,
    path_dentry: 0,
    dentry_parent: 0,
    dentry_name: 0,
    qstr_name: 0,
    qstr_len: 0,
    mount_mnt: 0,
    mount_parent: 0,
    mount_mountpoint: 0,
    vfsmount_root: 0,
    files_fdt: 0,
    fdtable_max_fds: 0,
    fdtable_fd: 0,
    file_path: 0,
    file_private_data: 0,
    mm_arg_start: 0,
    mm_arg_end: 0,
    mm_exe_file: 0,
    dentry_inode: 0,
    file_inode: 0,
    file_mode: 0,
    file_flags: 0,
    bprm_file: 0,
    bprm_filename: 0,
    inode_ino: 0,
    inode_sb: 0,
    sb_dev: 0,
    socket_sk: 0,
    skc_daddr: 0,
    skc_rcv_saddr: 0,
    skc_dport: 0,
    skc_num: 0,
    skc_family: 0,
    skc_v6_daddr: 0,
    skc_v6_rcv_saddr: 0,
    sk_err: 0,
    sk_shutdown: 0,
    tcp_bytes_received: 0,
    tcp_bytes_sent: 0,
    tp_exit_group_dead: 0,
    io_kiocb_opcode: 0,
    io_open_file_slot: 0,
    io_open_how: 0,
    tp_uring_req: 0,
    tp_uring_res: 0,
    cgroup_self: 0,
    cgroup_kn: 0,
    cgroup_root: 0,
    css_parent: 0,
    css_cgroup: 0,
    kernfs_node_id: 0,
    cgroup_root_hierarchy_id: 0,
    task_real_cred: 0,
    cred_uid: 0,
    cred_caps: 0,
    cred_user_ns: 0,
    task_nsproxy: 0,
    nsproxy_member: [0; podwatch_common::ns::COUNT],
    ns_common_at: [0; podwatch_common::ns::COUNT],
    ns_common_inum: 0,
    nsproxy_first: 0,
};

/// Reads one offset. Volatile so the compiler cannot fold the zero initialiser;
/// the verifier sees a frozen read-only map and folds it instead.
macro_rules! off {
    ($field:ident) => {
        // SAFETY: plain read of a static.
        (unsafe { core::ptr::read_volatile(&$crate::kernel::OFFSETS.$field) } as u64)
    };
}
pub(crate) use off;

#[inline(always)]
pub fn has(bits: u32) -> bool {
    // SAFETY: plain read of a static.
    (unsafe { core::ptr::read_volatile(&OFFSETS.available) } & bits) == bits
}

#[inline(always)]
pub fn current_task() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_get_current_task() }
}

/// A field of a tracepoint's record at a constant offset, loaded directly
/// from the context: the verifier checks such loads, where aya's `read_at`
/// costs a helper call per field (on the open path, one of its larger
/// shares). `off` must be a constant (variable context offsets are refused).
#[inline(always)]
pub fn tp_field<T: Copy>(ctx: &TracePointContext, off: usize) -> T {
    // SAFETY: a load inside the tracepoint record, bounds-checked by the verifier.
    unsafe { core::ptr::read_volatile((ctx.as_ptr() as *const u8).add(off) as *const T) }
}

/// Reads a `T` at `base + offset` in kernel memory.
#[inline(always)]
pub fn read<T: Copy>(base: u64, offset: u64) -> Result<T, u32> {
    let mut v = core::mem::MaybeUninit::<T>::uninit();
    // SAFETY: the helper checks the source; the destination is a local of size_of::<T>().
    let r = unsafe {
        bpf_probe_read_kernel(
            v.as_mut_ptr() as *mut c_void,
            core::mem::size_of::<T>() as u32,
            (base + offset) as *const c_void,
        )
    };
    if r < 0 || base == 0 {
        count(stat::READ_ERRORS);
        return Err(0);
    }
    // SAFETY: the helper filled it.
    Ok(unsafe { v.assume_init() })
}

/// tgid of a task's `real_parent`.
#[inline(always)]
pub fn parent_tgid(task: u64) -> Result<u32, u32> {
    let parent: u64 = read(task, off!(task_real_parent))?;
    read(parent, off!(task_tgid))
}

/// `d_parent` and `d_name` (a `qstr`: hash, len, name) side by side, as every
/// kernel lays them out (the loader checks it): one read per component.
#[repr(C)]
#[derive(Clone, Copy)]
struct DentryLink {
    parent: u64,
    _hash: u32,
    len: u32,
    name: u64,
    /// `d_inode`, right after `d_name` on every kernel (the loader checks it
    /// before it turns identity matching on).
    inode: u64,
}

/// Walks a path from `dentry` up `d_parent`, crossing mounts through
/// `mount.mnt_parent` / `mnt_mountpoint`, to the task's root (so chroots and
/// container roots give the path as the process sees it). Calls `visit(name,
/// len, inode)` for each component, leaf first; `visit` returns false to
/// stop. Calls `mount_root(dentry)` for the root of each mount it leaves (a
/// bind mount's source directory, which has no name of its own on the path).
/// Returns true when the root was reached.
#[inline(always)]
fn walk_path(
    dentry: u64,
    vfsmnt: u64,
    root: (u64, u64),
    mut visit: impl FnMut(u64, u32, u64) -> bool,
    mut mount_root: impl FnMut(u64),
) -> bool {
    let mut dentry = dentry;
    let mut vfsmnt = vfsmnt;
    let mut mnt = vfsmnt.wrapping_sub(off!(mount_mnt));
    // Read once per mount, not once per component.
    let Ok(mut mnt_root) = read::<u64>(vfsmnt, off!(vfsmount_root)) else { return false };
    for _ in 0..MAX_PATH_DEPTH {
        if dentry == root.0 && vfsmnt == root.1 {
            return true;
        }
        if dentry == mnt_root {
            mount_root(dentry);
            // Top of this mount: continue from where it is mounted.
            let Ok(parent) = read::<u64>(mnt, off!(mount_parent)) else { return false };
            if parent == mnt {
                return true;
            }
            let Ok(mountpoint) = read::<u64>(mnt, off!(mount_mountpoint)) else { return false };
            dentry = mountpoint;
            mnt = parent;
            vfsmnt = mnt + off!(mount_mnt);
            let Ok(r) = read::<u64>(vfsmnt, off!(vfsmount_root)) else { return false };
            mnt_root = r;
            continue;
        }
        let Ok(link) = read::<DentryLink>(dentry, off!(dentry_parent)) else { return false };
        if link.parent == dentry {
            return true;
        }
        if !visit(link.name, link.len, link.inode) {
            return false;
        }
        dentry = link.parent;
    }
    false
}

/// Appends a directory path as reversed NUL-terminated components. Returns
/// the bytes appended.
#[inline(never)]
pub fn push_path(rec: &mut Record, dentry: u64, vfsmnt: u64, root: (u64, u64)) -> u32 {
    let start = rec.len();
    let reached_root = walk_path(
        dentry,
        vfsmnt,
        root,
        |name, _len, _inode| rec.push_kernel_str(name, MAX_NAME as u32) != 0,
        |_| {},
    );
    if !reached_root {
        rec.flag(flags::DIR_TRUNCATED);
    }
    (rec.len() - start) as u32
}

/// Room `forward_path` needs in its caller's buffer: the path at the front,
/// the window it is assembled in backwards, and the write position.
pub const FORWARD_WINDOW: usize = 1024;
pub const FORWARD_POS: usize = 3072;

/// Writes the absolute path of (dentry, vfsmnt) into `out[0..len]` (no NUL),
/// for policy matching. Components are written backwards from the end of the
/// window `out[1024..2048]`, then moved to the front. Returns the length, 0
/// when the path is longer than `MAX_MATCH_PATH` or deeper than
/// `MAX_PATH_DEPTH`, or the walk failed: the caller reports such a path as
/// unresolved. (A plain length, not an Option: BPF calls have five argument
/// registers and no stack arguments.) When `policy::identity_begin` armed the
/// buffer, the root of each mount the walk leaves is noted on the way for
/// `policy::identity_scan` to check against the identity map (a directory
/// a rule names, mounted elsewhere: a bind mount, a hostPath volume).
#[inline(never)]
pub fn forward_path(out: *mut u8, dentry: u64, vfsmnt: u64, root: (u64, u64)) -> usize {
    const WINDOW: usize = FORWARD_WINDOW;
    // The write position lives in the buffer, read and written volatile: a
    // value loaded from map memory is an unknown scalar to the verifier, so
    // every iteration has the same state and the loop prunes.
    // SAFETY: the caller's buffer is at least FORWARD_POS + 4 bytes.
    let pos_slot = unsafe { out.add(FORWARD_POS) as *mut u32 };
    let get = || unsafe { core::ptr::read_volatile(pos_slot) } as usize;
    let set = |v: usize| unsafe { core::ptr::write_volatile(pos_slot, v as u32) };
    set(WINDOW);
    let identity = crate::policy::identity_armed(out);
    let reached_root = walk_path(
        dentry,
        vfsmnt,
        root,
        |name, len, _inode| {
            let len = len as usize;
            let pos = get();
            if len == 0 || pos > WINDOW || len + 1 > pos || len >= MAX_NAME {
                set(0);
                return false;
            }
            set(pos - len);
            // Re-read before masking: LLVM would drop a mask it can prove redundant,
            // and the verifier needs it to bound the offset.
            let at = get() & (WINDOW - 1);
            // SAFETY: WINDOW + at + len < 2 * WINDOW + MAX_NAME, inside the buffer.
            unsafe {
                bpf_probe_read_kernel(
                    out.add(WINDOW + at) as *mut c_void,
                    (len & (MAX_NAME - 1)) as u32,
                    name as *const c_void,
                );
            }
            set(get().wrapping_sub(1));
            let at = get() & (WINDOW - 1);
            // SAFETY: as above.
            unsafe { *out.add(WINDOW + at) = b'/' };
            true
        },
        |mount_root| {
            if identity {
                if let Ok(inode) = read::<u64>(mount_root, off!(dentry_inode)) {
                    crate::policy::identity_note(out, inode);
                }
            }
        },
    );
    let pos = get();
    let len = if !reached_root || pos == 0 || pos > WINDOW {
        0
    } else if pos == WINDOW {
        // The root itself.
        // SAFETY: inside the buffer.
        unsafe { *out = b'/' };
        1
    } else {
        let at = get() & (WINDOW - 1);
        let len = (WINDOW - at) & (WINDOW - 1);
        // SAFETY: source and destination lie inside the buffer.
        unsafe {
            bpf_probe_read_kernel(out as *mut c_void, len as u32, out.add(WINDOW + at) as *const c_void);
        }
        len
    };
    // The length goes back through the buffer: the verifiers of 5.10 and
    // 6.1 otherwise concluded, wrongly, that no call returns a length, and
    // removed the callers' code for resolved paths as dead (every open
    // judged unresolved; the matrix's file tests caught it).
    set(len);
    get()
}

/// The resolved path of the file a task's image was loaded from
/// (`mm->exe_file`), into `out[0..len]` (0 when unavailable or
/// unresolvable), and that `struct file *` (0 when unknown).
#[inline(always)]
pub fn exe_path(task: u64, out: *mut u8) -> (usize, u64) {
    if !has(podwatch_common::offsets::EXE | podwatch_common::offsets::ARGS | podwatch_common::offsets::PATHS)
    {
        return (0, 0);
    }
    let Ok(root) = task_root(task) else { return (0, 0) };
    let Ok(mm) = read::<u64>(task, off!(task_mm)) else { return (0, 0) };
    let Ok(file) = read::<u64>(mm, off!(mm_exe_file)) else { return (0, 0) };
    let Ok((dentry, mnt)) = path_at(file, off!(file_path)) else { return (0, file) };
    (forward_path(out, dentry, mnt, root), file)
}

/// A `struct file *`'s inode (0 when unknown or identity is off).
#[inline(always)]
pub fn file_inode(file: u64) -> u64 {
    if file == 0 || !has(podwatch_common::offsets::IDENTITY) {
        return 0;
    }
    read::<u64>(file, off!(file_inode)).unwrap_or(0)
}

/// (dentry, vfsmount) of a `struct path` embedded at `base + offset`.
#[inline(always)]
pub fn path_at(base: u64, offset: u64) -> Result<(u64, u64), u32> {
    // `struct path { mnt; dentry; }` on every kernel (the loader checks it): one read.
    let [mnt, dentry]: [u64; 2] = read(base, offset)?;
    Ok((dentry, mnt))
}

/// The task's root directory (chroot / container root).
#[inline(always)]
pub fn task_root(task: u64) -> Result<(u64, u64), u32> {
    let fs: u64 = read(task, off!(task_fs))?;
    path_at(fs, off!(fs_root))
}

/// Appends the task's cwd. Returns bytes appended (0 if unavailable).
#[inline(always)]
pub fn push_cwd(rec: &mut Record, task: u64) -> u32 {
    if !has(podwatch_common::offsets::PATHS) {
        return 0;
    }
    let Ok(fs) = read::<u64>(task, off!(task_fs)) else {
        return 0;
    };
    let Ok(root) = path_at(fs, off!(fs_root)) else {
        return 0;
    };
    let Ok((dentry, mnt)) = path_at(fs, off!(fs_pwd)) else {
        return 0;
    };
    push_path(rec, dentry, mnt, root)
}

/// The `struct file *` behind a task's fd.
#[inline(always)]
pub fn fd_file(task: u64, fd: i64) -> Result<u64, u32> {
    if fd < 0 {
        return Err(0);
    }
    let files: u64 = read(task, off!(task_files))?;
    let fdt: u64 = read(files, off!(files_fdt))?;
    // `max_fds` then `fd`, a word apart (the loader checks it): one read.
    let [max, fds]: [u64; 2] = read(fdt, off!(fdtable_max_fds))?;
    if fd as u64 >= max & 0xffff_ffff {
        return Err(0);
    }
    read(fds, (fd as u64) * 8)
}

/// Appends the path of the directory open at `fd`. Returns bytes appended.
#[inline(always)]
pub fn push_fd_path(rec: &mut Record, task: u64, fd: i64) -> u32 {
    if !has(podwatch_common::offsets::PATHS | podwatch_common::offsets::FILES) {
        return 0;
    }
    let Ok(root) = task_root(task) else { return 0 };
    let Ok(file) = fd_file(task, fd) else {
        return 0;
    };
    let Ok((dentry, mnt)) = path_at(file, off!(file_path)) else {
        return 0;
    };
    push_path(rec, dentry, mnt, root)
}

//! A small reader for the kernel's BTF (`/sys/kernel/btf/vmlinux`): enough to
//! find struct member offsets, which the kernel programs need because Rust eBPF
//! has no CO-RE relocations. Offsets are taken from the running kernel at
//! start-up, so one build works across kernel versions.
//!
//! Format: <https://docs.kernel.org/bpf/btf.html>. Only the type and string
//! sections are read. Input is untrusted: every read is bounds-checked.

use std::collections::HashMap;

use podwatch_common::{offsets, KernelOffsets};

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("BTF is truncated or malformed at byte {0}")]
    Malformed(usize),
    #[error("bad BTF magic {0:#x}")]
    Magic(u16),
    #[error("unknown BTF kind {0} at type {1}")]
    UnknownKind(u32, u32),
}

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, Clone)]
struct Member {
    name: String,
    type_id: u32,
    bit_offset: u32,
}

#[derive(Debug, Clone)]
struct Type {
    kind: u32,
    name: String,
    /// Referenced type for typedef/const/volatile/...
    type_ref: u32,
    members: Vec<Member>,
}

/// Parsed BTF: structs and unions with their members; everything else is kept
/// only as far as needed to see through typedefs and qualifiers.
pub struct Btf {
    types: Vec<Type>,
    structs_by_name: HashMap<String, u32>,
}

fn u32_at(b: &[u8], off: usize, little: bool) -> Result<u32, BtfError> {
    let s = b.get(off..off + 4).ok_or(BtfError::Malformed(off))?;
    let a = [s[0], s[1], s[2], s[3]];
    Ok(if little { u32::from_le_bytes(a) } else { u32::from_be_bytes(a) })
}

fn str_at(strings: &[u8], off: u32) -> String {
    let Some(rest) = strings.get(off as usize..) else {
        return String::new();
    };
    let end = rest.iter().position(|&c| c == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end]).into_owned()
}

impl Btf {
    pub fn from_sys() -> anyhow::Result<Btf> {
        let data = std::fs::read("/sys/kernel/btf/vmlinux")?;
        Ok(Btf::parse(&data)?)
    }

    pub fn parse(data: &[u8]) -> Result<Btf, BtfError> {
        let magic = data.get(0..2).ok_or(BtfError::Malformed(0))?;
        let little = match [magic[0], magic[1]] {
            [0x9f, 0xeb] => true,
            [0xeb, 0x9f] => false,
            m => return Err(BtfError::Magic(u16::from_le_bytes(m))),
        };
        let hdr_len = u32_at(data, 4, little)? as usize;
        let type_off = u32_at(data, 8, little)? as usize;
        let type_len = u32_at(data, 12, little)? as usize;
        let str_off = u32_at(data, 16, little)? as usize;
        let str_len = u32_at(data, 20, little)? as usize;
        let tstart = hdr_len.checked_add(type_off).ok_or(BtfError::Malformed(8))?;
        let tsec = data.get(tstart..tstart.saturating_add(type_len)).ok_or(BtfError::Malformed(tstart))?;
        let sstart = hdr_len.checked_add(str_off).ok_or(BtfError::Malformed(16))?;
        let strings = data.get(sstart..sstart.saturating_add(str_len)).ok_or(BtfError::Malformed(sstart))?;

        // Type id 0 is void.
        let mut types = vec![Type { kind: 0, name: String::new(), type_ref: 0, members: vec![] }];
        let mut off = 0usize;
        while off < tsec.len() {
            let name_off = u32_at(tsec, off, little)?;
            let info = u32_at(tsec, off + 4, little)?;
            let size_or_type = u32_at(tsec, off + 8, little)?;
            off += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut t =
                Type { kind, name: str_at(strings, name_off), type_ref: size_or_type, members: vec![] };
            match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => off += 4,
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => {}
                KIND_ARRAY => off += 12,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = off + i * 12;
                        let mname = u32_at(tsec, m, little)?;
                        let mtype = u32_at(tsec, m + 4, little)?;
                        let moff = u32_at(tsec, m + 8, little)?;
                        t.members.push(Member {
                            name: str_at(strings, mname),
                            type_id: mtype,
                            // With kind_flag the low 24 bits are the offset, the high 8 the bitfield size.
                            bit_offset: if kind_flag { moff & 0xff_ffff } else { moff },
                        });
                    }
                    off += vlen * 12;
                }
                KIND_ENUM => off += vlen * 8,
                KIND_FUNC_PROTO => off += vlen * 8,
                KIND_DATASEC => off += vlen * 12,
                KIND_ENUM64 => off += vlen * 12,
                k => return Err(BtfError::UnknownKind(k, types.len() as u32)),
            }
            types.push(t);
        }
        let mut structs_by_name = HashMap::new();
        for (id, t) in types.iter().enumerate() {
            if t.kind == KIND_STRUCT && !t.name.is_empty() && !t.members.is_empty() {
                structs_by_name.entry(t.name.clone()).or_insert(id as u32);
            }
        }
        Ok(Btf { types, structs_by_name })
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..32 {
            let t = self.types.get(id as usize)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => id = t.type_ref,
                _ => return Some(t),
            }
        }
        None
    }

    fn find_in(&self, t: &Type, member: &str, depth: u32) -> Option<u32> {
        if depth > 8 {
            return None;
        }
        for m in &t.members {
            if m.name == member {
                return Some(m.bit_offset);
            }
        }
        // Anonymous struct/union members (e.g. sock_common's address unions).
        for m in t.members.iter().filter(|m| m.name.is_empty()) {
            if let Some(inner) = self.resolve(m.type_id) {
                if inner.kind == KIND_STRUCT || inner.kind == KIND_UNION {
                    if let Some(o) = self.find_in(inner, member, depth + 1) {
                        return Some(m.bit_offset + o);
                    }
                }
            }
        }
        None
    }

    /// Byte offset of `member` in `struct name`, looking through anonymous members.
    pub fn member_offset(&self, name: &str, member: &str) -> Option<u32> {
        let id = *self.structs_by_name.get(name)?;
        let bits = self.find_in(self.types.get(id as usize)?, member, 0)?;
        (bits % 8 == 0).then_some(bits / 8)
    }
}

/// Looks up every offset the programs use; a group whose fields are all found
/// is marked available. Missing groups disable the fields that need them, never
/// the agent.
pub fn kernel_offsets(btf: &Btf) -> (KernelOffsets, Vec<String>) {
    let mut missing = Vec::new();
    let mut get = |s: &str, m: &str| -> Option<u32> {
        let r = btf.member_offset(s, m);
        if r.is_none() {
            missing.push(format!("{s}.{m}"));
        }
        r
    };
    let mut o = KernelOffsets::default();
    let task = (|| {
        o.task_real_parent = get("task_struct", "real_parent")?;
        o.task_tgid = get("task_struct", "tgid")?;
        o.task_pid = get("task_struct", "pid")?;
        o.task_exit_code = get("task_struct", "exit_code")?;
        Some(())
    })();
    let paths = (|| {
        o.task_fs = get("task_struct", "fs")?;
        o.fs_root = get("fs_struct", "root")?;
        o.fs_pwd = get("fs_struct", "pwd")?;
        o.path_mnt = get("path", "mnt")?;
        o.path_dentry = get("path", "dentry")?;
        o.dentry_parent = get("dentry", "d_parent")?;
        o.dentry_name = get("dentry", "d_name")?;
        o.qstr_name = get("qstr", "name")?;
        o.qstr_len = get("qstr", "len")?;
        o.mount_mnt = get("mount", "mnt")?;
        o.mount_parent = get("mount", "mnt_parent")?;
        o.mount_mountpoint = get("mount", "mnt_mountpoint")?;
        o.vfsmount_root = get("vfsmount", "mnt_root")?;
        Some(())
    })();
    let files = (|| {
        o.task_files = get("task_struct", "files")?;
        o.task_stack = get("task_struct", "stack")?;
        o.files_fdt = get("files_struct", "fdt")?;
        o.fdtable_max_fds = get("fdtable", "max_fds")?;
        o.fdtable_fd = get("fdtable", "fd")?;
        o.file_path = get("file", "f_path")?;
        o.file_private_data = get("file", "private_data")?;
        Some(())
    })();
    let args = (|| {
        o.task_mm = get("task_struct", "mm")?;
        o.mm_arg_start = get("mm_struct", "arg_start")?;
        o.mm_arg_end = get("mm_struct", "arg_end")?;
        Some(())
    })();
    let exe = (|| {
        o.mm_exe_file = get("mm_struct", "exe_file")?;
        Some(())
    })();
    // The tracepoint record offsets (tp_uring_*) are filled in by the loader.
    let uring = (|| {
        o.io_kiocb_opcode = get("io_kiocb", "opcode")?;
        o.io_open_file_slot = get("io_open", "file_slot")?;
        o.io_open_how = get("io_open", "how")?;
        Some(())
    })();
    let cgroups = (|| {
        o.cgroup_self = get("cgroup", "self")?;
        o.cgroup_kn = get("cgroup", "kn")?;
        o.cgroup_root = get("cgroup", "root")?;
        o.css_parent = get("cgroup_subsys_state", "parent")?;
        o.css_cgroup = get("cgroup_subsys_state", "cgroup")?;
        o.kernfs_node_id = get("kernfs_node", "id")?;
        o.cgroup_root_hierarchy_id = get("cgroup_root", "hierarchy_id")?;
        Some(())
    })();
    let identity = (|| {
        o.dentry_inode = get("dentry", "d_inode")?;
        o.file_inode = get("file", "f_inode")?;
        o.file_mode = get("file", "f_mode")?;
        o.inode_ino = get("inode", "i_ino")?;
        o.inode_sb = get("inode", "i_sb")?;
        o.sb_dev = get("super_block", "s_dev")?;
        Some(())
    })();
    let lsm = (|| {
        o.file_flags = get("file", "f_flags")?;
        o.bprm_file = get("linux_binprm", "file")?;
        o.bprm_filename = get("linux_binprm", "filename")?;
        Some(())
    })();
    let sock = (|| {
        o.socket_sk = get("socket", "sk")?;
        o.skc_daddr = get("sock_common", "skc_daddr")?;
        o.skc_rcv_saddr = get("sock_common", "skc_rcv_saddr")?;
        o.skc_dport = get("sock_common", "skc_dport")?;
        o.skc_num = get("sock_common", "skc_num")?;
        o.skc_family = get("sock_common", "skc_family")?;
        o.skc_v6_daddr = get("sock_common", "skc_v6_daddr")?;
        o.skc_v6_rcv_saddr = get("sock_common", "skc_v6_rcv_saddr")?;
        Some(())
    })();
    let tcp = (|| {
        o.sk_err = get("sock", "sk_err")?;
        o.sk_shutdown = get("sock", "sk_shutdown")?;
        o.tcp_bytes_received = get("tcp_sock", "bytes_received")?;
        o.tcp_bytes_sent = get("tcp_sock", "bytes_sent")?;
        Some(())
    })();
    let creds = (|| {
        o.task_real_cred = get("task_struct", "real_cred")?;
        o.cred_uid = get("cred", "uid")?;
        let fsgid = get("cred", "fsgid")?;
        o.cred_caps = get("cred", "cap_inheritable")?;
        let ambient = get("cred", "cap_ambient")?;
        Some((fsgid, ambient))
    })();
    let namespaces = (|| {
        use podwatch_common::ns;
        o.cred_user_ns = get("cred", "user_ns")?;
        o.task_nsproxy = get("task_struct", "nsproxy")?;
        o.ns_common_inum = get("ns_common", "inum")?;
        // (nsproxy member, the namespace's struct) in `ns::*` order; user
        // namespaces hang off the credentials instead.
        let kinds: [(Option<&str>, &str); ns::COUNT] = [
            (Some("mnt_ns"), "mnt_namespace"),
            (Some("pid_ns_for_children"), "pid_namespace"),
            (Some("net_ns"), "net"),
            (Some("uts_ns"), "uts_namespace"),
            (Some("ipc_ns"), "ipc_namespace"),
            (None, "user_namespace"),
            (Some("cgroup_ns"), "cgroup_namespace"),
        ];
        for (i, (member, st)) in kinds.into_iter().enumerate() {
            if let Some(m) = member {
                o.nsproxy_member[i] = get("nsproxy", m)?;
            }
            o.ns_common_at[i] = get(st, "ns")?;
        }
        Some(())
    })();
    // Layouts the programs rely on to read several fields at once; a kernel
    // that differs loses the group, with the reason.
    let mut laid_out = |ok: bool, what: String| {
        if !ok {
            missing.push(what);
        }
        ok
    };
    // The eight ids and the five capability sets in one read each.
    let creds = creds.filter(|&(fsgid, ambient)| {
        laid_out(
            fsgid == o.cred_uid + 28 && ambient == o.cred_caps + 32,
            format!(
                "cred ids and capability sets side by side (uid at {}, fsgid at {fsgid}, cap_inheritable at {}, cap_ambient at {ambient})",
                o.cred_uid, o.cred_caps
            ),
        )
    });
    // nsproxy's namespace pointers in one read of 64 bytes.
    let ns_members: Vec<u32> = (0..podwatch_common::ns::COUNT)
        .filter(|&i| i != podwatch_common::ns::USER)
        .map(|i| o.nsproxy_member[i])
        .collect();
    o.nsproxy_first = ns_members.iter().copied().min().unwrap_or(0);
    let first = o.nsproxy_first;
    let namespaces = namespaces.filter(|_| {
        laid_out(
            ns_members.iter().all(|&m| (m - first) % 8 == 0 && m - first < 64),
            format!("nsproxy's namespace pointers within 64 bytes (at {ns_members:?})"),
        )
    });
    // d_parent and d_name's len and name in one go; a `struct path` as (mnt, dentry) in one read.
    let paths = paths.filter(|_| {
        let dentry = laid_out(
            o.dentry_name == o.dentry_parent + 8 && o.qstr_len == 4 && o.qstr_name == 8,
            format!(
                "dentry.d_name right after d_parent (d_parent at {}, d_name at {}, qstr.len at {}, qstr.name at {})",
                o.dentry_parent, o.dentry_name, o.qstr_len, o.qstr_name
            ),
        );
        let path = laid_out(
            o.path_mnt == 0 && o.path_dentry == 8,
            format!("path.mnt then path.dentry (at {} and {})", o.path_mnt, o.path_dentry),
        );
        dentry && path
    });
    // fdtable.max_fds and fdtable.fd in one read.
    let files = files.filter(|_| {
        laid_out(
            o.fdtable_fd == o.fdtable_max_fds + 8,
            format!(
                "fdtable.fd a word after max_fds (max_fds at {}, fd at {})",
                o.fdtable_max_fds, o.fdtable_fd
            ),
        )
    });
    // The walk reads d_inode with d_parent and d_name (`DentryLink`).
    let identity = identity.filter(|_| {
        laid_out(
            o.dentry_inode == o.dentry_name + 16,
            format!(
                "dentry.d_inode right after d_name (d_name at {}, d_inode at {})",
                o.dentry_name, o.dentry_inode
            ),
        )
    });
    for (found, bit) in [
        (task, offsets::TASK),
        (paths, offsets::PATHS),
        (files, offsets::FILES),
        (args, offsets::ARGS),
        (sock, offsets::SOCK),
        (tcp, offsets::TCP_STATS),
        (exe, offsets::EXE),
        (uring, offsets::URING),
        (cgroups, offsets::CGROUPS),
        (identity, offsets::IDENTITY),
        (lsm, offsets::LSM),
        (creds.map(|_| ()), offsets::CREDS),
        (namespaces.filter(|_| creds.is_some()), offsets::NAMESPACES),
    ] {
        if found.is_some() {
            o.available |= bit;
        }
    }
    (o, missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a BTF blob: `struct outer { int a; union { int b; int c; }; }` with an int type.
    fn synthetic() -> Vec<u8> {
        let strings = b"\0int\0outer\0a\0b\0c\0".to_vec();
        let mut types = Vec::new();
        let mut push = |v: u32| types.extend_from_slice(&v.to_le_bytes());
        // 1: int (name "int" at 1), size 4, + int encoding word
        push(1);
        push(KIND_INT << 24);
        push(4);
        push(32);
        // 2: anonymous union { b @0, c @0 }
        push(0);
        push((KIND_UNION << 24) | 2);
        push(4);
        push(13); // "b"
        push(1);
        push(0);
        push(15); // "c"
        push(1);
        push(0);
        // 3: struct outer { a @0, <anon> @32 bits }
        push(5); // "outer"
        push((KIND_STRUCT << 24) | 2);
        push(8);
        push(11); // "a"
        push(1);
        push(0);
        push(0); // anonymous
        push(2);
        push(32);
        let mut out = Vec::new();
        out.extend_from_slice(&0xeb9fu16.to_le_bytes());
        out.push(1);
        out.push(0);
        out.extend_from_slice(&24u32.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(types.len() as u32).to_le_bytes());
        out.extend_from_slice(&(types.len() as u32).to_le_bytes());
        out.extend_from_slice(&(strings.len() as u32).to_le_bytes());
        out.extend_from_slice(&types);
        out.extend_from_slice(&strings);
        out
    }

    #[test]
    fn finds_members_through_anonymous_unions() {
        let btf = Btf::parse(&synthetic()).expect("parse");
        assert_eq!(btf.member_offset("outer", "a"), Some(0));
        assert_eq!(btf.member_offset("outer", "c"), Some(4));
        assert_eq!(btf.member_offset("outer", "zz"), None);
        assert_eq!(btf.member_offset("nope", "a"), None);
    }

    #[test]
    fn truncated_or_garbage_input_is_an_error_not_a_panic() {
        let full = synthetic();
        for cut in 0..full.len() {
            let _ = Btf::parse(&full[..cut]);
        }
        assert!(Btf::parse(b"hello world, not btf at all").is_err());
        assert!(Btf::parse(&[]).is_err());
    }

    #[test]
    fn running_kernel_has_every_group() {
        let Ok(btf) = Btf::from_sys() else {
            eprintln!("skipped: /sys/kernel/btf/vmlinux not readable");
            return;
        };
        let (o, missing) = kernel_offsets(&btf);
        assert!(missing.is_empty(), "missing offsets: {missing:?}");
        assert_eq!(o.available, 0x1fff);
        // `struct sock_common` starts with the address pair on every kernel since 2.6.
        assert_eq!(o.skc_daddr, 0);
        assert_eq!(o.skc_rcv_saddr, 4);
    }
}

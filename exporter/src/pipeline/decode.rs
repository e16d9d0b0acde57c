//! Ring buffer bytes → typed records. Every length is checked against the
//! record; a short, malformed or unknown record is an error the caller counts,
//! never a panic. Strings stay bytes here (paths and args need not be UTF-8).

use std::mem::size_of;

use podwatch_common::{
    fixed_len, kind, CgroupMkdir, Credentials, Exec, Exit, FileOpen, Fork, Header, Net, Privilege,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record shorter than its header")]
    Short,
    #[error("unknown record kind")]
    UnknownKind,
    #[error("record length field disagrees with the record")]
    BadLength,
    #[error("string lengths run past the record")]
    BadTail,
}

impl DecodeError {
    /// Label used in counters.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Short => "short",
            DecodeError::UnknownKind => "unknown_kind",
            DecodeError::BadLength => "bad_length",
            DecodeError::BadTail => "bad_tail",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    Exec {
        ppid: u32,
        filename: Vec<u8>,
        args: Vec<Vec<u8>>,
        cwd: Option<Vec<u8>>,
        /// The executed file's resolved path (absent when the kernel could not resolve it).
        executable: Option<Vec<u8>>,
        /// What the new image runs with (absent when the kernel's BTF lacks the fields).
        creds: Option<Credentials>,
    },
    Privilege(Privilege),
    Exit {
        exit_code: u32,
    },
    Fork {
        child_tgid: u32,
        parent_tgid: u32,
    },
    FileOpen {
        syscall: u32,
        dfd: i32,
        flags: u64,
        mode: u32,
        ret: i32,
        /// As the process passed it (empty for open_by_handle_at and io_uring).
        path: Vec<u8>,
        dir: Option<Vec<u8>>,
        /// The opened file's absolute path, when the kernel resolved it.
        resolved: Option<Vec<u8>>,
    },
    Net {
        kind: u16,
        net: Net,
    },
    CgroupMkdir {
        id: u64,
        path: Vec<u8>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub header: Header,
    pub payload: Payload,
}

fn read_pod<T: Copy>(b: &[u8], off: usize) -> Option<T> {
    let s = b.get(off..off.checked_add(size_of::<T>())?)?;
    // SAFETY: T is a #[repr(C)] plain-old-data record type; the slice is long enough
    // and read_unaligned has no alignment requirement.
    Some(unsafe { std::ptr::read_unaligned(s.as_ptr() as *const T) })
}

/// Splits a tail into consecutive fields of the given lengths.
struct Tail<'a> {
    rest: &'a [u8],
}

impl<'a> Tail<'a> {
    fn take(&mut self, len: u32) -> Result<&'a [u8], DecodeError> {
        let len = len as usize;
        if len > self.rest.len() {
            return Err(DecodeError::BadTail);
        }
        let (a, b) = self.rest.split_at(len);
        self.rest = b;
        Ok(a)
    }
}

/// A NUL-terminated kernel string field → its bytes without the NUL.
fn cstr(b: &[u8]) -> Vec<u8> {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    b[..end].to_vec()
}

/// Reversed NUL-terminated components (as walked in the kernel) → absolute path.
pub fn path_from_components(b: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = b.split(|&c| c == 0).filter(|p| !p.is_empty()).collect();
    parts.reverse();
    let mut out = Vec::with_capacity(b.len() + 1);
    for p in parts {
        // A root dentry is named "/"; skip it so paths do not start with "//".
        if p == b"/" {
            continue;
        }
        out.push(b'/');
        out.extend_from_slice(p);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

pub fn decode(buf: &[u8]) -> Result<Record, DecodeError> {
    let header: Header = read_pod(buf, 0).ok_or(DecodeError::Short)?;
    let fixed = fixed_len(header.kind);
    if fixed == size_of::<Header>() {
        return Err(DecodeError::UnknownKind);
    }
    let len = header.len as usize;
    if len < fixed || len > buf.len() {
        return Err(DecodeError::BadLength);
    }
    let body = &buf[..len];
    let p = size_of::<Header>();
    let mut tail = Tail { rest: &body[fixed..] };
    let payload = match header.kind {
        kind::EXEC => {
            let e: Exec = read_pod(body, p).ok_or(DecodeError::Short)?;
            let filename = cstr(tail.take(e.filename_len)?);
            let args_raw = tail.take(e.args_len)?;
            let cwd_raw = tail.take(e.cwd_len)?;
            let exe_raw = tail.take(e.exe_len)?;
            let mut args: Vec<Vec<u8>> = args_raw.split(|&c| c == 0).map(|a| a.to_vec()).collect();
            // The block ends with a NUL, which leaves one empty trailing element.
            if args.last().is_some_and(|a| a.is_empty()) {
                args.pop();
            }
            let cwd = (!cwd_raw.is_empty()).then(|| path_from_components(cwd_raw));
            let executable = (!exe_raw.is_empty()).then(|| exe_raw.to_vec());
            let creds = (e.creds.valid != 0).then_some(e.creds);
            Payload::Exec { ppid: e.ppid, filename, args, cwd, executable, creds }
        }
        kind::EXIT => {
            let e: Exit = read_pod(body, p).ok_or(DecodeError::Short)?;
            Payload::Exit { exit_code: e.exit_code }
        }
        kind::FORK => {
            let f: Fork = read_pod(body, p).ok_or(DecodeError::Short)?;
            Payload::Fork { child_tgid: f.child_tgid, parent_tgid: f.parent_tgid }
        }
        kind::FILE_OPEN => {
            let f: FileOpen = read_pod(body, p).ok_or(DecodeError::Short)?;
            let path = cstr(tail.take(f.path_len)?);
            let dir_raw = tail.take(f.dir_len)?;
            let dir = (!dir_raw.is_empty()).then(|| path_from_components(dir_raw));
            let resolved_raw = tail.take(f.resolved_len)?;
            let resolved = (!resolved_raw.is_empty()).then(|| resolved_raw.to_vec());
            Payload::FileOpen {
                syscall: f.syscall,
                dfd: f.dfd,
                flags: f.flags,
                mode: f.mode,
                ret: f.ret,
                path,
                dir,
                resolved,
            }
        }
        kind::TCP_CONNECT | kind::TCP_ACCEPT | kind::TCP_CLOSE | kind::UDP_CONNECT | kind::UDP_SEND => {
            let net: Net = read_pod(body, p).ok_or(DecodeError::Short)?;
            Payload::Net { kind: header.kind, net }
        }
        kind::PRIVILEGE => Payload::Privilege(read_pod(body, p).ok_or(DecodeError::Short)?),
        kind::CGROUP_MKDIR => {
            let c: CgroupMkdir = read_pod(body, p).ok_or(DecodeError::Short)?;
            Payload::CgroupMkdir { id: c.id, path: cstr(tail.take(c.path_len)?) }
        }
        _ => return Err(DecodeError::UnknownKind),
    };
    Ok(Record { header, payload })
}

/// Encodes a record the way the kernel does; for tests and benches.
#[doc(hidden)]
pub fn encode_for_test<T: Copy>(mut header: Header, payload: &T, tail: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    header.len = (size_of::<Header>() + size_of::<T>() + tail.len()) as u32;
    // SAFETY: both are #[repr(C)] plain-old-data types viewed as bytes.
    unsafe {
        out.extend_from_slice(std::slice::from_raw_parts(
            &header as *const Header as *const u8,
            size_of::<Header>(),
        ));
        out.extend_from_slice(std::slice::from_raw_parts(payload as *const T as *const u8, size_of::<T>()));
    }
    out.extend_from_slice(tail);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec_record(args: &[u8], cwd: &[u8]) -> Vec<u8> {
        exec_record_with_exe(args, cwd, b"")
    }

    fn exec_record_with_exe(args: &[u8], cwd: &[u8], exe: &[u8]) -> Vec<u8> {
        let filename = b"/usr/bin/cat\0";
        let h = Header { kind: kind::EXEC, tgid: 42, ..Default::default() };
        let e = Exec {
            ppid: 1,
            filename_len: filename.len() as u32,
            args_len: args.len() as u32,
            cwd_len: cwd.len() as u32,
            exe_len: exe.len() as u32,
            _pad: 0,
            creds: Default::default(),
        };
        let mut tail = filename.to_vec();
        tail.extend_from_slice(args);
        tail.extend_from_slice(cwd);
        tail.extend_from_slice(exe);
        encode_for_test(h, &e, &tail)
    }

    #[test]
    fn decodes_exec_with_args_and_reversed_cwd() {
        let r = decode(&exec_record(b"cat\0/etc/passwd\0", b"shadow\0etc\0/\0")).expect("decode");
        match r.payload {
            Payload::Exec { ppid, filename, args, cwd, executable, .. } => {
                assert_eq!(ppid, 1);
                assert_eq!(filename, b"/usr/bin/cat");
                assert_eq!(args, vec![b"cat".to_vec(), b"/etc/passwd".to_vec()]);
                assert_eq!(cwd.as_deref(), Some(&b"/etc/shadow"[..]));
                assert_eq!(executable, None);
            }
            p => panic!("unexpected {p:?}"),
        }
    }

    #[test]
    fn decodes_the_resolved_executable_after_the_cwd() {
        let r = decode(&exec_record_with_exe(b"x\0", b"tmp\0", b"/usr/bin/cat")).expect("decode");
        let Payload::Exec { cwd, executable, .. } = r.payload else { panic!("not an exec") };
        assert_eq!(cwd.as_deref(), Some(&b"/tmp"[..]));
        assert_eq!(executable.as_deref(), Some(&b"/usr/bin/cat"[..]));
        // An exe length past the record is an error, not a panic.
        let mut rec = exec_record_with_exe(b"x\0", b"", b"/a");
        let off = size_of::<Header>() + 16;
        rec[off..off + 4].copy_from_slice(&100u32.to_le_bytes());
        assert_eq!(decode(&rec), Err(DecodeError::BadTail));
    }

    #[test]
    fn root_cwd_is_slash() {
        assert_eq!(path_from_components(b"/\0"), b"/");
        assert_eq!(path_from_components(b""), b"/");
        assert_eq!(path_from_components(b"tmp\0"), b"/tmp");
    }

    #[test]
    fn non_utf8_and_truncated_args_survive() {
        // argv cut mid-string (no trailing NUL) and non-UTF-8 bytes.
        let r = decode(&exec_record(b"a\xff\0bcd", b"")).expect("decode");
        let Payload::Exec { args, cwd, .. } = r.payload else { panic!() };
        assert_eq!(args, vec![b"a\xff".to_vec(), b"bcd".to_vec()]);
        assert_eq!(cwd, None);
    }

    #[test]
    fn every_prefix_of_a_record_is_an_error_not_a_panic() {
        let rec = exec_record(b"cat\0/etc/passwd\0", b"etc\0");
        for cut in 0..rec.len() {
            assert!(decode(&rec[..cut]).is_err(), "cut at {cut} decoded");
        }
        assert!(decode(&rec).is_ok());
    }

    #[test]
    fn lying_lengths_and_unknown_kinds_are_errors() {
        let mut rec = exec_record(b"cat\0", b"");
        // args_len claims more than the record holds.
        let off = size_of::<Header>() + 8;
        rec[off..off + 4].copy_from_slice(&9999u32.to_le_bytes());
        assert_eq!(decode(&rec), Err(DecodeError::BadTail));

        let mut rec = exec_record(b"cat\0", b"");
        rec[0..2].copy_from_slice(&999u16.to_le_bytes());
        assert_eq!(decode(&rec), Err(DecodeError::UnknownKind));

        let mut rec = exec_record(b"cat\0", b"");
        rec[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&rec), Err(DecodeError::BadLength));
    }

    #[test]
    fn random_bytes_never_panic() {
        // xorshift: deterministic garbage, with valid kinds forced in half the cases.
        let mut s: u64 = 0x9e3779b97f4a7c15;
        for i in 0..20_000 {
            let n = (i % 300) as usize;
            let mut b: Vec<u8> = (0..n)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    s as u8
                })
                .collect();
            if i % 2 == 0 && b.len() >= 8 {
                b[0] = (i % 11) as u8;
                b[1] = 0;
                let l = (b.len() as u32).to_le_bytes();
                b[4..8].copy_from_slice(&l);
            }
            let _ = decode(&b);
        }
    }

    #[test]
    fn privilege_records_decode_and_short_ones_are_refused() {
        use podwatch_common::{change, priv_syscall, Privilege};
        let h = Header { kind: kind::PRIVILEGE, tgid: 7, ..Default::default() };
        let mut p = Privilege { syscall: priv_syscall::SETNS, change: change::SETNS, ..Default::default() };
        p.after.ns[2] = 4026531840;
        let bytes = encode_for_test(h, &p, &[]);
        match decode(&bytes).expect("decodes").payload {
            Payload::Privilege(d) => assert_eq!(d, p),
            other => panic!("{other:?}"),
        }
        let mut short = bytes.clone();
        short.truncate(bytes.len() - 8);
        let n = short.len() as u32;
        short[4..8].copy_from_slice(&n.to_le_bytes());
        assert_eq!(decode(&short), Err(DecodeError::BadLength));
    }
}

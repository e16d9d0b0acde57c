//! Network: TCP connect / accept / close from `sock:inet_sock_set_state` and
//! accept(4) exits; UDP destinations from the cgroup connect and sendmsg hooks.
//!
//! TCP state changes often run in softirq, where "current" is whoever was on
//! the CPU. The process is therefore captured where it is certain (connect's
//! CLOSE→SYN_SENT runs in the caller; accept's exit runs in the acceptor) and
//! kept per socket in `SOCK_OWNERS` until the socket reaches TCP_CLOSE.

use aya_ebpf::{
    macros::{cgroup_sock_addr, map, tracepoint},
    maps::LruHashMap,
    programs::{SockAddrContext, TracePointContext},
};
use podwatch_common::{
    action, counter, kind, offsets,
    policy::{NET_EGRESS, NET_INGRESS, NET_TCP, NET_UDP},
    stat, Net, AF_INET, AF_INET6, DIRECTION_EGRESS, DIRECTION_INGRESS, IPPROTO_TCP, IPPROTO_UDP,
};

use crate::{
    counters,
    kernel::{current_task, fd_file, has, off, read},
    policy,
    record::{count, current_is_agent, Owner, Record},
};

#[repr(C)]
#[derive(Clone, Copy)]
struct SockOwner {
    owner: Owner,
    /// kind::TCP_CONNECT or kind::TCP_ACCEPT: which side this process is on.
    side: u16,
    rule: u16,
    action: u8,
    _pad: [u8; 3],
}

#[map]
static SOCK_OWNERS: LruHashMap<u64, SockOwner> = LruHashMap::with_max_entries(65536, 0);

/// The cgroup connect hook's verdict for a TCP connect, by thread, until the
/// same thread's CLOSE→SYN_SENT moves it onto the socket.
#[repr(C)]
#[derive(Clone, Copy)]
struct PendingVerdict {
    rule: u16,
    action: u8,
    _pad: [u8; 5],
}

#[map]
static CONNECT_VERDICTS: LruHashMap<u64, PendingVerdict> = LruHashMap::with_max_entries(16384, 0);

const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_CLOSE: i32 = 7;
const TCP_LISTEN: i32 = 10;
const SOCK_STREAM: u32 = 1;
const SOCK_DGRAM: u32 = 2;
const RCV_SHUTDOWN: u8 = 1;

// sock:inet_sock_set_state field offsets.
const SK_SKADDR: usize = 8;
const SK_OLDSTATE: usize = 16;
const SK_NEWSTATE: usize = 20;
const SK_SPORT: usize = 24;
const SK_DPORT: usize = 26;
const SK_FAMILY: usize = 28;
const SK_PROTOCOL: usize = 30;
const SK_SADDR: usize = 32;
const SK_DADDR: usize = 36;
const SK_SADDR_V6: usize = 40;
const SK_DADDR_V6: usize = 56;

#[inline(always)]
fn tp<T: Copy>(ctx: &TracePointContext, off: usize) -> Result<T, u32> {
    Ok(crate::kernel::tp_field(ctx, off))
}

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    match try_set_state(&ctx) {
        Ok(v) | Err(v) => v,
    }
}

fn try_set_state(ctx: &TracePointContext) -> Result<u32, u32> {
    let protocol: u16 = tp(ctx, SK_PROTOCOL)?;
    if protocol != IPPROTO_TCP {
        return Ok(0);
    }
    let sk: u64 = tp(ctx, SK_SKADDR)?;
    let old: i32 = tp(ctx, SK_OLDSTATE)?;
    let new: i32 = tp(ctx, SK_NEWSTATE)?;

    if old == TCP_CLOSE && new == TCP_SYN_SENT {
        // connect() in the calling process.
        if current_is_agent() {
            return Ok(0);
        }
        // SAFETY: helper without arguments.
        let tid = unsafe { aya_ebpf::helpers::generated::bpf_get_current_pid_tgid() };
        // SAFETY: value copied out before removal.
        let v = (unsafe { CONNECT_VERDICTS.get(&tid) }).copied();
        let _ = CONNECT_VERDICTS.remove(&tid);
        let (rule, action) = v.map(|v| (v.rule, v.action)).unwrap_or((0, action::NONE));
        let o = SockOwner { owner: Owner::current(), side: kind::TCP_CONNECT, rule, action, _pad: [0; 3] };
        let _ = SOCK_OWNERS.insert(&sk, &o, 0);
        return Ok(0);
    }
    let record_kind = if old == TCP_SYN_SENT && (new == TCP_ESTABLISHED || new == TCP_CLOSE) {
        kind::TCP_CONNECT
    } else if new == TCP_CLOSE && old != TCP_LISTEN {
        kind::TCP_CLOSE
    } else {
        return Ok(0);
    };
    // SAFETY: value copied out before any removal.
    let Some(owner) = (unsafe { SOCK_OWNERS.get(&sk) }).copied() else {
        if record_kind == kind::TCP_CLOSE {
            count(stat::SOCK_OWNER_MISS);
        }
        return Ok(0);
    };
    if new == TCP_CLOSE {
        let _ = SOCK_OWNERS.remove(&sk);
    }

    let mut rec = Record::new(record_kind).ok_or(0u32)?;
    rec.set_owner(&owner.owner);
    rec.set_verdict(owner.rule, owner.action);
    let family: u16 = tp(ctx, SK_FAMILY)?;
    let p: &mut Net = rec.payload();
    p.family = family;
    p.protocol = IPPROTO_TCP;
    // Tracepoint addresses are local (s) and remote (d); records keep that and
    // userspace orients them by side.
    p.sport = tp(ctx, SK_SPORT)?;
    p.dport = tp(ctx, SK_DPORT)?;
    if family == AF_INET6 {
        p.saddr = tp(ctx, SK_SADDR_V6)?;
        p.daddr = tp(ctx, SK_DADDR_V6)?;
    } else {
        let s: [u8; 4] = tp(ctx, SK_SADDR)?;
        let d: [u8; 4] = tp(ctx, SK_DADDR)?;
        p.saddr[..4].copy_from_slice(&s);
        p.daddr[..4].copy_from_slice(&d);
    }
    if has(offsets::TCP_STATS) {
        if new == TCP_CLOSE && old == TCP_SYN_SENT {
            let err: i32 = read(sk, off!(sk_err)).unwrap_or(0);
            p.result = -err;
        }
        if record_kind == kind::TCP_CLOSE {
            // bytes_sent: payload bytes handed to IP, retransmissions included
            // (bytes_acked would count the SYN and FIN sequence numbers too).
            p.bytes_sent = read(sk, off!(tcp_bytes_sent)).unwrap_or(0);
            // bytes_received advances with rcv_nxt, which the peer's FIN moves by
            // one; RCV_SHUTDOWN says that FIN arrived (tcp_done has not yet set
            // SHUTDOWN_MASK when this tracepoint fires).
            let received: u64 = read(sk, off!(tcp_bytes_received)).unwrap_or(0);
            let shutdown: u8 = read(sk, off!(sk_shutdown)).unwrap_or(0);
            let fin = (shutdown & RCV_SHUTDOWN != 0) as u64;
            p.bytes_received = received.saturating_sub(fin);
        }
    } else if new == TCP_CLOSE && old == TCP_SYN_SENT {
        p.result = -111; // ECONNREFUSED: the most likely cause; exact errno needs sk_err
    }
    p.side = owner.side;
    let direction = if owner.side == kind::TCP_ACCEPT { DIRECTION_INGRESS } else { DIRECTION_EGRESS };
    let (counter_kind, outcome) = if record_kind == kind::TCP_CONNECT {
        (counter::CONNECT, (p.result != 0) as u8)
    } else {
        (counter::CLOSE, 0)
    };
    let (sent, received) = (p.bytes_sent, p.bytes_received);
    let mut k = counters::key(owner.owner.cgroup_id, counter_kind, IPPROTO_TCP as u8, outcome, direction);
    k.rule = owner.rule;
    k.action = owner.action;
    counters::add(&k, sent, received);
    if policy::filtering() && owner.action < action::LOG {
        return Ok(0);
    }
    rec.emit();
    Ok(0)
}

#[tracepoint]
pub fn sys_exit_accept(ctx: TracePointContext) -> u32 {
    match try_accept(&ctx) {
        Ok(v) | Err(v) => v,
    }
}

#[tracepoint]
pub fn sys_exit_accept4(ctx: TracePointContext) -> u32 {
    match try_accept(&ctx) {
        Ok(v) | Err(v) => v,
    }
}

fn try_accept(ctx: &TracePointContext) -> Result<u32, u32> {
    if !has(offsets::FILES | offsets::SOCK) || current_is_agent() {
        return Ok(0);
    }
    let fd: i64 = tp(ctx, 16)?;
    if fd < 0 {
        return Ok(0);
    }
    let file = fd_file(current_task(), fd)?;
    let socket: u64 = read(file, off!(file_private_data))?;
    let sk: u64 = read(socket, off!(socket_sk))?;
    let family: u16 = read(sk, off!(skc_family))?;
    if family != AF_INET && family != AF_INET6 {
        return Ok(0); // unix sockets and friends
    }
    let mut rec = Record::new(kind::TCP_ACCEPT).ok_or(0u32)?;
    let p: &mut Net = rec.payload();
    p.family = family;
    p.protocol = IPPROTO_TCP;
    p.sport = read(sk, off!(skc_num)).unwrap_or(0);
    p.dport = u16::from_be(read(sk, off!(skc_dport)).unwrap_or(0));
    if family == AF_INET6 {
        p.saddr = read(sk, off!(skc_v6_rcv_saddr)).unwrap_or([0; 16]);
        p.daddr = read(sk, off!(skc_v6_daddr)).unwrap_or([0; 16]);
    } else {
        let s: [u8; 4] = read(sk, off!(skc_rcv_saddr)).unwrap_or([0; 4]);
        let d: [u8; 4] = read(sk, off!(skc_daddr)).unwrap_or([0; 4]);
        p.saddr[..4].copy_from_slice(&s);
        p.daddr[..4].copy_from_slice(&d);
    }
    p.side = kind::TCP_ACCEPT;
    // Ingress rules match the peer's address and our (the service's) port.
    let (peer, local_port) = (p.daddr, p.sport);
    let cgroup_id = rec.header().cgroup_id;
    let v = policy::match_addr(&peer, family == AF_INET6, local_port, cgroup_id, NET_TCP | NET_INGRESS);
    rec.set_verdict(v.rule, v.action);
    let o = SockOwner {
        owner: Owner::current(),
        side: kind::TCP_ACCEPT,
        rule: v.rule,
        action: v.action,
        _pad: [0; 3],
    };
    let _ = SOCK_OWNERS.insert(&sk, &o, 0);
    let mut k = counters::key(cgroup_id, counter::ACCEPT, IPPROTO_TCP as u8, 0, DIRECTION_INGRESS);
    k.rule = v.rule;
    k.action = v.action;
    counters::add(&k, 0, 0);
    if policy::filtering() && v.action < action::LOG {
        return Ok(0);
    }
    rec.emit();
    Ok(0)
}

/// A destination from a cgroup sock_addr hook (connect or sendmsg): judged by
/// policy; returns 0 to refuse it (the syscall fails with EPERM), 1 to allow.
#[inline(always)]
fn judge_destination(ctx: &SockAddrContext, hook: u16, family: u16) -> i32 {
    // SAFETY: the context pointer is the kernel's bpf_sock_addr.
    let sa = unsafe { &*ctx.sock_addr };
    if current_is_agent() {
        return 1;
    }
    let udp = sa.type_ == SOCK_DGRAM;
    if !udp && sa.type_ != SOCK_STREAM {
        return 1;
    }
    let mut daddr = [0u8; 16];
    if family == AF_INET6 {
        let ip = sa.user_ip6;
        daddr[0..4].copy_from_slice(&ip[0].to_ne_bytes());
        daddr[4..8].copy_from_slice(&ip[1].to_ne_bytes());
        daddr[8..12].copy_from_slice(&ip[2].to_ne_bytes());
        daddr[12..16].copy_from_slice(&ip[3].to_ne_bytes());
    } else {
        daddr[..4].copy_from_slice(&sa.user_ip4.to_ne_bytes());
    }
    let dport = u16::from_be(sa.user_port as u16);
    // SAFETY: helper without arguments.
    let cgroup_id = unsafe { aya_ebpf::helpers::generated::bpf_get_current_cgroup_id() };
    let proto_bit = if udp { NET_UDP } else { NET_TCP };
    let v = policy::match_addr(&daddr, family == AF_INET6, dport, cgroup_id, proto_bit | NET_EGRESS);
    let deny = v.action == action::DENY;

    if !udp && !deny {
        // An allowed TCP connect is reported when its handshake ends
        // (inet_sock_set_state); hand the verdict over to that.
        // SAFETY: helper without arguments.
        let tid = unsafe { aya_ebpf::helpers::generated::bpf_get_current_pid_tgid() };
        if v.rule != 0 {
            let _ = CONNECT_VERDICTS.insert(
                &tid,
                &PendingVerdict { rule: v.rule, action: v.action, _pad: [0; 5] },
                0,
            );
        }
        return 1;
    }
    let (record_kind, counter_kind, protocol) = if !udp {
        (kind::TCP_CONNECT, counter::CONNECT, IPPROTO_TCP)
    } else if hook == kind::UDP_SEND {
        (kind::UDP_SEND, counter::SEND, IPPROTO_UDP)
    } else {
        (kind::UDP_CONNECT, counter::CONNECT, IPPROTO_UDP)
    };
    let mut k = counters::key(cgroup_id, counter_kind, protocol as u8, deny as u8, DIRECTION_EGRESS);
    k.rule = v.rule;
    k.action = v.action;
    counters::add(&k, 0, 0);
    if !policy::filtering() || v.action >= action::LOG {
        if let Some(mut rec) = Record::new(record_kind) {
            rec.set_verdict(v.rule, v.action);
            let p: &mut Net = rec.payload();
            p.family = family;
            p.protocol = protocol;
            p.dport = dport;
            p.daddr = daddr;
            p.side = kind::TCP_CONNECT;
            if deny {
                p.result = -1; // EPERM
            }
            rec.emit();
        }
    }
    if deny {
        0
    } else {
        1
    }
}

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    judge_destination(&ctx, kind::UDP_CONNECT, AF_INET)
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    judge_destination(&ctx, kind::UDP_CONNECT, AF_INET6)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sendmsg4(ctx: SockAddrContext) -> i32 {
    judge_destination(&ctx, kind::UDP_SEND, AF_INET)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn sendmsg6(ctx: SockAddrContext) -> i32 {
    judge_destination(&ctx, kind::UDP_SEND, AF_INET6)
}

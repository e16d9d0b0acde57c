//! TCP connect / accept / close (IPv4 and IPv6) and UDP destinations, with
//! real sockets between a python client and this test process.

use std::{
    io::{Read, Write},
    net::{TcpListener, UdpSocket},
};

use podwatch::pipeline::event::Kind;

use crate::harness::{command_in, require_root, run, Agent};

fn client(addr: &str, port: u16, send: usize) -> u32 {
    let script = format!(
        "import socket\nc = socket.create_connection(('{addr}', {port}))\nc.sendall(b'x' * {send})\nc.shutdown(socket.SHUT_WR)\nwhile c.recv(65536): pass\nc.close()\n"
    );
    let (pid, status) = run(command_in(None, "/usr/bin/python3", &["-c", &script]));
    assert!(status.success(), "client failed");
    pid
}

fn round_trip(bind: &str, family: &str) {
    let agent = Agent::start();
    let listener = TcpListener::bind(format!("{bind}:0")).expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().expect("accept");
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).expect("read");
        s.write_all(&[b'y'; 321]).expect("write");
        (buf.len(), peer.port())
    });
    let addr = bind.trim_matches(['[', ']']);
    let pid = client(addr, port, 4000);
    let (received, client_port) = server.join().expect("server");
    assert_eq!(received, 4000);

    let connect = agent.expect_one("connect", |e| e.kind == Kind::Connect && e.process.pid == pid);
    let n = connect.network.as_ref().expect("network");
    assert_eq!((&*n.protocol, &*n.family, &*n.direction), ("tcp", family, "egress"));
    assert_eq!((n.src.address.as_str(), n.src.port), (addr, client_port));
    assert_eq!((n.dst.address.as_str(), n.dst.port), (addr, port));
    assert_eq!(n.result, "ok");
    assert!(connect.process.binary.as_deref().is_some_and(|b| b.contains("python3")));

    let me = std::process::id();
    let accept = agent.expect_one("accept", |e| {
        e.kind == Kind::Accept
            && e.process.pid == me
            && e.network.as_ref().is_some_and(|n| n.dst.port == port)
    });
    let n = accept.network.as_ref().expect("network");
    assert_eq!(n.direction, "ingress");
    assert_eq!((n.src.address.as_str(), n.src.port), (addr, client_port));

    let close = agent.expect_one("client close", |e| e.kind == Kind::Close && e.process.pid == pid);
    let n = close.network.as_ref().expect("network");
    assert_eq!((n.bytes_sent, n.bytes_received), (Some(4000), Some(321)));
    assert_eq!(n.dst.port, port);
    let close = agent.expect_one("server close", |e| {
        e.kind == Kind::Close && e.process.pid == me && e.network.as_ref().is_some_and(|n| n.dst.port == port)
    });
    let n = close.network.as_ref().expect("network");
    assert_eq!(n.direction, "ingress");
    assert_eq!((n.bytes_sent, n.bytes_received), (Some(321), Some(4000)));
}

#[test]
fn tcp_ipv4_connect_accept_close_with_bytes() {
    require_root!();
    round_trip("127.0.0.1", "ipv4");
}

#[test]
fn tcp_ipv6_connect_accept_close_with_bytes() {
    require_root!();
    round_trip("[::1]", "ipv6");
}

#[test]
fn refused_connect_reports_the_errno() {
    require_root!();
    let agent = Agent::start();
    // A port nobody listens on: bind, learn the port, close.
    let port = crate::harness::free_port();
    let script = format!(
        "import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}))\nexcept ConnectionRefusedError:\n    pass\n"
    );
    let (pid, status) = run(command_in(None, "/usr/bin/python3", &["-c", &script]));
    assert!(status.success());
    let e = agent.expect_one("refused connect", |e| e.kind == Kind::Connect && e.process.pid == pid);
    let n = e.network.expect("network");
    assert_eq!((&*n.result, n.dst.port), ("ECONNREFUSED", port));
    // A refused connect never became a connection: no close event for it.
    assert!(agent.drain(|e| e.kind == Kind::Close && e.process.pid == pid).is_empty());
}

#[test]
fn udp_destinations_connected_and_unconnected() {
    require_root!();
    let agent = Agent::start();
    let sink = UdpSocket::bind("127.0.0.1:0").expect("udp");
    let port = sink.local_addr().expect("addr").port();
    let script = format!(
        "import socket\nu = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nu.sendto(b'q', ('127.0.0.1', {port}))\nc = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nc.connect(('127.0.0.1', {port}))\nc.send(b'r')\n"
    );
    let (pid, status) = run(command_in(None, "/usr/bin/python3", &["-c", &script]));
    assert!(status.success());
    for kind in [Kind::Send, Kind::Connect] {
        let e = agent.expect_one(kind.as_str(), |e| e.kind == kind && e.process.pid == pid);
        let n = e.network.expect("network");
        assert_eq!((&*n.protocol, n.dst.address.as_str(), n.dst.port), ("udp", "127.0.0.1", port));
    }
}

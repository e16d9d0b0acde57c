//! Sinks end to end, without root: hand-built (realistic) events through
//! `podwatch::outputs::sinks::Sinks` into a Loki double and an OTLP double (both built
//! from the official protocol definitions, see their modules) and into a real
//! Kafka-protocol broker (tansu) read back by an independent consumer.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::{Duration, Instant},
};

use podwatch::{
    outputs::sinks::{SinkStatsSnapshot, Sinks, SinksConfig},
    pipeline::event::Event,
};

use crate::{
    kafka_broker::{self, Tansu},
    loki_double::{garbage_server, LokiDouble},
    otlp_double::{attr, OtlpDouble},
};

const POD_UID: &str = "6b1f0a52-2c3d-4e5f-8a9b-0c1d2e3f4a5b";

/// Event `seq` of a realistic mix: exec and file in a pod, connect on the
/// host. `seq` is the pid, so each event can be recognised downstream.
pub(crate) fn event(seq: u32) -> Arc<Event> {
    let secs = 1_767_225_600 + seq as u64 / 1000;
    let time = humantime::format_rfc3339_nanos(
        std::time::UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros((seq % 1000) as u64),
    )
    .to_string();
    let process = serde_json::json!({
        "pid": seq, "tid": seq, "uid": 1000, "gid": 1000, "comm": "curl", "binary": "/usr/bin/curl",
        "args": ["curl", "-s", "http://10.0.0.7/"], "cwd": "/app", "parent": {"pid": 1, "binary": "/bin/sh"}});
    let pod = serde_json::json!({"uid": POD_UID, "namespace": "shop", "name": "web-7d4b9c-x2x9q",
        "workload": "web", "container": {"id": "4f2b8e1c", "name": "nginx", "runtime": "containerd"}});
    let cgroup = serde_json::json!({"id": 10432, "path": "/kubepods.slice/kubepods-pod6b1f.slice/cri-containerd-4f2b.scope"});
    let v = match seq % 3 {
        0 => serde_json::json!({"time": time, "node": "node-1", "kind": "exec", "process": process,
                                "pod": pod, "cgroup": cgroup}),
        1 => serde_json::json!({"time": time, "node": "node-1", "kind": "file", "process": process,
                                "pod": pod, "cgroup": cgroup,
                                "file": {"path": "/etc/nginx/nginx.conf", "operation": "read",
                                         "flags": ["O_RDONLY", "O_CLOEXEC"], "syscall": "openat",
                                         "result": "ok", "fd": 3}}),
        _ => serde_json::json!({"time": time, "node": "node-1", "kind": "connect", "process": process,
                                "cgroup": {"id": 1},
                                "network": {"protocol": "tcp", "family": "ipv4", "direction": "egress",
                                            "src": {"address": "10.244.1.5", "port": 40112},
                                            "dst": {"address": "10.0.0.7", "port": 80}, "result": "ok"}}),
    };
    Arc::new(serde_json::from_value(v).unwrap())
}

fn config(yaml: &str) -> SinksConfig {
    serde_yaml::from_str(yaml).unwrap()
}

fn stats_of(s: &Sinks, name: &str) -> SinkStatsSnapshot {
    s.stats().into_iter().find(|(n, _)| n == name).map(|(_, st)| st).unwrap()
}

/// Polls `f` every 50 ms until it holds or `limit` passes.
async fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f()
}

fn settled(s: &SinkStatsSnapshot) -> u64 {
    s.sent + s.failed + s.dropped
}

// ---------------------------------------------------------------- Loki ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loki_streams_labels_order_tenant_and_auth() {
    let loki = LokiDouble::start().await;
    let cfg = config(&format!(
        "loki: {{url: '{}', tenant: team-a, bearer_token: s3cret, labels: {{cluster: test}},
                 queue: {{linger_ms: 100, batch_max_events: 50}}}}",
        loki.url()
    ));
    let sinks = Sinks::start(&cfg, "node-1").unwrap();
    // Out of order on purpose: entries must come out ordered per stream.
    let mut seqs: Vec<u32> = (0..300).collect();
    seqs.reverse();
    for &s in &seqs {
        sinks.offer(&event(s));
    }
    sinks.shutdown(Duration::from_secs(10)).await;

    let attempts = loki.attempts();
    assert!(!attempts.is_empty());
    for a in &attempts {
        assert_eq!(a.tenant.as_deref(), Some("team-a"));
        assert_eq!(a.authorization.as_deref(), Some("Bearer s3cret"));
        for s in &a.streams {
            let ts: Vec<i128> = s.entries.iter().map(|e| e.ts_nanos).collect();
            assert!(ts.windows(2).all(|w| w[0] <= w[1]), "entries out of order in {}", s.labels);
        }
    }
    let accepted = loki.accepted();
    assert_eq!(accepted.len(), 300);
    let labels: BTreeSet<&str> = accepted.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(
        labels.into_iter().collect::<Vec<_>>(),
        [
            r#"{cluster="test", job="podwatch", kind="connect", namespace="host", node="node-1"}"#,
            r#"{cluster="test", job="podwatch", kind="exec", namespace="shop", node="node-1"}"#,
            r#"{cluster="test", job="podwatch", kind="file", namespace="shop", node="node-1"}"#,
        ]
    );
    let mut pids = BTreeSet::new();
    for (labels, e) in &accepted {
        let ev: Event = serde_json::from_str(&e.line).unwrap();
        assert_eq!(ev, *event(ev.process.pid), "line is the event JSON");
        assert!(labels.contains(ev.kind.as_str()));
        if ev.pod.is_some() {
            assert!(e.metadata.contains(&("pod_uid".into(), POD_UID.into())), "{:?}", e.metadata);
        }
        pids.insert(ev.process.pid);
    }
    assert_eq!(pids.len(), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loki_429_retry_after_is_honoured_and_400_is_not_retried() {
    let loki = LokiDouble::start().await;
    loki.script(&[(429, Some("2")), (204, None), (400, None)]);
    let cfg = config(&format!(
        "loki: {{url: '{}', queue: {{linger_ms: 50}}, retry: {{initial_backoff_ms: 10, max_backoff_ms: 20}}}}",
        loki.url()
    ));
    let sinks = Sinks::start(&cfg, "node-1").unwrap();
    for s in 0..10 {
        sinks.offer(&event(s));
    }
    assert!(wait_until(Duration::from_secs(10), || stats_of(&sinks, "loki").sent == 10).await);
    for s in 10..15 {
        sinks.offer(&event(s));
    }
    assert!(wait_until(Duration::from_secs(5), || stats_of(&sinks, "loki").failed == 5).await);
    tokio::time::sleep(Duration::from_millis(300)).await; // a retry of the 400 would show up here
    let st = stats_of(&sinks, "loki");
    sinks.shutdown(Duration::from_secs(2)).await;

    let a = loki.attempts();
    let codes: Vec<u16> = a.iter().map(|x| x.status).collect();
    assert_eq!(codes, [429, 204, 400], "400 must not be retried");
    let waited = a[1].at - a[0].at;
    assert!(waited >= Duration::from_millis(1900), "Retry-After 2 s not honoured: retried after {waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    assert_eq!((st.sent, st.failed, st.retried, st.dropped, st.batches), (10, 5, 10, 0, 1), "{st:?}");
    assert!(st.last_success_unix.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loki_oversized_line_is_counted_not_sent() {
    let loki = LokiDouble::start().await;
    let cfg =
        config(&format!("loki: {{url: '{}', max_line_bytes: 4096, queue: {{linger_ms: 50}}}}", loki.url()));
    let sinks = Sinks::start(&cfg, "node-1").unwrap();
    let mut big = (*event(1)).clone();
    big.file.as_mut().unwrap().path = format!("/{}", "a".repeat(10_000));
    sinks.offer(&event(0));
    sinks.offer(&Arc::new(big));
    sinks.offer(&event(2));
    sinks.shutdown(Duration::from_secs(5)).await;
    let pids: Vec<u32> = loki
        .accepted()
        .iter()
        .map(|(_, e)| serde_json::from_str::<Event>(&e.line).unwrap().process.pid)
        .collect();
    assert_eq!(pids.len(), 2);
    assert!(!pids.contains(&1));
}

/// A throwaway CA and a server certificate for 127.0.0.1 signed by it, made
/// with the openssl CLI: (ca.pem, cert.pem, key.pem).
fn test_pki(dir: &std::path::Path) -> Option<(std::path::PathBuf, std::path::PathBuf, std::path::PathBuf)> {
    let p = |n: &str| dir.join(n);
    std::fs::write(p("ext.cnf"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n").unwrap();
    let steps: [&[&str]; 3] = [
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=podwatch-test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "key.pem",
            "-out",
            "leaf.csr",
        ],
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
            "-out",
            "cert.pem",
        ],
    ];
    for args in steps {
        let ok = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return None;
        }
    }
    Some((p("ca.pem"), p("cert.pem"), p("key.pem")))
}

/// TLS with a custom CA and basic auth works; an untrusted certificate and a
/// server answering garbage are retried, then counted failed, nothing crashes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_custom_ca_works_and_tls_failures_and_garbage_answers_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let Some((ca, cert, key)) = test_pki(dir.path()) else {
        crate::harness::missing_tool("the openssl CLI (Debian package openssl)");
        return;
    };
    let loki = LokiDouble::start_tls(&std::fs::read(&cert).unwrap(), &std::fs::read(&key).unwrap()).await;
    let url = format!("https://{}", loki.addr);
    let cfg = config(&format!(
        "loki: {{url: '{url}', tls: {{ca_file: '{}'}}, basic_auth: {{username: u, password: p}},
                 queue: {{linger_ms: 20}}}}",
        ca.display()
    ));
    let sinks = Sinks::start(&cfg, "node-1").unwrap();
    for s in 0..10 {
        sinks.offer(&event(s));
    }
    sinks.shutdown(Duration::from_secs(5)).await;
    assert_eq!(loki.accepted().len(), 10);
    assert_eq!(loki.attempts()[0].authorization.as_deref(), Some("Basic dTpw"));

    // OTLP/gRPC over TLS with the same CA.
    let rx = OtlpDouble::grpc_tls(&std::fs::read(&cert).unwrap(), &std::fs::read(&key).unwrap()).await;
    let cfg = config(&format!(
        "otlp: {{endpoint: 'https://{}', tls: {{ca_file: '{}'}}, headers: {{x-team: sec}}, queue: {{linger_ms: 20}}}}",
        rx.addr,
        ca.display()
    ));
    let sinks = Sinks::start(&cfg, "node-1").unwrap();
    for s in 0..10 {
        sinks.offer(&event(s));
    }
    sinks.shutdown(Duration::from_secs(5)).await;
    check_otlp(&rx, 10);

    // Trusting only the system CAs: the handshake fails. OTLP/HTTP gets garbage.
    let (garbage, _g) = garbage_server().await;
    let retry =
        "retry: {max_retries: 1, initial_backoff_ms: 10, max_backoff_ms: 10, request_timeout_ms: 2000}";
    let cfg = config(&format!(
        "loki: {{url: '{url}', queue: {{linger_ms: 20}}, {retry}}}\n\
         otlp: {{endpoint: 'http://{garbage}', protocol: http, queue: {{linger_ms: 20}}, {retry}}}"
    ));
    let sinks = Sinks::start(&cfg, "node-1").unwrap();
    for s in 0..10 {
        sinks.offer(&event(s));
    }
    assert!(
        wait_until(Duration::from_secs(10), || { sinks.stats().iter().all(|(_, s)| s.failed == 10) }).await,
        "{:?}",
        sinks.stats()
    );
    for (name, s) in sinks.stats() {
        assert_eq!((s.sent, s.retried, s.dropped), (0, 10, 0), "{name}: {s:?}");
    }
    sinks.shutdown(Duration::from_secs(2)).await;
    assert_eq!(loki.accepted().len(), 10, "nothing went through the failed handshakes");
}

// ---------------------------------------------------------------- OTLP ----

pub(crate) fn check_otlp(rx: &OtlpDouble, n: usize) {
    assert_eq!(rx.record_count(), n);
    let mut seen = BTreeSet::new();
    for r in rx.received() {
        assert!(r.headers.contains(&("x-team".into(), "sec".into())), "{:?}", r.headers);
        for rl in &r.request.resource_logs {
            let res = &rl.resource.as_ref().unwrap().attributes;
            assert_eq!(attr(res, "service.name").as_deref(), Some("podwatch"));
            assert_eq!(attr(res, "host.name").as_deref(), Some("node-1"));
            assert_eq!(attr(res, "k8s.node.name").as_deref(), Some("node-1"));
            for rec in rl.scope_logs.iter().flat_map(|s| &s.log_records) {
                let a = &rec.attributes;
                let pid: u32 = attr(a, "process.pid").unwrap().parse().unwrap();
                seen.insert(pid);
                assert_eq!(rec.severity_text, "INFO");
                assert!(rec.time_unix_nano >= 1_767_225_600_000_000_000);
                assert_eq!(attr(a, "process.executable.path").as_deref(), Some("/usr/bin/curl"));
                assert_eq!(
                    attr(a, "process.command_args").as_deref(),
                    Some(r#"["curl", "-s", "http://10.0.0.7/"]"#)
                );
                match pid % 3 {
                    2 => {
                        assert_eq!(attr(a, "network.peer.address").as_deref(), Some("10.0.0.7"));
                        assert_eq!(attr(a, "network.peer.port").as_deref(), Some("80"));
                        assert_eq!(attr(a, "k8s.pod.uid"), None);
                    }
                    k => {
                        assert_eq!(attr(a, "k8s.namespace.name").as_deref(), Some("shop"));
                        assert_eq!(attr(a, "k8s.pod.name").as_deref(), Some("web-7d4b9c-x2x9q"));
                        assert_eq!(attr(a, "k8s.pod.uid").as_deref(), Some(POD_UID));
                        assert_eq!(attr(a, "k8s.container.name").as_deref(), Some("nginx"));
                        if k == 1 {
                            assert_eq!(attr(a, "file.path").as_deref(), Some("/etc/nginx/nginx.conf"));
                        }
                    }
                }
            }
        }
    }
    assert_eq!(seen.len(), n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_grpc_and_http_receive_semantic_convention_records() {
    let grpc = OtlpDouble::grpc(0).await;
    let http = OtlpDouble::http().await;
    for (proto, rx) in [("grpc", &grpc), ("http", &http)] {
        let cfg = config(&format!(
            "otlp: {{endpoint: '{}', protocol: {proto}, headers: {{X-Team: sec}},
                     queue: {{linger_ms: 50, batch_max_events: 40}}}}",
            rx.url()
        ));
        let sinks = Sinks::start(&cfg, "node-1").unwrap();
        for s in 0..200 {
            sinks.offer(&event(s));
        }
        sinks.shutdown(Duration::from_secs(10)).await;
        check_otlp(rx, 200);
        assert!(rx.received().len() >= 5, "{proto}: batches of at most 40");
    }
}

/// The OTLP receiver is down: its sink retries, then counts failures and
/// queue drops, while the Loki sink and the caller are unaffected. Then the
/// receiver comes up on the same port and new events flow again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_down_retries_then_counts_drops_and_other_sinks_are_unaffected() {
    let loki = LokiDouble::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cfg = config(&format!(
        "loki: {{url: '{}', queue: {{linger_ms: 20}}}}\n\
         otlp: {{endpoint: 'http://127.0.0.1:{port}', queue: {{capacity: 100, batch_max_events: 50, linger_ms: 20}},
                 retry: {{max_retries: 3, initial_backoff_ms: 100, max_backoff_ms: 200, request_timeout_ms: 1000}}}}",
        loki.url()
    ));
    let sinks = Sinks::start(&cfg, "node-1").unwrap();
    let mut slowest_offer = Duration::ZERO;
    for s in 0..2000u32 {
        let t = Instant::now();
        sinks.offer(&event(s));
        slowest_offer = slowest_offer.max(t.elapsed());
        if s % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(slowest_offer < Duration::from_millis(20), "offer blocked for {slowest_offer:?}");
    // Loki gets everything, promptly, despite the dead OTLP receiver.
    assert!(
        wait_until(Duration::from_secs(5), || loki.accepted().len() == 2000).await,
        "loki got {}",
        loki.accepted().len()
    );
    assert!(
        wait_until(Duration::from_secs(10), || {
            let o = stats_of(&sinks, "otlp");
            o.failed > 0 && o.queue_depth == 0 && o.in_flight == 0
        })
        .await
    );
    let o = stats_of(&sinks, "otlp");
    assert!(o.retried > 0 && o.failed > 0 && o.dropped > 0, "{o:?}");
    assert_eq!(o.sent, 0);
    assert_eq!(settled(&o), 2000, "{o:?}");
    let l = stats_of(&sinks, "loki");
    assert_eq!((l.sent, l.failed, l.dropped), (2000, 0, 0));

    // The receiver comes back: the same sink delivers again.
    let rx = OtlpDouble::grpc(port).await;
    for s in 2000..2100u32 {
        sinks.offer(&event(s));
    }
    assert!(wait_until(Duration::from_secs(15), || rx.record_count() == 100).await, "{}", rx.record_count());
    sinks.shutdown(Duration::from_secs(5)).await;
}

/// A slow Loki (every push takes 1.5 s) does not change what OTLP receives
/// or when.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loki_does_not_delay_otlp() {
    // Loki answers nothing for a minute: every fact below is established while
    // it still holds its first request, so none depends on how fast this
    // machine is.
    let loki = LokiDouble::start().await;
    loki.set_delay(Duration::from_secs(60));
    let rx = OtlpDouble::http().await;
    let cfg = config(&format!(
        "loki: {{url: '{}', queue: {{capacity: 200, batch_max_events: 20, linger_ms: 10}}}}\n\
         otlp: {{endpoint: '{}', protocol: http, headers: {{x-team: sec}}, queue: {{linger_ms: 10}}}}",
        loki.url(),
        rx.url()
    ));
    let sinks = Sinks::start(&cfg, "node-1").unwrap();
    for s in 0..1000u32 {
        sinks.offer(&event(s));
    }
    // Offering never waited for Loki: it has answered nothing yet.
    assert!(loki.accepted().is_empty(), "Loki answered during the offers");
    assert!(wait_until(Duration::from_secs(30), || rx.record_count() == 1000).await, "{}", rx.record_count());
    assert!(loki.accepted().is_empty(), "OTLP's delivery waited for Loki");
    check_otlp(&rx, 1000);
    let l = stats_of(&sinks, "loki");
    assert!(l.dropped > 0 || l.queue_depth > 0, "slow loki should be backed up: {l:?}");
    // Shutdown keeps its deadline though Loki still holds a request.
    let t1 = Instant::now();
    sinks.shutdown(Duration::from_secs(2)).await;
    assert!(t1.elapsed() < Duration::from_secs(10), "shutdown took {:?}", t1.elapsed());
}

// --------------------------------------------------------------- Kafka ----

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn check_message(m: &kafka_broker::Message) -> Event {
    let ev: Event = serde_json::from_str(&m.value).expect("JSON value");
    assert_eq!(ev, *event(ev.process.pid), "value is the event JSON");
    let want_key = if ev.pod.is_some() { POD_UID } else { "node-1" };
    assert_eq!(m.key.as_deref(), Some(want_key));
    assert_eq!(m.headers.get("kind").map(String::as_str), Some(ev.kind.as_str()));
    let ns = if ev.pod.is_some() { "shop" } else { "host" };
    assert_eq!(m.headers.get("namespace").map(String::as_str), Some(ns));
    ev
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_events_arrive_with_key_headers_and_json() {
    if !kafka_broker::available() {
        return;
    }
    let broker = Tansu::start(free_port());
    broker.create_topic("podwatch-events", 3);
    let cfg = config(&format!("kafka: {{brokers: ['{}']}}", broker.bootstrap()));
    let sinks = Sinks::start(&cfg, "node-1").unwrap();
    for s in 0..300 {
        sinks.offer(&event(s));
    }
    assert!(wait_until(Duration::from_secs(30), || stats_of(&sinks, "kafka").sent == 300).await);
    let st = stats_of(&sinks, "kafka");
    sinks.shutdown(Duration::from_secs(5)).await;
    assert_eq!((st.sent, st.failed, st.dropped), (300, 0, 0), "{st:?}");

    let msgs = broker.consume("podwatch-events", 300, Duration::from_secs(10));
    assert_eq!(msgs.len(), 300);
    // A key's events sit in one partition, in the order produced.
    let mut by_key: BTreeMap<String, (i32, Vec<u32>)> = BTreeMap::new();
    for m in &msgs {
        let ev = check_message(m);
        let e = by_key.entry(m.key.clone().unwrap()).or_insert((m.partition, vec![]));
        assert_eq!(e.0, m.partition, "one key, one partition");
        e.1.push(ev.process.pid);
    }
    assert_eq!(by_key.len(), 2);
    for (_, (_, pids)) in by_key {
        assert!(pids.windows(2).all(|w| w[0] < w[1]), "per-key order lost");
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

/// The broker is cut off for 30 s while events keep coming (every connection
/// reset, new ones closed at once: what a dead broker looks like to the
/// client), then reachable again: no crash, memory bounded by our queue and
/// librdkafka's buffer, what was buffered is delivered afterwards, the broker
/// holds every message reported delivered, and delivered + counted == produced.
/// (A real tansu restart wipes its in-memory topics and then acknowledges
/// writes to the missing topic, which would make delivered messages vanish.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_broker_outage_delivers_buffered_and_counts_the_rest() {
    if !kafka_broker::available() {
        return;
    }
    let topic = "outage";
    // Clients only ever see the cutoff's port; the broker listens behind it.
    let broker_port = free_port();
    let cutoff = kafka_broker::Cutoff::start(free_port(), broker_port);
    let broker = Tansu::start_advertising(broker_port, cutoff.port);
    broker.create_topic(topic, 1);
    // Memory storage loses the producer state on restart: no idempotence (acks 1).
    let cfg = config(&format!(
        "kafka: {{brokers: ['{}'], topic: {topic}, acks: '1', buffer_max_messages: 1000,
                  message_timeout_ms: 120000, linger_ms: 5,
                  properties: {{reconnect.backoff.max.ms: '1000'}},
                  queue: {{capacity: 500, batch_max_events: 100, linger_ms: 5}}}}",
        broker.bootstrap()
    ));
    let sinks = Sinks::start(&cfg, "node-1").unwrap();
    let mut produced = 0u32;
    for _ in 0..100 {
        sinks.offer(&event(produced));
        produced += 1;
    }
    assert!(wait_until(Duration::from_secs(30), || stats_of(&sinks, "kafka").sent == 100).await);
    let before = broker.consume(topic, 100, Duration::from_secs(10));
    assert_eq!(before.len(), 100);

    cutoff.down();
    let rss0 = rss_kib();
    let outage = Instant::now();
    let mut max_depth = 0;
    let mut max_in_flight = 0;
    while outage.elapsed() < Duration::from_secs(30) {
        for _ in 0..100 {
            sinks.offer(&event(produced));
            produced += 1;
        }
        let st = stats_of(&sinks, "kafka");
        max_depth = max_depth.max(st.queue_depth);
        max_in_flight = max_in_flight.max(st.in_flight);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let during = stats_of(&sinks, "kafka");
    let rss1 = rss_kib();
    eprintln!("outage: produced {produced}, {during:?}, rss {rss0} -> {rss1} KiB");
    assert!(during.dropped > 0, "{during:?}");
    assert!(max_depth <= 500 && max_in_flight <= 1000 + 100, "depth {max_depth}, in flight {max_in_flight}");
    assert!(rss1 < rss0 + 64 * 1024, "memory grew from {rss0} to {rss1} KiB");

    cutoff.up();
    assert!(
        wait_until(Duration::from_secs(60), || {
            let s = stats_of(&sinks, "kafka");
            s.in_flight == 0 && s.queue_depth == 0
        })
        .await,
        "{:?}",
        stats_of(&sinks, "kafka")
    );
    // The sink works again after the outage.
    for _ in 0..100 {
        sinks.offer(&event(produced));
        produced += 1;
    }
    assert!(
        wait_until(Duration::from_secs(30), || {
            let s = stats_of(&sinks, "kafka");
            settled(&s) == produced as u64 && s.in_flight == 0
        })
        .await
    );
    let st = stats_of(&sinks, "kafka");
    sinks.shutdown(Duration::from_secs(5)).await;
    eprintln!("after: produced {produced}, {st:?}");
    assert_eq!(settled(&st), produced as u64, "delivered + failed + dropped == produced: {st:?}");
    let after_outage = st.sent - 100;
    assert!(after_outage >= 1000 + 100, "buffered events should be delivered after the outage: {st:?}");

    // The restarted broker (memory storage) holds exactly what was delivered since.
    // Read from the beginning, patiently: on a loaded machine (the rest of the
    // suite runs alongside) the broker can pause longer than one idle window.
    // Real loss still fails: each pass re-reads everything the broker holds.
    let mut pids: BTreeSet<u32> = BTreeSet::new();
    for _ in 0..3 {
        let msgs = broker.consume(topic, after_outage as usize, Duration::from_secs(20));
        pids.extend(msgs.iter().map(|m| check_message(m).process.pid));
        if pids.len() as u64 >= after_outage {
            break;
        }
    }
    assert_eq!(pids.len() as u64, after_outage, "consumed {} distinct of {after_outage}", pids.len());
}

//! The OTLP/HTTP wire format checked by an independent receiver: PyPI's
//! `opentelemetry-proto` (Python bindings generated from the official
//! protos) decodes what the sink sends, binary protobuf and OTLP/JSON, plain
//! and gzip (tests/otlp/receiver.py). scripts/setup.sh --test installs it in
//! a venv; `PODWATCH_REQUIRE_OTLP_PYTHON=1` (scripts/test.sh) makes its
//! absence a failure instead of a skip. `PODWATCH_OTLP_PYTHON` points at
//! another interpreter.

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use podwatch::outputs::sinks::otlp::{self, OtlpConfig};
use serde_json::Value;

use crate::sinks::event;

const VENV_PYTHON: &str = "/var/cache/podwatch/otlp-venv/bin/python";
const POD_UID: &str = "6b1f0a52-2c3d-4e5f-8a9b-0c1d2e3f4a5b";

/// The interpreter with opentelemetry-proto, or None (skip) — a failure
/// under `PODWATCH_REQUIRE_OTLP_PYTHON=1`.
fn python() -> Option<String> {
    let py = std::env::var("PODWATCH_OTLP_PYTHON").unwrap_or_else(|_| VENV_PYTHON.to_owned());
    let ok = Command::new(&py)
        .args(["-c", "import opentelemetry.proto.collector.logs.v1.logs_service_pb2"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(py);
    }
    let why =
        format!("{py} with PyPI's opentelemetry-proto is missing (scripts/setup.sh --test installs it)");
    if std::env::var("PODWATCH_REQUIRE_OTLP_PYTHON").is_ok_and(|v| v == "1") {
        panic!("PODWATCH_REQUIRE_OTLP_PYTHON=1 but {why}");
    }
    eprintln!("skipped: {why}");
    None
}

struct Receiver {
    child: Child,
    port: u16,
    lines: Arc<Mutex<Vec<Value>>>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Receiver {
    fn start(python: &str) -> Receiver {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/otlp/receiver.py");
        let mut child = Command::new(python)
            .arg(script)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the Python receiver");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut first = String::new();
        out.read_line(&mut first).expect("port line");
        let port = first.trim().parse().unwrap_or_else(|_| panic!("receiver said {first:?}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    l.lock().unwrap().push(v);
                }
            }
        });
        Receiver { child, port, lines }
    }

    fn requests(&self) -> Vec<Value> {
        self.lines.lock().unwrap().clone()
    }

    fn records(&self) -> Vec<(Value, Value)> {
        let mut out = Vec::new();
        for req in self.requests() {
            for rl in req["resource_logs"].as_array().into_iter().flatten() {
                for sl in rl["scopes"].as_array().into_iter().flatten() {
                    for r in sl["records"].as_array().into_iter().flatten() {
                        out.push((rl["resource"].clone(), r.clone()));
                    }
                }
            }
        }
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_opentelemetry_proto_decodes_what_the_http_sink_sends() {
    let Some(py) = python() else { return };
    for (protocol, content_type) in
        [("http/protobuf", "application/x-protobuf"), ("http/json", "application/json")]
    {
        for compression in ["none", "gzip"] {
            let what = format!("{protocol}, {compression}");
            let rx = Receiver::start(&py);
            let cfg: OtlpConfig = serde_yaml::from_str(&format!(
                "{{endpoint: 'http://127.0.0.1:{}', protocol: {protocol}, compression: {compression},
                  resource_attributes: {{k8s.cluster.name: prod}}, queue: {{linger_ms: 20, batch_max_events: 25}}}}",
                rx.port
            ))
            .unwrap();
            let sink = otlp::start_with_env(&cfg, "node-1", &|_: &str| None::<String>).expect("start");
            for s in 0..60 {
                sink.offer(&event(s));
            }
            let t0 = Instant::now();
            while rx.records().len() < 60 && t0.elapsed() < Duration::from_secs(20) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let stats = sink.snapshot();
            sink.shutdown(tokio::time::Instant::now() + Duration::from_secs(2)).await;
            for req in rx.requests() {
                assert_eq!(req.get("error"), None, "{what}: the receiver could not decode: {req}");
                assert_eq!(req["path"], "/v1/logs", "{what}");
                assert_eq!(req["content_type"], content_type, "{what}");
                let enc = if compression == "gzip" { Value::from("gzip") } else { Value::Null };
                assert_eq!(req["content_encoding"], enc, "{what}");
            }
            assert!(rx.requests().len() >= 3, "{what}: batches of at most 25");
            let records = rx.records();
            assert_eq!(records.len(), 60, "{what}: {stats:?}");
            assert_eq!(stats.sent, 60, "{what}: {stats:?}");
            let mut pids = std::collections::BTreeSet::new();
            for (res, r) in &records {
                assert_eq!(res["service.name"], "podwatch", "{what}");
                assert_eq!(res["k8s.node.name"], "node-1", "{what}");
                assert_eq!(res["k8s.cluster.name"], "prod", "{what}");
                let a = &r["attributes"];
                let pid = a["process.pid"].as_i64().expect("process.pid is an int");
                pids.insert(pid);
                assert_eq!(r["severity_number"], 9, "{what}");
                assert_eq!(r["severity_text"], "INFO", "{what}");
                assert!(
                    r["time_unix_nano"].as_u64().is_some_and(|t| t >= 1_767_225_600_000_000_000),
                    "{what}"
                );
                assert_eq!(a["process.executable.path"], "/usr/bin/curl", "{what}");
                assert_eq!(a["process.command_args"], serde_json::json!(["curl", "-s", "http://10.0.0.7/"]));
                let body: Value =
                    serde_json::from_str(r["body"].as_str().expect("body string")).expect("JSON body");
                assert_eq!(body["process"]["pid"], pid, "{what}");
                match pid % 3 {
                    0 => assert_eq!(r["event_name"], "podwatch.exec", "{what}"),
                    1 => {
                        assert_eq!(r["event_name"], "podwatch.file", "{what}");
                        assert_eq!(a["file.path"], "/etc/nginx/nginx.conf", "{what}");
                        assert_eq!(a["k8s.pod.uid"], POD_UID, "{what}");
                        assert_eq!(a["k8s.namespace.name"], "shop", "{what}");
                    }
                    _ => {
                        assert_eq!(r["event_name"], "podwatch.connect", "{what}");
                        assert_eq!(a["network.peer.address"], "10.0.0.7", "{what}");
                        assert_eq!(a["network.peer.port"], 80, "{what}");
                        assert!(a.get("k8s.pod.uid").is_none(), "{what}");
                    }
                }
            }
            assert_eq!(pids.len(), 60, "{what}");
        }
    }
}

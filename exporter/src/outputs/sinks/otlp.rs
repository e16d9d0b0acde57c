//! OTLP logs sink: gRPC (`LogsService/Export`), HTTP/protobuf or HTTP/JSON
//! (`/v1/logs`), configured by the YAML and the standard `OTEL_*`
//! environment variables ([`settings`]).
//!
//! - HTTP goes through `opentelemetry-otlp`'s log exporter ([`exporter`]):
//!   it encodes (protobuf or OTLP JSON), compresses and addresses the
//!   request; our client sends it and keeps the answer, so retries and
//!   partial success are accounted as for every sink.
//! - gRPC keeps `opentelemetry-proto`'s generated tonic client ([`grpc`]):
//!   the SDK's tonic exporter reports a partial success as `Ok(())` and every
//!   status as a string, and takes no client of ours to read the answer
//!   from. See that module for the gap and the test that pins it.
//!
//! In both, podwatch's framework does the queueing, batching, retries and
//! counting (the SDK's batch processor would drop silently when full).
//!
//! Resource: service.name=podwatch, service.version, host.name and
//! k8s.node.name, then `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_SERVICE_NAME` and
//! the YAML's `resource_attributes`. Each event is one LogRecord: body = the
//! event JSON, attributes in OpenTelemetry semantic conventions, severity
//! from the event's action.

pub mod exporter;
pub mod grpc;
pub mod settings;

use std::{collections::BTreeMap, future::Future, panic::AssertUnwindSafe, time::SystemTime};

use bytes::Bytes;
use futures_util::FutureExt as _;
use hyper::{HeaderMap, StatusCode};
use opentelemetry_proto::tonic::{
    collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse},
    common::v1::{any_value::Value, AnyValue, ArrayValue, InstrumentationScope, KeyValue},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    resource::v1::Resource,
};
use prost::Message as _;
use serde::Deserialize;
use tonic::Code;

use super::{
    action_of, event_time_nanos,
    framework::{self, Encoder, QueueConfig, RetryConfig, SendError, Sent, SinkHandle},
    http::{classify, HttpClient, TlsConfig},
};
use crate::pipeline::event::{Event, Kind, Name};
pub use settings::Compression;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum OtlpProtocol {
    /// OTLP/gRPC, usually port 4317.
    #[default]
    #[serde(rename = "grpc")]
    Grpc,
    /// OTLP/HTTP with binary protobuf, usually port 4318 (`http` is the
    /// spelling podwatch had before the OTEL_* names).
    #[serde(rename = "http/protobuf", alias = "http")]
    HttpProtobuf,
    /// OTLP/HTTP with the OTLP JSON encoding.
    #[serde(rename = "http/json")]
    HttpJson,
}

/// `sinks.otlp`. Every field is optional: what is not set comes from the
/// `OTEL_EXPORTER_OTLP_*` variables, then the spec's defaults (see
/// [`settings`]); `otlp: {}` turns the sink on with the environment's settings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// `http(s)://collector:4317` (gRPC) or `http(s)://collector:4318` (HTTP;
    /// `/v1/logs` is appended unless the URL already ends with it).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// `grpc` (default), `http/protobuf` (or `http`), `http/json`.
    #[serde(default)]
    pub protocol: Option<OtlpProtocol>,
    /// Request headers (gRPC metadata), e.g. `authorization: Bearer …`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `gzip` or `none`.
    #[serde(default)]
    pub compression: Option<Compression>,
    /// For https endpoints: CA, client certificate, server name.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Added to the resource (e.g. `k8s.cluster.name: prod`).
    #[serde(default)]
    pub resource_attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub queue: QueueConfig,
    #[serde(default)]
    pub retry: RetryConfig,
}

/// Severity from what a policy did: kill and deny rank above a plain log.
/// Returns (SeverityNumber, SeverityText).
pub fn severity_for(action: Option<&str>) -> (i32, &'static str) {
    match action {
        Some("kill") => (17, "ERROR"),
        Some("deny") => (13, "WARN"),
        _ => (9, "INFO"),
    }
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue { key: key.to_owned(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}
fn s(key: &str, v: &str) -> KeyValue {
    kv(key, Value::StringValue(v.to_owned()))
}

/// One attribute value, borrowed from the event.
#[derive(Debug, Clone, Copy)]
pub enum Attr<'a> {
    Str(&'a str),
    Int(i64),
    Strs(List<'a>),
}

/// A list attribute's items: argv, or names from a fixed set.
#[derive(Debug, Clone, Copy)]
pub enum List<'a> {
    Strings(&'a [String]),
    Names(&'a [Name]),
}

impl<'a> List<'a> {
    pub fn iter(self) -> impl Iterator<Item = &'a str> {
        let (strings, names): (&[String], &[Name]) = match self {
            List::Strings(s) => (s, &[]),
            List::Names(n) => (&[], n),
        };
        strings.iter().map(String::as_str).chain(names.iter().map(|n| &**n))
    }
}

/// Per-record attributes in OpenTelemetry semantic conventions; what has no
/// convention is under `podwatch.`. One list for both record types (the
/// generated protobuf for gRPC, the SDK's for the exporter), so the names
/// cannot drift apart.
pub fn visit_attributes<'a>(ev: &'a Event, emit: &mut dyn FnMut(&'static str, Attr<'a>)) {
    emit("podwatch.event.kind", Attr::Str(ev.kind.as_str()));
    if let Some(act) = action_of(ev) {
        emit("podwatch.action", Attr::Str(act));
    }
    if let Some(p) = &ev.pod {
        if let Some(ns) = &p.namespace {
            emit("k8s.namespace.name", Attr::Str(ns));
        }
        if let Some(n) = &p.name {
            emit("k8s.pod.name", Attr::Str(n));
        }
        emit("k8s.pod.uid", Attr::Str(&p.uid));
        if let Some(w) = &p.workload {
            emit("podwatch.workload", Attr::Str(w));
        }
        if let Some(c) = &p.container {
            if let Some(n) = &c.name {
                emit("k8s.container.name", Attr::Str(n));
            }
            emit("container.id", Attr::Str(&c.id));
            if let Some(r) = &c.runtime {
                emit("container.runtime", Attr::Str(r));
            }
        }
    }
    let pr = &ev.process;
    emit("process.pid", Attr::Int(pr.pid.into()));
    emit("thread.id", Attr::Int(pr.tid.into()));
    emit("process.user.id", Attr::Int(pr.uid.into()));
    emit("process.group.id", Attr::Int(pr.gid.into()));
    if let Some(b) = &pr.binary {
        emit("process.executable.path", Attr::Str(b));
    }
    emit("process.executable.name", Attr::Str(&pr.comm));
    if !pr.args.is_empty() {
        emit("process.command_args", Attr::Strs(List::Strings(&pr.args)));
    }
    if let Some(cwd) = &pr.cwd {
        emit("process.working_directory", Attr::Str(cwd));
    }
    if let Some(parent) = &pr.parent {
        emit("process.parent_pid", Attr::Int(parent.pid.into()));
    }
    if let Some(f) = &ev.file {
        emit("file.path", Attr::Str(&f.path));
        emit("podwatch.file.operation", Attr::Str(&f.operation));
        emit("podwatch.file.syscall", Attr::Str(&f.syscall));
        if f.result != "ok" {
            emit("error.type", Attr::Str(&f.result));
        }
    }
    if let Some(n) = &ev.network {
        emit("network.transport", Attr::Str(&n.protocol));
        emit("network.type", Attr::Str(&n.family));
        emit("podwatch.network.direction", Attr::Str(&n.direction));
        // src is the initiator: the peer of an outgoing connection is dst.
        let (local, peer) = if n.direction == "ingress" { (&n.dst, &n.src) } else { (&n.src, &n.dst) };
        emit("network.peer.address", Attr::Str(&peer.address));
        emit("network.peer.port", Attr::Int(peer.port.into()));
        emit("network.local.address", Attr::Str(&local.address));
        emit("network.local.port", Attr::Int(local.port.into()));
        if n.result != "ok" {
            emit("error.type", Attr::Str(&n.result));
        }
        if let Some(b) = n.bytes_sent {
            emit("podwatch.network.bytes_sent", Attr::Int(b as i64));
        }
        if let Some(b) = n.bytes_received {
            emit("podwatch.network.bytes_received", Attr::Int(b as i64));
        }
    }
    if let Some(c) = &pr.credentials {
        emit("podwatch.process.euid", Attr::Int(c.euid.into()));
        emit("podwatch.process.capabilities_effective", Attr::Strs(List::Names(&c.capabilities_effective)));
        if !c.host_namespaces.is_empty() {
            emit("podwatch.process.host_namespaces", Attr::Strs(List::Names(&c.host_namespaces)));
        }
    }
    if let Some(p) = &ev.privilege {
        emit("podwatch.privilege.change", Attr::Str(&p.change));
        emit("podwatch.privilege.syscall", Attr::Str(&p.syscall));
        emit("podwatch.privilege.uid_before", Attr::Int(p.before.uid.into()));
        emit("podwatch.privilege.uid_after", Attr::Int(p.after.uid.into()));
        emit("podwatch.privilege.euid_before", Attr::Int(p.before.euid.into()));
        emit("podwatch.privilege.euid_after", Attr::Int(p.after.euid.into()));
        for (key, list) in [
            ("podwatch.privilege.capabilities_gained", &p.capabilities_gained),
            ("podwatch.privilege.capabilities_lost", &p.capabilities_lost),
            ("podwatch.privilege.namespaces_changed", &p.namespaces_changed),
            ("podwatch.privilege.host_namespaces_entered", &p.host_namespaces_entered),
        ] {
            if !list.is_empty() {
                emit(key, Attr::Strs(List::Names(list)));
            }
        }
        if p.result != "ok" {
            emit("error.type", Attr::Str(&p.result));
        }
    }
    if let Some(x) = &ev.exit {
        if let Some(c) = x.code {
            emit("process.exit.code", Attr::Int(c.into()));
        }
        if let Some(sig) = &x.signal {
            emit("podwatch.exit.signal", Attr::Str(sig));
        }
    }
}

/// [`visit_attributes`] as generated protobuf key-values (the gRPC records).
pub fn attributes(ev: &Event) -> Vec<KeyValue> {
    let mut a = Vec::with_capacity(24);
    visit_attributes(ev, &mut |key, v| {
        let value = match v {
            Attr::Str(s) => Value::StringValue(s.to_owned()),
            Attr::Int(i) => Value::IntValue(i),
            Attr::Strs(list) => Value::ArrayValue(ArrayValue {
                values: list
                    .iter()
                    .map(|x| AnyValue { value: Some(Value::StringValue(x.to_owned())) })
                    .collect(),
            }),
        };
        a.push(kv(key, value));
    });
    a
}

/// `podwatch.<kind>`, the records' event name (static: the SDK's record
/// takes a `&'static str`).
pub fn event_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Exec => "podwatch.exec",
        Kind::Exit => "podwatch.exit",
        Kind::File => "podwatch.file",
        Kind::Connect => "podwatch.connect",
        Kind::Accept => "podwatch.accept",
        Kind::Close => "podwatch.close",
        Kind::Send => "podwatch.send",
        Kind::Privilege => "podwatch.privilege",
    }
}

pub struct OtlpEncoder {
    resource: Resource,
}

impl OtlpEncoder {
    /// The resource from the YAML alone (no `OTEL_*` variables).
    pub fn new(cfg: &OtlpConfig, node: &str) -> OtlpEncoder {
        OtlpEncoder::with_resource(&settings::resource(cfg, &settings::no_env, node).unwrap_or_default())
    }

    pub fn with_resource(resource: &[(String, String)]) -> OtlpEncoder {
        let attributes = resource.iter().map(|(k, v)| s(k, v)).collect();
        OtlpEncoder { resource: Resource { attributes, ..Default::default() } }
    }
}

impl Encoder for OtlpEncoder {
    type Item = LogRecord;
    type Payload = ExportLogsServiceRequest;

    fn prepare(&mut self, ev: &Event) -> Result<(LogRecord, usize), String> {
        let body = ev.json().ok_or("JSON: the event could not be encoded")?.to_owned();
        let (severity_number, severity_text) = severity_for(action_of(ev));
        let observed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let rec = LogRecord {
            time_unix_nano: event_time_nanos(ev),
            observed_time_unix_nano: observed,
            severity_number,
            severity_text: severity_text.to_owned(),
            body: Some(AnyValue { value: Some(Value::StringValue(body)) }),
            attributes: attributes(ev),
            event_name: event_name(ev.kind).to_owned(),
            ..Default::default()
        };
        let size = rec.encoded_len();
        Ok((rec, size))
    }

    fn encode(&mut self, items: Vec<LogRecord>) -> Result<ExportLogsServiceRequest, String> {
        Ok(ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(self.resource.clone()),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope {
                        name: "podwatch".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    }),
                    log_records: items,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        })
    }
}

pub(crate) fn rejected(resp: &ExportLogsServiceResponse) -> Sent {
    match &resp.partial_success {
        Some(p) if p.rejected_log_records > 0 => Sent::Partial { rejected: p.rejected_log_records as u64 },
        _ => Sent::All,
    }
}

/// An OTLP/gRPC answer → what happened to the batch.
pub fn grpc_outcome(answer: Result<ExportLogsServiceResponse, tonic::Status>) -> Result<Sent, SendError> {
    match answer {
        Ok(resp) => Ok(rejected(&resp)),
        Err(status) => Err(grpc_error(&status)),
    }
}

/// One gRPC export and its answer judged, with tonic's panics on malformed
/// answers caught: tonic 0.14 panics reading a `grpc-status-details-bin`
/// that is not base64 (grpc/grpc-rust#2618), which would otherwise end the
/// sink's worker. Such an answer fails the batch (it would fail again).
pub async fn guarded_export<F>(export: F) -> Result<Sent, SendError>
where
    F: Future<Output = Result<ExportLogsServiceResponse, tonic::Status>>,
{
    match AssertUnwindSafe(export).catch_unwind().await {
        Ok(answer) => grpc_outcome(answer),
        Err(panic) => {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(SendError::permanent(format!("gRPC answer the client cannot read: {why}")))
        }
    }
}

/// An OTLP/HTTP answer → what happened to the batch.
pub fn http_outcome(status: StatusCode, headers: &HeaderMap, body: Bytes) -> Result<Sent, SendError> {
    classify(status, headers, &body)?;
    // An empty or unparsable 2xx body counts as full success.
    Ok(ExportLogsServiceResponse::decode(body).map(|r| rejected(&r)).unwrap_or(Sent::All))
}

/// OTLP/gRPC status → retry decision (the OTLP spec's retryable codes).
pub fn grpc_error(status: &tonic::Status) -> SendError {
    let reason = format!("gRPC {:?}: {}", status.code(), status.message());
    match status.code() {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => SendError::retryable(reason),
        _ => SendError::permanent(reason),
    }
}

pub fn start(cfg: &OtlpConfig, node: &str) -> anyhow::Result<SinkHandle> {
    start_with_env(cfg, node, &settings::process_env)
}

/// [`start`] with the `OTEL_*` variables looked up in `env` (tests use a map).
pub fn start_with_env(cfg: &OtlpConfig, node: &str, env: &dyn settings::Env) -> anyhow::Result<SinkHandle> {
    cfg.queue.validate("otlp")?;
    cfg.retry.validate("otlp")?;
    let s = settings::resolve(cfg, env, node)?;
    match s.protocol {
        OtlpProtocol::Grpc => Ok(framework::spawn(
            "otlp",
            &cfg.queue,
            &cfg.retry,
            OtlpEncoder::with_resource(&s.resource),
            grpc::transport(&s)?,
        )),
        OtlpProtocol::HttpProtobuf | OtlpProtocol::HttpJson => {
            let client = HttpClient::new("otlp", &s.url, Some(&s.tls), HeaderMap::new(), s.timeout)?;
            let transport = exporter::ExporterTransport::new(&s, client)?;
            Ok(framework::spawn(
                "otlp",
                &cfg.queue,
                &cfg.retry,
                exporter::RecordEncoder::default(),
                transport,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outputs::sinks::testdata::*;

    fn attr<'a>(a: &'a [KeyValue], k: &str) -> Option<&'a Value> {
        a.iter().find(|x| x.key == k).and_then(|x| x.value.as_ref()).and_then(|v| v.value.as_ref())
    }

    fn cfg(yaml: &str) -> OtlpConfig {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn semantic_convention_attributes() {
        let ev = exec_in_pod(42, "2026-01-01T00:00:00Z");
        let a = attributes(&ev);
        assert_eq!(attr(&a, "k8s.namespace.name"), Some(&Value::StringValue("shop".into())));
        assert_eq!(attr(&a, "k8s.pod.name"), Some(&Value::StringValue("web-7d4b9c-x2x9q".into())));
        assert_eq!(
            attr(&a, "k8s.pod.uid"),
            Some(&Value::StringValue("6b1f0a52-2c3d-4e5f-8a9b-0c1d2e3f4a5b".into()))
        );
        assert_eq!(attr(&a, "k8s.container.name"), Some(&Value::StringValue("nginx".into())));
        assert_eq!(attr(&a, "process.pid"), Some(&Value::IntValue(42)));
        assert_eq!(attr(&a, "process.executable.path"), Some(&Value::StringValue("/usr/bin/curl".into())));
        match attr(&a, "process.command_args") {
            Some(Value::ArrayValue(arr)) => assert_eq!(arr.values.len(), 2),
            other => panic!("{other:?}"),
        }
        let f = attributes(&file_in_pod(1, "2026-01-01T00:00:00Z", "/etc/shadow"));
        assert_eq!(attr(&f, "file.path"), Some(&Value::StringValue("/etc/shadow".into())));
        let n = attributes(&connect_on_host(1, "2026-01-01T00:00:00Z"));
        assert_eq!(attr(&n, "network.peer.address"), Some(&Value::StringValue("10.0.0.7".into())));
        assert_eq!(attr(&n, "network.peer.port"), Some(&Value::IntValue(80)));
        assert_eq!(attr(&n, "error.type"), Some(&Value::StringValue("ECONNREFUSED".into())));
        assert!(attr(&n, "k8s.pod.uid").is_none());
    }

    #[test]
    fn severity_mapping() {
        assert_eq!(severity_for(None), (9, "INFO"));
        assert_eq!(severity_for(Some("log")), (9, "INFO"));
        assert_eq!(severity_for(Some("deny")), (13, "WARN"));
        assert_eq!(severity_for(Some("kill")), (17, "ERROR"));
    }

    #[test]
    fn action_drives_severity() {
        let c = cfg("endpoint: 'http://c:4317'");
        let mut enc = OtlpEncoder::new(&c, "node-1");
        let mut ev = (*exec_in_pod(1, "2026-01-01T00:00:00Z")).clone();
        ev.action = Some("kill".into());
        let (rec, _) = enc.prepare(&ev).unwrap();
        assert_eq!((rec.severity_number, rec.severity_text.as_str()), (17, "ERROR"));
        assert_eq!(attr(&rec.attributes, "podwatch.action"), Some(&Value::StringValue("kill".into())));
    }

    #[test]
    fn request_shape() {
        let c = cfg("{endpoint: 'http://c:4317', resource_attributes: {k8s.cluster.name: prod}}");
        let mut enc = OtlpEncoder::new(&c, "node-1");
        let (rec, size) = enc.prepare(&exec_in_pod(1, "2026-01-01T00:00:01Z")).unwrap();
        assert!(size > 100);
        assert_eq!(rec.time_unix_nano, 1_767_225_601_000_000_000);
        assert_eq!(rec.severity_text, "INFO");
        assert_eq!(rec.event_name, "podwatch.exec");
        let req = enc.encode(vec![rec]).unwrap();
        let res = req.resource_logs[0].resource.as_ref().unwrap();
        for (k, v) in [("service.name", "podwatch"), ("host.name", "node-1"), ("k8s.node.name", "node-1")] {
            assert_eq!(attr(&res.attributes, k), Some(&Value::StringValue(v.into())), "{k}");
        }
        assert_eq!(attr(&res.attributes, "k8s.cluster.name"), Some(&Value::StringValue("prod".into())));
        let back = ExportLogsServiceRequest::decode(req.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back, req);
    }

    #[test]
    fn config_and_status_mapping() {
        let url = |yaml| settings::resolve(&cfg(yaml), &settings::no_env, "n").unwrap().url;
        assert_eq!(url("{endpoint: 'http://c:4318', protocol: http}"), "http://c:4318/v1/logs");
        assert_eq!(url("{endpoint: 'http://c:4318/v1/logs', protocol: http/json}"), "http://c:4318/v1/logs");
        assert_eq!(url("{endpoint: 'http://c:4317/'}"), "http://c:4317/");
        assert!(serde_yaml::from_str::<OtlpConfig>("{endpoint: x, protocol: thrift}").is_err());
        assert!(matches!(grpc_error(&tonic::Status::unavailable("x")), SendError::Retryable { .. }));
        assert!(matches!(grpc_error(&tonic::Status::invalid_argument("x")), SendError::Permanent { .. }));
    }

    /// Found by fuzzing (sink_response): tonic panics on a gRPC answer whose
    /// `grpc-status-details-bin` is not base64; the export fails instead.
    #[tokio::test]
    async fn a_grpc_answer_with_invalid_status_details_fails_the_batch() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "3".parse().unwrap());
        trailers.insert("grpc-status-details-bin", "CA-SCmJhZCByZWNvcmQ".parse().unwrap());
        // What the tonic client does with the answer's headers and trailers.
        let answer = async { Err(tonic::Status::from_header_map(&trailers).expect("a status")) };
        match guarded_export(answer).await {
            Err(SendError::Permanent { reason }) => assert!(reason.contains("base64"), "{reason}"),
            other => panic!("{other:?}"),
        }
        trailers.insert("grpc-status-details-bin", "CAMSCmJhZCByZWNvcmQ".parse().unwrap());
        let answer = async { Err(tonic::Status::from_header_map(&trailers).expect("a status")) };
        assert!(matches!(guarded_export(answer).await, Err(SendError::Permanent { .. })));
        let ok = async { Ok(ExportLogsServiceResponse::default()) };
        assert_eq!(guarded_export(ok).await, Ok(Sent::All));
    }

    #[tokio::test]
    async fn bad_endpoints_are_config_errors() {
        let e = start(&cfg("endpoint: 'ftp://c:4317'"), "n").err().unwrap();
        assert!(e.to_string().contains("scheme"), "{e}");
        let e = start(&cfg("{endpoint: 'http://c:4317', headers: {'bad key': v}}"), "n").err().unwrap();
        assert!(e.to_string().contains("header"), "{e}");
    }
}

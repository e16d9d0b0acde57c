//! OTLP logs sink, gRPC (`LogsService/Export`) or HTTP/protobuf (`/v1/logs`).
//!
//! Built on the `opentelemetry-proto` crate's generated types and its tonic
//! client (features `gen-tonic` + `logs`), not on the opentelemetry SDK and
//! `opentelemetry-otlp`: we already have finished records and our own queue,
//! batching and retries, so the SDK's log pipeline (its batch processor,
//! exporters and their runtimes) would be a second pipeline to configure and a
//! heavier build for nothing.
//!
//! Resource: service.name=podwatch, service.version, host.name and
//! k8s.node.name. Each event is one LogRecord: body = the event JSON,
//! attributes in OpenTelemetry semantic conventions, severity from the
//! event's action.

use std::{collections::BTreeMap, future::Future, panic::AssertUnwindSafe, sync::Arc, time::SystemTime};

use bytes::Bytes;
use futures_util::FutureExt as _;
use hyper::{HeaderMap, StatusCode};
use opentelemetry_proto::tonic::{
    collector::logs::v1::{
        logs_service_client::LogsServiceClient, ExportLogsServiceRequest, ExportLogsServiceResponse,
    },
    common::v1::{any_value::Value, AnyValue, ArrayValue, InstrumentationScope, KeyValue},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    resource::v1::Resource,
};
use prost::Message as _;
use serde::Deserialize;
use tonic::{
    metadata::{MetadataKey, MetadataMap, MetadataValue},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
    Code,
};

use super::{
    action_of, event_time_nanos,
    framework::{self, Encoder, QueueConfig, RetryConfig, SendError, Sent, SinkHandle, SinkStats, Transport},
    http::{classify, static_headers, HttpClient, TlsConfig},
};
use crate::{pipeline::event::Event, tls::system_ca};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OtlpProtocol {
    /// OTLP/gRPC, usually port 4317.
    #[default]
    Grpc,
    /// OTLP/HTTP with binary protobuf, usually port 4318.
    Http,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// `http(s)://collector:4317` (gRPC) or `http(s)://collector:4318` (HTTP;
    /// `/v1/logs` is appended unless the URL already ends with it).
    pub endpoint: String,
    #[serde(default)]
    pub protocol: OtlpProtocol,
    /// Request headers (gRPC metadata), e.g. `authorization: Bearer …`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
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

impl OtlpConfig {
    pub fn http_url(&self) -> String {
        let e = self.endpoint.trim_end_matches('/');
        if e.ends_with("/v1/logs") {
            e.to_owned()
        } else {
            format!("{e}/v1/logs")
        }
    }
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
fn i(key: &str, v: i64) -> KeyValue {
    kv(key, Value::IntValue(v))
}

/// Per-record attributes in OpenTelemetry semantic conventions; what has no
/// convention is under `podwatch.`.
pub fn attributes(ev: &Event) -> Vec<KeyValue> {
    let mut a = Vec::with_capacity(24);
    a.push(s("podwatch.event.kind", ev.kind.as_str()));
    if let Some(act) = action_of(ev) {
        a.push(s("podwatch.action", act));
    }
    if let Some(p) = &ev.pod {
        if let Some(ns) = &p.namespace {
            a.push(s("k8s.namespace.name", ns));
        }
        if let Some(n) = &p.name {
            a.push(s("k8s.pod.name", n));
        }
        a.push(s("k8s.pod.uid", &p.uid));
        if let Some(w) = &p.workload {
            a.push(s("podwatch.workload", w));
        }
        if let Some(c) = &p.container {
            if let Some(n) = &c.name {
                a.push(s("k8s.container.name", n));
            }
            a.push(s("container.id", &c.id));
            if let Some(r) = &c.runtime {
                a.push(s("container.runtime", r));
            }
        }
    }
    let pr = &ev.process;
    a.push(i("process.pid", pr.pid.into()));
    a.push(i("thread.id", pr.tid.into()));
    a.push(i("process.user.id", pr.uid.into()));
    a.push(i("process.group.id", pr.gid.into()));
    if let Some(b) = &pr.binary {
        a.push(s("process.executable.path", b));
    }
    a.push(s("process.executable.name", &pr.comm));
    if !pr.args.is_empty() {
        let values =
            pr.args.iter().map(|x| AnyValue { value: Some(Value::StringValue(x.clone())) }).collect();
        a.push(kv("process.command_args", Value::ArrayValue(ArrayValue { values })));
    }
    if let Some(cwd) = &pr.cwd {
        a.push(s("process.working_directory", cwd));
    }
    if let Some(parent) = &pr.parent {
        a.push(i("process.parent_pid", parent.pid.into()));
    }
    if let Some(f) = &ev.file {
        a.push(s("file.path", &f.path));
        a.push(s("podwatch.file.operation", &f.operation));
        a.push(s("podwatch.file.syscall", &f.syscall));
        if f.result != "ok" {
            a.push(s("error.type", &f.result));
        }
    }
    if let Some(n) = &ev.network {
        a.push(s("network.transport", &n.protocol));
        a.push(s("network.type", &n.family));
        a.push(s("podwatch.network.direction", &n.direction));
        // src is the initiator: the peer of an outgoing connection is dst.
        let (local, peer) = if n.direction == "ingress" { (&n.dst, &n.src) } else { (&n.src, &n.dst) };
        a.push(s("network.peer.address", &peer.address));
        a.push(i("network.peer.port", peer.port.into()));
        a.push(s("network.local.address", &local.address));
        a.push(i("network.local.port", local.port.into()));
        if n.result != "ok" {
            a.push(s("error.type", &n.result));
        }
        if let Some(b) = n.bytes_sent {
            a.push(i("podwatch.network.bytes_sent", b as i64));
        }
        if let Some(b) = n.bytes_received {
            a.push(i("podwatch.network.bytes_received", b as i64));
        }
    }
    if let Some(x) = &ev.exit {
        if let Some(c) = x.code {
            a.push(i("process.exit.code", c.into()));
        }
        if let Some(sig) = &x.signal {
            a.push(s("podwatch.exit.signal", sig));
        }
    }
    a
}

pub struct OtlpEncoder {
    resource: Resource,
}

impl OtlpEncoder {
    pub fn new(cfg: &OtlpConfig, node: &str) -> OtlpEncoder {
        let mut attrs = vec![
            s("service.name", "podwatch"),
            s("service.version", env!("CARGO_PKG_VERSION")),
            s("host.name", node),
            s("k8s.node.name", node),
        ];
        for (k, v) in &cfg.resource_attributes {
            attrs.retain(|a| &a.key != k);
            attrs.push(s(k, v));
        }
        OtlpEncoder { resource: Resource { attributes: attrs, ..Default::default() } }
    }
}

impl Encoder for OtlpEncoder {
    type Item = LogRecord;
    type Payload = ExportLogsServiceRequest;

    fn prepare(&mut self, ev: &Event) -> Result<(LogRecord, usize), String> {
        let body = serde_json::to_string(ev).map_err(|e| format!("JSON: {e}"))?;
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
            event_name: format!("podwatch.{}", ev.kind.as_str()),
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

fn rejected(resp: &ExportLogsServiceResponse) -> Sent {
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

pub enum OtlpTransport {
    Grpc { client: LogsServiceClient<Channel>, metadata: MetadataMap },
    Http { client: HttpClient },
}

impl Transport for OtlpTransport {
    type Payload = ExportLogsServiceRequest;

    async fn send(
        &mut self,
        p: &ExportLogsServiceRequest,
        _events: u64,
        _s: &Arc<SinkStats>,
    ) -> Result<Sent, SendError> {
        match self {
            OtlpTransport::Grpc { client, metadata } => {
                let mut req = tonic::Request::new(p.clone());
                *req.metadata_mut() = metadata.clone();
                guarded_export(async { client.export(req).await.map(tonic::Response::into_inner) }).await
            }
            OtlpTransport::Http { client } => {
                let body = Bytes::from(p.encode_to_vec());
                let (status, headers, body) = client.post("application/x-protobuf", body).await?;
                http_outcome(status, &headers, body)
            }
        }
    }
}

fn grpc_channel(cfg: &OtlpConfig) -> anyhow::Result<Channel> {
    let t = cfg.retry.request_timeout();
    let mut ep = Endpoint::from_shared(cfg.endpoint.clone())
        .map_err(|e| anyhow::anyhow!("sinks.otlp.endpoint {:?}: {e}", cfg.endpoint))?
        .timeout(t)
        .connect_timeout(t);
    match ep.uri().scheme_str() {
        Some("https") => {
            let files = cfg.tls.as_ref().map(|t| t.read("otlp")).transpose()?;
            let ca = match files.as_ref().and_then(|f| f.ca.clone()) {
                Some(ca) => ca,
                None => system_ca()?,
            };
            let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
            if let Some((cert, key)) = files.and_then(|f| f.identity) {
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            if let Some(name) = cfg.tls.as_ref().and_then(|t| t.server_name.clone()) {
                tls = tls.domain_name(name);
            }
            ep = ep.tls_config(tls).map_err(|e| anyhow::anyhow!("sinks.otlp.tls: {e}"))?;
        }
        Some("http") => {
            anyhow::ensure!(
                cfg.tls.as_ref().is_none_or(|t| *t == TlsConfig::default()),
                "sinks.otlp: tls settings given but the endpoint is not https"
            );
        }
        _ => anyhow::bail!("sinks.otlp.endpoint {:?}: scheme must be http or https", cfg.endpoint),
    }
    Ok(ep.connect_lazy())
}

fn metadata(cfg: &OtlpConfig) -> anyhow::Result<MetadataMap> {
    let mut m = MetadataMap::new();
    for (k, v) in &cfg.headers {
        let key = MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
            .map_err(|_| anyhow::anyhow!("sinks.otlp.headers: {k:?} is not a valid header name"))?;
        let value = MetadataValue::try_from(v.as_str())
            .map_err(|_| anyhow::anyhow!("sinks.otlp.headers.{k}: not a valid header value"))?;
        m.insert(key, value);
    }
    Ok(m)
}

pub fn start(cfg: &OtlpConfig, node: &str) -> anyhow::Result<SinkHandle> {
    cfg.queue.validate("otlp")?;
    cfg.retry.validate("otlp")?;
    let transport = match cfg.protocol {
        OtlpProtocol::Grpc => {
            let client = LogsServiceClient::new(grpc_channel(cfg)?);
            OtlpTransport::Grpc { client, metadata: metadata(cfg)? }
        }
        OtlpProtocol::Http => {
            let headers = static_headers("otlp", None, None, None, &cfg.headers)?;
            OtlpTransport::Http {
                client: HttpClient::new(
                    "otlp",
                    &cfg.http_url(),
                    cfg.tls.as_ref(),
                    headers,
                    cfg.retry.request_timeout(),
                )?,
            }
        }
    };
    Ok(framework::spawn("otlp", &cfg.queue, &cfg.retry, OtlpEncoder::new(cfg, node), transport))
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
        assert_eq!(cfg("endpoint: http://c:4318").http_url(), "http://c:4318/v1/logs");
        assert_eq!(cfg("endpoint: http://c:4318/v1/logs").http_url(), "http://c:4318/v1/logs");
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

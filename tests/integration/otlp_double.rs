//! An OTLP logs receiver for the sink tests. No OpenTelemetry Collector can
//! run on these machines, so this double is built from the official OTLP
//! protocol definitions (open-telemetry/opentelemetry-proto, via the
//! `opentelemetry-proto` crate's generated types and tonic server): it serves
//! the gRPC `opentelemetry.proto.collector.logs.v1.LogsService/Export` and
//! OTLP/HTTP (`POST`, binary protobuf or the OTLP JSON encoding, gzip or
//! not, on any path so that tests can check which one was used), and records
//! every request with its path and headers. gRPC accepts gzip as well.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{body::Incoming, server::conn::http1, service::service_fn, Request, Response};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::{
    collector::logs::v1::{
        logs_service_server::{LogsService, LogsServiceServer},
        ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
    },
    common::v1::{any_value::Value, KeyValue},
};
use prost::Message as _;
use tokio::{net::TcpListener, task::JoinHandle};
use tonic::codec::CompressionEncoding;

#[derive(Debug, Clone)]
pub struct Received {
    pub request: ExportLogsServiceRequest,
    /// Lower-case header (gRPC metadata) names and values.
    pub headers: Vec<(String, String)>,
    /// HTTP: the request path; gRPC: the method's.
    pub path: String,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

type Log = Arc<Mutex<Vec<Received>>>;

/// How the double answers: records it rejects (OTLP partial success), and a
/// delay before answering.
#[derive(Debug, Default, Clone, Copy)]
pub struct Behaviour {
    pub reject: i64,
    pub delay: std::time::Duration,
}

type Shared = Arc<Mutex<Behaviour>>;

fn answer(b: Behaviour) -> ExportLogsServiceResponse {
    ExportLogsServiceResponse {
        partial_success: (b.reject > 0).then(|| ExportLogsPartialSuccess {
            rejected_log_records: b.reject,
            error_message: "double rejects on request".into(),
        }),
    }
}

struct Svc(Log, Shared);

#[tonic::async_trait]
impl LogsService for Svc {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let headers = request
            .metadata()
            .clone()
            .into_headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let b = *self.1.lock().unwrap();
        tokio::time::sleep(b.delay).await;
        let path = "/opentelemetry.proto.collector.logs.v1.LogsService/Export".to_owned();
        self.0.lock().unwrap().push(Received { request: request.into_inner(), headers, path });
        Ok(tonic::Response::new(answer(b)))
    }
}

pub struct OtlpDouble {
    pub addr: SocketAddr,
    log: Log,
    behaviour: Shared,
    task: JoinHandle<()>,
}

impl Drop for OtlpDouble {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn gunzip(body: &[u8]) -> Option<Vec<u8>> {
    use std::io::Read as _;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body).read_to_end(&mut out).ok()?;
    Some(out)
}

/// The request body per its content-encoding and content-type, decoded
/// with the generated types (JSON through their serde mapping of OTLP/JSON).
fn decode_http(headers: &hyper::HeaderMap, body: Bytes) -> Option<ExportLogsServiceRequest> {
    let body = match headers.get("content-encoding").map(|v| v.to_str().unwrap_or("?")) {
        None | Some("identity") => body.to_vec(),
        Some("gzip") => gunzip(&body)?,
        Some(_) => return None,
    };
    match headers.get("content-type").and_then(|v| v.to_str().ok()) {
        Some("application/x-protobuf") => ExportLogsServiceRequest::decode(body.as_slice()).ok(),
        Some("application/json") => serde_json::from_slice(&body).ok(),
        _ => None,
    }
}

async fn http_handle(
    log: Log,
    behaviour: Shared,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let headers =
        req.headers().iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned())).collect();
    let path = req.uri().path().to_owned();
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let b = *behaviour.lock().unwrap();
    tokio::time::sleep(b.delay).await;
    let json = parts.headers.get("content-type").is_some_and(|v| v == "application/json");
    let status = match decode_http(&parts.headers, body) {
        Some(request) => {
            log.lock().unwrap().push(Received { request, headers, path });
            200
        }
        None => 400,
    };
    let (ctype, body) = if json {
        ("application/json", serde_json::to_vec(&answer(b)).unwrap())
    } else {
        ("application/x-protobuf", answer(b).encode_to_vec())
    };
    Ok(Response::builder().status(status).header("content-type", ctype).body(Full::new(body.into())).unwrap())
}

impl OtlpDouble {
    /// The gRPC LogsService on 127.0.0.1, on `port` (0 = any free port).
    pub async fn grpc(port: u16) -> OtlpDouble {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Log::default();
        let behaviour = Shared::default();
        let svc = LogsServiceServer::new(Svc(log.clone(), behaviour.clone()))
            .accept_compressed(CompressionEncoding::Gzip);
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder().add_service(svc).serve_with_incoming(incoming).await;
        });
        OtlpDouble { addr, log, behaviour, task }
    }

    /// The gRPC LogsService behind TLS, with this certificate chain and key (PEM).
    pub async fn grpc_tls(cert_pem: &[u8], key_pem: &[u8]) -> OtlpDouble {
        OtlpDouble::grpc_tls_with(cert_pem, key_pem, None).await
    }

    /// [`OtlpDouble::grpc_tls`], requiring a client certificate signed by
    /// `client_ca` (PEM) when given.
    pub async fn grpc_tls_with(cert_pem: &[u8], key_pem: &[u8], client_ca: Option<&[u8]>) -> OtlpDouble {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Log::default();
        let behaviour = Shared::default();
        let svc = LogsServiceServer::new(Svc(log.clone(), behaviour.clone()));
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let mut tls = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(cert_pem, key_pem));
        if let Some(ca) = client_ca {
            tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(ca));
        }
        let mut server = tonic::transport::Server::builder().tls_config(tls).unwrap();
        let task = tokio::spawn(async move {
            let _ = server.add_service(svc).serve_with_incoming(incoming).await;
        });
        OtlpDouble { addr, log, behaviour, task }
    }

    /// OTLP/HTTP (`POST`, protobuf or JSON, gzip or not) on 127.0.0.1.
    pub async fn http() -> OtlpDouble {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Log::default();
        let behaviour = Shared::default();
        let (l, b) = (log.clone(), behaviour.clone());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (l, b) = (l.clone(), b.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| http_handle(l.clone(), b.clone(), req));
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(tcp), svc).await;
                });
            }
        });
        OtlpDouble { addr, log, behaviour, task }
    }

    pub fn set_behaviour(&self, b: Behaviour) {
        *self.behaviour.lock().unwrap() = b;
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }

    pub fn record_count(&self) -> usize {
        self.received()
            .iter()
            .flat_map(|r| &r.request.resource_logs)
            .flat_map(|rl| &rl.scope_logs)
            .map(|sl| sl.log_records.len())
            .sum()
    }
}

/// A string or int attribute as text.
pub fn attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    let v = attrs.iter().find(|a| a.key == key)?.value.as_ref()?.value.as_ref()?;
    Some(match v {
        Value::StringValue(s) => s.clone(),
        Value::IntValue(i) => i.to_string(),
        Value::BoolValue(b) => b.to_string(),
        Value::DoubleValue(d) => d.to_string(),
        Value::ArrayValue(a) => format!(
            "{:?}",
            a.values
                .iter()
                .filter_map(|x| match &x.value {
                    Some(Value::StringValue(s)) => Some(s.as_str()),
                    _ => None,
                })
                .collect::<Vec<_>>()
        ),
        other => format!("{other:?}"),
    })
}

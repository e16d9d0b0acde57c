//! An OTLP logs receiver for the sink tests. No OpenTelemetry Collector can
//! run on these machines, so this double is built from the official OTLP
//! protocol definitions (open-telemetry/opentelemetry-proto, via the
//! `opentelemetry-proto` crate's generated types and tonic server): it serves
//! the gRPC `opentelemetry.proto.collector.logs.v1.LogsService/Export` and
//! the OTLP/HTTP endpoint `POST /v1/logs` (binary protobuf), and records
//! every request with its headers.

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
        ExportLogsServiceRequest, ExportLogsServiceResponse,
    },
    common::v1::{any_value::Value, KeyValue},
};
use prost::Message as _;
use tokio::{net::TcpListener, task::JoinHandle};

#[derive(Debug, Clone)]
pub struct Received {
    pub request: ExportLogsServiceRequest,
    /// Lower-case header (gRPC metadata) names and values.
    pub headers: Vec<(String, String)>,
}

type Log = Arc<Mutex<Vec<Received>>>;

struct Svc(Log);

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
        self.0.lock().unwrap().push(Received { request: request.into_inner(), headers });
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

pub struct OtlpDouble {
    pub addr: SocketAddr,
    log: Log,
    task: JoinHandle<()>,
}

impl Drop for OtlpDouble {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn http_handle(log: Log, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let headers =
        req.headers().iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned())).collect();
    let ok = req.uri().path() == "/v1/logs"
        && req.headers().get("content-type").is_some_and(|v| v == "application/x-protobuf");
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let status = match (ok, ExportLogsServiceRequest::decode(body)) {
        (true, Ok(request)) => {
            log.lock().unwrap().push(Received { request, headers });
            200
        }
        _ => 400,
    };
    let body = ExportLogsServiceResponse::default().encode_to_vec();
    Ok(Response::builder()
        .status(status)
        .header("content-type", "application/x-protobuf")
        .body(Full::new(body.into()))
        .unwrap())
}

impl OtlpDouble {
    /// The gRPC LogsService on 127.0.0.1, on `port` (0 = any free port).
    pub async fn grpc(port: u16) -> OtlpDouble {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Log::default();
        let svc = LogsServiceServer::new(Svc(log.clone()));
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder().add_service(svc).serve_with_incoming(incoming).await;
        });
        OtlpDouble { addr, log, task }
    }

    /// The gRPC LogsService behind TLS, with this certificate chain and key (PEM).
    pub async fn grpc_tls(cert_pem: &[u8], key_pem: &[u8]) -> OtlpDouble {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Log::default();
        let svc = LogsServiceServer::new(Svc(log.clone()));
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let tls = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(cert_pem, key_pem));
        let mut server = tonic::transport::Server::builder().tls_config(tls).unwrap();
        let task = tokio::spawn(async move {
            let _ = server.add_service(svc).serve_with_incoming(incoming).await;
        });
        OtlpDouble { addr, log, task }
    }

    /// OTLP/HTTP (`POST /v1/logs`, binary protobuf) on 127.0.0.1.
    pub async fn http() -> OtlpDouble {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Log::default();
        let l = log.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let l = l.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| http_handle(l.clone(), req));
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(tcp), svc).await;
                });
            }
        });
        OtlpDouble { addr, log, task }
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

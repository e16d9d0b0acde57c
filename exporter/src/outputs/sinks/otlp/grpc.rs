//! OTLP/gRPC: the generated `LogsService` client of `opentelemetry-proto`
//! over tonic, kept rather than `opentelemetry-otlp`'s tonic exporter.
//!
//! That exporter answers `Ok(())` to an export the collector partially
//! rejected (`rejected_log_records` is only logged) and turns every gRPC
//! status into `OTelSdkError::InternalFailure(String)`; and unlike its HTTP
//! side it takes no client of ours to read the answer from, only a
//! `tonic::transport::Channel`. With it, rejected events would count as sent
//! and `UNAVAILABLE` could not be told from `INVALID_ARGUMENT` (retry or
//! not). `tests/integration/otlp_env.rs` pins the gap
//! (`the_sdk_grpc_exporter_hides_partial_success`).
//!
//! TLS comes from the same builder as every other client
//! ([`rustls_config`]), through our own connector.

use std::{pin::Pin, sync::Arc};

use hyper::Uri;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::logs::v1::{
    logs_service_client::LogsServiceClient, ExportLogsServiceRequest,
};
use rustls::pki_types::ServerName;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};
use tonic::{
    codec::CompressionEncoding,
    metadata::{MetadataKey, MetadataMap, MetadataValue},
    transport::{Channel, Endpoint},
};

use super::{
    guarded_export,
    settings::{Compression, Settings},
};
use crate::outputs::sinks::{
    framework::{SendError, Sent, SinkStats, Transport},
    http::{rustls_config, TlsConfig},
};

pub struct GrpcTransport {
    client: LogsServiceClient<Channel>,
    metadata: MetadataMap,
}

impl Transport for GrpcTransport {
    type Payload = ExportLogsServiceRequest;

    async fn send(
        &mut self,
        p: &ExportLogsServiceRequest,
        _events: u64,
        _s: &Arc<SinkStats>,
    ) -> Result<Sent, SendError> {
        let mut req = tonic::Request::new(p.clone());
        *req.metadata_mut() = self.metadata.clone();
        let client = &mut self.client;
        guarded_export(async { client.export(req).await.map(tonic::Response::into_inner) }).await
    }
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

type Tls = Option<(tokio_rustls::TlsConnector, ServerName<'static>)>;

/// TCP, then TLS when the endpoint is https, to the host and port of the
/// configured endpoint.
async fn connect(host: String, port: u16, tls: Tls) -> std::io::Result<TokioIo<Pin<Box<dyn Io>>>> {
    let tcp = TcpStream::connect((host.as_str(), port)).await?;
    let _ = tcp.set_nodelay(true);
    let io: Pin<Box<dyn Io>> = match tls {
        None => Box::pin(tcp),
        Some((connector, name)) => Box::pin(connector.connect(name, tcp).await?),
    };
    Ok(TokioIo::new(io))
}

fn channel(s: &Settings) -> anyhow::Result<Channel> {
    let uri: Uri = s.url.parse().map_err(|e| anyhow::anyhow!("OTLP endpoint {:?}: {e}", s.url))?;
    let https = uri.scheme_str() == Some("https");
    let authority = uri.authority().ok_or_else(|| anyhow::anyhow!("OTLP endpoint {:?}: no host", s.url))?;
    let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tls = if https {
        let files = s.tls.read("otlp")?;
        let cfg = rustls_config(&files, &[b"h2"]).map_err(|e| anyhow::anyhow!("sinks.otlp.tls: {e:#}"))?;
        let name = s.tls.server_name.clone().unwrap_or_else(|| host.clone());
        let name = ServerName::try_from(name.clone())
            .map_err(|_| anyhow::anyhow!("sinks.otlp: {name:?} is not a valid TLS server name"))?;
        Some((tokio_rustls::TlsConnector::from(Arc::new(cfg)), name))
    } else {
        anyhow::ensure!(
            s.tls == TlsConfig::default(),
            "sinks.otlp: TLS settings given but the endpoint {:?} is not https",
            s.url
        );
        None
    };
    // tonic refuses an https URI unless its own TLS does the handshake; ours
    // does, in the connector, so tonic is given the same address as http.
    let plain = format!("http://{authority}{}", uri.path_and_query().map(|p| p.as_str()).unwrap_or(""));
    let ep = Endpoint::from_shared(plain)
        .map_err(|e| anyhow::anyhow!("OTLP endpoint {:?}: {e}", s.url))?
        .timeout(s.timeout)
        .connect_timeout(s.timeout);
    let connector = tower::service_fn(move |_: Uri| connect(host.clone(), port, tls.clone()));
    Ok(ep.connect_with_connector_lazy(connector))
}

fn metadata(s: &Settings) -> anyhow::Result<MetadataMap> {
    let mut m = MetadataMap::new();
    for (k, v) in &s.headers {
        let key = MetadataKey::from_bytes(k.as_bytes())
            .map_err(|_| anyhow::anyhow!("sinks.otlp.headers: {k:?} is not a valid header name"))?;
        let value = MetadataValue::try_from(v.as_str())
            .map_err(|_| anyhow::anyhow!("sinks.otlp.headers.{k}: not a valid header value"))?;
        m.insert(key, value);
    }
    Ok(m)
}

pub fn transport(s: &Settings) -> anyhow::Result<GrpcTransport> {
    let mut client = LogsServiceClient::new(channel(s)?);
    if s.compression == Compression::Gzip {
        client =
            client.send_compressed(CompressionEncoding::Gzip).accept_compressed(CompressionEncoding::Gzip);
    }
    Ok(GrpcTransport { client, metadata: metadata(s)? })
}

//! OTLP/HTTP (protobuf or JSON) through `opentelemetry-otlp`'s log exporter.
//!
//! The exporter builds the request: OTLP encoding (binary protobuf or the
//! OTLP JSON mapping), gzip, headers, endpoint. Everything around it stays
//! podwatch's: the framework's bounded queue, batching, retries and counters.
//! So the SDK's batch processor is not used (it drops silently when full),
//! the exporter's own retries are disabled (they would hide attempts from
//! `retried` and ignore our backoff and `Retry-After` cap), and records are
//! exported with `LogExporter::export` from the sink's transport.
//!
//! What the exporter reports is not enough to account a batch: every failure
//! is an `OTelSdkError::InternalFailure(String)` (no retryable/permanent, no
//! `Retry-After`) and a partial success (`rejected_log_records`) is only
//! logged, then `Ok(())`. So the exporter sends through [`AnsweringClient`],
//! our hyper client (TLS from [`rustls_config`](crate::outputs::sinks::http::rustls_config))
//! that keeps the collector's answer; the transport judges that answer
//! exactly as before (`http_outcome`).

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use hyper::{HeaderMap, StatusCode};
use opentelemetry::{
    logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity},
    InstrumentationScope, Key, KeyValue,
};
use opentelemetry_otlp::{Protocol, RetryPolicy, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_sdk::{
    logs::{LogBatch, LogExporter as _, SdkLogRecord, SdkLogger, SdkLoggerProvider},
    Resource,
};

use super::{
    event_name,
    settings::{Compression, Settings},
    severity_for, visit_attributes, Attr,
};
use crate::{
    outputs::sinks::{
        action_of, event_time_nanos,
        framework::{Encoder, SendError, Sent, SinkStats, Transport},
        http::{classify, HttpClient},
    },
    pipeline::event::Event,
};

/// Events → SDK log records, the exporter's input.
pub struct RecordEncoder {
    logger: SdkLogger,
    // Owns the logger's provider. It has no processor: it is only the way the
    // SDK hands out records (`create_log_record`); nothing is emitted through it.
    _provider: SdkLoggerProvider,
}

impl Default for RecordEncoder {
    fn default() -> Self {
        let provider = SdkLoggerProvider::builder().build();
        RecordEncoder { logger: provider.logger("podwatch"), _provider: provider }
    }
}

fn severity(number: i32) -> Severity {
    match number {
        17 => Severity::Error,
        13 => Severity::Warn,
        _ => Severity::Info,
    }
}

impl Encoder for RecordEncoder {
    type Item = SdkLogRecord;
    type Payload = Vec<SdkLogRecord>;

    fn prepare(&mut self, ev: &Event) -> Result<(SdkLogRecord, usize), String> {
        let body = serde_json::to_string(ev).map_err(|e| format!("JSON: {e}"))?;
        let (number, text) = severity_for(action_of(ev));
        let mut rec = self.logger.create_log_record();
        rec.set_timestamp(UNIX_EPOCH + Duration::from_nanos(event_time_nanos(ev)));
        // Set by `Logger::emit` normally; the proto conversion needs it.
        rec.set_observed_timestamp(SystemTime::now());
        rec.set_severity_number(severity(number));
        rec.set_severity_text(text);
        rec.set_event_name(event_name(ev.kind));
        // Size estimate for batch_max_bytes: the protobuf encoding is close
        // to the strings plus a few bytes of framing per field.
        let mut size = body.len() + 48;
        rec.set_body(AnyValue::String(body.into()));
        visit_attributes(ev, &mut |key, value| {
            size += key.len() + 6;
            let v = match value {
                Attr::Str(s) => {
                    size += s.len();
                    AnyValue::String(s.to_owned().into())
                }
                Attr::Int(i) => AnyValue::Int(i),
                Attr::Strs(list) => {
                    size += list.iter().map(|s| s.len() + 4).sum::<usize>();
                    AnyValue::ListAny(Box::new(
                        list.iter().map(|s| AnyValue::String(s.to_owned().into())).collect(),
                    ))
                }
            };
            rec.add_attribute(Key::from_static_str(key), v);
        });
        Ok((rec, size))
    }

    fn encode(&mut self, items: Vec<SdkLogRecord>) -> Result<Vec<SdkLogRecord>, String> {
        Ok(items)
    }
}

/// The collector's answer to the last request, or why there was none.
pub type Answer = Result<(StatusCode, HeaderMap, Bytes), SendError>;

/// What sends a request for the exporter: [`HttpClient`] here, a
/// discarding one in the sinks bench.
pub trait Post: Send + 'static {
    fn post_with(&mut self, headers: HeaderMap, body: Bytes) -> impl Future<Output = Answer> + Send;
}

impl Post for HttpClient {
    fn post_with(&mut self, headers: HeaderMap, body: Bytes) -> impl Future<Output = Answer> + Send {
        HttpClient::post_with(self, headers, body)
    }
}

/// The exporter's HTTP client: podwatch's [`HttpClient`] (one kept-alive
/// connection, rustls), the resolved headers applied last, and the answer
/// kept for the transport.
pub struct AnsweringClient<P> {
    client: tokio::sync::Mutex<P>,
    headers: HeaderMap,
    /// The exporter gzips when `OTEL_EXPORTER_OTLP_COMPRESSION=gzip` is set
    /// even if the YAML says `compression: none` (it has no "none" to be
    /// given); the YAML wins, so such a body is sent inflated.
    compress: bool,
    answer: Arc<Mutex<Option<Answer>>>,
}

impl<P> std::fmt::Debug for AnsweringClient<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AnsweringClient")
    }
}

fn gunzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut out = Vec::with_capacity(body.len() * 4);
    flate2::read::GzDecoder::new(body).read_to_end(&mut out)?;
    Ok(out)
}

#[async_trait::async_trait]
impl<P: Post> opentelemetry_http::HttpClient for AnsweringClient<P> {
    async fn send_bytes(
        &self,
        request: hyper::Request<Bytes>,
    ) -> Result<hyper::Response<Bytes>, opentelemetry_http::HttpError> {
        let (parts, mut body) = request.into_parts();
        let mut headers = parts.headers;
        // Ours last: the exporter merges OTEL_EXPORTER_OTLP_HEADERS over what
        // it is given, and the YAML must win.
        for (k, v) in &self.headers {
            headers.insert(k, v.clone());
        }
        if !self.compress && headers.get(hyper::header::CONTENT_ENCODING).is_some_and(|v| v == "gzip") {
            body = gunzip(&body)?.into();
            headers.remove(hyper::header::CONTENT_ENCODING);
        }
        let answer = self.client.lock().await.post_with(headers, body).await;
        let reply = match &answer {
            Ok((status, headers, body)) => {
                let mut r = hyper::Response::new(body.clone());
                *r.status_mut() = *status;
                *r.headers_mut() = headers.clone();
                Ok(r)
            }
            Err(e) => Err(e.to_string().into()),
        };
        if let Ok(mut slot) = self.answer.lock() {
            *slot = Some(answer);
        }
        reply
    }
}

/// An OTLP/HTTP JSON answer → what happened to the batch.
pub fn http_json_outcome(status: StatusCode, headers: &HeaderMap, body: Bytes) -> Result<Sent, SendError> {
    classify(status, headers, &body)?;
    // An empty or unparsable 2xx body counts as full success.
    Ok(serde_json::from_slice::<ExportLogsServiceResponse>(&body)
        .map(|r| super::rejected(&r))
        .unwrap_or(Sent::All))
}

pub struct ExporterTransport {
    exporter: opentelemetry_otlp::LogExporter,
    scope: InstrumentationScope,
    json: bool,
    answer: Arc<Mutex<Option<Answer>>>,
}

impl ExporterTransport {
    /// `client` sends the requests (a discarding one in the bench).
    pub fn new(s: &Settings, client: impl Post) -> anyhow::Result<ExporterTransport> {
        let mut headers = HeaderMap::new();
        for (k, v) in &s.headers {
            // Checked by settings::resolve.
            if let (Ok(k), Ok(v)) = (k.parse::<hyper::header::HeaderName>(), v.parse()) {
                headers.insert(k, v);
            }
        }
        let answer = Arc::new(Mutex::new(None));
        let sender = AnsweringClient {
            client: tokio::sync::Mutex::new(client),
            headers,
            compress: s.compression == Compression::Gzip,
            answer: answer.clone(),
        };
        let json = s.protocol == super::OtlpProtocol::HttpJson;
        let mut b = opentelemetry_otlp::LogExporter::builder()
            .with_http()
            .with_endpoint(s.url.clone())
            .with_protocol(if json { Protocol::HttpJson } else { Protocol::HttpBinary })
            .with_timeout(s.timeout)
            .with_headers(s.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<HashMap<_, _>>())
            .with_http_client(sender)
            .with_retry_policy(RetryPolicy::disabled());
        if s.compression == Compression::Gzip {
            b = b.with_compression(opentelemetry_otlp::Compression::Gzip);
        }
        let mut exporter = b.build().map_err(|e| anyhow::anyhow!("sinks.otlp: {e}"))?;
        let resource = Resource::builder_empty()
            .with_attributes(s.resource.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())))
            .build();
        exporter.set_resource(&resource);
        let scope = InstrumentationScope::builder("podwatch").with_version(env!("CARGO_PKG_VERSION")).build();
        Ok(ExporterTransport { exporter, scope, json, answer })
    }
}

impl Transport for ExporterTransport {
    type Payload = Vec<SdkLogRecord>;

    async fn send(
        &mut self,
        p: &Vec<SdkLogRecord>,
        _events: u64,
        _s: &Arc<SinkStats>,
    ) -> Result<Sent, SendError> {
        let pairs: Vec<(&SdkLogRecord, &InstrumentationScope)> = p.iter().map(|r| (r, &self.scope)).collect();
        if let Ok(mut slot) = self.answer.lock() {
            *slot = None;
        }
        let result = self.exporter.export(LogBatch::new(&pairs)).await;
        let answer = self.answer.lock().ok().and_then(|mut slot| slot.take());
        match (answer, result) {
            (Some(Ok((status, headers, body))), _) if self.json => http_json_outcome(status, &headers, body),
            (Some(Ok((status, headers, body))), _) => super::http_outcome(status, &headers, body),
            (Some(Err(e)), _) => Err(e),
            // Refused before sending (encoding, the exporter's body size limit): it would fail again.
            (None, Err(e)) => Err(SendError::permanent(format!("OTLP exporter: {e}"))),
            (None, Ok(())) => Ok(Sent::All),
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::logs::v1::LogRecord;

    use super::*;
    use crate::outputs::sinks::{otlp::OtlpEncoder, testdata::*};

    /// The exporter's records carry exactly what the generated-types
    /// records (the gRPC path, and the sink before the exporter) carry.
    #[test]
    fn sdk_records_match_the_generated_ones() {
        let mut sdk = RecordEncoder::default();
        let mut proto = OtlpEncoder::with_resource(&[]);
        let mut killed = (*file_in_pod(7, "2026-01-01T00:00:01Z", "/etc/shadow")).clone();
        killed.action = Some("kill".into());
        for ev in [
            exec_in_pod(42, "2026-01-01T00:00:00Z"),
            Arc::new(killed),
            connect_on_host(1, "2026-01-01T00:00:02Z"),
        ] {
            let (rec, size) = sdk.prepare(&ev).unwrap();
            let (want, want_size) = proto.prepare(&ev).unwrap();
            let got = LogRecord::from(&rec);
            assert_eq!(got.attributes, want.attributes);
            assert_eq!(
                (got.time_unix_nano, got.severity_number, &got.severity_text, &got.event_name, &got.body),
                (
                    want.time_unix_nano,
                    want.severity_number,
                    &want.severity_text,
                    &want.event_name,
                    &want.body
                )
            );
            assert!(got.observed_time_unix_nano > 0);
            // The size estimate is within a fifth of the encoded size.
            assert!(size.abs_diff(want_size) * 5 < want_size, "{size} vs {want_size}");
        }
    }
}

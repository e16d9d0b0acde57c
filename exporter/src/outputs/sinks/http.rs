//! The HTTP transport the Loki and OTLP/HTTP sinks share: hyper 1 (HTTP/1.1,
//! one kept-alive connection per sink), rustls with ring, static headers,
//! basic or bearer auth, and the status → retry decision.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime},
};

use anyhow::{anyhow, bail, Context as _};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{
    client::conn::http1,
    header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST, RETRY_AFTER, USER_AGENT},
    HeaderMap, Method, Request, StatusCode, Uri,
};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{pem::PemObject as _, PrivateKeyDer, ServerName};
use serde::Deserialize;
use tokio::net::TcpStream;

use super::framework::{parse_retry_after, SendError};
use crate::tls::{parse_certs, root_store};

/// TLS for a sink's endpoint (https:// URLs; grpcs for OTLP gRPC).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM bundle of the CAs to trust; default: the system bundle.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) and its key, for mutual TLS.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Name to verify the server certificate against; default: the URL's host.
    pub server_name: Option<String>,
}

/// PEM files of a [`TlsConfig`], read once at start.
pub struct TlsFiles {
    pub ca: Option<Vec<u8>>,
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl TlsConfig {
    pub fn read(&self, sink: &str) -> anyhow::Result<TlsFiles> {
        let read = |p: &PathBuf, what: &str| {
            std::fs::read(p).with_context(|| format!("sinks.{sink}.tls.{what}: reading {}", p.display()))
        };
        let ca = self.ca_file.as_ref().map(|p| read(p, "ca_file")).transpose()?;
        let identity = match (&self.cert_file, &self.key_file) {
            (None, None) => None,
            (Some(c), Some(k)) => Some((read(c, "cert_file")?, read(k, "key_file")?)),
            _ => bail!("sinks.{sink}.tls: cert_file and key_file go together"),
        };
        Ok(TlsFiles { ca, identity })
    }
}

pub fn rustls_config(files: &TlsFiles, alpn: &[&[u8]]) -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = builder.with_root_certificates(root_store(files.ca.as_deref(), "tls.ca_file")?);
    let mut cfg = match &files.identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let certs = parse_certs(cert, "tls.cert_file")?;
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| anyhow!("tls.key_file: {e}"))?;
            builder.with_client_auth_cert(certs, key).context("tls.cert_file and tls.key_file")?
        }
    };
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(cfg)
}

/// `basic_auth` or a bearer token, and extra static headers.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    #[serde(default)]
    pub password: Option<String>,
    /// Read at start (a mounted Secret); instead of `password`.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

/// Builds the static request headers: auth first, then the user's headers.
pub fn static_headers(
    sink: &str,
    basic: Option<&BasicAuth>,
    bearer_token: Option<&str>,
    bearer_token_file: Option<&PathBuf>,
    extra: &BTreeMap<String, String>,
) -> anyhow::Result<HeaderMap> {
    let mut h = HeaderMap::new();
    let token = match (bearer_token, bearer_token_file) {
        (Some(_), Some(_)) => bail!("sinks.{sink}: bearer_token and bearer_token_file are exclusive"),
        (Some(t), None) => Some(t.to_owned()),
        (None, Some(f)) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("sinks.{sink}.bearer_token_file: reading {}", f.display()))?
                .trim()
                .to_owned(),
        ),
        (None, None) => None,
    };
    match (basic, token) {
        (Some(_), Some(_)) => bail!("sinks.{sink}: basic_auth and a bearer token are exclusive"),
        (Some(b), None) => {
            let password = match (&b.password, &b.password_file) {
                (Some(_), Some(_)) => {
                    bail!("sinks.{sink}.basic_auth: password and password_file are exclusive")
                }
                (Some(p), None) => p.clone(),
                (None, Some(f)) => std::fs::read_to_string(f)
                    .with_context(|| {
                        format!("sinks.{sink}.basic_auth.password_file: reading {}", f.display())
                    })?
                    .trim_end_matches(['\r', '\n'])
                    .to_owned(),
                (None, None) => String::new(),
            };
            let raw = base64::engine::general_purpose::STANDARD.encode(format!("{}:{password}", b.username));
            let mut v = HeaderValue::from_str(&format!("Basic {raw}"))?;
            v.set_sensitive(true);
            h.insert(AUTHORIZATION, v);
        }
        (None, Some(t)) => {
            let mut v = HeaderValue::from_str(&format!("Bearer {t}"))
                .map_err(|_| anyhow!("sinks.{sink}: bearer token is not a valid header value"))?;
            v.set_sensitive(true);
            h.insert(AUTHORIZATION, v);
        }
        (None, None) => {}
    }
    for (k, v) in extra {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| anyhow!("sinks.{sink}.headers: {k:?} is not a valid header name"))?;
        let value = HeaderValue::from_str(v)
            .map_err(|_| anyhow!("sinks.{sink}.headers.{k}: not a valid header value"))?;
        h.insert(name, value);
    }
    Ok(h)
}

/// A POST-only HTTP/1.1 client for one endpoint.
pub struct HttpClient {
    uri: Uri,
    host: String,
    port: u16,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    headers: HeaderMap,
    timeout: Duration,
    conn: Option<http1::SendRequest<Full<Bytes>>>,
}

/// Largest response body read (error messages, OTLP partial success).
const MAX_RESPONSE: usize = 1 << 20;

impl HttpClient {
    pub fn new(
        sink: &str,
        url: &str,
        tls: Option<&TlsConfig>,
        headers: HeaderMap,
        timeout: Duration,
    ) -> anyhow::Result<HttpClient> {
        let uri: Uri = url.parse().with_context(|| format!("sinks.{sink}.url {url:?}"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => bail!("sinks.{sink}.url {url:?}: scheme must be http or https"),
        };
        let authority = uri.authority().with_context(|| format!("sinks.{sink}.url {url:?} has no host"))?;
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let files =
                tls.map(|t| t.read(sink)).transpose()?.unwrap_or(TlsFiles { ca: None, identity: None });
            let cfg = rustls_config(&files, &[b"http/1.1"]).with_context(|| format!("sinks.{sink}.tls"))?;
            let name = tls.and_then(|t| t.server_name.clone()).unwrap_or_else(|| host.clone());
            let name = ServerName::try_from(name.clone())
                .map_err(|_| anyhow!("sinks.{sink}: {name:?} is not a valid TLS server name"))?;
            Some((tokio_rustls::TlsConnector::from(Arc::new(cfg)), name))
        } else {
            if tls.is_some_and(|t| *t != TlsConfig::default()) {
                bail!("sinks.{sink}: tls settings given but the url is not https");
            }
            None
        };
        Ok(HttpClient { uri, host, port, tls, headers, timeout, conn: None })
    }

    async fn connect(&self) -> Result<http1::SendRequest<Full<Bytes>>, SendError> {
        let addr = format!("{}:{}", self.host, self.port);
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| SendError::retryable(format!("connect {addr}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => {
                let (tx, conn) = http1::handshake(TokioIo::new(tcp))
                    .await
                    .map_err(|e| SendError::retryable(format!("HTTP handshake with {addr}: {e}")))?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                Ok(tx)
            }
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| SendError::retryable(format!("TLS handshake with {addr}: {e}")))?;
                let (tx, conn) = http1::handshake(TokioIo::new(tls))
                    .await
                    .map_err(|e| SendError::retryable(format!("HTTP handshake with {addr}: {e}")))?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                Ok(tx)
            }
        }
    }

    async fn attempt(
        &mut self,
        extra: HeaderMap,
        body: Bytes,
    ) -> Result<(StatusCode, HeaderMap, Bytes), SendError> {
        let mut sender = match self.conn.take() {
            Some(s) if !s.is_closed() => s,
            _ => self.connect().await?,
        };
        sender.ready().await.map_err(|e| SendError::retryable(format!("connection: {e}")))?;
        // Origin-form (`POST /v1/logs`): the absolute form is for proxies;
        // servers must accept it, but not every one does (the OTLP test
        // against Python's http.server showed it was being sent).
        let target = self.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let mut req = Request::builder().method(Method::POST).uri(target);
        if let Some(h) = req.headers_mut() {
            h.extend(self.headers.clone());
            h.extend(extra);
            h.insert(USER_AGENT, HeaderValue::from_static(concat!("podwatch/", env!("CARGO_PKG_VERSION"))));
            if let Some(a) = self.uri.authority() {
                if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                    h.insert(HOST, v);
                }
            }
        }
        let req = req.body(Full::new(body)).map_err(|e| SendError::permanent(format!("request: {e}")))?;
        let resp =
            sender.send_request(req).await.map_err(|e| SendError::retryable(format!("request: {e}")))?;
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| SendError::retryable(format!("reading response: {e}")))?
            .to_bytes();
        self.conn = Some(sender);
        Ok((parts.status, parts.headers, body))
    }

    /// One POST within the request timeout; transport errors are retryable.
    /// The status is not judged here (see [`classify`]).
    pub async fn post(
        &mut self,
        content_type: &'static str,
        body: Bytes,
    ) -> Result<(StatusCode, HeaderMap, Bytes), SendError> {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        self.post_with(h, body).await
    }

    /// [`HttpClient::post`] with these headers (content type included) over
    /// the client's own; the OTLP exporter builds them.
    pub async fn post_with(
        &mut self,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<(StatusCode, HeaderMap, Bytes), SendError> {
        match tokio::time::timeout(self.timeout, self.attempt(headers, body)).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                self.conn = None;
                Err(e)
            }
            Err(_) => {
                self.conn = None;
                Err(SendError::retryable(format!("no answer within {:?}", self.timeout)))
            }
        }
    }
}

/// 2xx → the body; 429 and 5xx → retryable (with the server's Retry-After);
/// any other status → permanent.
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &Bytes) -> Result<(), SendError> {
    if status.is_success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(512)]);
    let reason = format!("HTTP {status}: {}", text.trim());
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        let retry_after = headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        Err(SendError::Retryable { reason, retry_after })
    } else {
        Err(SendError::Permanent { reason })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        let mut h = HeaderMap::new();
        assert!(classify(StatusCode::NO_CONTENT, &h, &Bytes::new()).is_ok());
        h.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        match classify(StatusCode::TOO_MANY_REQUESTS, &h, &Bytes::from_static(b"slow down")) {
            Err(SendError::Retryable { retry_after, reason }) => {
                assert_eq!(retry_after, Some(Duration::from_secs(3)));
                assert!(reason.contains("slow down"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new(), &Bytes::new()),
            Err(SendError::Retryable { retry_after: None, .. })
        ));
        assert!(matches!(
            classify(StatusCode::BAD_REQUEST, &h, &Bytes::new()),
            Err(SendError::Permanent { .. })
        ));
        assert!(matches!(
            classify(StatusCode::UNAUTHORIZED, &h, &Bytes::new()),
            Err(SendError::Permanent { .. })
        ));
    }

    #[test]
    fn auth_headers() {
        let basic = BasicAuth { username: "u".into(), password: Some("p".into()), password_file: None };
        let h = static_headers("loki", Some(&basic), None, None, &BTreeMap::new()).unwrap();
        assert_eq!(h[AUTHORIZATION], "Basic dTpw");
        let h = static_headers("loki", None, Some("t0k"), None, &BTreeMap::new()).unwrap();
        assert_eq!(h[AUTHORIZATION], "Bearer t0k");
        assert!(static_headers("loki", Some(&basic), Some("t"), None, &BTreeMap::new()).is_err());
        let extra = BTreeMap::from([("bad header".to_owned(), "x".to_owned())]);
        assert!(static_headers("loki", None, None, None, &extra).is_err());
    }

    #[test]
    fn url_and_tls_errors_are_clear() {
        let t = Duration::from_secs(1);
        let e = HttpClient::new("loki", "ftp://x", None, HeaderMap::new(), t).err().unwrap();
        assert!(e.to_string().contains("scheme"), "{e}");
        let tls = TlsConfig { ca_file: Some("/nonexistent/ca.pem".into()), ..Default::default() };
        let e = HttpClient::new("loki", "https://loki:3100/", Some(&tls), HeaderMap::new(), t).err().unwrap();
        assert!(format!("{e:#}").contains("/nonexistent/ca.pem"), "{e:#}");
        let tls = TlsConfig { cert_file: Some("/x".into()), ..Default::default() };
        assert!(HttpClient::new("loki", "https://l/", Some(&tls), HeaderMap::new(), t).is_err());
    }
}

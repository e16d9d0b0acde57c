//! A Loki push-API receiver for the sink tests. No Loki can run on these
//! machines, so this double implements the receiving side of
//! `POST /loki/api/v1/push` from Loki's own protocol definition
//! (grafana/loki `pkg/push/push.proto`, package `logproto`: the messages below
//! carry its field numbers and types, written independently of the
//! exporter's), decompresses the body with snappy's block format like Loki's
//! distributor does, and decodes the protobuf. It can be scripted to answer
//! 429 with `Retry-After`, 400 or 500, or to answer slowly.

use std::{
    collections::VecDeque,
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{body::Incoming, server::conn::http1, service::service_fn, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prost::Message as _;
use tokio::{net::TcpListener, task::JoinHandle};

mod logproto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PushRequest {
        #[prost(message, repeated, tag = "1")]
        pub streams: Vec<Stream>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Stream {
        #[prost(string, tag = "1")]
        pub labels: String,
        #[prost(message, repeated, tag = "2")]
        pub entries: Vec<Entry>,
        #[prost(uint64, tag = "3")]
        pub hash: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Entry {
        #[prost(message, optional, tag = "1")]
        pub timestamp: Option<Timestamp>,
        #[prost(string, tag = "2")]
        pub line: String,
        #[prost(message, repeated, tag = "3")]
        pub structured_metadata: Vec<LabelPair>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LabelPair {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Timestamp {
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub ts_nanos: i128,
    pub line: String,
    pub metadata: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct Stream {
    pub labels: String,
    pub entries: Vec<Entry>,
}

/// One request, as received (accepted or not).
#[derive(Debug, Clone)]
pub struct Attempt {
    pub at: Instant,
    pub status: u16,
    pub tenant: Option<String>,
    pub authorization: Option<String>,
    pub streams: Vec<Stream>,
}

#[derive(Default)]
struct State {
    attempts: Vec<Attempt>,
    /// Answers for the next requests: (status, Retry-After); then 204.
    script: VecDeque<(u16, Option<String>)>,
    delay: Duration,
}

pub struct LokiDouble {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for LokiDouble {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn decode(body: &[u8]) -> Result<Vec<Stream>, String> {
    let raw = snap::raw::Decoder::new().decompress_vec(body).map_err(|e| format!("snappy: {e}"))?;
    let req = logproto::PushRequest::decode(raw.as_slice()).map_err(|e| format!("protobuf: {e}"))?;
    Ok(req
        .streams
        .into_iter()
        .map(|s| Stream {
            labels: s.labels,
            entries: s
                .entries
                .into_iter()
                .map(|e| {
                    let ts = e.timestamp.unwrap_or_default();
                    Entry {
                        ts_nanos: ts.seconds as i128 * 1_000_000_000 + ts.nanos as i128,
                        line: e.line,
                        metadata: e.structured_metadata.into_iter().map(|p| (p.name, p.value)).collect(),
                    }
                })
                .collect(),
        })
        .collect())
}

async fn handle(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let header = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (tenant, authorization) = (header("x-scope-orgid"), header("authorization"));
    let ok_request = req.uri().path() == "/loki/api/v1/push"
        && header("content-type").as_deref() == Some("application/x-protobuf");
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let delay = state.lock().unwrap().delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let (status, retry_after, streams) = match (ok_request, decode(&body)) {
        (false, _) => (404, None, vec![]),
        (true, Err(e)) => {
            eprintln!("loki double: bad push: {e}");
            (400, None, vec![])
        }
        (true, Ok(streams)) => {
            let (status, ra) = state.lock().unwrap().script.pop_front().unwrap_or((204, None));
            (status, ra, streams)
        }
    };
    state.lock().unwrap().attempts.push(Attempt {
        at: Instant::now(),
        status,
        tenant,
        authorization,
        streams,
    });
    let mut resp = Response::builder().status(StatusCode::from_u16(status).unwrap());
    if let Some(ra) = retry_after {
        resp = resp.header("retry-after", ra);
    }
    Ok(resp.body(Full::new(Bytes::from_static(b"loki double says so"))).unwrap())
}

impl LokiDouble {
    pub async fn start() -> LokiDouble {
        LokiDouble::serve(None).await
    }

    /// The same receiver behind TLS (rustls), with this certificate chain and key (PEM).
    pub async fn start_tls(cert_pem: &[u8], key_pem: &[u8]) -> LokiDouble {
        use rustls::pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert_pem).collect::<Result<_, _>>().unwrap();
        let key = PrivateKeyDer::from_pem_slice(key_pem).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        LokiDouble::serve(Some(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))).await
    }

    /// Accepts on a free loopback port, over TLS when given an acceptor.
    async fn serve(tls: Option<tokio_rustls::TlsAcceptor>) -> LokiDouble {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (st, tls) = (st.clone(), tls.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(st.clone(), req));
                    let conn = http1::Builder::new();
                    let _ = match tls {
                        Some(acceptor) => match acceptor.accept(tcp).await {
                            Ok(stream) => conn.serve_connection(TokioIo::new(stream), svc).await,
                            Err(_) => return,
                        },
                        None => conn.serve_connection(TokioIo::new(tcp), svc).await,
                    };
                });
            }
        });
        LokiDouble { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next answers, in order: (status, Retry-After header).
    pub fn script(&self, answers: &[(u16, Option<&str>)]) {
        let mut s = self.state.lock().unwrap();
        s.script.extend(answers.iter().map(|(c, r)| (*c, r.map(str::to_owned))));
    }

    pub fn set_delay(&self, d: Duration) {
        self.state.lock().unwrap().delay = d;
    }

    pub fn attempts(&self) -> Vec<Attempt> {
        self.state.lock().unwrap().attempts.clone()
    }

    /// Entries of accepted pushes.
    pub fn accepted(&self) -> Vec<(String, Entry)> {
        self.attempts()
            .into_iter()
            .filter(|a| a.status / 100 == 2)
            .flat_map(|a| a.streams)
            .flat_map(|s| s.entries.into_iter().map(move |e| (s.labels.clone(), e)))
            .collect()
    }
}

/// A server that answers every connection with bytes that are not HTTP.
pub async fn garbage_server() -> (SocketAddr, JoinHandle<()>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = tcp.read(&mut buf).await;
                let _ = tcp.write_all(b"\x00\x01garbage, not HTTP\r\n\r\n").await;
            });
        }
    });
    (addr, task)
}

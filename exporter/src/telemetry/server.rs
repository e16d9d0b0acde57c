//! The agent's HTTP listener: `/healthz` (alive), `/readyz` (programs
//! attached), `/stats` (loss counters and sensor state, JSON) and `/events`
//! (the live event stream as JSON lines, filtered by `namespace`, `pod` and
//! `kind` query parameters; what `podwatch events` reads).

use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicBool, Ordering::Relaxed},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::{server::conn::http1, service::service_fn, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::{
    net::TcpListener,
    sync::{broadcast, Semaphore},
};
use tracing::{debug, warn};

use crate::{
    kernel::loader::SensorStatus,
    outputs::{live, view::EventFilter},
    pipeline::event::Event,
    pods::PodStore,
    telemetry::{
        metrics::{to_prometheus_text, Metrics},
        stats::AgentStats,
    },
};

pub struct ServerState {
    pub stats: Arc<AgentStats>,
    pub ready: AtomicBool,
    pub events: broadcast::Sender<Arc<Event>>,
    pub sensors: std::sync::Mutex<Vec<SensorStatus>>,
    /// Set once the kernel maps exist.
    pub metrics: std::sync::Mutex<Option<Arc<Metrics>>>,
    pub pods: Arc<PodStore>,
    /// Set once every known cgroup has its policy mask, after metadata synced.
    pub policy_ready: Arc<AtomicBool>,
}

impl ServerState {
    /// Ready: programs attached and the pod metadata source synced.
    fn is_ready(&self) -> bool {
        self.ready.load(Relaxed)
            && self.pods.synced()
            && self.policy_ready.load(Relaxed)
            && self.unenforced().is_empty()
    }

    /// Loaded rules whose kernel programs did not attach: "ready" means every
    /// loaded rule is enforced.
    fn unenforced(&self) -> Vec<String> {
        self.metrics.lock().ok().and_then(|m| m.as_ref().map(|m| m.unenforced())).unwrap_or_default()
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    r
}

fn json<T: Serialize>(v: &T) -> Response<Body> {
    let body = serde_json::to_vec_pretty(v).unwrap_or_default();
    let mut r = text(StatusCode::OK, body);
    r.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static("application/json"));
    r
}

#[derive(Serialize)]
struct StatsReply {
    ready: bool,
    sensors: Vec<SensorStatus>,
    stats: crate::telemetry::stats::StatsSnapshot,
}

fn event_stream(state: &ServerState, filter: EventFilter) -> Response<Body> {
    let stream = live::subscribe(&state.events, filter, state.stats.clone());
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(Box::pin(stream))));
    r.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static("application/x-ndjson"));
    r
}

async fn route(
    state: Arc<ServerState>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, Infallible> {
    if req.method() != hyper::Method::GET {
        return Ok(text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n"));
    }
    let query = req.uri().query().unwrap_or("");
    Ok(match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            if state.is_ready() {
                text(StatusCode::OK, "ready\n")
            } else if !state.ready.load(Relaxed) {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready: sensors loading\n")
            } else if let gaps @ [_, ..] = &state.unenforced()[..] {
                text(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {}\n", gaps.join("\nnot ready: ")))
            } else if !state.pods.synced() {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready: pod metadata not synced\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready: applying policies to pods\n")
            }
        }
        "/stats" => json(&StatsReply {
            ready: state.is_ready(),
            sensors: state.sensors.lock().map(|s| s.clone()).unwrap_or_default(),
            stats: state.stats.snapshot(),
        }),
        "/metrics" => {
            // OpenMetrics for scrapers that ask for it (Prometheus does), the
            // classic text format otherwise, as client_golang negotiates.
            let openmetrics = req
                .headers()
                .get(hyper::header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("application/openmetrics-text"));
            let metrics = state.metrics.lock().ok().and_then(|m| m.clone());
            match metrics.map(|m| m.render()) {
                Some(Ok(body)) => {
                    let (body, content_type) = if openmetrics {
                        (body, "application/openmetrics-text; version=1.0.0; charset=utf-8")
                    } else {
                        (to_prometheus_text(&body), "text/plain; version=0.0.4; charset=utf-8")
                    };
                    let mut r = text(StatusCode::OK, body);
                    r.headers_mut()
                        .insert("content-type", hyper::header::HeaderValue::from_static(content_type));
                    r
                }
                Some(Err(_)) => text(StatusCode::INTERNAL_SERVER_ERROR, "encoding metrics failed\n"),
                None => text(StatusCode::SERVICE_UNAVAILABLE, "sensors loading\n"),
            }
        }
        "/events" => match EventFilter::from_query(query) {
            Ok(f) => event_stream(&state, f),
            Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
        },
        _ => text(StatusCode::NOT_FOUND, "try /metrics, /healthz, /readyz, /stats or /events\n"),
    })
}

/// Connections served at once; more are closed at accept (and logged), so a
/// flood of clients cannot exhaust the agent's memory or file descriptors.
pub const MAX_CONNECTIONS: usize = 128;
/// A client must send its request head within this time (slowloris guard).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn serve(listener: TcpListener, state: Arc<ServerState>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                debug!("accept: {e}");
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            warn!(%peer, limit = MAX_CONNECTIONS, "http connection refused: too many open connections");
            drop(stream);
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| route(state.clone(), req));
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                debug!(%peer, "http connection: {e}");
            }
            drop(slot);
        });
    }
}

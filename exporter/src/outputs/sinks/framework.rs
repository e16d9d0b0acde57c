//! The pipeline every sink shares: bounded queue → batcher → encoder →
//! transport, with retries (exponential backoff, jitter, `Retry-After`),
//! permanent errors counted and not retried, a graceful flush within a
//! deadline, and per-sink counters.
//!
//! Adding a sink means implementing [`Encoder`] and [`Transport`]; [`spawn`]
//! does the rest. Each sink runs on its own tokio task behind its own queue,
//! so a slow or dead sink never slows the caller or another sink.

use std::{
    future::Future,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::Deserialize;
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
    time::{sleep_until, timeout_at, Instant},
};
use tracing::{debug, warn};

use crate::pipeline::event::Event;

/// Queue and batch settings, the same keys for every sink.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Events waiting for this sink; a full queue drops the newest (counted).
    pub capacity: usize,
    /// A batch is sent when it holds this many events...
    pub batch_max_events: usize,
    /// ... or this many bytes (the encoder's estimate per event) ...
    pub batch_max_bytes: usize,
    /// ... or when its first event has waited this long.
    pub linger_ms: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig { capacity: 10_000, batch_max_events: 1_000, batch_max_bytes: 1 << 20, linger_ms: 1_000 }
    }
}

impl QueueConfig {
    pub fn validate(&self, sink: &str) -> anyhow::Result<()> {
        anyhow::ensure!(self.capacity > 0, "sinks.{sink}.queue.capacity must be > 0");
        anyhow::ensure!(self.batch_max_events > 0, "sinks.{sink}.queue.batch_max_events must be > 0");
        anyhow::ensure!(self.batch_max_bytes > 0, "sinks.{sink}.queue.batch_max_bytes must be > 0");
        Ok(())
    }
}

pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 10_000;

/// Retry policy, the same keys for every sink.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Retries of one batch before its events are counted failed (0 = never retry).
    pub max_retries: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// A server's `Retry-After` is honoured up to this long.
    pub max_retry_after_seconds: u64,
    /// One request (connect + send + answer); default 10 s. Unset, the OTLP
    /// sink takes `OTEL_EXPORTER_OTLP_(LOGS_)TIMEOUT`.
    pub request_timeout_ms: Option<u64>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_retries: 8,
            initial_backoff_ms: 250,
            max_backoff_ms: 30_000,
            max_retry_after_seconds: 300,
            request_timeout_ms: None,
        }
    }
}

impl RetryConfig {
    pub fn validate(&self, sink: &str) -> anyhow::Result<()> {
        anyhow::ensure!(self.initial_backoff_ms > 0, "sinks.{sink}.retry.initial_backoff_ms must be > 0");
        anyhow::ensure!(
            self.max_backoff_ms >= self.initial_backoff_ms,
            "sinks.{sink}.retry.max_backoff_ms must be >= initial_backoff_ms"
        );
        anyhow::ensure!(
            self.request_timeout_ms != Some(0),
            "sinks.{sink}.retry.request_timeout_ms must be > 0"
        );
        Ok(())
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms.unwrap_or(DEFAULT_REQUEST_TIMEOUT_MS))
    }

    /// Delay before retry number `retry` (1-based): exponential, capped, with
    /// "equal jitter" (half fixed, half random) so that many agents hitting
    /// the same backend after an outage spread out. `rand01` in [0, 1).
    pub fn backoff(&self, retry: u32, rand01: f64) -> Duration {
        let shift = retry.saturating_sub(1).min(32);
        let exp = self.initial_backoff_ms.saturating_mul(1u64 << shift).min(self.max_backoff_ms);
        let half = exp as f64 / 2.0;
        Duration::from_secs_f64((half + half * rand01.clamp(0.0, 1.0)) / 1000.0)
    }

    /// The wait before the next attempt: the server's `Retry-After` when it
    /// gave one (capped), our backoff otherwise.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>, rand01: f64) -> Duration {
        match retry_after {
            Some(d) => d.min(Duration::from_secs(self.max_retry_after_seconds)),
            None => self.backoff(retry, rand01),
        }
    }

    /// [`RetryConfig::delay`], at most [`MAX_RETRY_WAIT`], and the instant it
    /// ends when waited from `now`.
    pub fn retry_at(
        &self,
        now: Instant,
        retry: u32,
        retry_after: Option<Duration>,
        rand01: f64,
    ) -> (Duration, Instant) {
        let delay = self.delay(retry, retry_after, rand01).min(MAX_RETRY_WAIT);
        (delay, now + delay)
    }
}

/// The longest a retry is put off, whatever the config allows and the server
/// asks: an `Instant` cannot be pushed arbitrarily far (a `Retry-After` of
/// u64::MAX seconds under `max_retry_after_seconds: u64::MAX` overflowed it).
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(365 * 24 * 3600);

/// `Retry-After`: delay-seconds or an HTTP-date (RFC 9110 §10.2.3).
/// A date in the past means "now".
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Why a batch did not go through.
#[derive(Debug, Clone, PartialEq)]
pub enum SendError {
    /// Worth another attempt (network error, timeout, 429, 5xx, gRPC UNAVAILABLE...).
    Retryable { reason: String, retry_after: Option<Duration> },
    /// Will fail again (4xx other than 429, TLS configuration...): counted, not retried.
    Permanent { reason: String },
}

impl SendError {
    pub fn retryable(reason: impl Into<String>) -> SendError {
        SendError::Retryable { reason: reason.into(), retry_after: None }
    }
    pub fn permanent(reason: impl Into<String>) -> SendError {
        SendError::Permanent { reason: reason.into() }
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Retryable { reason, retry_after: Some(d) } => {
                write!(f, "{reason} (retry after {:.1}s)", d.as_secs_f64())
            }
            SendError::Retryable { reason, .. } | SendError::Permanent { reason } => f.write_str(reason),
        }
    }
}

/// What a transport reports for a batch that went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// All events accepted.
    All,
    /// Accepted, but the receiver rejected this many events (OTLP partial success).
    Partial { rejected: u64 },
    /// Handed over; the transport accounts each event itself (Kafka delivery reports).
    Deferred,
}

/// Sink-specific: turns events into what the transport sends.
pub trait Encoder: Send + 'static {
    type Item: Send + 'static;
    type Payload: Send + Sync + 'static;
    /// One event → one item and its size in bytes (for batch_max_bytes).
    /// `Err` rejects the event for good (e.g. larger than the backend accepts);
    /// it is counted failed, never sent.
    fn prepare(&mut self, ev: &Event) -> Result<(Self::Item, usize), String>;
    /// A batch of items → one payload (sent, and re-sent on retries, as is).
    fn encode(&mut self, items: Vec<Self::Item>) -> Result<Self::Payload, String>;
}

/// Sink-specific: delivers payloads.
pub trait Transport: Send + 'static {
    type Payload: Send + Sync + 'static;
    /// True when the transport settles every event itself (returns
    /// [`Sent::Deferred`], and on cancellation counts what it had not handed
    /// over): the framework then never settles its batches.
    const ACCOUNTS_ITSELF: bool = false;
    /// One attempt. `events` is how many events the payload carries.
    fn send(
        &mut self,
        payload: &Self::Payload,
        events: u64,
        stats: &Arc<SinkStats>,
    ) -> impl Future<Output = Result<Sent, SendError>> + Send;
    /// Called once at the end: wait (until `deadline`) for deferred deliveries.
    fn close(&mut self, _deadline: Instant, _stats: &Arc<SinkStats>) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Counters of one sink. Every event offered ends in exactly one of sent,
/// failed or dropped; until then it is queued or in flight.
#[derive(Debug, Default)]
pub struct SinkStats {
    pub sent: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
    /// Events re-sent (a batch of 100 retried twice counts 200).
    pub retried: AtomicU64,
    /// Batches that went out (accepted by the backend or handed to the client library).
    pub batches: AtomicU64,
    /// Taken from the queue, outcome not known yet.
    pub in_flight: AtomicU64,
    /// Unix time (ms) of the last successful delivery, 0 = never.
    pub last_success_ms: AtomicU64,
}

impl SinkStats {
    pub fn success_now(&self) {
        let ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        self.last_success_ms.store(ms, Relaxed);
    }

    /// Moves `n` in-flight events to an outcome counter.
    pub fn settle(&self, n: u64, outcome: &AtomicU64) {
        outcome.fetch_add(n, Relaxed);
        let _ = self.in_flight.fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(n)));
    }
}

/// A point-in-time copy of a sink's counters, for /metrics and /stats.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct SinkStatsSnapshot {
    pub sent: u64,
    pub failed: u64,
    pub dropped: u64,
    pub retried: u64,
    pub batches: u64,
    /// Events waiting in this sink's queue.
    pub queue_depth: u64,
    pub queue_capacity: u64,
    /// Taken from the queue, outcome not known yet (batch being built or sent,
    /// Kafka messages awaiting their delivery report).
    pub in_flight: u64,
    /// Unix time in seconds of the last successful delivery.
    pub last_success_unix: Option<f64>,
}

/// What [`super::Sinks`] keeps per sink.
pub struct SinkHandle {
    pub name: String,
    pub(crate) tx: Option<mpsc::Sender<Arc<Event>>>,
    pub(crate) stats: Arc<SinkStats>,
    pub(crate) deadline: watch::Sender<Option<Instant>>,
    pub(crate) task: JoinHandle<()>,
    capacity: usize,
}

impl SinkHandle {
    /// Never waits: a full (or closed) queue counts a drop.
    pub fn offer(&self, ev: &Arc<Event>) {
        let ok = self.tx.as_ref().is_some_and(|tx| tx.try_send(ev.clone()).is_ok());
        if !ok {
            self.stats.dropped.fetch_add(1, Relaxed);
        }
    }

    pub fn snapshot(&self) -> SinkStatsSnapshot {
        let depth = self.tx.as_ref().map(|tx| tx.max_capacity() - tx.capacity()).unwrap_or(0);
        let last = self.stats.last_success_ms.load(Relaxed);
        SinkStatsSnapshot {
            sent: self.stats.sent.load(Relaxed),
            failed: self.stats.failed.load(Relaxed),
            dropped: self.stats.dropped.load(Relaxed),
            retried: self.stats.retried.load(Relaxed),
            batches: self.stats.batches.load(Relaxed),
            queue_depth: depth as u64,
            queue_capacity: self.capacity as u64,
            in_flight: self.stats.in_flight.load(Relaxed),
            last_success_unix: (last > 0).then(|| last as f64 / 1000.0),
        }
    }

    /// Closes the queue, lets the worker flush until `deadline`, then stops it.
    pub async fn shutdown(mut self, deadline: Instant) {
        let _ = self.deadline.send(Some(deadline));
        self.tx = None;
        // A little grace past the deadline for the worker to count what it gives up.
        let grace = deadline + Duration::from_millis(500);
        if timeout_at(grace, &mut self.task).await.is_err() {
            warn!(sink = %self.name, "sink did not stop by the shutdown deadline; aborted");
            self.task.abort();
        }
    }
}

/// Starts a sink's worker on the current tokio runtime.
pub fn spawn<E, T>(
    name: &str,
    queue: &QueueConfig,
    retry: &RetryConfig,
    encoder: E,
    transport: T,
) -> SinkHandle
where
    E: Encoder,
    T: Transport<Payload = E::Payload>,
{
    let (tx, rx) = mpsc::channel(queue.capacity.max(1));
    let stats = Arc::new(SinkStats::default());
    let (deadline_tx, deadline_rx) = watch::channel(None);
    let worker = Worker {
        name: name.to_owned(),
        queue: queue.clone(),
        retry: retry.clone(),
        encoder,
        transport,
        stats: stats.clone(),
        rx,
        deadline: deadline_rx,
        carry: None,
    };
    let task = tokio::spawn(worker.run());
    SinkHandle {
        name: name.to_owned(),
        tx: Some(tx),
        stats,
        deadline: deadline_tx,
        task,
        capacity: queue.capacity.max(1),
    }
}

struct Worker<E: Encoder, T> {
    name: String,
    queue: QueueConfig,
    retry: RetryConfig,
    encoder: E,
    transport: T,
    stats: Arc<SinkStats>,
    rx: mpsc::Receiver<Arc<Event>>,
    deadline: watch::Receiver<Option<Instant>>,
    /// An item that did not fit the previous batch (byte limit).
    carry: Option<(E::Item, usize)>,
}

/// Resolves when the shutdown deadline is set and has passed; never otherwise.
async fn deadline_passed(rx: &mut watch::Receiver<Option<Instant>>) {
    loop {
        let d = *rx.borrow_and_update();
        match d {
            Some(d) => {
                sleep_until(d).await;
                return;
            }
            None => {
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        }
    }
}

impl<E, T> Worker<E, T>
where
    E: Encoder,
    T: Transport<Payload = E::Payload>,
{
    async fn run(mut self) {
        loop {
            let (items, closed) = self.collect().await;
            if !items.is_empty() {
                self.deliver(items).await;
            }
            if closed && self.carry.is_none() {
                break;
            }
            if self.past_deadline() {
                self.give_up();
                break;
            }
        }
        let deadline = (*self.deadline.borrow()).unwrap_or_else(|| Instant::now() + Duration::from_secs(5));
        self.transport.close(deadline, &self.stats).await;
        debug!(sink = %self.name, "sink stopped");
    }

    fn past_deadline(&self) -> bool {
        self.deadline.borrow().is_some_and(|d| Instant::now() >= d)
    }

    /// Shutdown deadline reached: whatever is still queued is dropped (counted).
    fn give_up(&mut self) {
        let mut n = 0u64;
        if self.carry.take().is_some() {
            self.stats.settle(1, &self.stats.failed);
        }
        while self.rx.try_recv().is_ok() {
            n += 1;
        }
        if n > 0 {
            warn!(sink = %self.name, events = n, "shutdown deadline reached; queued events dropped");
            self.stats.dropped.fetch_add(n, Relaxed);
        }
    }

    /// Takes one event from the queue into an item; rejected events are counted.
    fn take(&mut self, ev: Arc<Event>) -> Option<(E::Item, usize)> {
        self.stats.in_flight.fetch_add(1, Relaxed);
        match self.encoder.prepare(&ev) {
            Ok(x) => Some(x),
            Err(reason) => {
                warn!(sink = %self.name, kind = ev.kind.as_str(), %reason, "event rejected, not sent");
                self.stats.settle(1, &self.stats.failed);
                None
            }
        }
    }

    /// Builds one batch: returns when it is full or lingered long enough, or
    /// when the queue is closed and empty (`closed` = true).
    async fn collect(&mut self) -> (Vec<E::Item>, bool) {
        let mut items = Vec::new();
        let mut bytes = 0usize;
        if let Some((item, size)) = self.carry.take() {
            items.push(item);
            bytes += size;
        }
        let mut linger_end = None;
        if !items.is_empty() {
            linger_end = Some(Instant::now() + Duration::from_millis(self.queue.linger_ms));
        }
        loop {
            if items.len() >= self.queue.batch_max_events || bytes >= self.queue.batch_max_bytes {
                return (items, false);
            }
            let next = match linger_end {
                // Nothing yet: wait for the first event as long as it takes.
                None => self.rx.recv().await,
                Some(end) => {
                    match self.rx.try_recv() {
                        Ok(ev) => Some(ev),
                        Err(mpsc::error::TryRecvError::Disconnected) => None,
                        Err(mpsc::error::TryRecvError::Empty) => {
                            if self.deadline.borrow().is_some() {
                                return (items, false);
                            }
                            let mut dl = self.deadline.clone();
                            dl.borrow_and_update();
                            tokio::select! {
                                r = timeout_at(end, self.rx.recv()) => match r {
                                    Ok(ev) => ev,
                                    Err(_) => return (items, false),
                                },
                                // Shutdown started while lingering: send now.
                                _ = dl.changed() => continue,
                            }
                        }
                    }
                }
            };
            let Some(ev) = next else { return (items, true) };
            let Some((item, size)) = self.take(ev) else { continue };
            if !items.is_empty() && bytes + size > self.queue.batch_max_bytes {
                self.carry = Some((item, size));
                return (items, false);
            }
            if linger_end.is_none() {
                linger_end = Some(Instant::now() + Duration::from_millis(self.queue.linger_ms));
            }
            items.push(item);
            bytes += size;
        }
    }

    async fn deliver(&mut self, items: Vec<E::Item>) {
        let n = items.len() as u64;
        let payload = match self.encoder.encode(items) {
            Ok(p) => p,
            Err(reason) => {
                warn!(sink = %self.name, events = n, %reason, "batch could not be encoded; counted failed");
                self.stats.settle(n, &self.stats.failed);
                return;
            }
        };
        let mut retry = 0u32;
        loop {
            let mut dl = self.deadline.clone();
            let attempt = tokio::select! {
                r = self.transport.send(&payload, n, &self.stats) => r,
                _ = deadline_passed(&mut dl) => {
                    if T::ACCOUNTS_ITSELF {
                        return;
                    }
                    Err(SendError::permanent("shutdown deadline reached"))
                }
            };
            match attempt {
                Ok(sent) => {
                    self.stats.batches.fetch_add(1, Relaxed);
                    match sent {
                        Sent::All => {
                            self.stats.settle(n, &self.stats.sent);
                            self.stats.success_now();
                        }
                        Sent::Partial { rejected } => {
                            let rejected = rejected.min(n);
                            warn!(sink = %self.name, rejected, "receiver rejected part of a batch");
                            self.stats.settle(n - rejected, &self.stats.sent);
                            self.stats.settle(rejected, &self.stats.failed);
                            self.stats.success_now();
                        }
                        Sent::Deferred => {}
                    }
                    return;
                }
                Err(SendError::Permanent { reason }) => {
                    warn!(sink = %self.name, events = n, %reason, "batch failed permanently; not retried");
                    self.stats.settle(n, &self.stats.failed);
                    return;
                }
                Err(SendError::Retryable { reason, retry_after }) => {
                    retry += 1;
                    if retry > self.retry.max_retries {
                        warn!(sink = %self.name, events = n, %reason, retries = retry - 1,
                              "batch failed after all retries; counted failed");
                        self.stats.settle(n, &self.stats.failed);
                        return;
                    }
                    let (delay, wake) =
                        self.retry.retry_at(Instant::now(), retry, retry_after, fastrand::f64());
                    if let Some(d) = *self.deadline.borrow() {
                        if wake >= d {
                            warn!(sink = %self.name, events = n, %reason,
                                  "batch failed and the shutdown deadline leaves no time to retry");
                            self.stats.settle(n, &self.stats.failed);
                            return;
                        }
                    }
                    warn!(sink = %self.name, events = n, %reason, retry, delay_ms = delay.as_millis() as u64,
                          "batch failed; will retry");
                    self.stats.retried.fetch_add(n, Relaxed);
                    let mut dl = self.deadline.clone();
                    tokio::select! {
                        _ = sleep_until(wake) => {}
                        _ = deadline_passed(&mut dl) => {
                            self.stats.settle(n, &self.stats.failed);
                            return;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let r = RetryConfig { initial_backoff_ms: 100, max_backoff_ms: 1_000, ..Default::default() };
        assert_eq!(r.backoff(1, 0.0), Duration::from_millis(50));
        assert_eq!(r.backoff(1, 1.0), Duration::from_millis(100));
        assert_eq!(r.backoff(2, 1.0), Duration::from_millis(200));
        assert_eq!(r.backoff(3, 1.0), Duration::from_millis(400));
        assert_eq!(r.backoff(10, 1.0), Duration::from_millis(1_000));
        assert_eq!(r.backoff(60, 0.0), Duration::from_millis(500));
        let j = r.backoff(3, 0.5);
        assert!(j > Duration::from_millis(200) && j < Duration::from_millis(400), "{j:?}");
    }

    #[test]
    fn retry_after_is_honoured_and_capped() {
        let r = RetryConfig { max_retry_after_seconds: 60, ..Default::default() };
        assert_eq!(r.delay(1, Some(Duration::from_secs(7)), 0.3), Duration::from_secs(7));
        assert_eq!(r.delay(1, Some(Duration::from_secs(3600)), 0.3), Duration::from_secs(60));
    }

    /// Found with the sink_response fuzz target (an input written for it, not
    /// one libFuzzer mutated its way to): a huge Retry-After under a huge
    /// max_retry_after_seconds overflowed `now + delay`.
    #[test]
    fn a_huge_retry_after_under_a_huge_cap_waits_a_year_instead_of_overflowing() {
        let r = RetryConfig { max_retry_after_seconds: u64::MAX, ..Default::default() };
        let after = parse_retry_after("18446744073709551615", SystemTime::now());
        assert_eq!(after, Some(Duration::from_secs(u64::MAX)));
        let now = Instant::now();
        let (delay, at) = r.retry_at(now, 1, after, 0.5);
        assert_eq!(delay, MAX_RETRY_WAIT);
        assert_eq!(at, now + MAX_RETRY_WAIT);
        let huge_backoff = RetryConfig { initial_backoff_ms: u64::MAX, max_backoff_ms: u64::MAX, ..r };
        assert_eq!(huge_backoff.retry_at(now, 60, None, 1.0).0, MAX_RETRY_WAIT);
        // Ordinary waits are untouched.
        assert_eq!(
            r.retry_at(now, 1, Some(Duration::from_secs(7)), 0.5),
            (Duration::from_secs(7), now + Duration::from_secs(7))
        );
    }

    #[test]
    fn retry_after_parsing() {
        let now = UNIX_EPOCH + Duration::from_secs(1_445_412_480); // Wed, 21 Oct 2015 07:28:00 GMT
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn config_validation() {
        assert!(QueueConfig { capacity: 0, ..Default::default() }.validate("loki").is_err());
        assert!(QueueConfig::default().validate("loki").is_ok());
        let bad = RetryConfig { initial_backoff_ms: 10, max_backoff_ms: 5, ..Default::default() };
        assert!(bad.validate("loki").unwrap_err().to_string().contains("max_backoff_ms"));
    }

    /// A transport scripted by a list of answers, recording what it saw.
    struct Scripted {
        answers: std::collections::VecDeque<Result<Sent, SendError>>,
        seen: Seen,
    }

    impl Transport for Scripted {
        type Payload = Vec<u32>;
        async fn send(&mut self, p: &Vec<u32>, _n: u64, _s: &Arc<SinkStats>) -> Result<Sent, SendError> {
            if let Ok(mut seen) = self.seen.lock() {
                seen.push((Instant::now(), p.len()));
            }
            self.answers.pop_front().unwrap_or(Ok(Sent::All))
        }
    }

    struct Pids;
    impl Encoder for Pids {
        type Item = u32;
        type Payload = Vec<u32>;
        fn prepare(&mut self, ev: &Event) -> Result<(u32, usize), String> {
            if ev.process.pid == 666 {
                return Err("too big".into());
            }
            Ok((ev.process.pid, 10))
        }
        fn encode(&mut self, items: Vec<u32>) -> Result<Vec<u32>, String> {
            Ok(items)
        }
    }

    fn ev(pid: u32) -> Arc<Event> {
        let json = format!(
            r#"{{"time":"2026-01-01T00:00:00Z","node":"n","kind":"exec",
                "process":{{"pid":{pid},"tid":{pid},"uid":0,"gid":0,"comm":"x"}},"cgroup":{{"id":1}}}}"#
        );
        Arc::new(serde_json::from_str(&json).unwrap())
    }

    type Seen = Arc<std::sync::Mutex<Vec<(Instant, usize)>>>;

    fn start(answers: Vec<Result<Sent, SendError>>, q: QueueConfig, r: RetryConfig) -> (SinkHandle, Seen) {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let t = Scripted { answers: answers.into(), seen: seen.clone() };
        (spawn("test", &q, &r, Pids, t), seen)
    }

    #[tokio::test]
    async fn batches_by_count_and_bytes_and_flushes_on_shutdown() {
        let q = QueueConfig { capacity: 100, batch_max_events: 4, batch_max_bytes: 25, linger_ms: 50 };
        let (h, seen) = start(vec![], q, RetryConfig::default());
        for pid in 0..7 {
            h.offer(&ev(pid));
        }
        h.offer(&ev(666)); // rejected by the encoder
        tokio::time::sleep(Duration::from_millis(300)).await;
        let s = h.snapshot();
        assert_eq!((s.sent, s.failed, s.dropped, s.in_flight), (7, 1, 0, 0), "{s:?}");
        // 25 bytes = 2 events of 10 bytes per batch.
        assert!(seen.lock().unwrap().iter().all(|(_, n)| *n <= 2));
        assert!(s.last_success_unix.is_some());
        h.shutdown(Instant::now() + Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn full_queue_drops_newest_without_waiting() {
        let q = QueueConfig { capacity: 3, batch_max_events: 1, batch_max_bytes: 1000, linger_ms: 0 };
        let slow = (0..100).map(|_| Err(SendError::retryable("down"))).collect();
        let r = RetryConfig {
            max_retries: 100,
            initial_backoff_ms: 10_000,
            max_backoff_ms: 10_000,
            ..Default::default()
        };
        let (h, _) = start(slow, q, r);
        let t0 = std::time::Instant::now();
        for pid in 0..1000 {
            h.offer(&ev(pid));
        }
        assert!(t0.elapsed() < Duration::from_millis(200));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let s = h.snapshot();
        assert!(s.dropped >= 996, "{s:?}");
        let stats = h.stats.clone();
        h.shutdown(Instant::now() + Duration::from_millis(100)).await;
        let total = stats.sent.load(Relaxed) + stats.failed.load(Relaxed) + stats.dropped.load(Relaxed);
        assert_eq!(total, 1000);
    }

    #[tokio::test]
    async fn retries_honour_retry_after_and_permanent_is_not_retried() {
        let q = QueueConfig { capacity: 10, batch_max_events: 1, batch_max_bytes: 1000, linger_ms: 0 };
        let answers = vec![
            Err(SendError::Retryable { reason: "429".into(), retry_after: Some(Duration::from_millis(300)) }),
            Ok(Sent::All),
            Err(SendError::permanent("400")),
        ];
        let r = RetryConfig { initial_backoff_ms: 1, max_backoff_ms: 1, ..Default::default() };
        let (h, seen) = start(answers, q, r);
        h.offer(&ev(1));
        tokio::time::sleep(Duration::from_millis(500)).await;
        h.offer(&ev(2));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let s = h.snapshot();
        assert_eq!((s.sent, s.failed, s.retried, s.batches), (1, 1, 1, 1), "{s:?}");
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 3);
        assert!(seen[1].0 - seen[0].0 >= Duration::from_millis(290));
        h.shutdown(Instant::now() + Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn gives_up_after_max_retries() {
        let q = QueueConfig { capacity: 10, batch_max_events: 10, batch_max_bytes: 1000, linger_ms: 0 };
        let answers = (0..10).map(|_| Err(SendError::retryable("refused"))).collect();
        let r =
            RetryConfig { max_retries: 2, initial_backoff_ms: 1, max_backoff_ms: 2, ..Default::default() };
        let (h, seen) = start(answers, q, r);
        h.offer(&ev(1));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let s = h.snapshot();
        assert_eq!((s.sent, s.failed, s.retried), (0, 1, 2), "{s:?}");
        assert_eq!(seen.lock().unwrap().len(), 3);
        h.shutdown(Instant::now() + Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn shutdown_deadline_bounds_a_stuck_sink() {
        let q = QueueConfig { capacity: 100, batch_max_events: 1, batch_max_bytes: 1000, linger_ms: 0 };
        let answers = (0..100).map(|_| Err(SendError::retryable("down"))).collect();
        let r = RetryConfig {
            max_retries: 1000,
            initial_backoff_ms: 50,
            max_backoff_ms: 50,
            ..Default::default()
        };
        let (h, _) = start(answers, q, r);
        for pid in 0..20 {
            h.offer(&ev(pid));
        }
        let stats = h.stats.clone();
        let t0 = std::time::Instant::now();
        h.shutdown(Instant::now() + Duration::from_millis(300)).await;
        assert!(t0.elapsed() < Duration::from_millis(900), "{:?}", t0.elapsed());
        let total = stats.sent.load(Relaxed) + stats.failed.load(Relaxed) + stats.dropped.load(Relaxed);
        assert_eq!(total, 20);
    }
}

//! Where events go after enrichment. Each output has its own bounded queue
//! (full → drop and count) so none can slow the ring-buffer reader:
//!
//! - [`local`]: JSON lines on stdout or a rotating file;
//! - [`live`]: the `/events` stream for `podwatch events` subscribers;
//! - [`sinks`]: Loki, Kafka and OTLP logs, with batching and retries;
//! - [`view`]: the event filter and the compact one-line view for people.

pub mod live;
pub mod local;
pub mod sinks;
pub mod view;

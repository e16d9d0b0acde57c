//! The path every kernel record takes in user space, in order:
//!
//! ```text
//! ring buffer ─▶ reader ─▶ decode ─▶ enrich ─▶ outputs (local, live stream, sinks)
//! ```
//!
//! - [`reader`]: the ring-buffer loop; never waits on an output;
//! - [`decode`]: bytes → typed records, never panics on a bad one;
//! - [`enrich`]: records → [`event::Event`]s (process cache, pod, paths);
//! - [`proc_cache`], [`redact`], [`names`]: what enrichment draws on.

pub mod decode;
pub mod enrich;
pub mod event;
pub mod names;
pub mod proc_cache;
pub mod reader;
pub mod redact;

//! podwatch: an eBPF security observability agent for Kubernetes.
//!
//! Data path: kernel programs (`podwatch-ebpf`) → ring buffer → [`decode`] →
//! [`enrich`] (process cache, cgroup → pod) → [`output`] and the live stream
//! served by [`server`].

pub mod agent;
pub mod btf;
pub mod cgroup;
pub mod client;
pub mod config;
pub mod coverage;
pub mod decode;
pub mod enrich;
pub mod event;
pub mod metadata;
pub mod metrics;
pub mod output;
pub mod policy;
pub mod probe;
pub mod proc_cache;
pub mod redact;
pub mod sensors;
pub mod server;
pub mod sinks;
pub mod stats;
pub mod tls;
pub mod view;

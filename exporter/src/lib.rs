//! podwatch: an eBPF security observability agent for Kubernetes.
//!
//! The folders follow the data path:
//!
//! ```text
//! kernel/     load programs, BTF offsets, typed map handles
//!   │ ring buffer records            │ per-pod counter maps
//!   ▼                                ▼
//! pipeline/   reader → decode → enrich        telemetry/  /metrics, /stats, /readyz
//!   │ events                                    ▲
//!   ▼                                           │ pod labels
//! outputs/    local file/stdout, live /events, sinks (Loki, Kafka, OTLP)
//! pods/       cgroup id → pod uid → pod metadata (Kubernetes, file, none)
//! policy/     YAML policies → kernel tries and masks, atomic reload
//! ```
//!
//! [`agent`] wires the stages together; [`config`] reads flags, env and YAML.

pub mod agent;
pub mod cli;
pub mod config;
pub mod kernel;
pub mod outputs;
pub mod pipeline;
pub mod pods;
pub mod policy;
pub mod telemetry;
pub mod tls;

//! End-to-end tests: they start the real `podwatch` binary (which loads the
//! real kernel programs), run real processes, some of them in kubelet-shaped
//! cgroups, make real connections, and check the events that come out.
//!
//! They need root. Without it each test prints why it is skipped; with
//! `PODWATCH_REQUIRE_PRIVILEGED=1` (set by scripts/test.sh in CI) a missing root
//! is a failure instead, so CI can never skip them silently.

mod harness;
mod kube_api;
mod manifests;

mod agent_sinks;
mod cli;
mod crosskernel;
mod deny;
mod deploy;
mod evasion;
mod exec;
mod file;
mod image;
mod kube;
mod load;
mod metrics;
mod network;
mod pods;
mod policy;
mod privileges;
mod readiness;

// Sinks (no root needed): protocol doubles, a real Kafka broker, the tests.
mod kafka_broker;
mod loki_double;
mod otlp_double;
mod otlp_env;
mod otlp_python;
mod sinks;

// Dashboards, Prometheus and Loki rules: structure (no root), then every query
// against a real Prometheus and a real Loki fed by real agents (root).
mod dashboards;
mod default_policy;
mod obs_support;
mod observability;
mod rules;

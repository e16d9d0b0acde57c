//! How the agent reports on itself and its pods: the HTTP [`server`]
//! (`/healthz`, `/readyz`, `/stats`, `/metrics`, `/events`), the per-pod and
//! self [`metrics`], and the loss counters in [`stats`].

pub mod metrics;
pub mod server;
pub mod stats;

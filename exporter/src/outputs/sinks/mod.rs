//! Sinks: ship events to the log stacks users already run (Loki, OTLP logs,
//! Kafka). Each sink is the shared [`framework`] pipeline (bounded queue →
//! batcher → encoder → transport with retries) plus its own encoder and
//! transport. [`Sinks::offer`] never waits; one sink's outage never slows the
//! caller or another sink.

pub mod framework;
pub mod http;
pub mod kafka;
pub mod loki;
pub mod otlp;

use std::{sync::Arc, time::Duration};

use serde::Deserialize;

pub use framework::{QueueConfig, RetryConfig, SinkStatsSnapshot};
pub use kafka::KafkaConfig;
pub use loki::LokiConfig;
pub use otlp::OtlpConfig;

use crate::pipeline::event::Event;

/// `sinks:` in the YAML config; every sink is off unless configured.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinksConfig {
    pub loki: Option<LokiConfig>,
    pub kafka: Option<KafkaConfig>,
    pub otlp: Option<OtlpConfig>,
}

/// The running sinks.
pub struct Sinks {
    sinks: Vec<framework::SinkHandle>,
}

impl Sinks {
    /// Validates the configuration and starts each configured sink on the
    /// current tokio runtime. Nothing connects yet: an unreachable endpoint
    /// shows up as retries and failures in the counters, not as an error here.
    pub fn start(cfg: &SinksConfig, node_name: &str) -> anyhow::Result<Sinks> {
        if tokio::runtime::Handle::try_current().is_err() {
            anyhow::bail!("sinks must be started from within a tokio runtime");
        }
        let mut sinks = Vec::new();
        if let Some(c) = &cfg.loki {
            sinks.push(loki::start(c, node_name)?);
        }
        if let Some(c) = &cfg.otlp {
            sinks.push(otlp::start(c, node_name)?);
        }
        if let Some(c) = &cfg.kafka {
            sinks.push(kafka::start(c, node_name)?);
        }
        Ok(Sinks { sinks })
    }

    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }

    /// Hands the event to every sink without waiting; a full queue counts a drop.
    pub fn offer(&self, ev: &Arc<Event>) {
        for s in &self.sinks {
            s.offer(ev);
        }
    }

    /// Closes the queues and flushes what can be sent within `deadline`
    /// (all sinks in parallel); what cannot is counted failed or dropped.
    pub async fn shutdown(self, deadline: Duration) {
        let end = tokio::time::Instant::now() + deadline;
        let mut tasks = tokio::task::JoinSet::new();
        for s in self.sinks {
            tasks.spawn(s.shutdown(end));
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Counters per sink, named `loki`, `otlp` or `kafka`.
    pub fn stats(&self) -> Vec<(String, SinkStatsSnapshot)> {
        self.sinks.iter().map(|s| (s.name.clone(), s.snapshot())).collect()
    }
}

/// What an enforcement policy did about the event (`log`, `deny`, `kill`...),
/// when a rule matched. Loki's `action` label and OTLP's severity follow it.
pub fn action_of(ev: &Event) -> Option<&str> {
    ev.action.as_deref()
}

/// The event's time in Unix nanoseconds.
pub fn event_time_nanos(ev: &Event) -> u64 {
    ev.time.0.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// The namespace label: the pod's namespace, `host` outside pods.
pub fn namespace_of(ev: &Event) -> &str {
    match &ev.pod {
        None => "host",
        Some(p) => p.namespace.as_deref().unwrap_or("unknown"),
    }
}

#[cfg(test)]
pub(crate) mod testdata {
    use std::sync::Arc;

    use crate::pipeline::event::*;

    pub fn exec_in_pod(pid: u32, time: &str) -> Arc<Event> {
        // Built from JSON so that fields added to Event later need no change here.
        let v = serde_json::json!({
            "time": time, "node": "node-1", "kind": "exec",
            "process": {"pid": pid, "tid": pid, "uid": 1000, "gid": 1000, "comm": "curl",
                        "binary": "/usr/bin/curl", "args": ["curl", "http://10.0.0.7/"], "cwd": "/app",
                        "parent": {"pid": 1, "binary": "/bin/sh"}},
            "pod": {"uid": "6b1f0a52-2c3d-4e5f-8a9b-0c1d2e3f4a5b", "namespace": "shop",
                    "name": "web-7d4b9c-x2x9q", "workload": "web",
                    "container": {"id": "4f2b8e", "name": "nginx", "runtime": "containerd"}},
            "cgroup": {"id": 10432, "path": "/kubepods.slice/x"}
        });
        Arc::new(serde_json::from_value(v).expect("test event"))
    }

    pub fn connect_on_host(pid: u32, time: &str) -> Arc<Event> {
        let mut ev = (*exec_in_pod(pid, time)).clone();
        ev.kind = Kind::Connect;
        ev.pod = None;
        ev.network = Some(Network {
            protocol: "tcp".into(),
            family: "ipv4".into(),
            direction: "egress".into(),
            src: Endpoint { address: "10.244.1.5".into(), port: 40112 },
            dst: Endpoint { address: "10.0.0.7".into(), port: 80 },
            result: "ECONNREFUSED".into(),
            bytes_sent: None,
            bytes_received: None,
        });
        Arc::new(ev)
    }

    pub fn file_in_pod(pid: u32, time: &str, path: &str) -> Arc<Event> {
        let mut ev = (*exec_in_pod(pid, time)).clone();
        ev.kind = Kind::File;
        ev.file = Some(File {
            path: path.into(),
            requested: None,
            operation: "read".into(),
            flags: vec!["O_RDONLY".into()],
            syscall: "openat".into(),
            result: "ok".into(),
            errno: None,
            fd: Some(3),
            path_truncated: false,
        });
        Arc::new(ev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_rejects_unknown_keys_and_defaults_off() {
        let c: SinksConfig = serde_yaml::from_str("{}").unwrap();
        assert!(c.loki.is_none() && c.kafka.is_none() && c.otlp.is_none());
        let e = serde_yaml::from_str::<SinksConfig>("splunk: {}").unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
        let e = serde_yaml::from_str::<SinksConfig>("loki: {url: http://l:3100, colour: red}").unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
    }

    #[test]
    fn times_and_namespaces() {
        let ev = testdata::exec_in_pod(1, "2026-11-22T17:57:57.192572679Z");
        assert_eq!(event_time_nanos(&ev), 1_795_370_277_192_572_679);
        assert_eq!(namespace_of(&ev), "shop");
        assert_eq!(namespace_of(&testdata::connect_on_host(1, "2026-01-01T00:00:00Z")), "host");
    }

    #[test]
    fn start_outside_a_runtime_is_an_error() {
        assert!(Sinks::start(&SinksConfig::default(), "n").is_err());
    }

    #[tokio::test]
    async fn start_without_sinks_is_a_noop() {
        let s = Sinks::start(&SinksConfig::default(), "n").unwrap();
        assert!(s.is_empty() && s.stats().is_empty());
        s.offer(&testdata::exec_in_pod(1, "2026-01-01T00:00:00Z"));
        s.shutdown(Duration::from_millis(10)).await;
    }
}

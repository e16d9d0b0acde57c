//! Configuration: built-in defaults, then a YAML file (`--config`), then
//! environment variables and flags (flags win). Unknown YAML keys are errors
//! naming the file, so a typo never silently falls back to a default.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{bail, Context as _};
use clap::{Args, ValueEnum};
use serde::Deserialize;

use crate::{outputs::local::OutputTarget, telemetry::metrics::LabelConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    /// JSON lines on standard output.
    Stdout,
    /// JSON lines in a file that rotates by size.
    File,
    /// No local output (events still reach /events subscribers).
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetadataSource {
    /// Watch Pods on this node through the Kubernetes API.
    Kubernetes,
    /// Read pods from a YAML/JSON file (reloaded when it changes).
    File,
    /// Only what cgroup paths say: pod uid and container id.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventsMode {
    /// Only events a log, kill or deny rule matched.
    Matched,
    /// Every event (policies still count, kill and deny).
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The agent's default HTTP port: in the node agents' 9100s, clear of
/// Prometheus' own 9090 and node_exporter's 9100. `podwatch events` and
/// deploy/kustomize use the same.
pub const DEFAULT_PORT: u16 = 9176;
/// Where the agent listens by default, and where `podwatch events` looks.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9176";

/// `podwatch run` flags. Every flag has an environment variable and a YAML key.
#[derive(Debug, Clone, Default, Args)]
pub struct RunArgs {
    /// YAML configuration file; flags and environment variables override it.
    #[arg(long, env = "PODWATCH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Node name reported in every event (YAML: node_name). Defaults to the hostname.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// HTTP address for /healthz, /readyz, /stats and the live /events stream
    /// (YAML: listen). Default 127.0.0.1:9176; deploy/kustomize uses 0.0.0.0:9176.
    #[arg(long, env = "PODWATCH_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Where events go (YAML: output.kind). Default stdout.
    #[arg(long, env = "PODWATCH_OUTPUT", value_enum)]
    pub output: Option<OutputKind>,
    /// File for `--output file` (YAML: output.path).
    #[arg(long, env = "PODWATCH_OUTPUT_FILE")]
    pub output_file: Option<PathBuf>,
    /// Rotate the output file past this many bytes (YAML: output.max_bytes). Default 100 MiB.
    #[arg(long, env = "PODWATCH_OUTPUT_MAX_BYTES")]
    pub output_max_bytes: Option<u64>,
    /// Rotated files kept as FILE.1 … FILE.N (YAML: output.max_files). Default 5.
    #[arg(long, env = "PODWATCH_OUTPUT_MAX_FILES")]
    pub output_max_files: Option<u32>,
    /// Kernel ring buffer size in bytes, a power of two ≥ 4096
    /// (YAML: ring_buffer_bytes). Default 16 MiB.
    #[arg(long, env = "PODWATCH_RING_BUFFER_BYTES")]
    pub ring_buffer_bytes: Option<u32>,
    /// Events buffered per output before new ones are dropped and counted
    /// (YAML: queue_capacity). Default 65536.
    #[arg(long, env = "PODWATCH_QUEUE_CAPACITY")]
    pub queue_capacity: Option<usize>,
    /// Bytes of JSON lines the local output's queue may hold before new
    /// events are dropped and counted (YAML: queue_bytes). Default 8 MiB (a
    /// file event's line is about 0.6 KiB). Bounds the agent's memory under a backlog.
    #[arg(long, env = "PODWATCH_QUEUE_BYTES")]
    pub queue_bytes: Option<usize>,
    /// Processes remembered (YAML: process_cache.capacity). Default 65536.
    #[arg(long, env = "PODWATCH_PROCESS_CACHE_CAPACITY")]
    pub process_cache_capacity: Option<usize>,
    /// Pod labels on the per-pod metric families, comma-separated, from
    /// namespace, pod, workload, container, binary (YAML: metrics.labels).
    /// Default namespace,pod,workload,container.
    #[arg(long, env = "PODWATCH_METRICS_LABELS", value_delimiter = ',')]
    pub metrics_labels: Option<Vec<String>>,
    /// Seconds a deleted pod's series stay before they are removed
    /// (YAML: metrics.deleted_pod_grace_seconds). Default 300.
    #[arg(long, env = "PODWATCH_DELETED_POD_GRACE_SECONDS")]
    pub deleted_pod_grace_seconds: Option<u64>,
    /// Per-pod counter entries the kernel map holds (YAML: metrics.counter_capacity). Default 65536.
    #[arg(long, env = "PODWATCH_COUNTER_CAPACITY")]
    pub counter_capacity: Option<u32>,
    /// Where pod names, namespaces, workloads and container names come from
    /// (YAML: metadata.source). Default: kubernetes inside a cluster
    /// (KUBERNETES_SERVICE_HOST set), file when --metadata-file is given, else none.
    #[arg(long, env = "PODWATCH_METADATA_SOURCE", value_enum)]
    pub metadata_source: Option<MetadataSource>,
    /// YAML/JSON file of pods for `--metadata-source file` (YAML: metadata.file).
    #[arg(long, env = "PODWATCH_METADATA_FILE")]
    pub metadata_file: Option<PathBuf>,
    /// kubeconfig for `--metadata-source kubernetes` outside a cluster (YAML: metadata.kubeconfig).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// API server URL overriding in-cluster config and kubeconfig (YAML: metadata.api_server).
    #[arg(long, env = "PODWATCH_KUBE_API_SERVER")]
    pub kube_api_server: Option<String>,
    /// Directory of policy YAML files, reloaded on change and on SIGHUP
    /// (YAML: policies.dir). Default: the built-in observe-only policy.
    #[arg(long, env = "PODWATCH_POLICY_DIR")]
    pub policy_dir: Option<PathBuf>,
    /// Which file and network events reach user space (YAML: policies.events):
    /// `matched` only those a log, kill or deny rule matched (the rest are only
    /// counted, in the kernel); `all` every one. Execs and exits are always
    /// reported. Default matched.
    #[arg(long, env = "PODWATCH_EVENTS", value_enum)]
    pub events: Option<EventsMode>,
    /// Extra regular expression whose matches (or first capture group) are
    /// masked in process arguments, on top of the built-in secret patterns;
    /// repeatable (YAML: redaction.patterns).
    #[arg(long = "redact-pattern", env = "PODWATCH_REDACT_PATTERNS", value_delimiter = '\n')]
    pub redact_patterns: Vec<String>,
    /// Log format (YAML: log.format). Default text.
    #[arg(long, env = "PODWATCH_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter in tracing's syntax, e.g. `info` or `podwatch=debug` (YAML: log.level).
    #[arg(long, env = "PODWATCH_LOG_LEVEL")]
    pub log_level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    node_name: Option<String>,
    listen: Option<SocketAddr>,
    output: Option<FileOutput>,
    ring_buffer_bytes: Option<u32>,
    queue_capacity: Option<usize>,
    queue_bytes: Option<usize>,
    process_cache: Option<FileProcessCache>,
    log: Option<FileLog>,
    metrics: Option<FileMetrics>,
    metadata: Option<FileMetadata>,
    policies: Option<FilePolicies>,
    redaction: Option<FileRedaction>,
    /// Event sinks (Loki, Kafka, OTLP); all off unless configured.
    sinks: Option<crate::outputs::sinks::SinksConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRedaction {
    enabled: Option<bool>,
    patterns: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePolicies {
    dir: Option<PathBuf>,
    events: Option<EventsMode>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileMetrics {
    labels: Option<Vec<String>>,
    deleted_pod_grace_seconds: Option<u64>,
    counter_capacity: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileMetadata {
    source: Option<MetadataSource>,
    file: Option<PathBuf>,
    kubeconfig: Option<PathBuf>,
    api_server: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileOutput {
    kind: Option<OutputKind>,
    path: Option<PathBuf>,
    max_bytes: Option<u64>,
    max_files: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileProcessCache {
    capacity: Option<usize>,
    exited_linger_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLog {
    format: Option<LogFormat>,
    level: Option<String>,
}

/// The resolved configuration the agent runs with.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node_name: String,
    pub listen: SocketAddr,
    pub output: OutputTarget,
    pub ring_buffer_bytes: u32,
    pub queue_capacity: usize,
    pub queue_bytes: usize,
    pub process_cache_capacity: usize,
    pub exited_linger: Duration,
    pub log_format: LogFormat,
    pub log_level: String,
    pub metric_labels: LabelConfig,
    pub deleted_pod_grace: Duration,
    pub counter_capacity: u32,
    pub metadata: MetadataConfig,
    pub policy_dir: Option<PathBuf>,
    pub events: EventsMode,
    pub redaction_enabled: bool,
    pub redaction_patterns: Vec<String>,
    pub sinks: crate::outputs::sinks::SinksConfig,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MetadataConfig {
    None,
    File(PathBuf),
    Kubernetes { kubeconfig: Option<PathBuf>, api_server: Option<String> },
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

impl RunArgs {
    pub fn resolve(&self) -> anyhow::Result<AgentConfig> {
        let text = match &self.config {
            Some(path) => Some((
                path.display().to_string(),
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading config {}", path.display()))?,
            )),
            None => None,
        };
        let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
        self.resolve_yaml(
            text.as_ref().map(|(name, text)| (name.as_str(), text.as_str())),
            in_cluster,
            hostname,
        )
    }

    /// [`RunArgs::resolve`] without the machine: `config` is the YAML file's
    /// (name, text), `in_cluster` whether KUBERNETES_SERVICE_HOST is set,
    /// `hostname` the node name's fallback. Reads no file and no variable.
    pub fn resolve_yaml(
        &self,
        config: Option<(&str, &str)>,
        in_cluster: bool,
        hostname: impl FnOnce() -> String,
    ) -> anyhow::Result<AgentConfig> {
        let file: FileConfig = match config {
            Some((name, text)) => {
                serde_yaml::from_str(text).with_context(|| format!("config {name}: invalid"))?
            }
            None => FileConfig::default(),
        };
        let fo = file.output.unwrap_or_default();
        let fp = file.process_cache.unwrap_or_default();
        let fl = file.log.unwrap_or_default();
        let fm = file.metrics.unwrap_or_default();
        let fmd = file.metadata.unwrap_or_default();
        let fpol = file.policies.unwrap_or_default();
        let fred = file.redaction.unwrap_or_default();
        let mut redaction_patterns = fred.patterns.unwrap_or_default();
        redaction_patterns.extend(self.redact_patterns.iter().cloned());
        crate::pipeline::redact::Redactor::new(&redaction_patterns, true).map_err(anyhow::Error::msg)?;

        let kind = self.output.or(fo.kind).unwrap_or(OutputKind::Stdout);
        let output = match kind {
            OutputKind::Stdout => OutputTarget::Stdout,
            OutputKind::None => OutputTarget::None,
            OutputKind::File => OutputTarget::File {
                path: self
                    .output_file
                    .clone()
                    .or(fo.path)
                    .context("--output file needs --output-file (YAML: output.path)")?,
                max_bytes: self.output_max_bytes.or(fo.max_bytes).unwrap_or(100 << 20),
                max_files: self.output_max_files.or(fo.max_files).unwrap_or(5),
            },
        };
        let ring = self.ring_buffer_bytes.or(file.ring_buffer_bytes).unwrap_or(16 << 20);
        if !ring.is_power_of_two() || ring < 4096 {
            bail!("ring_buffer_bytes must be a power of two of at least 4096, not {ring}");
        }
        let queue_capacity = self.queue_capacity.or(file.queue_capacity).unwrap_or(65536);
        if queue_capacity == 0 {
            bail!("queue_capacity must be at least 1");
        }
        let queue_bytes = self.queue_bytes.or(file.queue_bytes).unwrap_or(8 << 20);
        if queue_bytes < 64 << 10 {
            bail!("queue_bytes must be at least 65536 (64 KiB), not {queue_bytes}");
        }
        let metric_labels = match self.metrics_labels.clone().or(fm.labels) {
            Some(names) => LabelConfig::from_names(&names).map_err(anyhow::Error::msg)?,
            None => LabelConfig::default(),
        };
        let counter_capacity = self.counter_capacity.or(fm.counter_capacity).unwrap_or(65536);
        if counter_capacity == 0 {
            bail!("counter_capacity must be at least 1");
        }
        let metadata_file = self.metadata_file.clone().or(fmd.file);
        let source = self.metadata_source.or(fmd.source).unwrap_or(if metadata_file.is_some() {
            MetadataSource::File
        } else if in_cluster {
            MetadataSource::Kubernetes
        } else {
            MetadataSource::None
        });
        let metadata = match source {
            MetadataSource::None => MetadataConfig::None,
            MetadataSource::File => MetadataConfig::File(
                metadata_file
                    .context("--metadata-source file needs --metadata-file (YAML: metadata.file)")?,
            ),
            MetadataSource::Kubernetes => MetadataConfig::Kubernetes {
                kubeconfig: self.kubeconfig.clone().or(fmd.kubeconfig),
                api_server: self.kube_api_server.clone().or(fmd.api_server),
            },
        };
        Ok(AgentConfig {
            sinks: file.sinks.unwrap_or_default(),
            redaction_enabled: fred.enabled.unwrap_or(true),
            redaction_patterns,
            policy_dir: self.policy_dir.clone().or(fpol.dir),
            events: self.events.or(fpol.events).unwrap_or(EventsMode::Matched),
            metric_labels,
            deleted_pod_grace: Duration::from_secs(
                self.deleted_pod_grace_seconds.or(fm.deleted_pod_grace_seconds).unwrap_or(300),
            ),
            counter_capacity,
            metadata,
            node_name: self.node_name.clone().or(file.node_name).unwrap_or_else(hostname),
            listen: self
                .listen
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT))),
            output,
            ring_buffer_bytes: ring,
            queue_capacity,
            queue_bytes,
            process_cache_capacity: self.process_cache_capacity.or(fp.capacity).unwrap_or(65536),
            exited_linger: Duration::from_secs(fp.exited_linger_seconds.unwrap_or(30)),
            log_format: self.log_format.or(fl.format).unwrap_or(LogFormat::Text),
            log_level: self.log_level.clone().or(fl.level).unwrap_or_else(|| "info".to_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_file(yaml: &str) -> (tempfile::NamedTempFile, RunArgs) {
        let mut f = tempfile::NamedTempFile::new().expect("tmp");
        std::io::Write::write_all(&mut f, yaml.as_bytes()).expect("write");
        let args = RunArgs { config: Some(f.path().to_path_buf()), ..Default::default() };
        (f, args)
    }

    #[test]
    fn defaults() {
        let c = RunArgs::default().resolve().expect("resolve");
        assert_eq!(c.output, OutputTarget::Stdout);
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.listen.port(), DEFAULT_PORT);
        assert_eq!(c.ring_buffer_bytes, 16 << 20);
        assert_eq!((c.queue_capacity, c.queue_bytes), (65536, 8 << 20));
    }

    #[test]
    fn file_then_flags() {
        let (_f, mut args) = with_file(
            "node_name: n1\nlisten: 0.0.0.0:9999\noutput:\n  kind: file\n  path: /tmp/x.jsonl\n  max_files: 2\nring_buffer_bytes: 65536\nqueue_bytes: 1048576\n",
        );
        let c = args.resolve().expect("resolve");
        assert_eq!(c.queue_bytes, 1 << 20);
        assert_eq!(c.node_name, "n1");
        assert_eq!(c.listen.port(), 9999);
        assert!(matches!(c.output, OutputTarget::File { max_files: 2, .. }));
        args.node_name = Some("flag".into());
        args.output = Some(OutputKind::Stdout);
        let c = args.resolve().expect("resolve");
        assert_eq!(c.node_name, "flag");
        assert_eq!(c.output, OutputTarget::Stdout);
    }

    #[test]
    fn bad_files_name_the_file_and_field() {
        let (f, args) = with_file("nodename: typo\n");
        let e = format!("{:#}", args.resolve().expect_err("unknown key"));
        assert!(e.contains(&f.path().display().to_string()), "{e}");
        assert!(e.contains("nodename"), "{e}");
        let (_f, args) = with_file("ring_buffer_bytes: 1000\n");
        assert!(format!("{:#}", args.resolve().expect_err("not pow2")).contains("power of two"));
        let (_f, args) = with_file("queue_bytes: 100\n");
        assert!(format!("{:#}", args.resolve().expect_err("too small")).contains("queue_bytes"));
        let (_f, args) = with_file("output: {kind: file}\n");
        assert!(format!("{:#}", args.resolve().expect_err("no path")).contains("output-file"));
        let (_f, args) = with_file("metrics: {labels: [namespace, colour]}\n");
        assert!(format!("{:#}", args.resolve().expect_err("bad label")).contains("colour"));
        let (_f, args) = with_file("metadata: {source: file}\n");
        assert!(format!("{:#}", args.resolve().expect_err("no file")).contains("metadata-file"));
        let (_f, args) = with_file(": : :\n\t- [");
        assert!(args.resolve().is_err());
    }
}

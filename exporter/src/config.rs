//! Configuration: built-in defaults, then a YAML file (`--config`), then
//! environment variables and flags (flags win). Unknown YAML keys are errors
//! naming the file, so a typo never silently falls back to a default.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{bail, Context as _};
use clap::{Args, ValueEnum};
use serde::Deserialize;

use crate::output::OutputTarget;

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
pub enum LogFormat {
    Text,
    Json,
}

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
    /// (YAML: listen). Default 127.0.0.1:9090; use 0.0.0.0:9090 in a cluster.
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
    /// Processes remembered (YAML: process_cache.capacity). Default 65536.
    #[arg(long, env = "PODWATCH_PROCESS_CACHE_CAPACITY")]
    pub process_cache_capacity: Option<usize>,
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
    process_cache: Option<FileProcessCache>,
    log: Option<FileLog>,
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
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    pub node_name: String,
    pub listen: SocketAddr,
    pub output: OutputTarget,
    pub ring_buffer_bytes: u32,
    pub queue_capacity: usize,
    pub process_cache_capacity: usize,
    pub exited_linger: Duration,
    pub log_format: LogFormat,
    pub log_level: String,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

impl RunArgs {
    pub fn resolve(&self) -> anyhow::Result<AgentConfig> {
        let file: FileConfig = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config {}", path.display()))?;
                serde_yaml::from_str(&text)
                    .with_context(|| format!("config {}: invalid", path.display()))?
            }
            None => FileConfig::default(),
        };
        let fo = file.output.unwrap_or_default();
        let fp = file.process_cache.unwrap_or_default();
        let fl = file.log.unwrap_or_default();

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
        let ring = self
            .ring_buffer_bytes
            .or(file.ring_buffer_bytes)
            .unwrap_or(16 << 20);
        if !ring.is_power_of_two() || ring < 4096 {
            bail!("ring_buffer_bytes must be a power of two of at least 4096, not {ring}");
        }
        let queue_capacity = self.queue_capacity.or(file.queue_capacity).unwrap_or(65536);
        if queue_capacity == 0 {
            bail!("queue_capacity must be at least 1");
        }
        Ok(AgentConfig {
            node_name: self
                .node_name
                .clone()
                .or(file.node_name)
                .unwrap_or_else(hostname),
            listen: self
                .listen
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9090))),
            output,
            ring_buffer_bytes: ring,
            queue_capacity,
            process_cache_capacity: self.process_cache_capacity.or(fp.capacity).unwrap_or(65536),
            exited_linger: Duration::from_secs(fp.exited_linger_seconds.unwrap_or(30)),
            log_format: self.log_format.or(fl.format).unwrap_or(LogFormat::Text),
            log_level: self
                .log_level
                .clone()
                .or(fl.level)
                .unwrap_or_else(|| "info".to_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_file(yaml: &str) -> (tempfile::NamedTempFile, RunArgs) {
        let mut f = tempfile::NamedTempFile::new().expect("tmp");
        std::io::Write::write_all(&mut f, yaml.as_bytes()).expect("write");
        let args = RunArgs {
            config: Some(f.path().to_path_buf()),
            ..Default::default()
        };
        (f, args)
    }

    #[test]
    fn defaults() {
        let c = RunArgs::default().resolve().expect("resolve");
        assert_eq!(c.output, OutputTarget::Stdout);
        assert_eq!(c.listen.to_string(), "127.0.0.1:9090");
        assert_eq!(c.ring_buffer_bytes, 16 << 20);
    }

    #[test]
    fn file_then_flags() {
        let (_f, mut args) = with_file(
            "node_name: n1\nlisten: 0.0.0.0:9999\noutput:\n  kind: file\n  path: /tmp/x.jsonl\n  max_files: 2\nring_buffer_bytes: 65536\n",
        );
        let c = args.resolve().expect("resolve");
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
        let (_f, args) = with_file("output: {kind: file}\n");
        assert!(format!("{:#}", args.resolve().expect_err("no path")).contains("output-file"));
        let (_f, args) = with_file(": : :\n\t- [");
        assert!(args.resolve().is_err());
    }
}

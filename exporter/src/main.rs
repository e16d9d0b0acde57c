use std::process::ExitCode;

/// Every event is a few dozen small allocations on the reader's task (see
/// exporter/Cargo.toml): mimalloc serves them in a fraction of glibc's time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc returns freed memory to the system lazily, from its allocation
/// paths: what start-up frees (the kernel's BTF, parsed by aya and by the
/// agent: ~50 MiB) and what a burst's queues free stayed resident while the
/// agent was quiet (RSS at rest 109 MiB, of which 63 MiB heap; now 55 and 9).
/// A thread asks it once a second to release what has been free long enough.
fn release_freed_memory() {
    let spawned = std::thread::Builder::new().name("mi-collect".into()).spawn(|| loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
        // SAFETY: mimalloc's collection entry point, safe from any thread.
        unsafe { libmimalloc_sys::mi_collect(false) };
    });
    if let Err(e) = spawned {
        eprintln!("podwatch: freed memory stays with the allocator (cannot start its thread: {e})");
    }
}

use clap::{Parser, Subcommand};
use podwatch::{
    config::{LogFormat, RunArgs},
    outputs::view::EventFilter,
    pipeline::event::Kind,
};

/// eBPF security observability for Kubernetes: process execution, file access
/// and network activity, attributed to pods.
#[derive(Parser)]
#[command(name = "podwatch", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the kernel sensors and emit events (needs root, or CAP_BPF + CAP_PERFMON + CAP_NET_ADMIN).
    Run(Box<RunArgs>),
    /// Attach to a running agent and print its events as they happen.
    Events(EventsArgs),
    /// Work with policy files.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Print this kernel's features (BTF, BPF LSM, fentry, kprobes) and the hook
    /// each sensor uses here, by loading the programs as the agent would (needs root).
    Probe,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate a policy directory offline, with the same code the agent uses
    /// to load it (and this kernel's capabilities); exit 1 on the first error.
    Check {
        /// Directory of *.yaml / *.yml policy files.
        dir: std::path::PathBuf,
    },
}

fn policy_check(dir: &std::path::Path) -> anyhow::Result<()> {
    let caps = podwatch::policy::Capabilities::probe();
    let set = podwatch::policy::load_dir(dir, caps)?;
    let compiled = podwatch::policy::compile::compile(&set, 1).map_err(anyhow::Error::msg)?;
    for p in &set {
        println!("{}: policy {} ({} rules)", p.source, p.name, p.rules.len());
        for r in &p.rules {
            println!("  - {} -> {:?}", r.name, r.action);
        }
    }
    println!("ok: {} policies, {} rules", set.len(), compiled.rules.len());
    Ok(())
}

#[derive(clap::Args)]
struct EventsArgs {
    /// The agent's HTTP address (its --listen).
    #[arg(long, env = "PODWATCH_SERVER", default_value = podwatch::config::DEFAULT_LISTEN)]
    server: String,
    /// One line per event for people, instead of JSON.
    #[arg(long)]
    compact: bool,
    /// Only these namespaces (repeatable; `host` = processes outside pods).
    #[arg(long = "namespace", short = 'n')]
    namespaces: Vec<String>,
    /// Only these pods, by name or uid (repeatable or comma-separated).
    #[arg(long, value_delimiter = ',')]
    pods: Vec<String>,
    /// Only these kinds: exec, exit, file, connect, accept, close, send (repeatable or comma-separated).
    #[arg(long = "kind", value_delimiter = ',', value_parser = parse_kind)]
    kinds: Vec<Kind>,
}

fn parse_kind(s: &str) -> Result<Kind, String> {
    Kind::parse(s).ok_or_else(|| {
        let all: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        format!("unknown kind {s:?}; one of {}", all.join(", "))
    })
}

fn init_logs(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> ExitCode {
    release_freed_memory();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("podwatch: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Run(args) => match args.resolve() {
            Ok(cfg) => {
                init_logs(cfg.log_format, &cfg.log_level);
                rt.block_on(podwatch::agent::run(cfg))
            }
            Err(e) => Err(e),
        },
        Command::Policy(PolicyCommand::Check { dir }) => policy_check(&dir),
        Command::Probe => podwatch::kernel::probe::run(),
        Command::Events(a) => {
            let filter = EventFilter { namespaces: a.namespaces, pods: a.pods, kinds: a.kinds };
            rt.block_on(podwatch::cli::events::follow(&a.server, &filter, a.compact))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("podwatch: {e:#}");
            ExitCode::FAILURE
        }
    }
}

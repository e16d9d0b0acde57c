//! Subcommands other than `run` that talk to a running agent.

pub mod events;

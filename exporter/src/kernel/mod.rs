//! The kernel side as user space sees it: checking the privileges the agent
//! has ([`capabilities`]), reading kernel struct offsets from
//! BTF ([`btf`]), loading and attaching the programs and handing out typed
//! map handles ([`loader`]), the host's namespaces ([`namespaces`]), and probing which hook kinds this kernel offers
//! ([`probe`], also `podwatch probe`).

pub mod btf;
pub mod capabilities;
pub mod loader;
pub mod namespaces;
pub mod probe;
pub mod read_guard;

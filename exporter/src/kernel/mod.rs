//! The kernel side as user space sees it: reading kernel struct offsets from
//! BTF ([`btf`]), loading and attaching the programs and handing out typed
//! map handles ([`loader`]).

pub mod btf;
pub mod loader;

//! The kernel programs are the `podwatch` binary target; this empty library
//! lets the agent name this crate as a build dependency (so cargo rebuilds it).
#![no_std]

//! netstack: the sans-IO IPv4 NAT router at the heart of algonet's data plane.
//!
//! Bytes and `now` in, an [`Action`] out: no I/O, no clock, no threads. The driver (the node's
//! data plane) reads a packet from the TUN device into a buffer it owns, calls
//! [`Router::process`], and writes the buffer back unless the action is a drop.
//!
//! - [`wire`]: the checked door for untrusted bytes;
//! - [`checksum`]: RFC 1071 sums and RFC 1624 incremental updates, complete and partial;
//! - [`conntrack`]: connections with lazy expiry and a bounded table, indexed by `index`;
//! - [`frag`]: translation of IPv4 fragments by the first fragment's verdict;
//! - [`nat`]: in-place rewriting;
//! - [`icmp`]: echo replies, RSTs and ICMP errors the router sends itself;
//! - [`router`]: policy and the per-packet decision;
//! - [`stats`]: drop reasons and counters.
//!
//! The router never allocates per packet (tables grow, amortised, when connections are added),
//! never panics on any input, and counts every drop under a named [`DropReason`].

#![forbid(unsafe_code)]

pub mod checksum;
pub mod conntrack;
pub mod frag;
pub mod icmp;
mod index;
pub mod nat;
pub mod router;
pub mod stats;
pub mod time;
pub mod wire;

pub use conntrack::Timeouts;
pub use frag::{FragKey, Fragments};
pub use nat::{complete_partial, L4Checksum};
pub use router::{
    Action, Config, Error, Mapping, Meta, Owner, Router, RunId, RunTraffic, Scope, Vpn,
};
pub use stats::{Counters, DropReason, Reply, Side};
pub use time::Instant;
pub use wire::{Protocol, Tuple};

//! algonet: direct algorithm-to-algorithm networking over a VPN for vantage6-style federations.
//!
//! The parts and how data flows between them are described in `docs/architecture.md`:
//!
//! - [`netstack`]: the sans-IO IPv4 NAT router (its own crate);
//! - [`net`]: Linux plumbing (namespaces, rtnetlink, the routing plan) and the data-plane driver
//!   that feeds the router with packets from the node's TUN device;
//! - [`server`]: the central server (vantage6 4.x-compatible API, VPN providers);
//! - [`node`]: the node agent's parts built so far;
//! - [`config`]: reading the YAML files of both.

pub use netstack;

pub mod api;
pub mod config;
pub mod demo;
pub mod docker;
pub mod echo;
pub mod feature;
pub mod logging;
pub mod net;
pub mod node;
pub mod server;

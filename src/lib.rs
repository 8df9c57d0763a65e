//! algonet: direct algorithm-to-algorithm networking over a VPN for vantage6-style federations.
//!
//! The parts and how data flows between them are described in `docs/architecture.md`:
//!
//! - [`netstack`]: the sans-IO IPv4 NAT router (its own crate);
//! - [`api`]: the API as data (typed ids, run statuses, requests and answers) and the one HTTP
//!   client of it, shared by the server and everything that calls it;
//! - [`net`]: Linux plumbing (namespaces, rtnetlink, the routing plan) and the data-plane driver
//!   that feeds the router with packets from the node's TUN device;
//! - [`server`]: the central server (vantage6 4.x-compatible API, VPN providers);
//! - [`node`]: the node agent;
//! - [`docker`]: the Docker runtime, what each container looks like, offline images;
//! - [`echo`], [`feature`], [`demo`]: the echo algorithm, `algonet test` and `algonet demo`;
//! - [`wireguard`]: WireGuard keys, profiles and packet ends, for the node's tunnel and the
//!   server's hub;
//! - [`crypto`]: vantage6's encryption of inputs and results in encrypted collaborations;
//! - [`config`], [`logging`], [`metrics`], [`private`]: reading the YAML files, the log lines,
//!   the Prometheus exposition, and files only their owner may read;
//! - [`http`]: serving HTTP within bounds (the API's and the metrics listeners');
//! - [`service`]: telling systemd the service is ready, alive, stopping.

pub use netstack;

pub mod api;
pub mod config;
pub mod crypto;
pub mod demo;
pub mod docker;
pub mod echo;
pub mod feature;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod node;
pub mod private;
pub mod server;
pub mod service;
pub mod sync;
pub mod wireguard;

//! algonet: direct algorithm-to-algorithm networking over a VPN for vantage6-style federations.
//!
//! The parts and how data flows between them are described in `docs/architecture.md`. Today the
//! workspace holds the packet router, [`netstack`]: a sans-IO IPv4 NAT router that the node's
//! data plane feeds with packets read from its TUN device. The node agent, the server and the
//! demo build on it.

pub use netstack;

pub mod net;
pub mod node;
pub mod server;

//! `algonet node`: the node agent. So far: its configuration, which ports an algorithm image
//! declares, the table of public ports, OpenVPN's management interface, and the VPN start-up
//! sequence.

pub mod agent;
pub mod allocator;
pub mod client;
pub mod config;
pub mod openvpn;
pub mod ports;
pub mod proxy;
pub mod router;
pub mod runs;
pub mod tunnel;
pub mod vpn;

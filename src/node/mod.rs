//! `algonet node`: the node agent. So far: which ports an algorithm image declares, the table of
//! public ports, and OpenVPN's management interface.

pub mod allocator;
pub mod openvpn;
pub mod ports;

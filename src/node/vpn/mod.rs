//! The node's VPN, as a seam between its life on the node and one kind of tunnel:
//!
//! - [`Tunnel`] is what the life speaks to: connect with a profile (and learn the address),
//!   follow the connected tunnel's changes, bring a lost one back. [`openvpn::OpenVpn`] (the
//!   OpenVPN client container) and [`wireguard::WireGuard`] (in the node's process) are the
//!   kinds; [`kind::NodeTunnel`] is either, as the server's profile is, and [`kind::Kind`] gives
//!   the hub its tunnel link.
//! - [`order`] is the start-up order over a tunnel and the server's profiles (vantage6's: the
//!   saved profile, a renewed one, a new one).
//! - [`lifecycle`] brings the VPN up at start (never failing the node), keeps trying without
//!   one, follows it, and re-plumbs and re-registers whenever its address changes or it comes
//!   back; its effects on the rest of the node sit behind [`lifecycle::Seat`], the node's own
//!   in [`seat`].

pub mod kind;
pub mod lifecycle;
pub mod mesh;
pub mod openvpn;
pub mod order;
pub mod seat;
pub mod wireguard;

use std::fmt::Display;
use std::future::Future;
use std::net::Ipv4Addr;

/// Why a tunnel step failed; it becomes one of the reasons the node runs without VPN.
pub trait StepError: Display {
    /// The VPN server sent nothing at all: no other profile would do better.
    fn server_silent(&self) -> bool;
}

/// A change of a connected tunnel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Connected (again), with this address.
    Connected(Ipv4Addr),
    /// Not connected, in the tunnel's own word for it (OpenVPN's `RECONNECTING`, `WAIT`, ...);
    /// it comes back by itself.
    Down(String),
    /// The tunnel itself went away (its process, or the node's line to it), in words that say
    /// what was lost: [`Tunnel::recover`] brings it back.
    Lost(String),
}

/// One kind of tunnel, as the VPN's life on the node uses it.
pub trait Tunnel {
    type Error: StepError;
    /// The profile kept from an earlier start.
    fn saved_profile(&self) -> Option<String>;
    /// Keeps `profile` for the next start.
    fn save(&mut self, profile: &str) -> Result<(), Self::Error>;
    /// Starts the tunnel with `profile` and waits until it connects with an address the node
    /// accepts; a failure leaves nothing of it running.
    fn connect(&mut self, profile: &str) -> impl Future<Output = Result<Ipv4Addr, Self::Error>>;
    /// The next change of the connected tunnel.
    fn next_change(&mut self) -> impl Future<Output = Change>;
    /// Brings a lost tunnel back with the kept profile and waits until it connects.
    fn recover(&mut self) -> impl Future<Output = Result<Ipv4Addr, Self::Error>>;
    /// Takes the tunnel down.
    fn remove(&mut self) -> impl Future<Output = ()>;
}

/// Where profiles come from: the server.
pub trait Profiles {
    type Error: Display;
    /// `POST /vpn/update` with the current profile: the same profile with a new key pair;
    /// `None` when a profile of its kind has nothing to renew (a WireGuard profile: the key is
    /// the node's), and the order goes on to a new one.
    fn renew(&self, current: &str) -> impl Future<Output = Result<Option<String>, Self::Error>>;
    /// `GET /vpn`: a new profile.
    fn fetch_new(&self) -> impl Future<Output = Result<String, Self::Error>>;
}

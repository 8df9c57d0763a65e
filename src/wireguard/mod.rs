//! WireGuard, as the node's tunnel and the built-in VPN's hub use it (the protocol itself is
//! Mullvad's gotatun): keys made and kept where they are used ([`keys`]), profiles in wg-quick's
//! form ([`profile`]), where a device's packets come from and go to ([`ip`]) and how it sends them ([`udp`]).

/// The tunnel MTU of WireGuard here (the hub's profiles, the node's link): 1500 less
/// WireGuard's 80 bytes of IPv6 framing (60 over IPv4; the common choice leaves room for both).
pub const MTU: u16 = 1420;

pub mod ip;
pub mod keys;
pub mod profile;
pub mod udp;

//! WireGuard, as the node's tunnel and the built-in VPN's hub use it (the protocol itself is
//! Mullvad's gotatun): keys made and kept where they are used ([`keys`]), profiles in wg-quick's
//! form ([`profile`]), and where a device's packets come from and go to ([`ip`]).

pub mod ip;
pub mod keys;
pub mod profile;

//! WireGuard, as the node's tunnel and the built-in VPN's hub use it (the protocol itself is
//! Mullvad's gotatun): keys made and kept where they are used ([`keys`]), profiles in wg-quick's
//! form ([`profile`]), where a device's packets come from and go to ([`ip`]) and how it sends
//! them ([`udp`]).

/// The tunnel MTU of WireGuard here (the hub's profiles, the node's link): 1500 less
/// WireGuard's 80 bytes of IPv6 framing (60 over IPv4; the common choice leaves room for both).
pub const MTU: u16 = 1420;

/// A pool of packet buffers for one end of a device, small enough that a buffer is still warm
/// in the CPU's cache when it comes round again. gotatun's device hands each of its ends its own
/// pool of 4000 buffers of 4 KB, taken and given back in turn: 16 MB between two uses of a
/// buffer, so every packet began with cache misses (a CPU profile of a stream had the pool's
/// `get` at 4% of all samples, nearly all of it waiting on the buffer's reference count). A
/// burst larger than the pool allocates the rest, and what comes back past it is freed.
fn warm_pool() -> gotatun::packet::PacketBufPool {
    gotatun::packet::PacketBufPool::new(512)
}

pub mod ip;
pub mod keys;
pub mod profile;
pub mod tcp;
pub mod udp;

//! Direct paths between the nodes of a collaboration on the built-in WireGuard hub. The server
//! lists the collaboration's other nodes (their keys, VPN addresses and where the hub last heard
//! them from, in `GET /vpn/peers`); the node's WireGuard device keeps each as a peer of its own,
//! beside the hub, and routes a node's address to it only while their handshakes are fresh.
//! Otherwise that address stays with the hub, which relays: sites that cannot reach each other
//! by UDP keep working, as before, only through the hub.
//!
//! WireGuard routes by its table of allowed addresses in both directions (a packet is taken
//! only from the peer its source would be sent to), so both ends must agree whether a pair talks
//! directly. They decide on what both see alike, their shared handshakes: each end sends each
//! direct peer a probe every 5 s (an IPv6 packet to an address that stands for the peer and is
//! always routed to it: [`probe`]), so that their session is renewed every 10 s (WireGuard
//! rekeys only when data is sent, and keepalives are not data), and a handshake older than 30 s
//! hands the address back to the hub. A path that fails in either direction stops the
//! handshakes, so both ends fall back within about 30 s; one that comes back is taken again at
//! the next handshake. Until an address is routed to its direct peer, nothing from that peer is
//! taken but its probes, which end at the tunnel.

use std::collections::{BTreeMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use gotatun::device::configure::PeerStats;
use gotatun::device::{Device, DeviceTransports, Peer};
use gotatun::noise::TimerParams;
use gotatun::x25519::PublicKey;
use ipnet::Ipv4Net;

use crate::api::MeshPeer;
use crate::wireguard::ip::{probe, probe_network};
use crate::wireguard::keys::decode_key;

/// How often each direct peer is sent a probe.
pub const PROBE: Duration = Duration::from_secs(5);
/// A direct peer's session is renewed this often while data is sent (the probes are).
const REKEY: Duration = Duration::from_secs(10);
/// A direct peer with a handshake older than this has its address handed back to the hub.
pub const FRESH: Duration = Duration::from_secs(30);

/// A listed node as the device wants it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    pub address: Ipv4Addr,
    pub endpoint: SocketAddr,
}

/// What the node's own tunnel is: no listed peer may take its key, its address or the hub's.
#[derive(Clone, Copy, Debug)]
pub struct Own {
    pub key: [u8; 32],
    pub hub: [u8; 32],
    pub address: Ipv4Addr,
    pub subnet: Ipv4Net,
}

/// The server's list as peers, keyed by public key. Left out: an entry whose key does not
/// decode or is the node's or the hub's, whose address is outside the subnet, the subnet's own
/// network or broadcast address or the node's, whose endpoint is no IPv4 `ip:port`, and any
/// entry whose key or address an earlier entry took.
pub fn wanted(list: &[MeshPeer], own: &Own) -> BTreeMap<[u8; 32], Wanted> {
    let mut out = BTreeMap::new();
    let mut taken = HashSet::new();
    for p in list {
        let (Ok(key), Ok(address), Ok(endpoint)) = (
            decode_key(&p.public_key),
            p.address.parse::<Ipv4Addr>(),
            p.endpoint.parse::<SocketAddr>(),
        ) else {
            continue;
        };
        let usable = own.subnet.contains(&address)
            && address != own.subnet.network()
            && address != own.subnet.broadcast()
            && address != own.address
            && key != own.key
            && key != own.hub
            && endpoint.is_ipv4()
            // Another node's socket is never on this host: a server that lists one so (or an
            // unspecified one) is mistaken, or would have the tunnel send to local services.
            && !endpoint.ip().is_loopback()
            && !endpoint.ip().is_unspecified()
            && !out.contains_key(&key)
            && taken.insert(address);
        if usable {
            out.insert(key, Wanted { address, endpoint });
        }
    }
    out
}

/// The probes from `own` for the hub (at the subnet's network address) and the direct peers
/// `wanted`.
pub fn probes<'a>(
    wanted: &'a BTreeMap<[u8; 32], Wanted>,
    own: &'a Own,
) -> impl Iterator<Item = Vec<u8>> + 'a {
    let hub = std::iter::once(own.subnet.network());
    hub.chain(wanted.values().map(|w| w.address))
        .map(|to| probe(own.address, to))
}

/// What the device has of a direct peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Have {
    /// Whether its VPN address is routed to it.
    pub routed: bool,
    pub handshake_age: Option<Duration>,
    pub endpoint: Option<SocketAddr>,
}

/// One change to the device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// A new direct peer, routed only its probe address.
    Add([u8; 32], Wanted),
    Remove([u8; 32]),
    /// Route the address to the peer (the pair talks directly).
    Route([u8; 32], Ipv4Addr),
    /// Hand the peer's address back to the hub (its probe address stays).
    Unroute([u8; 32], Ipv4Addr),
    /// Where to send handshakes, for a peer not heard from directly.
    Endpoint([u8; 32], SocketAddr),
}

/// The changes that make the device's direct peers `have` what is `wanted`, in key order.
pub fn plan(wanted: &BTreeMap<[u8; 32], Wanted>, have: &BTreeMap<[u8; 32], Have>) -> Vec<Step> {
    let mut steps: Vec<Step> = have
        .keys()
        .filter(|k| !wanted.contains_key(*k))
        .map(|k| Step::Remove(*k))
        .collect();
    for (key, w) in wanted {
        let Some(h) = have.get(key) else {
            steps.push(Step::Add(*key, w.clone()));
            continue;
        };
        let fresh = h.handshake_age.is_some_and(|a| a < FRESH);
        // A peer heard from directly roams by itself; the list only helps to find it.
        if !fresh && h.endpoint != Some(w.endpoint) {
            steps.push(Step::Endpoint(*key, w.endpoint));
        }
        match (fresh, h.routed) {
            (true, false) => steps.push(Step::Route(*key, w.address)),
            (false, true) => steps.push(Step::Unroute(*key, w.address)),
            _ => {}
        }
    }
    steps
}

/// The device's peers other than the hub, as [`Have`].
pub fn have(peers: &[PeerStats], hub: &[u8; 32]) -> BTreeMap<[u8; 32], Have> {
    peers
        .iter()
        .filter(|p| p.peer.public_key.as_bytes() != hub)
        .map(|p| {
            let h = Have {
                routed: p.peer.allowed_ips.iter().any(ipnetwork::IpNetwork::is_ipv4),
                handshake_age: p.stats.last_handshake,
                endpoint: p.peer.endpoint,
            };
            (p.peer.public_key.to_bytes(), h)
        })
        .collect()
}

/// Makes the changes on the device; a change it refuses is logged and tried again at the next
/// look (the plan is made anew from what the device has).
pub async fn apply<T: DeviceTransports>(device: &mut Device<T>, steps: Vec<Step>) {
    for step in steps {
        let done = match &step {
            Step::Add(key, w) => {
                let peer = Peer::new(PublicKey::from(*key))
                    .with_endpoint(w.endpoint)
                    .with_allowed_ip(probe_network(w.address))
                    .dangerously_with_timer_params(TimerParams {
                        rekey_after_time: REKEY..=REKEY,
                        ..TimerParams::default()
                    });
                device.add_or_update_peer(peer).await.map(|()| true)
            }
            Step::Remove(key) => device.remove_peer(&PublicKey::from(*key)).await,
            Step::Route(key, address) => {
                let net = ipnetwork::Ipv4Network::from(*address);
                device
                    .modify_peer(&PublicKey::from(*key), |p| p.add_allowed_ip(net))
                    .await
            }
            Step::Unroute(key, address) => {
                device
                    .modify_peer(&PublicKey::from(*key), |p| {
                        p.clear_allowed_ips();
                        p.add_allowed_ip(probe_network(*address));
                    })
                    .await
            }
            Step::Endpoint(key, endpoint) => {
                device
                    .modify_peer(&PublicKey::from(*key), |p| p.set_endpoint(Some(*endpoint)))
                    .await
            }
        };
        match done {
            Ok(_) => tracing::debug!("WireGuard direct peers: {step:?}"),
            Err(e) => tracing::warn!("WireGuard direct peers: {step:?}: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wireguard::keys::encode_key;

    fn own() -> Own {
        Own {
            key: [1; 32],
            hub: [2; 32],
            address: "10.76.0.2".parse().expect("address"),
            subnet: "10.76.0.0/16".parse().expect("subnet"),
        }
    }

    fn listed(key: u8, address: &str, endpoint: &str) -> MeshPeer {
        MeshPeer {
            public_key: encode_key(&[key; 32]),
            address: address.into(),
            endpoint: endpoint.into(),
        }
    }

    #[test]
    fn the_list_is_taken_only_as_far_as_it_is_sound() {
        let list = [
            listed(3, "10.76.0.3", "192.0.2.3:4000"),
            listed(1, "10.76.0.4", "192.0.2.4:4000"), // the node's own key
            listed(2, "10.76.0.5", "192.0.2.5:4000"), // the hub's
            listed(6, "10.76.0.2", "192.0.2.6:4000"), // the node's own address
            listed(7, "10.77.0.7", "192.0.2.7:4000"), // outside the subnet
            listed(8, "10.76.0.0", "192.0.2.8:4000"), // the network
            listed(9, "10.76.255.255", "192.0.2.9:4000"), // broadcast
            listed(10, "10.76.0.10", "[2001:db8::1]:4000"), // not IPv4
            listed(11, "10.76.0.11", "no endpoint"),
            listed(12, "10.76.0.3", "192.0.2.12:4000"), // an address taken before
            listed(3, "10.76.0.13", "192.0.2.13:4000"), // a key taken before
            listed(15, "10.76.0.15", "127.0.0.1:4000"), // loopback: a proxied node's
            listed(16, "10.76.0.16", "0.0.0.0:4000"),   // unspecified
            MeshPeer {
                public_key: "not a key".into(),
                address: "10.76.0.14".into(),
                endpoint: "192.0.2.14:4000".into(),
            },
        ];
        let got = wanted(&list, &own());
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(
            got[&[3; 32]],
            Wanted {
                address: "10.76.0.3".parse().expect("address"),
                endpoint: "192.0.2.3:4000".parse().expect("endpoint"),
            }
        );
    }

    #[test]
    fn an_address_goes_direct_only_while_handshakes_are_fresh() {
        let e: SocketAddr = "192.0.2.3:4000".parse().expect("endpoint");
        let moved: SocketAddr = "192.0.2.30:4000".parse().expect("endpoint");
        let a: Ipv4Addr = "10.76.0.3".parse().expect("address");
        let want = BTreeMap::from([(
            [3; 32],
            Wanted {
                address: a,
                endpoint: e,
            },
        )]);
        let peer = |routed, age: Option<u64>, endpoint| {
            BTreeMap::from([(
                [3; 32],
                Have {
                    routed,
                    handshake_age: age.map(Duration::from_secs),
                    endpoint: Some(endpoint),
                },
            )])
        };
        let w = want[&[3; 32]].clone();
        assert_eq!(plan(&want, &BTreeMap::new()), [Step::Add([3; 32], w)]);
        // Added, never heard from: the hub keeps the address.
        assert_eq!(plan(&want, &peer(false, None, e)), []);
        assert_eq!(
            plan(&want, &peer(false, Some(2), e)),
            [Step::Route([3; 32], a)]
        );
        assert_eq!(plan(&want, &peer(true, Some(29), e)), []);
        // Heard from elsewhere while fresh: it roamed, the list is older.
        assert_eq!(plan(&want, &peer(true, Some(3), moved)), []);
        assert_eq!(
            plan(&want, &peer(true, Some(30), moved)),
            [Step::Endpoint([3; 32], e), Step::Unroute([3; 32], a)]
        );
        assert_eq!(
            plan(&want, &peer(true, None, e)),
            [Step::Unroute([3; 32], a)]
        );
        // No longer listed (deleted, or left the collaboration).
        assert_eq!(
            plan(&BTreeMap::new(), &peer(true, Some(1), e)),
            [Step::Remove([3; 32])]
        );
    }

    proptest::proptest! {
        /// Whatever a server (or something posing as one) lists: no panic, and what is taken
        /// never holds the node's or the hub's key, an address outside the subnet or the node's
        /// own, nor one address twice; a device with nothing adds exactly what is taken.
        #[test]
        fn any_list_is_taken_soundly(
            entries in proptest::collection::vec(
                (0u8..6, "10\\.7[67]\\.0\\.[0-9]{1,3}|\\PC{0,12}", "192\\.0\\.2\\.1:[0-9]{1,5}|\\PC{0,12}"),
                0..12,
            )
        ) {
            let o = own();
            let list: Vec<MeshPeer> = entries
                .iter()
                .map(|(k, a, e)| listed(*k, a, e))
                .collect();
            let got = wanted(&list, &o);
            let addresses: HashSet<Ipv4Addr> = got.values().map(|w| w.address).collect();
            proptest::prop_assert_eq!(addresses.len(), got.len());
            for (key, w) in &got {
                proptest::prop_assert!(*key != o.key && *key != o.hub);
                proptest::prop_assert!(o.subnet.contains(&w.address) && w.address != o.address);
            }
            let steps = plan(&got, &BTreeMap::new());
            proptest::prop_assert_eq!(steps.len(), got.len());
            proptest::prop_assert!(steps.iter().all(|s| matches!(s, Step::Add(k, w) if got.get(k) == Some(w))));
        }
    }
}

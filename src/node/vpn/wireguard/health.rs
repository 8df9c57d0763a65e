//! What the node's WireGuard device reports of itself: the hub's handshakes and roams, the
//! bytes, and how many direct peers carry traffic.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gotatun::device::configure::PeerStats;

use std::collections::BTreeMap;

use super::SESSION;
use crate::node::vpn::mesh;

/// The tunnel's state as the device reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Health {
    /// Time since the last handshake with the hub, if there was one.
    pub handshake_age: Option<Duration>,
    /// Where the hub's packets last came from.
    pub endpoint: Option<SocketAddr>,
    /// The URL the hub is reached at over TCP, if it is (`endpoint` is then the proxy's
    /// loopback socket).
    pub proxy: Option<String>,
    pub rx_bytes: usize,
    pub tx_bytes: usize,
    /// Handshakes completed since the device started: the first, then one per rekey (every
    /// two minutes while traffic flows). Seen once a second, so two within a second count once.
    pub handshakes: u64,
    /// Times the hub's packets came from another address than before (roaming).
    pub roams: u64,
    /// Why the device stopped, if it did.
    pub ended: Option<String>,
    /// The collaboration's other nodes the device keeps as direct peers, and how many of them
    /// it trades packets with directly now (the others' through the hub).
    pub peers: usize,
    pub direct: usize,
}

impl Health {
    /// What the device's `peers` say of the hub (the one holding `hub`), and its `direct`
    /// peers (see [`mesh::have`]).
    pub(super) fn of(
        peers: &[PeerStats],
        hub: &[u8; 32],
        direct: &BTreeMap<[u8; 32], mesh::Have>,
    ) -> Health {
        let hub = peers.iter().find(|p| p.peer.public_key.as_bytes() == hub);
        Health {
            handshake_age: hub.and_then(|p| p.stats.last_handshake),
            endpoint: hub.and_then(|p| p.peer.endpoint),
            rx_bytes: hub.map_or(0, |p| p.stats.rx_bytes),
            tx_bytes: hub.map_or(0, |p| p.stats.tx_bytes),
            peers: direct.len(),
            direct: direct.values().filter(|h| h.routed).count(),
            ..Health::default()
        }
    }

    pub(super) fn connected(&self) -> bool {
        self.ended.is_none() && self.handshake_age.is_some_and(|a| a < SESSION)
    }

    /// The next look at the device: `now` as it reports itself, with what changed since `self`
    /// counted.
    pub(super) fn next(&self, now: Health) -> Health {
        let shook = match (self.handshake_age, now.handshake_age) {
            (None, Some(_)) => true,
            (Some(before), Some(age)) => age < before,
            _ => false,
        };
        let roamed =
            self.endpoint.is_some() && now.endpoint.is_some() && self.endpoint != now.endpoint;
        Health {
            handshakes: self.handshakes + u64::from(shook),
            roams: self.roams + u64::from(roamed),
            ..now
        }
    }
}

/// Where the running device's [`Health`] is shown (the node's status and metrics read it);
/// `None` while no device runs.
pub type Shown = Arc<std::sync::Mutex<Option<Health>>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(age: Option<u64>, endpoint: Option<&str>) -> Health {
        Health {
            handshake_age: age.map(Duration::from_secs),
            endpoint: endpoint.map(|e| e.parse().expect("address")),
            ..Health::default()
        }
    }

    #[test]
    fn handshakes_and_roams_are_counted_from_what_the_device_shows() {
        let a = Some("192.0.2.1:51820");
        let looks = [
            seen(None, None),
            seen(Some(0), a),                       // the first handshake
            seen(Some(1), a),                       // older
            seen(Some(120), a),                     // still the same session
            seen(Some(0), a),                       // a rekey
            seen(Some(1), Some("192.0.2.9:40000")), // the hub's packets from elsewhere
            seen(Some(2), Some("192.0.2.9:40000")),
        ];
        let last = looks
            .into_iter()
            .fold(Health::default(), |before, now| before.next(now));
        assert_eq!((last.handshakes, last.roams), (2, 1));
        assert!(last.connected());
        assert!(
            !seen(Some(180), a).connected(),
            "a session past 180 s is refused"
        );
    }
}

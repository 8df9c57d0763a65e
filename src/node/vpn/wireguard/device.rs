//! The device's thread in the hub namespace: gotatun's device on the data plane's tunnel
//! port, looked at every second until told to stop.

use gotatun::device::Peer;
use tokio::sync::{mpsc, oneshot, watch};

use super::mesh::{self, Own};
use super::{Health, Shown, LOOK, PROBE_EVERY};
use crate::api::MeshPeer;
use crate::wireguard::ip::{RouterIn, RouterOut};
use crate::wireguard::keys::KeyPair;
use crate::wireguard::udp;

/// The device's life on its thread in the hub namespace: the device on the data plane's port,
/// then a look at its state every second (sent to the tunnel and shown, its direct peers made
/// what the server lists) until told to stop. The port is let go with the device. `proxy`
/// is the URL the hub is reached at over TCP, if it is (shown with the device's health).
pub(super) async fn run(
    keys: KeyPair,
    (peer, proxy): (Peer, Option<String>),
    (out, into): (RouterOut, RouterIn),
    (listed, own, probes): (watch::Receiver<Vec<MeshPeer>>, Own, mpsc::Sender<Vec<u8>>),
    (health, shown): (watch::Sender<Health>, Shown),
    ready: oneshot::Sender<Result<(), String>>,
    mut stop: oneshot::Receiver<()>,
) {
    let made = gotatun::device::build()
        .with_udp(udp::Factory::default())
        .with_ip_pair(out, into)
        .with_private_key(keys.secret)
        .with_peer(peer)
        .build();
    let mut looks: u32 = 0;
    let mut device = match made.await {
        Ok(d) => {
            let _ = ready.send(Ok(()));
            d
        }
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return;
        }
    };
    loop {
        let peers = device.peers().await;
        let wanted = mesh::wanted(&listed.borrow(), &own);
        if looks.is_multiple_of(PROBE_EVERY) {
            for probe in mesh::probes(&wanted, &own) {
                // Full only if the device stopped taking packets: nothing to send them to.
                let _ = probes.try_send(probe);
            }
        }
        looks = looks.wrapping_add(1);
        let have = mesh::have(&peers, &own.hub);
        mesh::apply(&mut device, mesh::plan(&wanted, &have)).await;
        let mut now = Health::of(&peers, &own.hub, &have);
        now.proxy.clone_from(&proxy);
        let next = health.borrow().next(now);
        // Shown first: whoever the watch wakes (a connect) reads the same.
        *crate::sync::lock(&shown) = Some(next.clone());
        health.send_if_modified(|h| {
            let changed = *h != next;
            *h = next;
            changed
        });
        tokio::select! {
            _ = &mut stop => break,
            () = tokio::time::sleep(LOOK) => {}
        }
    }
    *crate::sync::lock(&shown) = None;
    device.stop().await;
}

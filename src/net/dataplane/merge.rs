//! GRO of the single packets one wake-up forwards, written together through tun-rs.

use super::{IoCounters, BATCH, VNET_HDR_LEN};

/// Whole single packets (no GSO; a partial checksum completed first) forwarded during one
/// wake-up, written together through tun-rs's GRO: consecutive segments of one TCP flow (and
/// equal datagrams of one UDP flow, where the kernel has USO) reach the kernel as one
/// super-packet, checksums verified before merging. Packets from the tunnel arrive this way
/// (OpenVPN's tun0 has no offload), and so do a container's datagrams, so a burst costs one
/// write, one pass through routing and the veth and one receive at the other end instead of one
/// per packet, and a receiving container acknowledges less often. Nothing waits for more
/// packets beyond one yield of the CPU once the device's queue ran empty (see
/// [`super::queue::Queue::next_read`]).
pub(super) struct Merge {
    slots: Vec<Slot>,
    pub(super) len: usize,
    gro: tun_rs::GROTable,
}

/// A packet behind room for its virtio-net header; a merge grows it up to the largest IPv4
/// packet.
struct Slot(Vec<u8>);

/// What tun-rs may grow a slot to: it merges into a slot only while this holds twice the
/// header plus the merged packet, which keeps the merged packet within IPv4's 64 KB.
const SLOT_CAPACITY: usize = 2 * VNET_HDR_LEN + 65_535;

impl AsRef<[u8]> for Slot {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl AsMut<[u8]> for Slot {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

impl tun_rs::ExpandBuffer for Slot {
    fn buf_capacity(&self) -> usize {
        SLOT_CAPACITY
    }
    fn buf_resize(&mut self, new_len: usize, value: u8) {
        self.0.resize(new_len, value)
    }
    fn buf_extend_from_slice(&mut self, extend: &[u8]) {
        self.0.extend_from_slice(extend)
    }
}

impl Merge {
    pub(super) fn new() -> Merge {
        Merge {
            // Only the pages a packet touches become resident.
            slots: (0..BATCH)
                .map(|_| Slot(Vec::with_capacity(SLOT_CAPACITY)))
                .collect(),
            len: 0,
            gro: tun_rs::GROTable::new(),
        }
    }

    /// Queues a copy of `packet`; the caller flushes before the batch is full.
    pub(super) fn push(&mut self, packet: &[u8]) {
        let slot = &mut self.slots[self.len].0;
        slot.clear();
        slot.resize(VNET_HDR_LEN, 0);
        slot.extend_from_slice(packet);
        self.len += 1;
    }

    /// Writes what is queued. `writes` counts the packets handed over, merged or not.
    pub(super) async fn flush(&mut self, dev: &tun_rs::AsyncDevice, io: &mut IoCounters) {
        let n = std::mem::take(&mut self.len);
        if n == 0 {
            return;
        }
        match dev
            .send_multiple(&mut self.gro, &mut self.slots[..n], VNET_HDR_LEN)
            .await
        {
            Ok(_) => io.writes += n as u64,
            Err(_) => io.write_errors += 1,
        }
    }
}

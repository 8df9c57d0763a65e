//! Expiry: timeouts by class, lists in queue order, lazy expiry, and the room a new connection
//! makes when the table is full.

use super::*;

/// Idle timeouts by class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// A connection that has seen no answer yet (TCP before SYN-ACK, UDP and ICMP before the
    /// first reply).
    pub unreplied: Duration,
    /// From the SYN-ACK until the originator's ACK completes the handshake (Linux's SYN_RECV).
    pub tcp_half_open: Duration,
    pub tcp_established: Duration,
    /// After FIN in both directions or a RST.
    pub tcp_closing: Duration,
    /// RFC 4787 REQ-5: at least two minutes.
    pub udp: Duration,
    /// RFC 5508 REQ-1: at least 60 seconds.
    pub icmp: Duration,
    /// How long the translation of a fragmented datagram waits for its remaining fragments.
    pub fragment: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            unreplied: Duration::from_secs(120),
            tcp_half_open: Duration::from_secs(60),
            // RFC 5382 REQ-5: 2 hours 4 minutes.
            tcp_established: Duration::from_secs(7440),
            tcp_closing: Duration::from_secs(60),
            udp: Duration::from_secs(300),
            icmp: Duration::from_secs(60),
            fragment: Duration::from_secs(30),
        }
    }
}

impl Table {
    /// Moves connection `id` to the list of its new class, if it has one.
    #[inline]
    pub(super) fn reclass(&mut self, id: u32, class: Option<Class>, now: u32) {
        if let Some(class) = class {
            self.unlink(id);
            self.slot(id).class = class;
            self.push_back(id, now);
        }
    }

    pub(super) fn make_room(&mut self, now: Instant) -> Result<(), DropReason> {
        self.expire(now);
        if self.len < self.max {
            return Ok(());
        }
        let oldest = EVICTABLE
            .iter()
            .map(|&class| self.lists[class as usize].head)
            .filter(|&id| id != NONE)
            .min_by_key(|&id| self.get(id).queued)
            .ok_or(DropReason::TableFull)?;
        self.remove(oldest);
        self.evicted += 1;
        Ok(())
    }

    /// Removes connections idle past their timeout; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let now = secs(now);
        let mut n = 0;
        for class in 0..CLASSES {
            let timeout = self.timeouts[class];
            loop {
                let id = self.lists[class].head;
                if id == NONE {
                    break;
                }
                let c = self.get(id);
                if now.saturating_sub(c.queued) <= timeout {
                    break;
                }
                if now.saturating_sub(c.last_seen) > timeout {
                    self.remove(id);
                    n += 1;
                } else {
                    // Refreshed since it was queued: look again one timeout after its last
                    // packet (or after the back of the list, which keeps the list in order).
                    let last_seen = c.last_seen;
                    self.unlink(id);
                    let back = self.back_queued(class);
                    self.push_back(id, last_seen.max(back));
                }
            }
        }
        self.expired += n as u64;
        n
    }

    pub(super) fn back_queued(&self, class: usize) -> u32 {
        match self.lists[class].tail {
            NONE => 0,
            t => self.get(t).queued,
        }
    }

    /// When [`Table::expire`] next has work to do.
    pub fn poll_at(&self) -> Option<Instant> {
        (0..CLASSES)
            .filter_map(|class| {
                let head = self.lists[class].head;
                (head != NONE).then(|| {
                    let due =
                        u64::from(self.get(head).queued) + u64::from(self.timeouts[class]) + 1;
                    Instant::from_secs(due)
                })
            })
            .min()
    }

    pub(super) fn push_back(&mut self, id: u32, queued: u32) {
        let class = self.get(id).class as usize;
        let tail = self.lists[class].tail;
        let c = self.slot(id);
        c.prev = tail;
        c.next = NONE;
        c.queued = queued;
        if tail == NONE {
            self.lists[class].head = id;
        } else {
            self.slot(tail).next = id;
        }
        self.lists[class].tail = id;
    }

    pub(super) fn unlink(&mut self, id: u32) {
        let c = self.get(id);
        let (prev, next, class) = (c.prev, c.next, c.class as usize);
        if prev == NONE {
            self.lists[class].head = next;
        } else {
            self.slot(prev).next = next;
        }
        if next == NONE {
            self.lists[class].tail = prev;
        } else {
            self.slot(next).prev = prev;
        }
    }
}

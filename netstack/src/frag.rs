//! Translation of IPv4 fragments without reassembly. Only the first fragment carries ports, so
//! the router translates it like any packet and remembers the address rewrite under the
//! fragment's identity (source, destination, protocol, IP id); later fragments of the datagram
//! get the same addresses. Fragments that arrive before their first fragment are dropped
//! ([`crate::DropReason::FragmentUnknown`]); the sender's retransmission brings them again.
//!
//! Memory is bounded: at most `max` datagrams are remembered, each for the fragment timeout;
//! when full the oldest is forgotten. One sender (a VPN peer, a container) has at most
//! `max_per_source` of them remembered; past that its next datagram is not (its later fragments
//! are dropped as unknown), so one sender cannot push out the others' datagrams.

use core::net::Ipv4Addr;
use std::collections::{HashMap, VecDeque};

use foldhash::fast::FixedState;

use crate::conntrack::ConnRef;
use crate::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub ident: u16,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    conn: ConnRef,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    created: Instant,
}

#[derive(Debug)]
pub struct Fragments {
    map: HashMap<FragKey, Entry, FixedState>,
    order: VecDeque<(FragKey, Instant)>,
    /// Remembered datagrams by sender.
    per_source: HashMap<Ipv4Addr, usize, FixedState>,
    max: usize,
    max_per_source: usize,
    timeout_ms: u64,
}

impl Fragments {
    pub fn new(max: usize, max_per_source: usize, timeout_ms: u64, seed: u64) -> Fragments {
        Fragments {
            map: HashMap::with_capacity_and_hasher(max, FixedState::with_seed(seed)),
            order: VecDeque::with_capacity(max),
            per_source: HashMap::with_hasher(FixedState::with_seed(seed)),
            max,
            max_per_source,
            timeout_ms,
        }
    }

    fn forget(&mut self, key: &FragKey) {
        if self.map.remove(key).is_some() {
            if let Some(n) = self.per_source.get_mut(&key.src) {
                *n -= 1;
                if *n == 0 {
                    self.per_source.remove(&key.src);
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Remembers that fragments `key` of connection `conn` get the addresses `src` and `dst`.
    /// Out of line: only first fragments come here, and inlined into the per-packet path it
    /// costs every packet a few instructions.
    #[cold]
    #[inline(never)]
    pub fn insert(
        &mut self,
        key: FragKey,
        conn: ConnRef,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        now: Instant,
    ) {
        if self.max == 0 {
            return;
        }
        if let Some(e) = self.map.get_mut(&key) {
            // A reused IP id within the timeout: the newest datagram wins, keeping its place.
            *e = Entry {
                conn,
                src,
                dst,
                created: e.created,
            };
            return;
        }
        if self.per_source.get(&key.src).copied().unwrap_or(0) >= self.max_per_source {
            self.expire(now);
            if self.per_source.get(&key.src).copied().unwrap_or(0) >= self.max_per_source {
                return;
            }
        }
        if self.map.len() >= self.max {
            self.expire(now);
            if self.map.len() >= self.max {
                if let Some((oldest, _)) = self.order.pop_front() {
                    self.forget(&oldest);
                }
            }
        }
        *self.per_source.entry(key.src).or_insert(0) += 1;
        self.map.insert(
            key,
            Entry {
                conn,
                src,
                dst,
                created: now,
            },
        );
        self.order.push_back((key, now));
    }

    /// The addresses for a later fragment, with the connection they belong to.
    pub fn lookup(&self, key: &FragKey, now: Instant) -> Option<(ConnRef, Ipv4Addr, Ipv4Addr)> {
        let e = self.map.get(key)?;
        (now.as_millis().saturating_sub(e.created.as_millis()) <= self.timeout_ms)
            .then_some((e.conn, e.src, e.dst))
    }

    pub fn expire(&mut self, now: Instant) {
        while let Some(&(key, created)) = self.order.front() {
            if now.as_millis().saturating_sub(created.as_millis()) <= self.timeout_ms {
                break;
            }
            self.order.pop_front();
            self.forget(&key);
        }
    }

    pub fn poll_at(&self) -> Option<Instant> {
        self.order.front().map(|&(_, created)| {
            Instant::from_millis(created.as_millis().saturating_add(self.timeout_ms) + 1)
        })
    }

    pub fn clear(&mut self) {
        self.map.clear();
        self.order.clear();
        self.per_source.clear();
    }
}

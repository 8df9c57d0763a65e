//! Translation of IPv4 fragments without reassembly. Only the first fragment carries ports, so
//! the router translates it like any packet and remembers the address rewrite under the
//! fragment's identity (source, destination, protocol, IP id); later fragments of the datagram
//! get the same addresses. Fragments that arrive before their first fragment are dropped
//! ([`crate::DropReason::FragmentUnknown`]); the sender's retransmission brings them again.
//!
//! The same bounded memory serves the data plane when several routers share the traffic: for a
//! later fragment it remembers which router translated the first one ([`Fragments`] of shard
//! numbers).
//!
//! Memory is bounded: at most `max` datagrams are remembered, each for the fragment timeout;
//! when full the oldest is forgotten. One sender (a VPN peer, a container) has at most
//! `max_per_source` of them remembered; past that its next datagram is not (its later fragments
//! are dropped as unknown), so one sender cannot push out the others' datagrams.

use core::net::Ipv4Addr;
use std::collections::{HashMap, VecDeque};

use foldhash::fast::FixedState;

use crate::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub ident: u16,
}

impl FragKey {
    /// The datagram a packet (a fragment) belongs to.
    pub fn of(ip: &crate::wire::Ip) -> FragKey {
        FragKey {
            src: ip.src,
            dst: ip.dst,
            protocol: ip.protocol,
            ident: ip.ident,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry<T> {
    value: T,
    created: Instant,
}

/// What is remembered for the later fragments of each datagram, a `T` per [`FragKey`].
#[derive(Debug)]
pub struct Fragments<T> {
    map: HashMap<FragKey, Entry<T>, FixedState>,
    order: VecDeque<(FragKey, Instant)>,
    /// Remembered datagrams by sender.
    per_source: HashMap<Ipv4Addr, usize, FixedState>,
    max: usize,
    max_per_source: usize,
    timeout_ms: u64,
}

impl<T: Copy> Fragments<T> {
    pub fn new(max: usize, max_per_source: usize, timeout_ms: u64, seed: u64) -> Fragments<T> {
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

    /// Remembers `value` for the later fragments of datagram `key`. Out of line: only first
    /// fragments come here, and inlined into the per-packet path it costs every packet a few
    /// instructions.
    #[cold]
    #[inline(never)]
    pub fn insert(&mut self, key: FragKey, value: T, now: Instant) {
        if self.max == 0 {
            return;
        }
        if let Some(e) = self.map.get_mut(&key) {
            // A reused IP id within the timeout: the newest datagram wins, keeping its place.
            e.value = value;
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
                value,
                created: now,
            },
        );
        self.order.push_back((key, now));
    }

    /// What was remembered for a later fragment of datagram `key`, within the timeout.
    pub fn lookup(&self, key: &FragKey, now: Instant) -> Option<T> {
        let e = self.map.get(key)?;
        (now.as_millis().saturating_sub(e.created.as_millis()) <= self.timeout_ms)
            .then_some(e.value)
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

//! Failed logins. Each (user name, source address) pair may fail a few times freely; after that
//! it waits a delay that doubles with each further failure, up to a ceiling, before its next
//! try is even checked (429 with `Retry-After`). Guessing from one address thus slows down
//! without locking the account out for anyone else, and many users behind one proxy address do
//! not lock each other out. Names that are no account are bounded per address on their own: a
//! try costs the same work whether the name exists or not, so spraying made-up names from one
//! address is what would otherwise cost the server unbounded work. A success clears the pair.
//! The table is bounded: when full, the entry that failed longest ago is forgotten.

use std::collections::HashMap;
use std::net::IpAddr;

/// Failures a pair (or an address, for unknown names) may have before it waits.
pub const FREE: u32 = 3;
/// The longest wait, in seconds.
pub const MAX_DELAY: u64 = 900;
/// A pair that has not failed for this long starts afresh, in seconds.
const FORGET: u64 = 24 * 3600;
/// Most entries remembered.
const CAPACITY: usize = 10_000;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    /// A name and an address.
    Pair(String, IpAddr),
    /// Names that are no account, from an address.
    Unknown(IpAddr),
}

#[derive(Clone, Copy, Debug)]
struct Count {
    last: u64,
    failures: u32,
}

impl Count {
    /// Seconds to wait at `now`, if any.
    fn wait(&self, now: u64) -> Option<u64> {
        if self.failures < FREE || now >= self.last + FORGET {
            return None;
        }
        let delay = 1u64
            .checked_shl(self.failures - FREE + 1)
            .unwrap_or(MAX_DELAY)
            .min(MAX_DELAY);
        let ends = self.last + delay;
        (now < ends).then(|| ends - now)
    }
}

/// The counts; times in seconds since the epoch.
#[derive(Debug, Default)]
pub struct Throttle {
    counts: HashMap<Key, Count>,
}

impl Throttle {
    /// Seconds `user` must wait before a try from `from` is checked, if any.
    pub fn wait(&self, user: &str, from: IpAddr, now: u64) -> Option<u64> {
        self.counts
            .get(&Key::Pair(user.to_string(), from))
            .and_then(|c| c.wait(now))
    }

    /// Seconds a try for a name that is no account must wait from `from`, if any.
    pub fn wait_unknown(&self, from: IpAddr, now: u64) -> Option<u64> {
        self.counts
            .get(&Key::Unknown(from))
            .and_then(|c| c.wait(now))
    }

    /// A failed try; `known`: the name is an account.
    pub fn failed(&mut self, user: &str, from: IpAddr, known: bool, now: u64) {
        let key = if known {
            Key::Pair(user.to_string(), from)
        } else {
            Key::Unknown(from)
        };
        if !self.counts.contains_key(&key) && self.counts.len() >= CAPACITY {
            self.make_room(now);
        }
        let c = self.counts.entry(key).or_insert(Count {
            last: now,
            failures: 0,
        });
        if now >= c.last + FORGET {
            c.failures = 0;
        }
        c.failures = c.failures.saturating_add(1);
        c.last = now;
    }

    /// How many failures a pair has had: for the log.
    pub fn failures(&self, user: &str, from: IpAddr) -> u32 {
        self.counts
            .get(&Key::Pair(user.to_string(), from))
            .map_or(0, |c| c.failures)
    }

    pub fn succeeded(&mut self, user: &str, from: IpAddr) {
        self.counts.remove(&Key::Pair(user.to_string(), from));
    }

    fn make_room(&mut self, now: u64) {
        self.counts.retain(|_, c| now < c.last + FORGET);
        if self.counts.len() >= CAPACITY {
            if let Some(oldest) = self
                .counts
                .iter()
                .min_by_key(|(_, c)| c.last)
                .map(|(k, _)| k.clone())
            {
                self.counts.remove(&oldest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn a_pair_waits_longer_with_each_failure_and_nobody_else_waits() {
        let mut t = Throttle::default();
        for _ in 0..FREE {
            assert_eq!(t.wait("root", A, 100), None);
            t.failed("root", A, true, 100);
        }
        assert_eq!(t.wait("root", A, 100), Some(2));
        assert_eq!(t.wait("root", A, 102), None, "the delay passed");
        t.failed("root", A, true, 102);
        assert_eq!(t.wait("root", A, 102), Some(4), "doubled");
        assert_eq!(t.wait("root", B, 102), None, "the account from elsewhere");
        assert_eq!(t.wait("other", A, 102), None, "another account from here");
        for i in 0..30 {
            t.failed("root", A, true, 200 + i);
        }
        assert_eq!(t.wait("root", A, 229), Some(MAX_DELAY), "the ceiling");
        assert_eq!(t.wait("root", A, 229 + FORGET), None, "forgotten");
        t.succeeded("root", A);
        assert_eq!(t.failures("root", A), 0);
    }

    #[test]
    fn unknown_names_are_bounded_per_address_and_known_ones_are_not_held_by_them() {
        let mut t = Throttle::default();
        for i in 0..FREE + 2 {
            t.failed(&format!("made-up-{i}"), A, false, 100);
        }
        assert!(t.wait_unknown(A, 100).is_some());
        assert_eq!(t.wait_unknown(B, 100), None);
        assert_eq!(t.wait("root", A, 100), None, "an account from that address");
    }

    #[test]
    fn the_table_stays_bounded() {
        let mut t = Throttle::default();
        for i in 0..(CAPACITY as u64 + 50) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from_bits(i as u32));
            t.failed(&format!("u{i}"), ip, true, 1000 + i);
        }
        assert!(t.counts.len() <= CAPACITY);
    }
}

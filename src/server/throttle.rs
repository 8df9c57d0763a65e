//! Failed logins, counted per user name and per source address: past a limit within a window,
//! further tries answer 429 with `Retry-After` until the window ends, without the password being
//! checked. A success clears the name's and the address's count. The table is bounded: when
//! full, the entry whose window began first is forgotten.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

/// Failures a user name may have in a window.
pub const PER_USER: u32 = 5;
/// Failures one source address may have in a window (several users may share one address,
/// behind a proxy or a NAT).
pub const PER_ADDRESS: u32 = 20;
/// The window.
pub const WINDOW: Duration = Duration::from_secs(300);
/// Most names and addresses remembered.
const CAPACITY: usize = 10_000;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    User(String),
    Address(IpAddr),
}

#[derive(Clone, Copy, Debug)]
struct Count {
    since: u64,
    failures: u32,
}

/// The counts, keyed by user name and by address; times in seconds since the epoch.
#[derive(Debug, Default)]
pub struct Throttle {
    counts: HashMap<Key, Count>,
}

impl Throttle {
    /// Seconds to wait before `user` may try again from `from`, if either is over its limit.
    pub fn wait(&self, user: &str, from: IpAddr, now: u64) -> Option<u64> {
        [
            (Key::User(user.to_string()), PER_USER),
            (Key::Address(from), PER_ADDRESS),
        ]
        .iter()
        .filter_map(|(key, limit)| {
            let c = self.counts.get(key)?;
            let ends = c.since + WINDOW.as_secs();
            (c.failures >= *limit && now < ends).then(|| ends - now)
        })
        .max()
    }

    pub fn failed(&mut self, user: &str, from: IpAddr, now: u64) {
        for key in [Key::User(user.to_string()), Key::Address(from)] {
            if !self.counts.contains_key(&key) && self.counts.len() >= CAPACITY {
                self.make_room(now);
            }
            let c = self.counts.entry(key).or_insert(Count {
                since: now,
                failures: 0,
            });
            if now >= c.since + WINDOW.as_secs() {
                *c = Count {
                    since: now,
                    failures: 0,
                };
            }
            c.failures += 1;
        }
    }

    pub fn succeeded(&mut self, user: &str, from: IpAddr) {
        self.counts.remove(&Key::User(user.to_string()));
        self.counts.remove(&Key::Address(from));
    }

    fn make_room(&mut self, now: u64) {
        self.counts.retain(|_, c| now < c.since + WINDOW.as_secs());
        if self.counts.len() >= CAPACITY {
            if let Some(oldest) = self
                .counts
                .iter()
                .min_by_key(|(_, c)| c.since)
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
    fn a_name_or_an_address_over_its_limit_waits_for_the_window() {
        let mut t = Throttle::default();
        for _ in 0..PER_USER {
            assert_eq!(t.wait("root", A, 100), None);
            t.failed("root", A, 100);
        }
        assert_eq!(t.wait("root", A, 100), Some(WINDOW.as_secs()));
        assert_eq!(
            t.wait("root", B, 160),
            Some(WINDOW.as_secs() - 60),
            "from anywhere"
        );
        assert_eq!(
            t.wait("other", A, 100),
            None,
            "the address is under its limit"
        );
        assert_eq!(
            t.wait("root", A, 100 + WINDOW.as_secs()),
            None,
            "the window ended"
        );
        // Spraying many names from one address.
        for i in 0..PER_ADDRESS {
            t.failed(&format!("user{i}"), B, 200);
        }
        assert!(t.wait("fresh", B, 200).is_some());
        t.succeeded("fresh", B);
        assert_eq!(t.wait("fresh", B, 200), None);
    }

    #[test]
    fn the_table_stays_bounded() {
        let mut t = Throttle::default();
        for i in 0..(CAPACITY as u64 + 50) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from_bits(i as u32));
            t.failed(&format!("u{i}"), ip, 1000 + i);
        }
        assert!(t.counts.len() <= CAPACITY);
    }
}

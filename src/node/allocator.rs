//! Public ports on the node's VPN address, from the node's own table: 49152-65534 as in
//! vantage6, per protocol, handed to a run and taken back when it ends. No scan of firewall
//! rules (vantage6 parsed `iptables -L`), nothing leaks (vantage6 never freed its DNAT rules).

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use netstack::{Protocol, RunId};

pub use crate::api::PUBLIC_PORTS;

/// No public port is free.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no free public {protocol:?} port in {start}-{end}")]
pub struct Exhausted {
    pub protocol: Protocol,
    pub start: u16,
    pub end: u16,
}

/// Which public ports are taken, and by which run.
#[derive(Debug)]
pub struct PortTable {
    range: RangeInclusive<u16>,
    taken: BTreeMap<(Protocol, u16), RunId>,
    /// Where the next search starts, so that a freed port is not reused at once.
    next: u16,
}

impl PortTable {
    pub fn new(range: RangeInclusive<u16>) -> PortTable {
        let next = *range.start();
        PortTable {
            range,
            taken: BTreeMap::new(),
            next,
        }
    }

    /// Takes a free port for `run`.
    pub fn allocate(&mut self, protocol: Protocol, run: RunId) -> Result<u16, Exhausted> {
        let (start, end) = (*self.range.start(), *self.range.end());
        let size = u32::from(end - start) + 1;
        for i in 0..size {
            let port = (u32::from(self.next - start) + i) % size + u32::from(start);
            let port = port as u16;
            if let std::collections::btree_map::Entry::Vacant(e) =
                self.taken.entry((protocol, port))
            {
                e.insert(run);
                self.next = if port == end { start } else { port + 1 };
                return Ok(port);
            }
        }
        Err(Exhausted {
            protocol,
            start,
            end,
        })
    }

    /// Marks a port as taken (a leftover found at start-up); false if it is out of range.
    pub fn reserve(&mut self, protocol: Protocol, port: u16, run: RunId) -> bool {
        self.range.contains(&port) && {
            self.taken.insert((protocol, port), run);
            true
        }
    }

    /// Frees every port of `run`; returns them.
    pub fn release(&mut self, run: RunId) -> Vec<(Protocol, u16)> {
        let mine: Vec<_> = self
            .taken
            .iter()
            .filter(|(_, r)| **r == run)
            .map(|(k, _)| *k)
            .collect();
        for k in &mine {
            self.taken.remove(k);
        }
        mine
    }

    pub fn in_use(&self) -> usize {
        self.taken.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_unique_per_protocol_freed_with_their_run_and_bounded() {
        let mut t = PortTable::new(50000..=50002);
        let a = t.allocate(Protocol::Tcp, RunId(1)).expect("port");
        let b = t.allocate(Protocol::Tcp, RunId(2)).expect("port");
        assert_ne!(a, b);
        t.allocate(Protocol::Tcp, RunId(2)).expect("port");
        assert_eq!(
            t.allocate(Protocol::Tcp, RunId(3)),
            Err(Exhausted {
                protocol: Protocol::Tcp,
                start: 50000,
                end: 50002
            })
        );
        assert!(
            t.allocate(Protocol::Udp, RunId(1)).is_ok(),
            "UDP has its own ports"
        );
        assert_eq!(t.release(RunId(2)).len(), 2);
        assert_eq!(t.in_use(), 2);
        assert!(t.allocate(Protocol::Tcp, RunId(3)).is_ok());
        assert!(!t.reserve(Protocol::Tcp, 80, RunId(4)), "outside the range");
    }
}

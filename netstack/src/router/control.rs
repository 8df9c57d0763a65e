//! The driver's calls between packets: the VPN address, the tunnel's state, containers,
//! mappings, scopes, and what the router has counted.

use super::*;

impl Router {
    /// Sets (or clears) the node's VPN address. A new address ends every tracked connection:
    /// they were all made with the old one.
    pub fn set_vpn(&mut self, vpn: Option<Vpn>) -> Result<(), Error> {
        if let Some(v) = vpn {
            if !(8..=30).contains(&v.prefix_len) {
                return Err(Error::PrefixLen(v.prefix_len));
            }
            if v.mtu < 576 {
                return Err(Error::Mtu(v.mtu));
            }
            if let Some(&addr) = self.containers.keys().find(|a| v.contains(**a)) {
                return Err(Error::ContainerInVpnSubnet { addr });
            }
        }
        if vpn.map(|v| (v.address, v.prefix_len)) != self.vpn.map(|v| (v.address, v.prefix_len)) {
            self.conns.remove_where(|_| true);
            self.frags.clear();
        }
        self.vpn = vpn;
        self.tunnel_up = vpn.is_some();
        Ok(())
    }

    /// The node's place on the VPN, if it has one.
    pub fn vpn(&self) -> Option<Vpn> {
        self.vpn
    }

    /// Pauses (`false`) or resumes forwarding toward VPN peers, as the tunnel goes and comes
    /// back; [`Router::set_vpn`] resumes it. While paused, what a container sends toward a peer
    /// is dropped as [`DropReason::TunnelDown`]; tracked connections stay.
    pub fn set_tunnel_up(&mut self, up: bool) {
        self.tunnel_up = up && self.vpn.is_some();
    }

    /// Registers an algorithm container's address: packets from it are the container side. Its
    /// connections count for `family` (its run's job: every run of one job shares one budget,
    /// [`Config::max_connections_per_run`]).
    pub fn add_container(&mut self, addr: Ipv4Addr, run: RunId, family: u64) -> Result<(), Error> {
        if self.vpn.is_some_and(|v| v.contains(addr)) {
            return Err(Error::ContainerInVpnSubnet { addr });
        }
        match self.containers.get(&addr) {
            Some(c) if c.run != run => Err(Error::ContainerInUse { addr, run: c.run.0 }),
            Some(_) => Ok(()),
            None => {
                let counted = Counted::default();
                self.containers.insert(addr, Container { run, counted });
                self.conns.join(addr, family);
                Ok(())
            }
        }
    }

    pub fn add_mapping(&mut self, m: Mapping) -> Result<(), Error> {
        if m.protocol == Protocol::Icmp {
            return Err(Error::NotMappable);
        }
        let range = &self.config.outbound_ports;
        if m.public_port == 0 || range.contains(&m.public_port) {
            return Err(Error::PortUnusable {
                port: m.public_port,
                start: *range.start(),
                end: *range.end(),
            });
        }
        if self.containers.get(m.container.ip()).map(|c| c.run) != Some(m.run) {
            return Err(Error::UnknownContainer(*m.container.ip()));
        }
        if self.mappings.contains_key(&(m.protocol, m.public_port)) {
            return Err(Error::PortInUse {
                protocol: m.protocol,
                port: m.public_port,
            });
        }
        self.mappings.insert((m.protocol, m.public_port), m);
        self.targets
            .entry((m.protocol, m.container))
            .or_insert(m.public_port);
        Ok(())
    }

    /// Removes a mapping and every connection made through it. Returns the mapping, if any.
    pub fn remove_mapping(&mut self, protocol: Protocol, public_port: u16) -> Option<Mapping> {
        let m = self.mappings.remove(&(protocol, public_port))?;
        if self.targets.get(&(protocol, m.container)) == Some(&public_port) {
            self.targets.remove(&(protocol, m.container));
        }
        if let Some(v) = self.vpn {
            let public = SocketAddrV4::new(v.address, public_port);
            self.conns.remove_where(|c| {
                c.protocol == protocol && (c.original.dst == public || c.reply.dst == public)
            });
        }
        Some(m)
    }

    /// Removes everything of a run: its containers, its mappings and their connections.
    pub fn remove_run(&mut self, run: RunId) {
        let ports: Vec<_> = self
            .mappings
            .values()
            .filter(|m| m.run == run)
            .map(|m| (m.protocol, m.public_port))
            .collect();
        for (protocol, port) in ports {
            self.remove_mapping(protocol, port);
        }
        let addrs = self.run_addresses(run);
        self.containers.retain(|_, c| c.run != run);
        self.scopes.remove(&run);
        if addrs.contains(&self.memo.addr) {
            self.memo.addr = Ipv4Addr::UNSPECIFIED;
        }
        // A container is the source of every connection it takes part in, in one direction.
        self.conns.remove_where(|c| {
            addrs.contains(c.original.src.ip()) || addrs.contains(c.reply.src.ip())
        });
        for a in addrs {
            self.conns.leave(a);
        }
    }

    /// Live connections of a run family (see [`Router::add_container`]).
    pub fn family_connections(&self, family: u64) -> u32 {
        self.conns.family_connections(family)
    }

    /// The addresses of a run's containers.
    pub(super) fn run_addresses(&self, run: RunId) -> Vec<Ipv4Addr> {
        let of_run = self.containers.iter().filter(|(_, c)| c.run == run);
        of_run.map(|(a, _)| *a).collect()
    }

    /// Sets whom a run may talk to (used when [`Config::scoped`]). What the new scope no longer
    /// admits ends at once: connections from a source it dropped to the run's ports, and
    /// connections the run's containers opened toward a target it dropped. Others go on.
    pub fn set_scope(&mut self, run: RunId, scope: Scope) {
        let addrs = self.run_addresses(run);
        let node = self.vpn.map(|v| v.address);
        self.conns.remove_where(|c| {
            // Opened toward one of the run's containers (through its mapping) by a peer, or by
            // another container through the node's own address (the reply then goes to it).
            let source = if Some(*c.reply.dst.ip()) == node {
                node
            } else {
                Some(*c.original.src.ip())
            };
            let inbound = addrs.contains(c.reply.src.ip())
                && !addrs.contains(c.original.src.ip())
                && !source.is_some_and(|s| scope.sources.contains(&s));
            let outbound = addrs.contains(c.original.src.ip())
                && !scope.admits_target(c.protocol, c.original.dst);
            inbound || outbound
        });
        self.scopes.insert(run, scope);
    }

    pub fn mappings(&self) -> impl Iterator<Item = &Mapping> {
        self.mappings.values()
    }

    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Most connections the table holds.
    pub fn capacity(&self) -> usize {
        self.config.max_connections
    }

    /// Each run's traffic and connections. A packet counts for the container that sent it or
    /// that it reached from the VPN (a container's packet to another on this node, through the
    /// node's address, counts for the sender only); a connection for each container in it.
    /// Walks the connection table: for a scrape, not for every packet.
    pub fn run_traffic(&self) -> Vec<(RunId, RunTraffic)> {
        let mut counted: BTreeMap<RunId, Counted> = BTreeMap::new();
        for (addr, c) in &self.containers {
            let total = counted.entry(c.run).or_default();
            total.add(&c.counted);
            if self.memo.addr == *addr {
                total.add(&self.memo.counted);
            }
        }
        let mut runs: BTreeMap<RunId, RunTraffic> = counted
            .into_iter()
            .map(|(run, c)| {
                let t = RunTraffic {
                    packets: c.packets,
                    bytes: c.bytes,
                    connections: 0,
                };
                (run, t)
            })
            .collect();
        for conn in self.conns.live() {
            for end in [conn.original.src.ip(), conn.reply.src.ip()] {
                if let Some(c) = self.containers.get(end) {
                    runs.entry(c.run).or_default().connections += 1;
                }
            }
        }
        runs.into_iter().collect()
    }

    pub fn fragmented(&self) -> usize {
        self.frags.len()
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> Counters {
        let mut c = self.counters.clone();
        c.connections_expired = self.conns.expired;
        c.connections_evicted = self.conns.evicted;
        c.connections_removed = self.conns.removed;
        c
    }
}

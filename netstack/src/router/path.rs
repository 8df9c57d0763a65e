//! The per-packet path: parse, pick the side, find or open the connection, translate in place,
//! count.

use super::*;

pub(super) fn starts_connection(l4: &L4) -> bool {
    match *l4 {
        L4::Tcp { flags, .. } => flags & (TCP_SYN | TCP_ACK_FLAG | TCP_RST) == TCP_SYN,
        L4::Udp { .. } | L4::EchoRequest { .. } => true,
        L4::EchoReply { .. } | L4::IcmpError { .. } | L4::Fragment => false,
    }
}

impl Router {
    /// Looks up the connections of `packets` ahead of [`Router::process`], which then finds
    /// them in the recent-lookup cache: a driver holding several packets calls this for all of
    /// them first, and their lookups' cache misses overlap instead of following one another.
    /// Changes no decision, whatever the bytes.
    pub fn prefetch<'a>(&mut self, packets: impl IntoIterator<Item = &'a [u8]>) {
        self.conns
            .prefetch(packets.into_iter().filter_map(wire::flow_hint));
    }

    /// Decides on the packet `buf[..len]` and rewrites it in place; `buf` beyond `len` is room
    /// for an answer larger than the packet. Never panics, whatever the bytes.
    pub fn process(&mut self, buf: &mut [u8], len: usize, meta: Meta, now: Instant) -> Action {
        let len = len.min(buf.len());
        match self.route(buf, len, meta, now) {
            Ok(action) => action,
            Err(reason) => {
                self.counters.drop(reason);
                Action::Drop(reason)
            }
        }
    }

    /// The path of a packet of a known connection (parse, side, [`Table::track_recent`],
    /// [`nat::rewrite`]) is inlined into `process`; every other path (answers, fragments, ICMP
    /// errors, the index probe, new connections) is kept out of line with `#[cold]` or
    /// `#[inline(never)]`. Inlined, their registers made the compiler keep the common path's
    /// values on the stack: callgrind counted 534 instructions per packet before, 475 after.
    #[inline]
    pub(super) fn route(
        &mut self,
        buf: &mut [u8],
        len: usize,
        meta: Meta,
        now: Instant,
    ) -> Result<Action, DropReason> {
        let p = wire::parse(&buf[..len])?;
        let vpn = self.vpn.ok_or(DropReason::NoVpn)?;
        let (src, dst) = (p.ip.src, p.ip.dst);
        // Container addresses never lie in the VPN subnet (add_container and set_vpn refuse
        // it), so the cheap subnet test decides the side before any table is consulted.
        let side = if vpn.contains(src) {
            if src == vpn.address || vpn.is_network_or_broadcast(src) {
                return Err(DropReason::UnknownSource);
            }
            if dst != vpn.address {
                return Err(DropReason::NotForNode);
            }
            Side::Vpn
        } else if self.containers.contains_key(&src) {
            if !vpn.contains(dst) {
                return Err(if self.containers.contains_key(&dst) {
                    DropReason::ContainerToInternal
                } else {
                    DropReason::OutsideVpn
                });
            }
            if vpn.is_network_or_broadcast(dst) {
                return Err(DropReason::Broadcast);
            }
            if !self.tunnel_up && dst != vpn.address {
                return Err(DropReason::TunnelDown);
            }
            Side::Container
        } else {
            return Err(DropReason::UnknownSource);
        };
        // The translations rewrite in place or say why not; the action is built here, once.
        match p.l4 {
            L4::Fragment => self.translate_fragment(buf, &p, now)?,
            L4::EchoRequest { .. } if dst == vpn.address => {
                self.may_answer(side, src)?;
                if p.ip.is_fragment() {
                    return Err(DropReason::FragmentedLocal);
                }
                let len = u16::try_from(icmp::echo_reply(buf, &p.ip))
                    .map_err(|_| DropReason::Malformed)?;
                self.counters.reply(Reply::EchoReply);
                return Ok(Action::Reply {
                    len,
                    reply: Reply::EchoReply,
                });
            }
            L4::IcmpError { .. } => self.translate_icmp_error(buf, &p, side, now)?,
            _ => {
                if self.too_big(buf, &p, meta, vpn) {
                    self.may_answer(side, src)?;
                    return self.answer_too_big(buf, &p, vpn, now);
                }
                match self.translate(buf, &p, side, vpn, meta, now) {
                    Err(DropReason::NoMapping) => {
                        self.may_answer(side, src)?;
                        return self.refuse(buf, &p, now);
                    }
                    r => r?,
                }
            }
        }
        let len = p.ip.total_len;
        self.counters.forward(side, len);
        // The container's address: the source of what it sent, the (rewritten) destination
        // of what reached it from the VPN.
        let local = match (side, buf.get(16..20)) {
            (Side::Vpn, Some(&[a, b, c, d])) => Ipv4Addr::new(a, b, c, d),
            _ => src,
        };
        self.count(local, side, len);
        // Peers reach only containers; a container reaches peers, or, through the node's own
        // address, another container (hairpin).
        let to = if side == Side::Container && dst != vpn.address {
            Side::Vpn
        } else {
            Side::Container
        };
        // Read from the header's 16-bit field by `parse`.
        Ok(Action::Forward {
            len: len as u16,
            to,
        })
    }

    /// Counts a forwarded packet for the container at `local`.
    #[inline]
    pub(super) fn count(&mut self, local: Ipv4Addr, side: Side, len: usize) {
        let i = side as usize & 1;
        if self.memo.addr == local {
            self.memo.counted.packets[i] += 1;
            self.memo.counted.bytes[i] += len as u64;
        } else {
            self.count_other(local, i, len);
        }
    }

    /// [`Router::count`] for a container other than the memo's: the memo's counts go to its
    /// entry, and the memo to `local`.
    #[cold]
    #[inline(never)]
    pub(super) fn count_other(&mut self, local: Ipv4Addr, i: usize, len: usize) {
        if !self.containers.contains_key(&local) {
            return;
        }
        let m = self.memo;
        if let Some(c) = self.containers.get_mut(&m.addr) {
            c.counted.add(&m.counted);
        }
        let mut counted = Counted::default();
        counted.packets[i] = 1;
        counted.bytes[i] = len as u64;
        self.memo = Memo {
            addr: local,
            counted,
        };
    }

    #[inline]
    pub(super) fn translate(
        &mut self,
        buf: &mut [u8],
        p: &Parsed,
        side: Side,
        vpn: Vpn,
        meta: Meta,
        now: Instant,
    ) -> Result<(), DropReason> {
        let Some(protocol) = p.l4.protocol() else {
            return Err(DropReason::Malformed);
        };
        let (sport, dport) = p.l4.ports();
        let arrived = Tuple {
            src: SocketAddrV4::new(p.ip.src, sport),
            dst: SocketAddrV4::new(p.ip.dst, dport),
        };
        let tcp_flags = match p.l4 {
            L4::Tcp { flags, .. } => Some(flags),
            _ => None,
        };
        let (id, to, change) = match self.conns.track_recent(protocol, arrived, tcp_flags, now) {
            Some(hit) => hit,
            None => self.track(protocol, arrived, tcp_flags, p, side, vpn, now)?,
        };
        nat::rewrite(
            buf,
            0,
            p.ip.header_len,
            p.l4,
            to,
            change,
            Mode::Packet(meta.checksum),
        );
        if p.ip.more_fragments {
            let key = FragKey::of(&p.ip);
            let t = Translation {
                conn: self.conns.handle(id),
                src: *to.src.ip(),
                dst: *to.dst.ip(),
            };
            self.frags.insert(key, t, now);
        }
        Ok(())
    }

    /// The packet's connection when the recent-lookup cache did not know it: found through the
    /// index, or opened. Out of line, so that the hit path stays short.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    pub(super) fn track(
        &mut self,
        protocol: Protocol,
        arrived: Tuple,
        tcp_flags: Option<u8>,
        p: &Parsed,
        side: Side,
        vpn: Vpn,
        now: Instant,
    ) -> Result<(u32, Tuple, Change), DropReason> {
        if let Some(hit) = self.conns.track(protocol, arrived, tcp_flags, now) {
            return Ok(hit);
        }
        let id = self.open(protocol, arrived, p, side, vpn, now)?;
        let (to, change) = self.conns.on_packet(id, Dir::Original, tcp_flags, now);
        Ok((id, to, change))
    }

    /// Starts tracking the connection whose first packet arrived with `arrived`.
    pub(super) fn open(
        &mut self,
        protocol: Protocol,
        arrived: Tuple,
        p: &Parsed,
        side: Side,
        vpn: Vpn,
        now: Instant,
    ) -> Result<u32, DropReason> {
        // ICMP has no ports to map: an echo reply without its request is just unsolicited.
        let to_node = *arrived.dst.ip() == vpn.address && protocol != Protocol::Icmp;
        let mapping = if to_node {
            let m = self
                .mappings
                .get(&(protocol, arrived.dst.port()))
                .ok_or(DropReason::NoMapping)?;
            Some(*m)
        } else {
            None
        };
        if !starts_connection(&p.l4) {
            return Err(DropReason::NoConnection);
        }
        if self.config.scoped {
            self.check_scope(protocol, arrived, side, mapping, vpn)?;
        }
        let reply = match (side, mapping) {
            // A peer opens a connection to a mapped port: only the destination changes.
            (Side::Vpn, Some(m)) => Tuple {
                src: m.container,
                dst: arrived.src,
            },
            (Side::Vpn, None) => return Err(DropReason::NotForNode),
            // A container opens one to a peer, or to a mapped port of this node (hairpin): the
            // source becomes the node's VPN address, so the answers come back here.
            (Side::Container, m) => {
                let remote = m.map_or(arrived.dst, |m| m.container);
                let port = self.allocate(protocol, remote, arrived.src, vpn)?;
                Tuple {
                    src: remote,
                    dst: SocketAddrV4::new(vpn.address, port),
                }
            }
        };
        let id = self.conns.insert(protocol, arrived, reply, now)?;
        self.counters.connections_created += 1;
        Ok(id)
    }

    /// Picks the port on the VPN address for a connection a container opens from `local` to
    /// `remote`: the public port of its mapping if `local` is mapped, else `local`'s own port if
    /// it is in the outbound range and free (port preservation), else a random free one. With
    /// several routers, only a port whose answers this router owns (see [`Router::owner`]):
    /// the first two always are; of random ones, about one in [`Config::shards`].
    pub(super) fn allocate(
        &mut self,
        protocol: Protocol,
        remote: SocketAddrV4,
        local: SocketAddrV4,
        vpn: Vpn,
    ) -> Result<u16, DropReason> {
        let range = self.config.outbound_ports.clone();
        let (start, size) = (
            u32::from(*range.start()),
            u32::from(*range.end()) - u32::from(*range.start()) + 1,
        );
        let first = (splitmix(&mut self.rng) % u64::from(size)) as u32;
        // Toward another container of the node (hairpin) every port is router 0's.
        let sharded = self.config.shards > 1 && vpn.contains(*remote.ip());
        let own = self.shard_of(protocol, remote, local.port());
        let fits = |port: u16| {
            let answers = Tuple {
                src: remote,
                dst: SocketAddrV4::new(vpn.address, port),
            };
            !self.conns.contains(protocol, answers)
                && (!sharded
                    || self.shard_of(protocol, remote, self.node_port(protocol, port)) == own)
        };
        let mapped = self.targets.get(&(protocol, local)).copied();
        let preserved = range.contains(&local.port()).then_some(local.port());
        if let Some(port) = [mapped, preserved].into_iter().flatten().find(|&p| fits(p)) {
            return Ok(port);
        }
        let tries = size.min(512 * self.config.shards as u32);
        (0..tries)
            .map(|i| (start + (first + i) % size) as u16)
            .find(|&port| fits(port))
            .ok_or(DropReason::NoFreePort)
    }
}

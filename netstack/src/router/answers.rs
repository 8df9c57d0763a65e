//! What the router answers itself (RSTs, ICMP errors, "fragmentation needed") and ICMP errors
//! from elsewhere translated back to the connection they are about.

use super::*;

impl Router {
    /// Whether the packet (or each segment of a GSO super-packet) exceeds the MTU with DF set.
    pub(super) fn too_big(&self, buf: &[u8], p: &Parsed, meta: Meta, vpn: Vpn) -> bool {
        if !p.ip.dont_fragment {
            return false;
        }
        let size = if meta.gso_size == 0 {
            p.ip.total_len
        } else {
            let l4_header = match p.l4 {
                L4::Tcp { .. } => usize::from(buf[p.ip.header_len + 12] >> 4) * 4,
                _ => 8,
            };
            p.ip.header_len + l4_header + usize::from(meta.gso_size)
        };
        size > usize::from(vpn.mtu)
    }

    #[cold]
    #[inline(never)]
    pub(super) fn answer_too_big(
        &mut self,
        buf: &mut [u8],
        p: &Parsed,
        vpn: Vpn,
        now: Instant,
    ) -> Result<Action, DropReason> {
        let code = (ICMP_DEST_UNREACHABLE, ICMP_CODE_FRAG_NEEDED);
        self.answer(
            buf,
            p.ip.src,
            Reply::FragmentationNeeded,
            DropReason::TooBig,
            now,
            |buf| {
                icmp::error(
                    buf,
                    p.ip.total_len,
                    vpn.address,
                    p.ip.src,
                    code,
                    u32::from(vpn.mtu),
                )
            },
        )
    }

    /// Sends an answer to `to` built by `build` instead of the packet, within the rate limits
    /// (the address's own and the router's), and counts the packet as dropped for `reason`.
    pub(super) fn answer(
        &mut self,
        buf: &mut [u8],
        to: Ipv4Addr,
        reply: Reply,
        reason: DropReason,
        now: Instant,
        build: impl FnOnce(&mut [u8]) -> Result<usize, DropReason>,
    ) -> Result<Action, DropReason> {
        if !self.limits.contains_key(&to) && self.limits.len() >= ANSWERED_ADDRESSES {
            // Forgetting every budget at once only gives each address a fresh burst, and the
            // router's own limit still holds.
            self.limits.clear();
        }
        let (per_sec, burst) = (
            self.config.replies_per_source_per_sec,
            self.config.reply_burst_per_source,
        );
        let own = self
            .limits
            .entry(to)
            .or_insert_with(|| RateLimit::new(per_sec, burst));
        if !own.allow(now) || !self.limit.allow(now) {
            return Err(DropReason::RateLimited);
        }
        let len = u16::try_from(build(buf)?).map_err(|_| reason)?;
        self.counters.drop(reason);
        self.counters.reply(reply);
        Ok(Action::Reply { len, reply })
    }

    /// Answers a packet to an unmapped port of the node: TCP with a RST, UDP with ICMP port
    /// unreachable, as a host with nothing listening would.
    #[cold]
    #[inline(never)]
    pub(super) fn refuse(
        &mut self,
        buf: &mut [u8],
        p: &Parsed,
        now: Instant,
    ) -> Result<Action, DropReason> {
        match p.l4 {
            L4::Tcp { flags, .. } if flags & TCP_RST == 0 && !p.ip.is_fragment() => self.answer(
                buf,
                p.ip.src,
                Reply::TcpReset,
                DropReason::NoMapping,
                now,
                |buf| icmp::tcp_reset(buf, &p.ip).ok_or(DropReason::NoMapping),
            ),
            L4::Udp { .. } if !p.ip.is_fragment() || p.ip.frag_offset == 0 => {
                let code = (ICMP_DEST_UNREACHABLE, ICMP_CODE_PORT_UNREACHABLE);
                self.answer(
                    buf,
                    p.ip.src,
                    Reply::PortUnreachable,
                    DropReason::NoMapping,
                    now,
                    |buf| icmp::error(buf, p.ip.total_len, p.ip.dst, p.ip.src, code, 0),
                )
            }
            _ => Err(DropReason::NoMapping),
        }
    }

    #[cold]
    #[inline(never)]
    pub(super) fn translate_fragment(
        &mut self,
        buf: &mut [u8],
        p: &Parsed,
        now: Instant,
    ) -> Result<(), DropReason> {
        let key = FragKey::of(&p.ip);
        let t = self
            .frags
            .lookup(&key, now)
            .ok_or(DropReason::FragmentUnknown)?;
        if !self.conns.is_live(t.conn) {
            return Err(DropReason::FragmentUnknown);
        }
        nat::rewrite_addresses(buf, &p.ip, t.src, t.dst);
        Ok(())
    }

    /// Translates an ICMP error about a packet of a tracked connection: the quoted packet went
    /// the other way, so its reverse is how that connection's packets arrive here.
    #[cold]
    #[inline(never)]
    pub(super) fn translate_icmp_error(
        &mut self,
        buf: &mut [u8],
        p: &Parsed,
        side: Side,
        now: Instant,
    ) -> Result<(), DropReason> {
        let icmp_at = p.ip.header_len;
        let q = wire::parse_quoted(&buf[icmp_at..p.ip.total_len])?;
        let (qs, qd) = q.l4.ports();
        let arrived = Tuple {
            src: SocketAddrV4::new(q.dst, qd),
            dst: SocketAddrV4::new(q.src, qs),
        };
        let (id, dir) = self
            .conns
            .peek(q.protocol, arrived, now)
            .ok_or(DropReason::IcmpErrorUnmatched)?;
        // The error must come from the flow's own other end: a container speaks for itself, a
        // peer for itself. Only "fragmentation needed", which can only lower a path's MTU, may
        // come from a router on the VPN path. A flow between two containers (hairpin) never
        // crossed the VPN and takes no error from it.
        let from_endpoint = p.ip.src == *arrived.src.ip();
        let path_mtu = matches!(
            p.l4,
            L4::IcmpError {
                icmp_type: ICMP_DEST_UNREACHABLE,
                code: ICMP_CODE_FRAG_NEEDED
            }
        );
        let from_its_end = match side {
            Side::Container => from_endpoint,
            Side::Vpn => {
                self.vpn.is_some_and(|v| v.contains(*arrived.src.ip()))
                    && (from_endpoint || path_mtu)
            }
        };
        if p.ip.dst != *arrived.dst.ip() || !from_its_end {
            return Err(DropReason::IcmpErrorUnmatched);
        }
        let conn = self.conns.get(id);
        let to = conn.translated(dir);
        let quote_at = icmp_at + 8;
        // The quote holds the reverse of `arrived` and becomes the reverse of `to`: the reverse
        // rewrite changes the same words the same way.
        let delta = nat::rewrite_quoted(
            buf,
            quote_at,
            q.header_len,
            q.l4,
            to.reverse(),
            conn.change(dir),
            quote_at + q.len,
        );
        let c = wire::get16(buf, icmp_at + ICMP_CSUM);
        wire::put16(buf, icmp_at + ICMP_CSUM, delta.apply_complete(c));
        let outer_src = if from_endpoint {
            *to.src.ip()
        } else {
            p.ip.src
        };
        nat::rewrite_addresses(buf, &p.ip, outer_src, *to.dst.ip());
        Ok(())
    }
}

//! Who may reach whom: a run's [`Scope`] over the VPN, and which addresses the router answers.

use super::*;

/// Whom a run may talk to over the VPN, when the router is scoped ([`Config::scoped`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// VPN addresses that may open connections to the run's public ports.
    pub sources: BTreeSet<Ipv4Addr>,
    /// Where the run's containers may open connections: a VPN address and public port, or port
    /// 0 for every port of that address. A ping may go to any address named here.
    pub targets: BTreeSet<SocketAddrV4>,
}

impl Scope {
    pub(super) fn admits_target(&self, protocol: Protocol, dst: SocketAddrV4) -> bool {
        let any = SocketAddrV4::new(*dst.ip(), 0);
        if protocol == Protocol::Icmp {
            let all = any..=SocketAddrV4::new(*dst.ip(), u16::MAX);
            return self.targets.range(all).next().is_some();
        }
        self.targets.contains(&any) || self.targets.contains(&dst)
    }
}

impl Router {
    /// Whether the scopes admit a new connection: from a peer, the scope of the run whose
    /// mapping it addresses must hold the peer; from a container, its run's scope must hold the
    /// target, and for the node's own address (hairpin) the receiving run's scope the node.
    #[cold]
    #[inline(never)]
    pub(super) fn check_scope(
        &self,
        protocol: Protocol,
        arrived: Tuple,
        side: Side,
        mapping: Option<Mapping>,
        vpn: Vpn,
    ) -> Result<(), DropReason> {
        let admits_source = |m: Mapping, source: Ipv4Addr| {
            self.scopes
                .get(&m.run)
                .is_some_and(|s| s.sources.contains(&source))
        };
        match side {
            Side::Vpn => match mapping {
                Some(m) if admits_source(m, *arrived.src.ip()) => Ok(()),
                _ => Err(DropReason::PeerNotInScope),
            },
            Side::Container => {
                let run = self.containers.get(arrived.src.ip()).map(|c| c.run);
                let scope = run.and_then(|r| self.scopes.get(&r));
                if !scope.is_some_and(|s| s.admits_target(protocol, arrived.dst)) {
                    return Err(DropReason::DestinationNotInScope);
                }
                match mapping {
                    Some(m) if !admits_source(m, vpn.address) => {
                        Err(DropReason::DestinationNotInScope)
                    }
                    _ => Ok(()),
                }
            }
        }
    }

    /// Whether the router may answer a packet itself (echo reply, RST, ICMP error): not to a VPN
    /// peer in no run's scope, for which the node is as if it were not there.
    pub(super) fn may_answer(&self, side: Side, src: Ipv4Addr) -> Result<(), DropReason> {
        let known = || self.scopes.values().any(|s| s.sources.contains(&src));
        if side == Side::Vpn && self.config.scoped && !known() {
            return Err(DropReason::PeerNotInScope);
        }
        Ok(())
    }
}

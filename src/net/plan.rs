//! The hub namespace's routing as data (pure, unit-tested), and its application and teardown
//! through rtnetlink.
//!
//! Rule order in the hub namespace (lower runs first):
//!
//! | priority | rule | why |
//! |---|---|---|
//! | 100 | `iif <vpn link> lookup 100` | everything from the tunnel goes to the router, before the local table could accept it for the gateway address |
//! | 200 | `lookup local` | moved from 0, so that rule 100 comes first |
//! | 300 | `iif <wan> lookup 100` | after local: OpenVPN's own UDP reaches it; everything else from the WAN goes to the router, which drops and counts it |
//! | 1000 | `iif vr-<run> lookup 100`, one per run | after local: containers reach the gateway (proxy); everything else goes to the router |
//! | 32766 | `lookup main` | what the router writes back: the VPN subnet via the tunnel, each container's /32 via its veth |
//!
//! Table 100 holds one route: `default dev <tun>`.
//!
//! Failing closed: main also holds `unreachable <vpn subnet> metric 4294967295`, from before
//! OpenVPN first runs. The tunnel's route for the subnet (metric 0) outranks it while tun0
//! exists; when tun0 goes (OpenVPN restarting, crashed, its container gone) the kernel removes
//! that route and the unreachable one is what is left, so nothing for a VPN peer ever follows
//! the default route out of the WAN link in clear. The same route makes the WAN link's strict
//! reverse-path filter refuse any packet from the WAN with a VPN-subnet source: its reverse
//! lookup ends at an unreachable route, never at the WAN link.

use std::net::Ipv4Addr;
use std::os::fd::BorrowedFd;

use crate::net::links::{set_sysctl, IfName, LinkError, Netlink, Route, Rule, Unreachable};

pub const TABLE_ROUTER: u32 = 100;
pub const TABLE_LOCAL: u32 = 255;
pub const TABLE_MAIN: u32 = 254;
const PRIO_FROM_VPN: u32 = 100;
const PRIO_LOCAL: u32 = 200;
const PRIO_FROM_WAN: u32 = 300;
const PRIO_FROM_RUN: u32 = 1000;

/// The routing of the hub namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubPlan {
    /// The tunnel's link (OpenVPN's tun0).
    pub vpn_link: IfName,
    /// The router's TUN device.
    pub tun: IfName,
    /// The link to the outside (Docker network), if any.
    pub wan: Option<IfName>,
    pub vpn_subnet: Ipv4Addr,
    pub vpn_prefix_len: u8,
}

impl HubPlan {
    /// Table 100: everything to the router's TUN device.
    pub fn router_route(&self) -> Route {
        Route {
            dest: Ipv4Addr::UNSPECIFIED,
            prefix_len: 0,
            dev: self.tun.clone(),
            via: None,
            table: TABLE_ROUTER,
        }
    }

    /// What the router writes back for the VPN goes out through the tunnel.
    pub fn vpn_route(&self) -> Route {
        Route {
            dest: self.vpn_subnet,
            prefix_len: self.vpn_prefix_len,
            dev: self.vpn_link.clone(),
            via: None,
            table: TABLE_MAIN,
        }
    }

    /// The VPN subnet, unreachable unless the tunnel's route outranks it.
    pub fn vpn_closed(&self) -> Unreachable {
        Unreachable {
            dest: self.vpn_subnet,
            prefix_len: self.vpn_prefix_len,
            metric: u32::MAX,
            table: TABLE_MAIN,
        }
    }

    pub fn rules(&self) -> Vec<Rule> {
        let mut rules = vec![
            Rule {
                priority: PRIO_FROM_VPN,
                iif: Some(self.vpn_link.clone()),
                table: TABLE_ROUTER,
            },
            Rule {
                priority: PRIO_LOCAL,
                iif: None,
                table: TABLE_LOCAL,
            },
        ];
        if let Some(wan) = &self.wan {
            rules.push(Rule {
                priority: PRIO_FROM_WAN,
                iif: Some(wan.clone()),
                table: TABLE_ROUTER,
            });
        }
        rules
    }

    /// Forwarding on; strict reverse-path filtering where packets enter (so nobody can use
    /// another side's source address), none on the TUN device (the router writes packets whose
    /// sources route elsewhere); `all` at 0 because the kernel uses the larger of `all` and the
    /// device's value.
    /// The tunnel's own setting is [`HubPlan::vpn_sysctls`]: it exists only once OpenVPN runs.
    pub fn sysctls(&self) -> Vec<(String, &'static str)> {
        let mut s = vec![
            ("net/ipv4/ip_forward".to_string(), "1"),
            ("net/ipv4/conf/all/rp_filter".to_string(), "0"),
            (format!("net/ipv4/conf/{}/rp_filter", self.tun), "0"),
        ];
        if let Some(wan) = &self.wan {
            s.push((format!("net/ipv4/conf/{wan}/rp_filter"), "1"));
        }
        s
    }

    pub fn vpn_sysctls(&self) -> Vec<(String, &'static str)> {
        vec![(format!("net/ipv4/conf/{}/rp_filter", self.vpn_link), "1")]
    }
}

/// The veth of one run: hub end in the hub namespace, container end in the run's sandbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunLinkPlan {
    pub hub_end: IfName,
    pub container_end: IfName,
    pub container: Ipv4Addr,
    /// The link-local gateway the container routes through (held by every hub end).
    pub gateway: Ipv4Addr,
    pub mtu: u32,
}

impl RunLinkPlan {
    pub fn hub_rule(&self) -> Rule {
        Rule {
            priority: PRIO_FROM_RUN,
            iif: Some(self.hub_end.clone()),
            table: TABLE_ROUTER,
        }
    }

    pub fn hub_route(&self) -> Route {
        Route {
            dest: self.container,
            prefix_len: 32,
            dev: self.hub_end.clone(),
            via: None,
            table: TABLE_MAIN,
        }
    }

    pub fn container_routes(&self) -> Vec<Route> {
        vec![
            Route {
                dest: self.gateway,
                prefix_len: 32,
                dev: self.container_end.clone(),
                via: None,
                table: TABLE_MAIN,
            },
            Route {
                dest: Ipv4Addr::UNSPECIFIED,
                prefix_len: 0,
                dev: self.container_end.clone(),
                via: Some(self.gateway),
                table: TABLE_MAIN,
            },
        ]
    }
}

/// Applies the hub plan in the namespace of `nl` (the calling thread's): [`apply_base`], then
/// [`apply_vpn`].
pub async fn apply_hub(nl: &Netlink, plan: &HubPlan) -> Result<(), LinkError> {
    apply_base(nl, plan).await?;
    apply_vpn(nl, plan).await
}

/// The part that needs no tunnel yet, applied before OpenVPN runs, so that from the first run
/// on, containers and the WAN reach nothing but the router (which drops what it has no VPN
/// for). The TUN device must exist already (the data plane makes it). Rules name the tunnel
/// by name, so they hold before it exists. Safe to repeat.
pub async fn apply_base(nl: &Netlink, plan: &HubPlan) -> Result<(), LinkError> {
    nl.configure(&IfName::new("lo")?, None, None).await?;
    for (path, value) in plan.sysctls() {
        set_sysctl(&path, value)?;
    }
    nl.add_route(&plan.router_route()).await?;
    if plan.vpn_prefix_len > 0 {
        nl.add_unreachable(&plan.vpn_closed()).await?;
    }
    for rule in plan.rules() {
        nl.del_rule(&rule).await?;
        nl.add_rule(&rule).await?;
    }
    // Only now that local is reachable at its new place, take it from the front.
    nl.del_rule(&Rule {
        priority: 0,
        iif: None,
        table: TABLE_LOCAL,
    })
    .await
}

/// The tunnel's part: up, reverse-path filtering, the VPN subnet routed through it. Repeated
/// whenever OpenVPN (re)connects: a restarted OpenVPN makes a new tun0.
pub async fn apply_vpn(nl: &Netlink, plan: &HubPlan) -> Result<(), LinkError> {
    nl.configure(&plan.vpn_link, None, None).await?;
    for (path, value) in plan.vpn_sysctls() {
        set_sysctl(&path, value)?;
    }
    nl.add_route(&plan.vpn_route()).await
}

/// Undoes [`apply_hub`]; keeps going past failures and reports them all.
pub async fn teardown_hub(nl: &Netlink, plan: &HubPlan) -> Vec<LinkError> {
    let mut errors = Vec::new();
    let local = Rule {
        priority: 0,
        iif: None,
        table: TABLE_LOCAL,
    };
    if let Err(e) = nl.add_rule(&local).await {
        errors.push(e);
    }
    for rule in plan.rules() {
        if let Err(e) = nl.del_rule(&rule).await {
            errors.push(e);
        }
    }
    errors
}

/// Creates the run's veth with its container end born in `container_ns`, and configures the
/// hub end (gateway address, route to the container, rule). The container end is configured
/// by [`configure_container_end`] on a thread inside the container namespace.
pub async fn add_run_link(
    nl: &Netlink,
    plan: &RunLinkPlan,
    container_ns: BorrowedFd<'_>,
) -> Result<(), LinkError> {
    nl.add_veth(&plan.hub_end, &plan.container_end, container_ns, plan.mtu)
        .await?;
    nl.configure(&plan.hub_end, None, None).await?;
    nl.add_address(&plan.hub_end, plan.gateway, 32).await?;
    set_sysctl(&format!("net/ipv4/conf/{}/rp_filter", plan.hub_end), "1")?;
    nl.add_route(&plan.hub_route()).await?;
    nl.add_rule(&plan.hub_rule()).await
}

/// Configures the container end inside the container namespace: address, MTU, routes.
pub async fn configure_container_end(nl: &Netlink, plan: &RunLinkPlan) -> Result<(), LinkError> {
    nl.configure(&IfName::new("lo")?, None, None).await?;
    nl.configure(&plan.container_end, Some(plan.mtu), None)
        .await?;
    nl.add_address(&plan.container_end, plan.container, 32)
        .await?;
    for route in plan.container_routes() {
        nl.add_route(&route).await?;
    }
    Ok(())
}

/// Removes the run's veth (both ends) and its rule; absent parts are fine.
pub async fn remove_run_link(nl: &Netlink, plan: &RunLinkPlan) -> Vec<LinkError> {
    let mut errors = Vec::new();
    if let Err(e) = nl.del_rule(&plan.hub_rule()).await {
        errors.push(e);
    }
    if let Err(e) = nl.del_link(&plan.hub_end).await {
        errors.push(e);
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> IfName {
        IfName::new(s).expect("name")
    }

    #[test]
    fn tunnel_traffic_is_routed_to_the_router_before_the_local_table() {
        let plan = HubPlan {
            vpn_link: name("tun0"),
            tun: name("algonet0"),
            wan: Some(name("eth0")),
            vpn_subnet: Ipv4Addr::new(10, 76, 0, 0),
            vpn_prefix_len: 16,
        };
        let rules = plan.rules();
        let prio = |iif: Option<&str>, table| {
            rules
                .iter()
                .find(|r| r.iif.as_ref().map(IfName::as_str) == iif && r.table == table)
                .map(|r| r.priority)
        };
        let local = prio(None, TABLE_LOCAL).expect("local rule");
        assert!(prio(Some("tun0"), TABLE_ROUTER).expect("vpn rule") < local);
        assert!(
            prio(Some("eth0"), TABLE_ROUTER).expect("wan rule") > local,
            "OpenVPN's own traffic"
        );
        let run = RunLinkPlan {
            hub_end: name("vr-1"),
            container_end: name("eth0"),
            container: Ipv4Addr::new(172, 30, 0, 2),
            gateway: Ipv4Addr::new(169, 254, 1, 1),
            mtu: 1400,
        };
        assert!(
            run.hub_rule().priority > local,
            "containers reach the gateway"
        );
        let r = plan.router_route();
        assert!(r.table == TABLE_ROUTER && r.prefix_len == 0 && r.dev == plan.tun);
        // Without the tunnel the VPN subnet is unreachable in main; the tunnel's route, of the
        // same prefix, outranks that by its metric (0).
        let (closed, open) = (plan.vpn_closed(), plan.vpn_route());
        assert_eq!(
            (closed.dest, closed.prefix_len, closed.table),
            (open.dest, open.prefix_len, open.table)
        );
        assert!(closed.metric > 0);
        assert!(plan
            .vpn_sysctls()
            .contains(&("net/ipv4/conf/tun0/rp_filter".into(), "1")));
        assert!(plan
            .sysctls()
            .contains(&("net/ipv4/conf/algonet0/rp_filter".into(), "0")));
    }
}

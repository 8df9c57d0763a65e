//! Links, addresses, routes, policy rules and sysctls of one network namespace, through
//! rtnetlink and /proc/sys, never through `ip` or `sysctl` processes.
//!
//! A [`Netlink`] talks to the namespace it was created in; create it on a thread inside that
//! namespace (see [`crate::net::netns::Netns::run`]).

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd};

use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::{InfoData, InfoVeth, LinkAttribute};
use rtnetlink::packet_route::route::{RouteScope, RouteType};
use rtnetlink::packet_route::rule::RuleAction;
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

/// An interface name, checked against the kernel's limit (IFNAMSIZ - 1 = 15 bytes).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IfName(String);

impl IfName {
    pub fn new(name: impl Into<String>) -> Result<IfName, LinkError> {
        let name = name.into();
        let ok = !name.is_empty()
            && name.len() <= 15
            && name != "."
            && name != ".."
            && !name
                .bytes()
                .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0);
        if ok {
            Ok(IfName(name))
        } else {
            Err(LinkError::BadName(name))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for IfName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A route in a routing table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub dest: Ipv4Addr,
    pub prefix_len: u8,
    pub dev: IfName,
    /// A gateway; without one the destination is on the link.
    pub via: Option<Ipv4Addr>,
    pub table: u32,
}

/// An `unreachable` route: what matches it is refused (the sender gets ICMP unreachable), and a
/// reverse-path check of a source it covers fails. `metric` orders it behind routes of the same
/// prefix (a lower metric wins), so it only takes effect while they are absent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unreachable {
    pub dest: Ipv4Addr,
    pub prefix_len: u8,
    pub metric: u32,
    pub table: u32,
}

/// A policy rule: packets that came in on `iif` (or all) are routed by `table`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub priority: u32,
    pub iif: Option<IfName>,
    pub table: u32,
}

/// What failed, on what.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// an interface name is invalid
    #[error("invalid interface name {0:?}: 1 to 15 bytes, no '/', ':' or blanks")]
    BadName(String),
    /// the netlink socket could not be opened
    #[error("cannot open a netlink socket: {0}")]
    Connect(std::io::Error),
    /// an interface does not exist
    #[error("no interface {0}")]
    NoSuchLink(IfName),
    /// a netlink request failed
    #[error("{what} {on}: {source}")]
    Request {
        what: &'static str,
        on: String,
        source: rtnetlink::Error,
    },
    /// a sysctl or device attribute could not be written
    #[error("cannot set {path} to {value}: {source}")]
    Setting {
        path: String,
        value: String,
        source: std::io::Error,
    },
}

/// Whether a netlink error says "not there" (ENOENT, ENODEV, ESRCH), which teardown ignores.
fn is_absent(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m)
        if m.code.is_some_and(|c| [-libc::ENOENT, -libc::ENODEV, -libc::ESRCH].contains(&c.get())))
}

/// A netlink connection to the current namespace.
#[derive(Clone, Debug)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Connects to the namespace of the calling thread; the connection runs on the current tokio
    /// runtime.
    pub fn connect() -> Result<Netlink, LinkError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(LinkError::Connect)?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    fn req(what: &'static str, on: impl ToString) -> impl FnOnce(rtnetlink::Error) -> LinkError {
        move |source| LinkError::Request {
            what,
            on: on.to_string(),
            source,
        }
    }

    /// The index of a link, if it exists.
    pub async fn index(&self, name: &IfName) -> Result<Option<u32>, LinkError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(Some(msg)) => Ok(Some(msg.header.index)),
            Ok(None) => Ok(None),
            Err(e) if is_absent(&e) => Ok(None),
            Err(e) => Err(Self::req("look up link", name)(e)),
        }
    }

    async fn require(&self, name: &IfName) -> Result<u32, LinkError> {
        self.index(name)
            .await?
            .ok_or_else(|| LinkError::NoSuchLink(name.clone()))
    }

    /// Creates a veth pair: `name` here, `peer` born directly in the namespace `peer_ns` (so it
    /// never appears in this one, and no name clash can happen here).
    pub async fn add_veth(
        &self,
        name: &IfName,
        peer: &IfName,
        peer_ns: BorrowedFd<'_>,
        mtu: u32,
    ) -> Result<u32, LinkError> {
        let peer_msg = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer.to_string())
            .mtu(mtu)
            .append_extra_attribute(LinkAttribute::NetNsFd(peer_ns.as_raw_fd()))
            .build();
        let msg = LinkVeth::new(name.as_str(), peer.as_str())
            .mtu(mtu)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
            .build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(Self::req("create veth", name))?;
        self.require(name).await
    }

    /// Sets MTU and transmit queue length, and brings the link up.
    pub async fn configure(
        &self,
        name: &IfName,
        mtu: Option<u32>,
        txqueuelen: Option<u32>,
    ) -> Result<u32, LinkError> {
        let index = self.require(name).await?;
        let mut b = LinkUnspec::new_with_index(index).up();
        if let Some(m) = mtu {
            b = b.mtu(m);
        }
        if let Some(q) = txqueuelen {
            b = b.txqueuelen(q);
        }
        self.handle
            .link()
            .set(b.build())
            .execute()
            .await
            .map_err(Self::req("configure link", name))?;
        Ok(index)
    }

    pub async fn add_address(
        &self,
        name: &IfName,
        addr: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<(), LinkError> {
        let index = self.require(name).await?;
        self.handle
            .address()
            .add(index, addr.into(), prefix_len)
            .replace()
            .execute()
            .await
            .map_err(Self::req(
                "add address",
                format!("{addr}/{prefix_len} on {name}"),
            ))
    }

    fn route_message(&self, r: &Route, index: u32) -> rtnetlink::packet_route::route::RouteMessage {
        let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(r.dest, r.prefix_len)
            .output_interface(index)
            .table_id(r.table);
        b = match r.via {
            Some(gw) => b.gateway(gw).onlink(),
            None => b.scope(RouteScope::Link),
        };
        b.build()
    }

    pub async fn add_route(&self, r: &Route) -> Result<(), LinkError> {
        let index = self.require(&r.dev).await?;
        let what = format!(
            "{}/{} dev {} table {}",
            r.dest, r.prefix_len, r.dev, r.table
        );
        self.put_route(self.route_message(r, index), what).await
    }

    /// Adds (or replaces) an `unreachable` route.
    pub async fn add_unreachable(&self, u: &Unreachable) -> Result<(), LinkError> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(u.dest, u.prefix_len)
            .table_id(u.table)
            .priority(u.metric)
            .kind(RouteType::Unreachable)
            .build();
        let what = format!(
            "unreachable {}/{} metric {} table {}",
            u.dest, u.prefix_len, u.metric, u.table
        );
        self.put_route(msg, what).await
    }

    /// Adds a route, replacing one of the same destination, table and metric.
    async fn put_route(
        &self,
        msg: rtnetlink::packet_route::route::RouteMessage,
        what: String,
    ) -> Result<(), LinkError> {
        self.handle
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(Self::req("add route", what))
    }

    pub async fn add_rule(&self, rule: &Rule) -> Result<(), LinkError> {
        let mut req = self
            .handle
            .rule()
            .add()
            .v4()
            .priority(rule.priority)
            .table_id(rule.table)
            .action(RuleAction::ToTable);
        if let Some(iif) = &rule.iif {
            req = req.input_interface(iif.to_string());
        }
        req.execute()
            .await
            .map_err(Self::req("add rule", format!("{rule:?}")))
    }

    /// Deletes the IPv4 rules with this rule's priority, input interface and table; absent is
    /// fine.
    pub async fn del_rule(&self, rule: &Rule) -> Result<(), LinkError> {
        use rtnetlink::packet_route::rule::RuleAttribute;
        let rules: Vec<_> = self
            .handle
            .rule()
            .get(rtnetlink::IpVersion::V4)
            .execute()
            .try_collect()
            .await
            .map_err(Self::req("list rules", format!("{rule:?}")))?;
        for r in rules {
            let (mut prio, mut iif, mut table) = (0, None, u32::from(r.header.table));
            for a in &r.attributes {
                match a {
                    RuleAttribute::Priority(p) => prio = *p,
                    RuleAttribute::Iifname(n) => iif = Some(n.as_str()),
                    RuleAttribute::Table(t) => table = *t,
                    _ => {}
                }
            }
            if prio == rule.priority
                && iif == rule.iif.as_ref().map(IfName::as_str)
                && table == rule.table
            {
                match self.handle.rule().del(r.clone()).execute().await {
                    Ok(()) => {}
                    Err(e) if is_absent(&e) => {}
                    Err(e) => return Err(Self::req("delete rule", format!("{rule:?}"))(e)),
                }
            }
        }
        Ok(())
    }

    /// Deletes a link (a veth takes its peer with it); absent is fine.
    pub async fn del_link(&self, name: &IfName) -> Result<(), LinkError> {
        let Some(index) = self.index(name).await? else {
            return Ok(());
        };
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(()),
            Err(e) if is_absent(&e) => Ok(()),
            Err(e) => Err(Self::req("delete link", name)(e)),
        }
    }
}

/// Writes a sysctl of the calling thread's network namespace (`net/ipv4/ip_forward`).
pub fn set_sysctl(path: &str, value: &str) -> Result<(), LinkError> {
    let full = format!("/proc/sys/{path}");
    std::fs::write(&full, value).map_err(|source| LinkError::Setting {
        path: full,
        value: value.to_string(),
        source,
    })
}

/// Writes an attribute of a device of the calling thread's network namespace
/// (`/sys/class/net/<dev>/<attr>`), from a helper thread with a sysfs of that namespace.
pub fn set_device_attr(dev: &IfName, attr: &str, value: &str) -> Result<(), LinkError> {
    let path = format!("/sys/class/net/{dev}/{attr}");
    std::thread::scope(|s| {
        s.spawn(|| {
            crate::net::netns::own_sysfs()?;
            std::fs::write(&path, value)
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("the helper thread panicked")))
    })
    .map_err(|source| LinkError::Setting {
        path,
        value: value.to_string(),
        source,
    })
}

//! The namespace topology of the data-plane tests and benchmark: a "VPN peer" whose veth stands
//! in for tun0 (and a far host behind it across a narrower hop), the hub namespace, and two
//! container namespaces; forwarded by algonet or, as the baseline, by the kernel with vantage6's
//! iptables rules.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::time::Duration;

use algonet::echo::Pattern;
use algonet::net::dataplane::{Dataplane, DataplaneConfig, DataplaneHandle};
use algonet::net::links::{set_sysctl, IfName, LinkError, Netlink, Route};
use algonet::net::netns::Netns;
use algonet::net::plan::{self, HubPlan, RunLinkPlan};
use netstack::{Config, DropReason, Mapping, Protocol, RunId, Vpn};

use crate::{mac, TestNs};

pub const V: Ipv4Addr = Ipv4Addr::new(10, 76, 0, 2);
pub const PEER: Ipv4Addr = Ipv4Addr::new(10, 76, 0, 3);
pub const C1: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 2);
pub const C2: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 3);
/// An address of the peer namespace outside the VPN subnet.
pub const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const FAR: Ipv4Addr = Ipv4Addr::new(10, 76, 0, 5);
pub const FAR_MTU: u32 = 1200;
/// The router's and a neighbour's address on the WAN link.
pub const ROUTER_WAN: Ipv4Addr = Ipv4Addr::new(172, 31, 0, 2);
pub const WAN_HOST: Ipv4Addr = Ipv4Addr::new(172, 31, 0, 1);
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
pub const MTU: u16 = 1400;
/// The port mappings of every topology: (protocol, public port, container endpoint).
pub const MAPPINGS: [(Protocol, u16, SocketAddrV4); 4] = [
    (Protocol::Tcp, 49152, SocketAddrV4::new(C1, 8888)),
    (Protocol::Udp, 49153, SocketAddrV4::new(C1, 9000)),
    (Protocol::Tcp, 49160, SocketAddrV4::new(C2, 8888)),
    (Protocol::Udp, 49160, SocketAddrV4::new(C2, 8888)),
];

pub fn name(s: &str) -> IfName {
    IfName::new(s).expect("name")
}

#[derive(Debug)]
pub struct Topology {
    pub peer: TestNs,
    /// A host behind the peer, across a hop with a smaller MTU.
    pub far: TestNs,
    pub router: TestNs,
    pub c1: TestNs,
    pub c2: TestNs,
    /// The outside world (the Docker network in production), on the router's eth0.
    pub wan: TestNs,
    pub dataplane: Option<Dataplane>,
    /// The loop of [`Mode::BareTun`].
    bare: Option<std::thread::JoinHandle<()>>,
    pub rt: tokio::runtime::Runtime,
}

/// What forwards between the tunnel and the containers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// algonet's userspace router on a TUN device, with or without offload, reading the device
    /// for up to `busy_poll_us` once its queue ran empty before it sleeps, with `queues` queues
    /// (and routers).
    Algonet {
        offload: bool,
        busy_poll_us: u64,
        queues: usize,
    },
    /// The kernel with the iptables rules vantage6 4.14 writes (per-port DNAT, MASQUERADE):
    /// the baseline of the side-by-side benchmark.
    Kernel,
    /// The hub's plumbing as algonet's, but on the TUN device (with offload) a loop that writes
    /// every packet back unchanged: one blocking read and one write per packet the kernel hands
    /// over, no decision, no translation, no merge. What any router on a TUN device pays
    /// before it decides anything. Nothing translates, so peers address the containers
    /// directly (see [`Topology::reach`]).
    BareTun,
}

impl Topology {
    pub fn new(tag: &str, mode: Mode) -> Topology {
        let mut t = Topology {
            peer: TestNs::new(&format!("{tag}-p")),
            far: TestNs::new(&format!("{tag}-f")),
            router: TestNs::new(&format!("{tag}-r")),
            c1: TestNs::new(&format!("{tag}-a")),
            c2: TestNs::new(&format!("{tag}-b")),
            wan: TestNs::new(&format!("{tag}-w")),
            dataplane: None,
            bare: None,
            rt: tokio::runtime::Runtime::new().expect("runtime"),
        };
        let peer_fd = t.peer.ns.fd().try_clone_to_owned().expect("fd");
        let wan_fd = t.wan.ns.fd().try_clone_to_owned().expect("fd");
        t.router
            .ns
            .run(move || async move {
                let nl = Netlink::connect()?;
                nl.add_veth(&name("eth0"), &name("eth0"), wan_fd.as_fd(), 1500)
                    .await?;
                nl.configure(&name("eth0"), None, None).await?;
                nl.add_address(&name("eth0"), ROUTER_WAN, 24).await?;
                nl.add_veth(
                    &name("vpn0"),
                    &name("eth0"),
                    peer_fd.as_fd(),
                    u32::from(MTU),
                )
                .await
            })
            .expect("router ns")
            .expect("tunnel stand-in");
        if let Mode::Algonet {
            offload,
            busy_poll_us,
            queues,
        } = mode
        {
            let config = DataplaneConfig {
                tun: name("algonet0"),
                offload,
                mtu: MTU,
                txqueuelen: 1000,
                busy_poll: std::time::Duration::from_micros(busy_poll_us),
                queues,
                router: Config::default(),
            };
            // Held by the topology from here on, so a failure below still stops it.
            t.dataplane = Some(Dataplane::start(&t.router.ns, config).expect("data plane"));
        }
        if mode == Mode::BareTun {
            t.bare = Some(bare_loop(&t.router));
        }
        let router_plan = HubPlan {
            vpn_link: name("vpn0"),
            tun: name("algonet0"),
            wan: Some(name("eth0")),
            vpn_subnet: Ipv4Addr::new(10, 76, 0, 0),
            vpn_prefix_len: 16,
        };
        let runs = [(name("vr-a"), C1, &t.c1), (name("vr-b"), C2, &t.c2)].map(|(end, ip, ns)| {
            let plan = RunLinkPlan {
                hub_end: end,
                container_end: name("eth0"),
                container: ip,
                gateway: GATEWAY,
                mtu: u32::from(MTU),
            };
            (plan, ns.ns.fd().try_clone_to_owned().expect("fd"))
        });
        let plans: Vec<RunLinkPlan> = runs.iter().map(|(p, _)| p.clone()).collect();
        t.router
            .ns
            .run(move || async move {
                let nl = Netlink::connect()?;
                if mode == Mode::Kernel {
                    // vantage6: the VPN address sits on the tunnel; the kernel forwards.
                    nl.configure(&name("vpn0"), None, None).await?;
                    nl.add_address(&name("vpn0"), V, 16).await?;
                    set_sysctl("net/ipv4/ip_forward", "1")?;
                } else {
                    plan::apply_hub(&nl, &router_plan).await?;
                }
                for (run, fd) in &runs {
                    plan::add_run_link(&nl, run, fd.as_fd()).await?;
                }
                Ok::<_, LinkError>(())
            })
            .expect("router ns")
            .expect("router plumbing");
        for (p, ns) in plans.into_iter().zip([&t.c1, &t.c2]) {
            ns.ns
                .run(move || async move {
                    plan::configure_container_end(&Netlink::connect()?, &p).await
                })
                .expect("container ns")
                .expect("container plumbing");
        }
        t.peer.host("eth0", PEER, 16, None);
        t.peer.host("lo", OUTSIDE, 32, None);
        // The far host: 10.76.0.5 behind the peer, on a 1200-byte link.
        let far_fd = t.far.ns.fd().try_clone_to_owned().expect("fd");
        t.peer
            .ns
            .run(move || async move {
                let nl = Netlink::connect()?;
                nl.add_veth(&name("hop0"), &name("eth0"), far_fd.as_fd(), FAR_MTU)
                    .await?;
                nl.configure(&name("hop0"), None, None).await?;
                nl.add_route(&Route {
                    dest: FAR,
                    prefix_len: 32,
                    dev: name("hop0"),
                    via: None,
                    table: plan::TABLE_MAIN,
                })
                .await?;
                set_sysctl("net/ipv4/ip_forward", "1")
            })
            .expect("peer ns")
            .expect("hop");
        // The far host's own link is wide, so its MSS does not hide the narrow hop.
        t.far.host("eth0", FAR, 16, Some(u32::from(MTU)));
        t.wan.host("eth0", WAN_HOST, 24, None);
        t.wan
            .ns
            .run(|| async {
                let nl = Netlink::connect()?;
                // A hostile neighbour routes the VPN and the containers at the router.
                for dest in [Ipv4Addr::new(10, 76, 0, 0), Ipv4Addr::new(172, 30, 0, 0)] {
                    let via = Some(ROUTER_WAN);
                    nl.add_route(&Route {
                        dest,
                        prefix_len: 16,
                        dev: name("eth0"),
                        via,
                        table: plan::TABLE_MAIN,
                    })
                    .await?;
                }
                Ok::<_, LinkError>(())
            })
            .expect("wan ns")
            .expect("wan plumbing");
        // The real tunnel is point to point; on the veth that stands in for it, neighbours are
        // set by hand. A hostile peer also routes container addresses at the node.
        let (vpn0, eth0) = (mac(&t.router, "vpn0"), mac(&t.peer, "eth0"));
        t.peer.ip(&[
            "neigh",
            "replace",
            &V.to_string(),
            "lladdr",
            &vpn0,
            "dev",
            "eth0",
            "nud",
            "permanent",
        ]);
        t.router.ip(&[
            "neigh",
            "replace",
            &PEER.to_string(),
            "lladdr",
            &eth0,
            "dev",
            "vpn0",
            "nud",
            "permanent",
        ]);
        t.peer.ip(&[
            "route",
            "add",
            "172.30.0.0/16",
            "via",
            &V.to_string(),
            "dev",
            "eth0",
            "onlink",
        ]);
        let hop0 = mac(&t.peer, "hop0");
        let v = V.to_string();
        t.far.ip(&[
            "neigh",
            "replace",
            &v,
            "lladdr",
            &hop0,
            "dev",
            "eth0",
            "nud",
            "permanent",
        ]);
        let far = FAR.to_string();
        t.router.ip(&[
            "neigh",
            "replace",
            &far,
            "lladdr",
            &eth0,
            "dev",
            "vpn0",
            "nud",
            "permanent",
        ]);

        match mode {
            Mode::Kernel => {
                t.vantage6_rules();
                return t;
            }
            Mode::BareTun => return t,
            Mode::Algonet { .. } => {}
        }
        let h = t.handle();
        t.rt.block_on(h.with(|r| -> Result<(), netstack::Error> {
            r.set_vpn(Some(Vpn {
                address: V,
                prefix_len: 16,
                mtu: MTU,
            }))?;
            r.add_container(C1, RunId(1), 1)?;
            r.add_container(C2, RunId(2), 2)?;
            for (protocol, public_port, container) in MAPPINGS {
                let run = RunId(if *container.ip() == C1 { 1 } else { 2 });
                r.add_mapping(Mapping {
                    protocol,
                    public_port,
                    container,
                    run,
                })?;
            }
            Ok(())
        }))
        .expect("running")
        .expect("router setup");
        t
    }

    /// The rules vantage6 4.14 writes for the same mappings: DNAT per public port, MASQUERADE
    /// of the containers towards the tunnel.
    fn vantage6_rules(&self) {
        let v = V.to_string();
        let mut rules: Vec<Vec<String>> = MAPPINGS
            .iter()
            .map(|(protocol, public, container)| {
                let proto = if *protocol == Protocol::Tcp {
                    "tcp"
                } else {
                    "udp"
                };
                [
                    "-t",
                    "nat",
                    "-A",
                    "PREROUTING",
                    "-d",
                    &v,
                    "-p",
                    proto,
                    "--dport",
                    &public.to_string(),
                ]
                .iter()
                .map(|s| s.to_string())
                .chain([
                    "-j".into(),
                    "DNAT".into(),
                    "--to-destination".into(),
                    container.to_string(),
                ])
                .collect()
            })
            .collect();
        rules.push(
            [
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-s",
                "172.30.0.0/16",
                "-o",
                "vpn0",
                "-j",
                "MASQUERADE",
            ]
            .map(String::from)
            .to_vec(),
        );
        for rule in rules {
            let ok = std::process::Command::new("ip")
                .args(["netns", "exec", &self.router.name, "iptables"])
                .args(&rule)
                .status()
                .expect("run iptables");
            assert!(ok.success(), "iptables {rule:?}");
        }
    }

    /// Where a peer reaches the mapping of `public`: the node's VPN address and that port, or,
    /// where nothing translates ([`Mode::BareTun`]), the container's own endpoint.
    pub fn reach(&self, protocol: Protocol, public: u16) -> SocketAddrV4 {
        if self.bare.is_none() {
            return SocketAddrV4::new(V, public);
        }
        MAPPINGS
            .iter()
            .find(|(p, port, _)| *p == protocol && *port == public)
            .map(|(.., container)| *container)
            .expect("a mapping of that port")
    }

    pub fn handle(&self) -> DataplaneHandle {
        self.dataplane.as_ref().expect("running").handle()
    }

    pub fn drops(&self, reason: DropReason) -> u64 {
        self.rt
            .block_on(self.handle().counters())
            .expect("counters")
            .0
            .drops(reason)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        if let Some(dp) = self.dataplane.take() {
            let _ = dp.stop();
        }
        if let Some(thread) = self.bare.take() {
            // Removing the device wakes the loop's read with an error, which ends it.
            let _ = self
                .router
                .ns
                .run(|| async { Netlink::connect()?.del_link(&name("algonet0")).await });
            let _ = thread.join();
        }
    }
}

/// Creates the TUN device of [`Mode::BareTun`] in the hub namespace, with the offload settings
/// and link settings of algonet's, and starts its loop.
fn bare_loop(router: &TestNs) -> std::thread::JoinHandle<()> {
    let dev = router
        .ns
        .run(|| async {
            let dev = tun_rs::DeviceBuilder::new()
                .name("algonet0")
                .offload(true)
                .packet_information(false)
                .build_sync()
                .expect("TUN device");
            Netlink::connect()?
                .configure(&name("algonet0"), Some(u32::from(MTU)), Some(1000))
                .await?;
            Ok::<_, LinkError>(dev)
        })
        .expect("router ns")
        .expect("bare TUN device");
    std::thread::spawn(move || {
        // A virtio-net header and the largest IPv4 packet.
        let mut buf = vec![0u8; 10 + 65_535];
        while let Ok(n) = dev.recv(&mut buf) {
            // The header read is valid for the same packet written back.
            let _ = dev.send(&buf[..n]);
        }
    })
}

/// A TCP listener in `ns` that echoes one line per connection and reports who connected.
pub fn echo_server(ns: &TestNs, port: u16) -> std::sync::mpsc::Receiver<SocketAddr> {
    let listener = listen(ns, port);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { return };
            let _ = tx.send(s.peer_addr().expect("peer"));
            let mut buf = [0u8; 64];
            if let Ok(n) = s.read(&mut buf) {
                let _ = s.write_all(&buf[..n]);
            }
        }
    });
    rx
}

/// A TCP listener on `port` inside `ns`.
fn listen(ns: &TestNs, port: u16) -> TcpListener {
    ns.ns
        .run(move || async move { TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)) })
        .expect("ns")
        .expect("bind")
}

/// A TCP connection from inside `ns` to `to` (2 s to connect).
fn connect(ns: &Netns, to: SocketAddrV4) -> std::io::Result<TcpStream> {
    ns.run(move || async move { TcpStream::connect_timeout(&to.into(), Duration::from_secs(2)) })
        .expect("ns")
}

/// The line [`tcp_echo`] sends.
pub const ECHO_LINE: &[u8] = b"hello over algonet\n";

/// Connects from `ns` to `to`, sends [`ECHO_LINE`] and returns the echo.
pub fn tcp_echo(ns: &Netns, to: SocketAddrV4) -> std::io::Result<Vec<u8>> {
    let mut s = connect(ns, to)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(ECHO_LINE)?;
    let mut buf = vec![0u8; 64];
    let n = s.read(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

/// A TCP sink in `ns` for one [`send_bulk`]: the count of bytes received in order and unharmed
/// (it stops at the first chunk that differs from the echo algorithm's stream pattern).
pub fn sink(ns: &TestNs, port: u16) -> std::thread::JoinHandle<u64> {
    let listener = listen(ns, port);
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let pattern = Pattern::new();
        let mut total = 0u64;
        let mut buf = vec![0u8; Pattern::MAX_LEN];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    // Counts only what arrived in order and unharmed.
                    if buf[..n] != *pattern.at(total, n) {
                        break;
                    }
                    total += n as u64;
                }
            }
        }
        total
    })
}

/// Sends `bytes` of the echo algorithm's stream pattern over TCP from `ns` to `to` and closes.
pub fn send_bulk(ns: &TestNs, to: SocketAddrV4, bytes: usize) -> std::io::Result<()> {
    let mut s = connect(&ns.ns, to)?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    let pattern = Pattern::new();
    let mut sent = 0;
    while sent < bytes {
        let n = (bytes - sent).min(Pattern::MAX_LEN);
        s.write_all(pattern.at(sent as u64, n))?;
        sent += n;
    }
    s.shutdown(std::net::Shutdown::Write)
}

/// `ping -c 1` from a namespace.
pub fn ping(ns: &TestNs, to: Ipv4Addr) -> bool {
    std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            &to.to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run ping")
        .success()
}

pub fn udp_socket(ns: &TestNs, port: u16) -> UdpSocket {
    let s: UdpSocket = ns
        .ns
        .run(move || async move { UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)) })
        .expect("ns")
        .expect("bind udp");
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    s
}

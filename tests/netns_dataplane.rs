//! Tier 2 (root): the data plane on real Linux. A "VPN peer" namespace whose veth stands in for
//! tun0, the router namespace with the TUN device and the userspace router, and two container
//! namespaces. TCP and UDP cross for real; bypass attempts are dropped and counted.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::time::Duration;

use algonet::net::dataplane::{Dataplane, DataplaneConfig, DataplaneHandle};
use algonet::net::links::{set_sysctl, IfName, LinkError, Netlink, Route};
use algonet::net::plan::{self, RouterPlan, RunLinkPlan};
use common::{mac, privileged, TestNs};
use netstack::{Config, DropReason, Mapping, Protocol, RunId, Vpn};

const V: Ipv4Addr = Ipv4Addr::new(10, 76, 0, 2);
const PEER: Ipv4Addr = Ipv4Addr::new(10, 76, 0, 3);
const C1: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 2);
const C2: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 3);
/// An address of the peer namespace outside the VPN subnet.
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const FAR: Ipv4Addr = Ipv4Addr::new(10, 76, 0, 5);
const FAR_MTU: u32 = 1200;
const GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
const MTU: u16 = 1400;

fn name(s: &str) -> IfName {
    IfName::new(s).expect("name")
}

struct Topology {
    peer: TestNs,
    /// A host behind the peer, across a hop with a smaller MTU.
    far: TestNs,
    router: TestNs,
    c1: TestNs,
    c2: TestNs,
    dataplane: Option<Dataplane>,
    rt: tokio::runtime::Runtime,
}

impl Topology {
    fn new(tag: &str, offload: bool) -> Topology {
        let mut t = Topology {
            peer: TestNs::new(&format!("{tag}-p")),
            far: TestNs::new(&format!("{tag}-f")),
            router: TestNs::new(&format!("{tag}-r")),
            c1: TestNs::new(&format!("{tag}-a")),
            c2: TestNs::new(&format!("{tag}-b")),
            dataplane: None,
            rt: tokio::runtime::Runtime::new().expect("runtime"),
        };
        let peer_fd = t.peer.ns.fd().try_clone_to_owned().expect("fd");
        t.router
            .ns
            .run(move || async move {
                let nl = Netlink::connect()?;
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
        let config = DataplaneConfig {
            tun: name("algonet0"),
            offload,
            mtu: MTU,
            txqueuelen: 1000,
            router: Config::default(),
        };
        // Held by the topology from here on, so a failure below still stops it.
        t.dataplane = Some(Dataplane::start(&t.router.ns, config).expect("data plane"));
        let router_plan = RouterPlan {
            vpn_link: name("vpn0"),
            tun: name("algonet0"),
            wan: None,
            vpn_subnet: Ipv4Addr::new(10, 76, 0, 0),
            vpn_prefix_len: 16,
        };
        let runs = [(name("vr-a"), C1, &t.c1), (name("vr-b"), C2, &t.c2)].map(|(end, ip, ns)| {
            let plan = RunLinkPlan {
                router_end: end,
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
                plan::apply_router(&nl, &router_plan).await?;
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
        t.peer
            .ns
            .run(|| async {
                let nl = Netlink::connect()?;
                nl.configure(&name("lo"), None, None).await?;
                nl.configure(&name("eth0"), None, None).await?;
                nl.add_address(&name("eth0"), PEER, 16).await?;
                nl.add_address(&name("lo"), OUTSIDE, 32).await
            })
            .expect("peer ns")
            .expect("peer plumbing");
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
        t.far
            .ns
            .run(|| async {
                let nl = Netlink::connect()?;
                nl.configure(&name("lo"), None, None).await?;
                // The far host's own link is wide, so its MSS does not hide the narrow hop.
                nl.configure(&name("eth0"), Some(u32::from(MTU)), None)
                    .await?;
                nl.add_address(&name("eth0"), FAR, 16).await
            })
            .expect("far ns")
            .expect("far plumbing");
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

        let h = t.handle();
        t.rt.block_on(h.with(|r| -> Result<(), netstack::Error> {
            r.set_vpn(Some(Vpn {
                address: V,
                prefix_len: 16,
                mtu: MTU,
            }))?;
            r.add_container(C1, RunId(1))?;
            r.add_container(C2, RunId(2))?;
            for (protocol, public_port, container, run) in [
                (Protocol::Tcp, 49152, SocketAddrV4::new(C1, 8888), RunId(1)),
                (Protocol::Udp, 49153, SocketAddrV4::new(C1, 9000), RunId(1)),
                (Protocol::Tcp, 49160, SocketAddrV4::new(C2, 8888), RunId(2)),
            ] {
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

    fn handle(&self) -> DataplaneHandle {
        self.dataplane.as_ref().expect("running").handle()
    }

    fn drops(&self, reason: DropReason) -> u64 {
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
    }
}

/// A TCP listener in `ns` that echoes one line per connection and reports who connected.
fn echo_server(ns: &TestNs, port: u16) -> std::sync::mpsc::Receiver<SocketAddr> {
    let listener: TcpListener =
        ns.ns
            .run(move || async move {
                TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))
            })
            .expect("ns")
            .expect("bind");
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

/// Connects from `ns` to `to`, sends a line and returns the echo.
fn tcp_echo(ns: &TestNs, to: SocketAddrV4) -> std::io::Result<Vec<u8>> {
    let mut s: TcpStream = ns
        .ns
        .run(move || async move { TcpStream::connect_timeout(&to.into(), Duration::from_secs(2)) })
        .expect("ns")?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"hello over algonet\n")?;
    let mut buf = vec![0u8; 64];
    let n = s.read(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

/// A TCP sink in `ns` that counts what it receives and then answers with the count.
fn sink(ns: &TestNs, port: u16) -> std::thread::JoinHandle<u64> {
    let listener: TcpListener =
        ns.ns
            .run(move || async move {
                TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))
            })
            .expect("ns")
            .expect("bind");
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut total = 0u64;
        let mut buf = vec![0u8; 65536];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n as u64,
            }
        }
        total
    })
}

/// Sends `bytes` over TCP from `ns` to `to` and closes.
fn send_bulk(ns: &TestNs, to: SocketAddrV4, bytes: usize) -> std::io::Result<()> {
    let mut s: TcpStream = ns
        .ns
        .run(move || async move { TcpStream::connect_timeout(&to.into(), Duration::from_secs(2)) })
        .expect("ns")?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    let chunk = vec![0x5au8; 65536];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len());
        s.write_all(&chunk[..n])?;
        left -= n;
    }
    s.shutdown(std::net::Shutdown::Write)
}

/// `ping -c 1` from a namespace.
fn ping(ns: &TestNs, to: Ipv4Addr) -> bool {
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

fn udp_socket(ns: &TestNs, port: u16) -> UdpSocket {
    let s: UdpSocket = ns
        .ns
        .run(move || async move { UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)) })
        .expect("ns")
        .expect("bind udp");
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    s
}

fn traffic_crosses_the_router(offload: bool) {
    let t = Topology::new(if offload { "dpo" } else { "dpn" }, offload);
    let t = &t;

    // Peer -> node's VPN address and public port -> container 1, and back.
    let seen = echo_server(&t.c1, 8888);
    assert_eq!(
        tcp_echo(&t.peer, SocketAddrV4::new(V, 49152)).expect("peer to c1"),
        b"hello over algonet\n"
    );
    assert_eq!(
        seen.recv_timeout(Duration::from_secs(2))
            .expect("accepted")
            .ip(),
        PEER
    );

    // UDP the same way; the answer comes from the public port.
    let c1_udp = udp_socket(&t.c1, 9000);
    let peer_udp = udp_socket(&t.peer, 5000);
    peer_udp
        .send_to(b"ping", SocketAddrV4::new(V, 49153))
        .expect("send");
    let mut buf = [0u8; 16];
    let (n, from) = c1_udp.recv_from(&mut buf).expect("c1 receives");
    assert_eq!(
        (&buf[..n], from.ip()),
        (&b"ping"[..], std::net::IpAddr::V4(PEER))
    );
    c1_udp.send_to(b"pong", from).expect("answer");
    let (n, from) = peer_udp.recv_from(&mut buf).expect("peer receives");
    assert_eq!(
        (&buf[..n], from),
        (&b"pong"[..], SocketAddr::V4(SocketAddrV4::new(V, 49153)))
    );

    // Container 2 -> peer: leaves with the node's VPN address.
    let seen = echo_server(&t.peer, 7000);
    assert_eq!(
        tcp_echo(&t.c2, SocketAddrV4::new(PEER, 7000)).expect("c2 to peer"),
        b"hello over algonet\n"
    );
    assert_eq!(
        seen.recv_timeout(Duration::from_secs(2))
            .expect("accepted")
            .ip(),
        V
    );

    // Hairpin: container 2 -> own node's VPN address and public port -> container 1.
    let seen_c1 = echo_server(&t.c1, 8889);
    drop(seen_c1);
    assert_eq!(
        tcp_echo(&t.c2, SocketAddrV4::new(V, 49152)).expect("hairpin"),
        b"hello over algonet\n"
    );

    // Bypass attempts: nothing delivered, each counted.
    let before = (
        t.drops(DropReason::NotForNode),
        t.drops(DropReason::ContainerToInternal),
        t.drops(DropReason::OutsideVpn),
    );
    let _internal = echo_server(&t.c2, 8888);
    assert!(
        tcp_echo(&t.peer, SocketAddrV4::new(C1, 8888)).is_err(),
        "peer reached a container's internal address"
    );
    assert!(
        tcp_echo(&t.c1, SocketAddrV4::new(C2, 8888)).is_err(),
        "container reached another container"
    );
    assert!(
        tcp_echo(&t.c1, SocketAddrV4::new(OUTSIDE, 7000)).is_err(),
        "container reached outside the VPN"
    );
    let after = (
        t.drops(DropReason::NotForNode),
        t.drops(DropReason::ContainerToInternal),
        t.drops(DropReason::OutsideVpn),
    );
    assert!(
        after.0 > before.0 && after.1 > before.1 && after.2 > before.2,
        "{before:?} -> {after:?}"
    );

    // Ping: the node answers for its VPN address; a container pings a peer as the node.
    assert!(ping(&t.peer, V), "peer pings the node");
    assert!(ping(&t.c2, PEER), "container pings the peer");

    // A 60 KB datagram, fragmented on the way, arrives whole.
    let big: Vec<u8> = (0..60_000u32).map(|i| (i % 251) as u8).collect();
    peer_udp
        .send_to(&big, SocketAddrV4::new(V, 49153))
        .expect("send big");
    let mut got = vec![0u8; 65_536];
    let (n, _) = c1_udp.recv_from(&mut got).expect("big datagram");
    assert_eq!(&got[..n], &big[..]);

    // Bulk TCP both ways; with offload the router sees GSO super-packets, not MTU-sized ones.
    let before = t.rt.block_on(t.handle().counters()).expect("counters").0;
    let done = sink(&t.c1, 8890);
    t.rt.block_on(t.handle().with(|r| {
        r.add_mapping(Mapping {
            protocol: Protocol::Tcp,
            public_port: 49170,
            container: SocketAddrV4::new(C1, 8890),
            run: RunId(1),
        })
    }))
    .expect("running")
    .expect("mapping");
    send_bulk(&t.peer, SocketAddrV4::new(V, 49170), 8 << 20).expect("bulk to c1");
    assert_eq!(done.join().expect("sink"), 8 << 20);
    let done = sink(&t.peer, 7001);
    send_bulk(&t.c2, SocketAddrV4::new(PEER, 7001), 8 << 20).expect("bulk to peer");
    assert_eq!(done.join().expect("sink"), 8 << 20);
    let after = t.rt.block_on(t.handle().counters()).expect("counters").0;
    let packets: u64 =
        after.forwarded_packets.iter().sum::<u64>() - before.forwarded_packets.iter().sum::<u64>();
    let bytes: u64 =
        after.forwarded_bytes.iter().sum::<u64>() - before.forwarded_bytes.iter().sum::<u64>();
    if offload {
        assert!(
            bytes / packets > u64::from(MTU),
            "no super-packets: {bytes} bytes in {packets} packets"
        );
    } else {
        assert!(bytes / packets <= u64::from(MTU));
    }

    // Path MTU discovery through the NAT: the peer's hop to the far host carries only 1200
    // bytes; its "fragmentation needed" reaches the container translated, and the transfer
    // completes instead of stalling.
    let done = sink(&t.far, 7002);
    send_bulk(&t.c1, SocketAddrV4::new(FAR, 7002), 2 << 20).expect("bulk across the small hop");
    assert_eq!(done.join().expect("sink"), 2 << 20);
    let learned = t.c1.ip(&["route", "get", &FAR.to_string()]);
    assert!(
        learned.contains("mtu 1200"),
        "the container did not learn the path MTU: {learned}"
    );

    // Removing the mapping stops it at once: the next connection is refused by the router.
    let removed =
        t.rt.block_on(t.handle().with(|r| r.remove_mapping(Protocol::Tcp, 49152)))
            .expect("running");
    assert!(removed.is_some());
    let err = tcp_echo(&t.peer, SocketAddrV4::new(V, 49152)).expect_err("mapping removed");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
}

/// The host's firewall rules, without comments and packet counters (which move by themselves).
fn firewall() -> String {
    let run = |cmd: &str, args: &[&str]| {
        let out = std::process::Command::new(cmd)
            .args(args)
            .output()
            .expect("run firewall dump");
        assert!(out.status.success(), "{cmd} {args:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split(" [").next().unwrap_or(l).to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    format!(
        "{}\n{}",
        run("iptables-save", &[]),
        run("nft", &["list", "ruleset"])
    )
}

fn leftovers(tag: &str) -> Vec<String> {
    let ours = format!("an-{tag}-");
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&ours))
                .collect()
        })
        .unwrap_or_default()
}

fn crosses_and_cleans_up(offload: bool) {
    let tag = if offload { "dpo" } else { "dpn" };
    let rules_before = firewall();
    traffic_crosses_the_router(offload);
    assert_eq!(
        leftovers(tag),
        Vec::<String>::new(),
        "namespaces left behind"
    );
    assert_eq!(firewall(), rules_before, "the host firewall changed");
}

#[test]
fn traffic_crosses_the_router_with_offload() {
    if privileged("traffic_crosses_the_router_with_offload") {
        crosses_and_cleans_up(true);
    }
}

#[test]
fn traffic_crosses_the_router_without_offload() {
    if privileged("traffic_crosses_the_router_without_offload") {
        crosses_and_cleans_up(false);
    }
}

//! Tier 2 (root): the data plane on real Linux. A "VPN peer" namespace whose veth stands in for
//! tun0, the hub namespace with the TUN device and the userspace router, and two container
//! namespaces. TCP and UDP cross for real; bypass attempts are dropped and counted.

use algonet_testkit as common;

use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

use algonet::net::links::Netlink;
use algonet::net::plan::{self, HubPlan, RunLinkPlan};
use algonet::node::config::DEFAULT_BUSY_POLL_US;
use common::topology::*;
use common::{firewall, privileged};
use netstack::{DropReason, Mapping, Protocol, RunId};

fn traffic_crosses_the_router(tag: &str, mode: Mode) {
    let Mode::Algonet {
        offload, queues, ..
    } = mode
    else {
        unreachable!("the router's own test");
    };
    let t = Topology::new(tag, mode);
    let t = &t;

    // Peer -> node's VPN address and public port -> container 1, and back.
    let seen = echo_server(&t.c1, 8888);
    assert_eq!(
        tcp_echo(&t.peer.ns, SocketAddrV4::new(V, 49152)).expect("peer to c1"),
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
        tcp_echo(&t.c2.ns, SocketAddrV4::new(PEER, 7000)).expect("c2 to peer"),
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
        tcp_echo(&t.c2.ns, SocketAddrV4::new(V, 49152)).expect("hairpin"),
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
        tcp_echo(&t.peer.ns, SocketAddrV4::new(C1, 8888)).is_err(),
        "peer reached a container's internal address"
    );
    assert!(
        tcp_echo(&t.c1.ns, SocketAddrV4::new(C2, 8888)).is_err(),
        "container reached another container"
    );
    assert!(
        tcp_echo(&t.c1.ns, SocketAddrV4::new(OUTSIDE, 7000)).is_err(),
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
    // Without offload it sees MTU-sized packets, and the kernel merges them again (GRO) after
    // the router wrote them: container 1 receives fewer, larger packets.
    let received = |what: &str| -> u64 {
        let v = t.c1.sysfs(&format!("class/net/eth0/statistics/rx_{what}"));
        v.parse().expect("counter")
    };
    // 8 MiB from the peer to a new mapping of container 1's `port`, every byte arriving.
    let bulk_to_c1 = |public_port: u16, port: u16| {
        let done = sink(&t.c1, port);
        t.rt.block_on(t.handle().with(move |r| {
            r.add_mapping(Mapping {
                protocol: Protocol::Tcp,
                public_port,
                container: SocketAddrV4::new(C1, port),
                run: RunId(1),
            })
        }))
        .expect("running")
        .expect("mapping");
        send_bulk(&t.peer, SocketAddrV4::new(V, public_port), 8 << 20).expect("bulk to c1");
        assert_eq!(done.join().expect("sink"), 8 << 20);
    };
    let c1_before = (received("bytes"), received("packets"));
    let before = t.rt.block_on(t.handle().counters()).expect("counters").0;
    bulk_to_c1(49170, 8890);
    let c1_bytes = received("bytes") - c1_before.0;
    let c1_packets = received("packets") - c1_before.1;
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
        let flags = t.router.sysfs("class/net/algonet0/tun_flags");
        let flags = i64::from_str_radix(flags.trim_start_matches("0x"), 16).expect("tun_flags");
        assert_ne!(flags & i64::from(libc::IFF_NAPI), 0, "TUN without IFF_NAPI");
        assert_eq!(
            t.router.sysfs("class/net/algonet0/gro_flush_timeout"),
            "5000000"
        );
        assert!(
            c1_bytes / c1_packets > 4 * u64::from(MTU),
            "not merged: container 1 received {c1_bytes} bytes in {c1_packets} packets"
        );
    }

    // Single segments are merged before they are written, checksums verified first: from the
    // tunnel they come one at a time with complete checksums (OpenVPN's tun0 has no offload),
    // from a veth that stops segmenting one at a time with partial checksums, which the router
    // completes. Either way container 1 receives fewer, larger packets, every byte in order.
    if offload {
        for (public_port, port, features) in [
            (49171, 8891, &["tso", "off", "gso", "off"][..]),
            (49172, 8892, &["tx", "off"][..]),
        ] {
            t.peer.ethtool("eth0", features);
            let c1_before = received("packets");
            let before = t.rt.block_on(t.handle().counters()).expect("counters").0;
            bulk_to_c1(public_port, port);
            let after = t.rt.block_on(t.handle().counters()).expect("counters").0;
            let vpn = netstack::Side::Vpn as usize;
            let (read_bytes, read_packets) = (
                after.forwarded_bytes[vpn] - before.forwarded_bytes[vpn],
                after.forwarded_packets[vpn] - before.forwarded_packets[vpn],
            );
            assert!(
                read_bytes / read_packets <= u64::from(MTU),
                "the peer still sent super-packets: {read_bytes} bytes in {read_packets} packets"
            );
            let c1_packets = received("packets") - c1_before;
            assert!(
                4 * c1_packets <= read_packets,
                "not merged ({features:?} in the peer): the router read {read_packets} packets, \
                 container 1 received {c1_packets}"
            );
            // Equal datagrams of one flow may be merged as well (where the kernel has USO);
            // each still arrives alone, whole and in order.
            for i in 0..50u8 {
                peer_udp
                    .send_to(&[i; 1000], SocketAddrV4::new(V, 49153))
                    .expect("send");
            }
            for i in 0..50u8 {
                let (n, _) = c1_udp.recv_from(&mut got).expect("datagram of the burst");
                assert_eq!(&got[..n], &[i; 1000][..], "datagram {i}");
            }
        }
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

    // From the WAN link nothing is forwarded: dropped by the router and counted.
    let before = t.drops(DropReason::UnknownSource);
    assert!(
        tcp_echo(&t.wan.ns, SocketAddrV4::new(V, 49152)).is_err(),
        "WAN reached a mapped port"
    );
    assert!(
        tcp_echo(&t.wan.ns, SocketAddrV4::new(C1, 8888)).is_err(),
        "WAN reached a container"
    );
    assert!(t.drops(DropReason::UnknownSource) >= before + 2);

    // A container opens UDP to a peer: it leaves from the node's VPN address.
    let c2_udp = udp_socket(&t.c2, 40123);
    c2_udp
        .send_to(b"hi", SocketAddrV4::new(PEER, 5000))
        .expect("send");
    let (_, from) = peer_udp.recv_from(&mut buf).expect("peer receives");
    assert_eq!(
        from,
        SocketAddr::V4(SocketAddrV4::new(V, 40123)),
        "source port kept, address translated"
    );

    // One send of ten datagrams with UDP segmentation offload (UDP_SEGMENT): with offload the
    // router gets them as one UDP GSO packet (the device takes USO where the kernel has it) and
    // rewrites it whole; the peer receives ten datagrams, each whole, in order, from the node.
    let segment: libc::c_int = 1000;
    // SAFETY: a valid descriptor, option and option length.
    let set = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&c2_udp),
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            std::ptr::addr_of!(segment).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(set, 0, "UDP_SEGMENT: {}", std::io::Error::last_os_error());
    let burst: Vec<u8> = (0..10_000u32).map(|i| (i / 1000) as u8).collect();
    c2_udp
        .send_to(&burst, SocketAddrV4::new(PEER, 5000))
        .expect("send a segmented burst");
    for i in 0..10u8 {
        let (n, from) = peer_udp.recv_from(&mut got).expect("datagram of the burst");
        assert_eq!(
            (&got[..n], from),
            (&[i; 1000][..], SocketAddr::V4(SocketAddrV4::new(V, 40123))),
            "datagram {i}"
        );
    }

    // With several queues, connections spread over them: each queue's router forwarded
    // packets, and a stream of short connections both ways each carry their echo.
    if queues > 1 {
        let flags = t.router.sysfs("class/net/algonet0/tun_flags");
        let flags = i64::from_str_radix(flags.trim_start_matches("0x"), 16).expect("tun_flags");
        assert_ne!(
            flags & i64::from(libc::IFF_MULTI_QUEUE),
            0,
            "TUN without IFF_MULTI_QUEUE"
        );
        for _ in 0..16 {
            assert_eq!(
                tcp_echo(&t.peer.ns, SocketAddrV4::new(V, 49152)).expect("peer to c1"),
                b"hello over algonet\n"
            );
            assert_eq!(
                tcp_echo(&t.c2.ns, SocketAddrV4::new(PEER, 7000)).expect("c2 to peer"),
                b"hello over algonet\n"
            );
        }
        let s = t.rt.block_on(t.handle().snapshot()).expect("running");
        assert_eq!(s.io_by_queue.len(), queues);
        assert!(
            s.io_by_queue.iter().all(|q| q.reads > 0 && q.writes > 0),
            "a queue stayed idle: {:?}",
            s.io_by_queue
        );
        assert_eq!(s.io.handoff_drops, 0, "{:?}", s.io);
        eprintln!("{queues} queues: {:?}", s.io_by_queue);
    }

    // Removing the mapping stops it at once and frees its state: the next connection is
    // refused by the router.
    let conns = |t: &Topology| {
        t.rt.block_on(t.handle().snapshot())
            .expect("running")
            .connections
    };
    let before = conns(t);
    let removed =
        t.rt.block_on(t.handle().with(|r| r.remove_mapping(Protocol::Tcp, 49152)))
            .expect("running");
    assert!(removed.is_some());
    assert!(
        conns(t) < before,
        "connections of the mapping were not freed"
    );
    let err = tcp_echo(&t.peer.ns, SocketAddrV4::new(V, 49152)).expect_err("mapping removed");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");

    // Tearing down a run's link and the router's rules leaves nothing of ours behind.
    let run_b = RunLinkPlan {
        hub_end: name("vr-b"),
        container_end: name("eth0"),
        container: C2,
        gateway: GATEWAY,
        mtu: u32::from(MTU),
    };
    let router_plan = HubPlan {
        vpn_link: name("vpn0"),
        tun: name("algonet0"),
        wan: Some(name("eth0")),
        vpn_subnet: std::net::Ipv4Addr::new(10, 76, 0, 0),
        vpn_prefix_len: 16,
    };
    let errors = t
        .router
        .ns
        .run(move || async move {
            let nl = Netlink::connect().expect("netlink");
            let mut errors = plan::remove_run_link(&nl, &run_b).await;
            errors.extend(plan::remove_run_link(&nl, &run_b).await);
            errors.extend(plan::teardown_hub(&nl, &router_plan).await);
            errors
                .into_iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
        })
        .expect("router ns");
    assert!(errors.is_empty(), "{errors:?}");
    assert!(!t.router.ip(&["link"]).contains("vr-b"));
    assert!(
        !t.c2.ip(&["link"]).contains("eth0"),
        "the container end went with the router end"
    );
    let rules = t.router.ip(&["rule"]);
    assert!(rules.starts_with("0:\tfrom all lookup local"), "{rules}");
    assert!(!rules.contains("vr-b"), "{rules}");
    for gone in ["100:", "200:", "300:"] {
        assert!(!rules.lines().any(|l| l.starts_with(gone)), "{rules}");
    }
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

/// With one queue as the node runs it by default (no busy-polling); with several, polling for
/// 100 us, so both ways of waiting for packets cross every flow.
fn crosses_and_cleans_up(offload: bool, queues: usize) {
    let tag = format!(
        "dataplane-{}offload-{queues}q",
        if offload { "" } else { "no-" }
    );
    let tag = tag.as_str();
    let busy_poll_us = if queues == 1 {
        DEFAULT_BUSY_POLL_US
    } else {
        100
    };
    let rules_before = firewall();
    traffic_crosses_the_router(
        tag,
        Mode::Algonet {
            offload,
            busy_poll_us,
            queues,
        },
    );
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
        crosses_and_cleans_up(true, 1);
    }
}

#[test]
fn traffic_crosses_the_router_without_offload() {
    if privileged("traffic_crosses_the_router_without_offload") {
        crosses_and_cleans_up(false, 1);
    }
}

/// The same with a multi-queue device and a router per queue: every flow above (TCP, UDP,
/// ping, fragments, ICMP errors of path MTU discovery, hairpin, bulk both ways) reaches the
/// router of its connection, whichever queue the kernel put it on.
#[test]
fn traffic_crosses_two_queues_with_offload() {
    if privileged("traffic_crosses_two_queues_with_offload") {
        crosses_and_cleans_up(true, 2);
    }
}

#[test]
fn traffic_crosses_three_queues_without_offload() {
    if privileged("traffic_crosses_three_queues_without_offload") {
        crosses_and_cleans_up(false, 3);
    }
}

/// What the router merged for delivery leaves as soon as the device's queue runs empty, not when
/// the busy-poll window ends: with a window longer than the sockets' 2 s timeouts, datagrams
/// still cross both ways at once (each one alone, so each one merged on its own).
#[test]
fn a_lone_packet_is_not_held_for_the_poll_window() {
    if !privileged("a_lone_packet_is_not_held_for_the_poll_window") {
        return;
    }
    let t = Topology::new(
        "dataplane-poll",
        Mode::Algonet {
            offload: true,
            busy_poll_us: 4_000_000,
            queues: 1,
        },
    );
    let peer_udp = udp_socket(&t.peer, 5000);
    let c1_udp = udp_socket(&t.c1, 9000);
    let mut got = [0u8; 64];
    for i in 0..3u8 {
        peer_udp
            .send_to(&[i; 32], SocketAddrV4::new(V, 49153))
            .expect("send");
        let (n, from) = c1_udp.recv_from(&mut got).expect("the container receives");
        assert_eq!(&got[..n], &[i; 32][..]);
        c1_udp.send_to(&[i + 100; 16], from).expect("reply");
        let (n, _) = peer_udp
            .recv_from(&mut got)
            .expect("the peer receives the reply");
        assert_eq!(&got[..n], &[i + 100; 16][..]);
    }
}

//! Tier 2 (root): veths born in another namespace, addresses, routes, policy rules and sysctls
//! through rtnetlink, checked with a real TCP connection and from outside with `ip`.

use algonet_testkit as common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};

use algonet::net::links::{set_sysctl, IfName, Netlink, Route, Rule};
use common::{privileged, TestNs};

const GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
const CONTAINER: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 2);
const MAIN: u32 = 254;

fn name(s: &str) -> IfName {
    IfName::new(s).expect("valid name")
}

#[test]
fn interface_names_are_checked() {
    assert!(IfName::new("vr-123456789012").is_ok());
    for bad in ["", "vr-1234567890123", "a/b", "a b", "x:1", ".."] {
        let e = IfName::new(bad).expect_err("must be refused");
        assert!(e.to_string().contains("invalid interface name"), "{e}");
    }
}

#[test]
fn a_veth_born_in_the_container_namespace_carries_tcp_to_the_gateway() {
    if !privileged("a_veth_born_in_the_container_namespace_carries_tcp_to_the_gateway") {
        return;
    }
    let router = TestNs::new("veth-born-in-container-router");
    let ctr = TestNs::new("veth-born-in-container-sandbox");
    let ctr_fd = ctr.ns.fd().try_clone_to_owned().expect("dup fd");

    router
        .ns
        .run(move || async move {
            let nl = Netlink::connect()?;
            nl.add_veth(
                &name("vr-t1"),
                &name("eth0"),
                std::os::fd::AsFd::as_fd(&ctr_fd),
                1400,
            )
            .await?;
            nl.configure(&name("vr-t1"), None, Some(1000)).await?;
            nl.configure(&name("lo"), None, None).await?;
            nl.add_address(&name("vr-t1"), GATEWAY, 32).await?;
            nl.add_route(&Route {
                dest: CONTAINER,
                prefix_len: 32,
                dev: name("vr-t1"),
                via: None,
                table: MAIN,
            })
            .await?;
            nl.add_rule(&Rule {
                priority: 150,
                iif: Some(name("vr-t1")),
                table: 101,
            })
            .await?;
            set_sysctl("net/ipv4/ip_forward", "1")?;
            Ok::<_, algonet::net::links::LinkError>(())
        })
        .expect("enter router ns")
        .expect("router plumbing");

    ctr.ns
        .run(|| async {
            let nl = Netlink::connect()?;
            nl.configure(&name("eth0"), None, None).await?;
            nl.configure(&name("lo"), None, None).await?;
            nl.add_address(&name("eth0"), CONTAINER, 32).await?;
            nl.add_route(&Route {
                dest: GATEWAY,
                prefix_len: 32,
                dev: name("eth0"),
                via: None,
                table: MAIN,
            })
            .await?;
            nl.add_route(&Route {
                dest: Ipv4Addr::UNSPECIFIED,
                prefix_len: 0,
                dev: name("eth0"),
                via: Some(GATEWAY),
                table: MAIN,
            })
            .await?;
            Ok::<_, algonet::net::links::LinkError>(())
        })
        .expect("enter container ns")
        .expect("container plumbing");

    // Seen from outside: the container end exists only in the container namespace, with its MTU.
    let links = ctr.ip(&["-j", "link", "show", "eth0"]);
    assert!(links.contains("\"mtu\":1400"), "{links}");
    assert!(router
        .ip(&["-j", "link", "show", "vr-t1"])
        .contains("\"txqlen\":1000"));
    assert!(router
        .ip(&["rule", "show"])
        .contains("150:\tfrom all iif vr-t1 lookup 101"));
    let routes = ctr.ip(&["route", "show"]);
    assert!(
        routes.contains("default via 169.254.1.1 dev eth0 proto static onlink"),
        "{routes}"
    );

    // A real TCP connection from the container to the gateway address.
    let listener: TcpListener = router
        .ns
        .run(|| async { TcpListener::bind(SocketAddrV4::new(GATEWAY, 18080)) })
        .expect("enter router ns")
        .expect("bind on the gateway");
    let server = std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().expect("accept");
        let mut line = [0u8; 5];
        s.read_exact(&mut line).expect("read");
        s.write_all(&line).expect("echo");
        peer
    });
    let mut client: TcpStream = ctr
        .ns
        .run(|| async { TcpStream::connect(SocketAddrV4::new(GATEWAY, 18080)) })
        .expect("enter container ns")
        .expect("connect to the gateway");
    client.write_all(b"hello").expect("write");
    let mut back = [0u8; 5];
    client.read_exact(&mut back).expect("read back");
    assert_eq!(&back, b"hello");
    assert_eq!(
        server.join().expect("server").ip(),
        std::net::IpAddr::V4(CONTAINER)
    );

    // Teardown through the router end removes both ends and is idempotent.
    router
        .ns
        .run(|| async {
            let nl = Netlink::connect()?;
            nl.del_link(&name("vr-t1")).await?;
            nl.del_link(&name("vr-t1")).await?;
            let rule = Rule {
                priority: 150,
                iif: Some(name("vr-t1")),
                table: 101,
            };
            nl.del_rule(&rule).await?;
            nl.del_rule(&rule).await
        })
        .expect("enter router ns")
        .expect("teardown");
    assert!(!ctr.ip(&["link"]).contains("eth0"));
    assert!(!router.ip(&["rule", "show"]).contains("lookup 101"));
}

/// The hub's control thread: jobs run in its namespace with the state it made there (their
/// sysctls and links are that namespace's), one after another; a job that panics fails only its
/// own call, and the thread serves the next one.
#[test]
fn a_resident_thread_serves_jobs_in_its_namespace_past_a_panic() {
    if !privileged("a_resident_thread_serves_jobs_in_its_namespace_past_a_panic") {
        return;
    }
    let t = TestNs::new("resident-thread");
    let host = || std::fs::read_to_string("/proc/sys/net/ipv4/conf/lo/rp_filter").expect("host");
    let before = host();
    // A value the host's lo does not have, so the namespace's is told apart.
    let value: &'static str = if before.trim() == "1" { "2" } else { "1" };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let resident = algonet::net::netns::Resident::start(&t.ns, Netlink::connect)
            .await
            .expect("thread")
            .expect("netlink");
        let panicked = resident
            .run(
                |_nl| -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> {
                    Box::pin(async { panic!("a job that breaks") })
                },
            )
            .await;
        assert!(panicked.is_err(), "a panicking job answers an error");
        let lo = resident
            .run(move |nl| {
                Box::pin(async move {
                    nl.configure(&name("lo"), None, None).await?;
                    set_sysctl("net/ipv4/conf/lo/rp_filter", value)?;
                    nl.index(&name("lo")).await
                })
            })
            .await
            .expect("the thread serves on")
            .expect("netlink in the namespace");
        assert!(lo.is_some());
    });
    // The sysctl was written in the test's namespace, not the host's.
    let inside = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &t.name,
            "sysctl",
            "-n",
            "net.ipv4.conf.lo.rp_filter",
        ])
        .output()
        .expect("ip netns exec");
    assert_eq!(String::from_utf8_lossy(&inside.stdout).trim(), value);
    assert_eq!(host(), before, "the host's sysctl changed");
}

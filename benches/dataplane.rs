//! Side by side, on the same namespaces and the same traffic: (a) the kernel with the iptables
//! rules vantage6 4.14 writes, and a bare TUN loop that writes every packet back unchanged (the
//! floor of any router on a TUN device, see `Mode::BareTun`), (b) algonet with offload as the
//! node runs it by default (no busy-polling, one queue), and the same polling the TUN for 100 us
//! once its queue ran empty, each also with a two-queue device (a router per queue), (c) algonet
//! without offload, also with and without busy-polling. iperf3 for TCP (one stream each way, 8
//! streams) and UDP packet rates (1400 and 64 bytes), the round trips of a small
//! request/response and of a 256 KB one, and the machine's CPU for one stream at the tunnel's
//! rate in the tunnel's shape. Prints one table with ratios to (a).
//!
//! Needs root and iperf3: `./scripts/bench-dataplane.sh` (installs what is missing, then runs
//! `cargo bench --bench dataplane`). `SECONDS_PER_RUN` sets each iperf3 run's length (default 5),
//! `ROUNDS` the number of interleaved rounds whose median is reported (default 3), `MODES` a
//! subset of the modes (see `main`).

use algonet_testkit as common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use algonet::node::config::DEFAULT_BUSY_POLL_US;
use common::topology::{Mode, Topology};
use common::TestNs;
use netstack::Protocol;

/// The iperf3 server runs in container 2, reached at the node's VPN address and public port
/// 49160 (TCP and UDP); the echo for latency in container 1 at 49152.
const IPERF_PORT: u16 = 49160;
const ECHO_PORT: u16 = 49152;
const ROUND_TRIPS: usize = 20_000;
/// The busy-poll window of the polling modes.
const POLL_US: u64 = 100;
/// A message of the size of a model update, sent in bursts as the congestion window allows:
/// what a data plane that holds packets back to merge them would delay.
const BULK: usize = 256 * 1024;
const BULK_ROUND_TRIPS: usize = 1_000;
/// The rate of the tunnel-shaped stream in Mbit/s: about what OpenVPN carries on one core here.
const TUNNEL_MBITS: u32 = 500;
/// The longest wait for the machine to idle before a mode is measured.
const SETTLE_FOR: Duration = Duration::from_secs(30);

struct IperfServer(Child);

impl IperfServer {
    fn start(ns: &TestNs) -> IperfServer {
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "iperf3", "-s", "-p", "8888"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start iperf3 server");
        std::thread::sleep(Duration::from_millis(300));
        IperfServer(child)
    }
}

impl Drop for IperfServer {
    fn drop(&mut self) {
        // Ours, by PID.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn iperf(t: &Topology, seconds: u64, args: &[&str]) -> serde_json::Value {
    // The TCP and the UDP mapping of the port lead to the same server.
    let to = t.reach(Protocol::Tcp, IPERF_PORT);
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &t.peer.name,
            "iperf3",
            "-c",
            &to.ip().to_string(),
            "-p",
            &to.port().to_string(),
        ])
        .args(["-t", &seconds.to_string(), "-J"])
        .args(args)
        .output()
        .expect("run iperf3");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "iperf3 {args:?}: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The machine's busy CPU over `f`, in cores.
fn busy_cores(f: impl FnOnce()) -> f64 {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    let (start, idle) = (Instant::now(), common::idle_seconds());
    f();
    cpus - (common::idle_seconds() - idle) / start.elapsed().as_secs_f64()
}

/// Waits until the machine idles (under a tenth of a core over half a second), for at most
/// `SETTLE_FOR`. The kernel dismantles a removed namespace in the background, which takes
/// most of a core for seconds; a mode measured during that pays for the one before it.
fn settle() {
    let start = Instant::now();
    while busy_cores(|| std::thread::sleep(Duration::from_millis(500))) > 0.1 {
        if start.elapsed() > SETTLE_FOR {
            eprintln!("the machine did not idle within {SETTLE_FOR:?}; measuring anyway");
            return;
        }
    }
}

/// One stream from the peer at the tunnel's rate and in its shape: single packets with
/// complete checksums, evenly spaced (the sender's socket is paced), as OpenVPN writes them to
/// tun0 (the peer's link stops segmenting and checksumming). Every mode carries the same
/// traffic, so what the machine's CPU adds up to tells what each one's hop costs. Last of a
/// topology's runs: the peer's link stays so.
fn tunnel_shaped_cores(t: &Topology, seconds: u64) -> f64 {
    let off = Command::new("ip")
        .args(["netns", "exec", &t.peer.name, "ethtool", "-K", "eth0"])
        .args(["tso", "off", "gso", "off", "tx", "off"])
        .stdout(Stdio::null())
        .status()
        .expect("run ethtool");
    assert!(off.success(), "ethtool -K eth0 in the peer");
    settle();
    let mut received = 0.0;
    let rate = format!("{TUNNEL_MBITS}M");
    let cores = busy_cores(|| received = gbits(&iperf(t, seconds, &["--fq-rate", &rate])));
    assert!(
        received * 1e3 > 0.9 * f64::from(TUNNEL_MBITS),
        "the stream fell short of its rate ({received:.3} Gbit/s): the figure would not compare"
    );
    cores
}

fn gbits(v: &serde_json::Value) -> f64 {
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0)
        / 1e9
}

fn kpps(v: &serde_json::Value) -> f64 {
    let s = &v["end"]["sum"];
    let received = s["packets"].as_f64().unwrap_or(0.0) - s["lost_packets"].as_f64().unwrap_or(0.0);
    received / s["seconds"].as_f64().unwrap_or(1.0) / 1e3
}

/// Round trips of a `size`-byte request and its echo, in microseconds: (p50, p99).
fn latency(t: &Topology, size: usize, round_trips: usize) -> (f64, f64) {
    let listener: TcpListener =
        t.c1.ns
            .run(|| async { TcpListener::bind("0.0.0.0:8888") })
            .expect("ns")
            .expect("bind");
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_nodelay(true).expect("nodelay");
        let mut buf = vec![0u8; size];
        while s.read_exact(&mut buf).is_ok() {
            if s.write_all(&buf).is_err() {
                break;
            }
        }
    });
    let to = t.reach(Protocol::Tcp, ECHO_PORT);
    let mut s: TcpStream = t
        .peer
        .ns
        .run(move || async move { TcpStream::connect_timeout(&to.into(), Duration::from_secs(2)) })
        .expect("ns")
        .expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let mut buf = vec![7u8; size];
    let mut rtts: Vec<f64> = (0..round_trips)
        .map(|_| {
            let start = Instant::now();
            s.write_all(&buf).expect("request");
            s.read_exact(&mut buf).expect("response");
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    drop(s);
    let _ = server.join();
    rtts.sort_by(f64::total_cmp);
    (rtts[round_trips / 2], rtts[round_trips * 99 / 100])
}

struct Row {
    name: &'static str,
    unit: &'static str,
    values: Vec<f64>,
    higher_is_better: bool,
}

fn main() {
    if !common::privileged("dataplane bench") {
        return;
    }
    let seconds: u64 = std::env::var("SECONDS_PER_RUN")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    // `MODES=no-offload` (or any comma-separated subset of kernel, bare-tun, offload, offload-poll,
    // offload-2q, offload-poll-2q, no-offload, no-offload-poll) runs only those, for working
    // on one of them; ratios are then to the first.
    let wanted = std::env::var("MODES").ok();
    let algonet = |offload, busy_poll_us, queues| Mode::Algonet {
        offload,
        busy_poll_us,
        queues,
    };
    let modes: Vec<(&str, Mode)> = [
        ("kernel", "kernel + iptables (vantage6)", Mode::Kernel),
        ("bare-tun", "a bare TUN loop (offload)", Mode::BareTun),
        (
            "offload",
            "algonet, offload",
            algonet(true, DEFAULT_BUSY_POLL_US, 1),
        ),
        (
            "offload-poll",
            "algonet, offload, busy-poll 100 us",
            algonet(true, POLL_US, 1),
        ),
        (
            "offload-2q",
            "algonet, offload, 2 queues",
            algonet(true, DEFAULT_BUSY_POLL_US, 2),
        ),
        (
            "offload-poll-2q",
            "algonet, offload, busy-poll 100 us, 2 queues",
            algonet(true, POLL_US, 2),
        ),
        (
            "no-offload",
            "algonet, no offload",
            algonet(false, DEFAULT_BUSY_POLL_US, 1),
        ),
        (
            "no-offload-poll",
            "algonet, no offload, busy-poll 100 us",
            algonet(false, POLL_US, 1),
        ),
    ]
    .into_iter()
    .filter(|(key, ..)| {
        wanted
            .as_deref()
            .is_none_or(|w| w.split(',').any(|k| k == *key))
    })
    .map(|(_, label, mode)| (label, mode))
    .collect();
    let mut rows: Vec<Row> = [
        ("TCP 1 stream, peer -> container", "Gbit/s", true),
        ("TCP 1 stream, container -> peer", "Gbit/s", true),
        ("TCP 8 streams, peer -> container", "Gbit/s", true),
        ("UDP 1400 B, received", "kpps", true),
        ("UDP 64 B, received", "kpps", true),
        ("request/response 64 B, p50", "us", false),
        ("request/response 64 B, p99", "us", false),
        ("request/response 256 KB, p50", "us", false),
        ("request/response 256 KB, p99", "us", false),
        (
            "CPU for 1 stream of 500 Mbit/s in single packets",
            "cores",
            false,
        ),
    ]
    .into_iter()
    .map(|(name, unit, higher_is_better)| Row {
        name,
        unit,
        values: Vec::new(),
        higher_is_better,
    })
    .collect();
    // Rounds interleave the modes, and each cell is the median over rounds: this machine's
    // neighbours move absolute figures by tens of percent from one minute to the next.
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let mut samples = vec![vec![Vec::new(); modes.len()]; rows.len()];
    for round in 0..rounds {
        for (i, (label, mode)) in modes.iter().enumerate() {
            eprintln!("== round {}/{rounds}: {label}", round + 1);
            let t = Topology::new(&format!("bench-dataplane-{i}"), *mode);
            settle();
            let (p50, p99) = latency(&t, 64, ROUND_TRIPS);
            let (bulk50, bulk99) = latency(&t, BULK, BULK_ROUND_TRIPS);
            let server = IperfServer::start(&t.c2);
            let results = [
                gbits(&iperf(&t, seconds, &[])),
                gbits(&iperf(&t, seconds, &["-R"])),
                gbits(&iperf(&t, seconds, &["-P", "8"])),
                kpps(&iperf(&t, seconds, &["-u", "-b", "0", "-l", "1372"])),
                kpps(&iperf(&t, seconds, &["-u", "-b", "0", "-l", "36"])),
                p50,
                p99,
                bulk50,
                bulk99,
                tunnel_shaped_cores(&t, seconds),
            ];
            drop(server);
            for (row, v) in results.into_iter().enumerate() {
                samples[row][i].push(v);
            }
        }
    }
    for (row, per_mode) in rows.iter_mut().zip(samples) {
        row.values = per_mode
            .into_iter()
            .map(|mut v| {
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            })
            .collect();
    }
    println!();
    let labels: Vec<&str> = modes.iter().map(|m| m.0).collect();
    println!("| traffic | {} |", labels.join(" | "));
    println!("|---|{}", "---|".repeat(modes.len()));
    for row in &rows {
        let base = row.values[0];
        let cells: Vec<String> = row
            .values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                if i == 0 {
                    format!("{v:.2} {}", row.unit)
                } else {
                    let ratio = if row.higher_is_better {
                        v / base
                    } else {
                        base / v
                    };
                    format!("{v:.2} {} ({ratio:.2}x)", row.unit)
                }
            })
            .collect();
        println!("| {} | {} |", row.name, cells.join(" | "));
    }
    println!("\nmedians of {rounds} interleaved rounds of {seconds} s runs; ratios to the first column, higher is better (for latency: first / value).");
}

//! The fuzzers' seed corpus: real packets of every kind the router handles, as the fuzz targets
//! read them. `ALGONET_WRITE_CORPUS=1 cargo test -p netstack --test corpus` writes it to
//! `fuzz/corpus/`; without the variable the test checks that the committed corpus is current.

mod common;

use std::path::PathBuf;

use common::*;

/// A router-target input: a first byte (0: the router is not scoped), then each packet as op 0,
/// big-endian length, bytes.
fn stream(packets: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![0];
    for p in packets {
        out.push(0);
        out.extend_from_slice(&(p.len() as u16).to_be_bytes());
        out.extend_from_slice(p);
    }
    out
}

fn seeds() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    let payload: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
    let dgram = udp(sa(PEER, 5000), sa(V, 49153), &payload);
    let out_udp = udp(sa(C2, 40010), sa(PEER, 7000), b"hello");
    let mut too_big = Vec::new();
    etherparse::PacketBuilder::ipv4(PEER2.octets(), V.octets(), 64)
        .icmpv4_raw(3, 4, [0, 0, 0x04, 0xb0])
        .write(&mut too_big, &{
            let mut p = out_udp.clone();
            p[12..16].copy_from_slice(&V.octets());
            fix_ip_checksum(&mut p);
            p
        })
        .expect("icmp");
    vec![
        (
            "tcp_inbound",
            vec![
                tcp(sa(PEER, 40000), sa(V, 49152), Flags::Syn, b""),
                tcp(sa(C1, 8888), sa(PEER, 40000), Flags::SynAck, b""),
                tcp(sa(PEER, 40000), sa(V, 49152), Flags::Ack, b"hello"),
                tcp(sa(PEER, 40000), sa(V, 49152), Flags::Fin, b""),
                tcp(sa(C1, 8888), sa(PEER, 40000), Flags::Fin, b""),
            ],
        ),
        (
            "tcp_outbound",
            vec![
                tcp(sa(C2, 40001), sa(PEER, 49170), Flags::Syn, b""),
                tcp(sa(PEER, 49170), sa(V, 40001), Flags::SynAck, b""),
                tcp(sa(C2, 40001), sa(PEER, 49170), Flags::Rst, b""),
            ],
        ),
        (
            "hairpin",
            vec![
                tcp(sa(C2, 45000), sa(V, 49152), Flags::Syn, b""),
                udp(sa(C1, 45001), sa(V, 49153), b"x"),
            ],
        ),
        (
            "udp",
            vec![
                udp(sa(PEER, 5000), sa(V, 49153), b"ping"),
                udp(sa(C1, 9000), sa(PEER, 5000), b"pong"),
            ],
        ),
        (
            "unmapped",
            vec![
                tcp(sa(PEER, 1), sa(V, 50000), Flags::Syn, b""),
                udp(sa(PEER, 1), sa(V, 50001), b""),
            ],
        ),
        (
            "ping",
            vec![
                ping(PEER, V, 7, 1, false),
                ping(C1, PEER, 9, 1, false),
                ping(PEER, V, 9, 1, true),
            ],
        ),
        ("fragments", fragment(&dgram, 1400)),
        ("icmp_error", vec![out_udp, too_big]),
        (
            "big_df",
            vec![tcp(sa(PEER, 6), sa(V, 49152), Flags::Syn, &[0u8; 1500])],
        ),
    ]
}

#[test]
fn seed_corpus_is_current() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let write = std::env::var_os("ALGONET_WRITE_CORPUS").is_some();
    for (name, packets) in seeds() {
        let files = [
            (root.join("router").join(name), stream(&packets)),
            (root.join("parse").join(name), packets[0].clone()),
        ];
        for (path, bytes) in files {
            if write {
                std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
                std::fs::write(&path, &bytes).expect("write seed");
            } else {
                let committed = std::fs::read(&path).unwrap_or_default();
                assert!(
                    committed == bytes,
                    "{} is stale: rerun with ALGONET_WRITE_CORPUS=1",
                    path.display()
                );
            }
        }
    }
}

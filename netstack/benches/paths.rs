//! Loops over the router's two paths, for instruction counts under callgrind (which repeat
//! exactly for one binary, where times move with the machine):
//!
//! - `paths established N`: N packets of one TCP flow (1500 B) through a router with 10 000
//!   connections;
//! - `paths new N`: N new TCP connections (a SYN each, from distinct peers, to a mapped port).
//!
//! Run each with two values of N and take the difference, so that setting up counts for
//! nothing: `./scripts/bench-paths.sh` does (under `cargo bench` alone it only says so).

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use netstack::{Action, Config, Meta};

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let (path, n) = match (
        args.next(),
        args.next().and_then(|n| n.parse::<usize>().ok()),
    ) {
        (Some(p), Some(n)) => (p, n),
        (None, _) => {
            eprintln!("paths: skipped; run it with ./scripts/bench-paths.sh");
            return;
        }
        _ => {
            eprintln!("usage: paths established|new N");
            std::process::exit(2);
        }
    };
    let mut buf = vec![0u8; 2048];
    let mut forwarded = 0usize;
    match path.as_str() {
        "established" => {
            let mut r = populated(10_000, false);
            let template = tcp(peer(0), sa(V, 49152), Flags::Ack, &[0u8; 1460]);
            buf[..template.len()].copy_from_slice(&template);
            for _ in 0..n {
                buf[..40].copy_from_slice(&template[..40]);
                let a = r.process(&mut buf, template.len(), Meta::default(), NOW);
                forwarded += usize::from(matches!(a, Action::Forward { .. }));
            }
        }
        "new" => {
            let mut r = lab(Config {
                max_connections: n.max(16) * 2,
                max_connections_per_run: n.max(16) * 2,
                ..Config::default()
            });
            let packets: Vec<Vec<u8>> = (0..n)
                .map(|i| tcp(peer(i), sa(V, 49152), Flags::Syn, b""))
                .collect();
            for p in &packets {
                buf[..p.len()].copy_from_slice(p);
                let a = r.process(&mut buf, p.len(), Meta::default(), NOW);
                forwarded += usize::from(matches!(a, Action::Forward { .. }));
            }
        }
        other => {
            eprintln!("no path {other:?}: established or new");
            std::process::exit(2);
        }
    }
    assert_eq!(forwarded, n, "every packet forwarded");
}

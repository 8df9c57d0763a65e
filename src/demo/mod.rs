//! `algonet demo`: a whole federation on one Linux host with Docker ([`federation`]), the
//! feature test across it, and everything torn down.

mod federation;

pub use federation::{
    step, stop, DemoError, Federation, NodeProc, Options, ADMIN, NETWORK_SUBNET, VPN_SERVER_IP,
    VPN_SUBNET,
};

use std::process::Child;

use federation::io;
use std::time::Instant;

/// `algonet demo [--keep]`.
pub async fn main(keep: bool) -> Result<bool, DemoError> {
    let started = Instant::now();
    let options = Options {
        dir: std::env::temp_dir().join("algonet-demo"),
        tag: "demo".into(),
        organizations: vec!["amsterdam".into(), "berlin".into(), "copenhagen".into()],
        server_port: 7601,
        algonet: std::env::current_exe().map_err(io("finding this binary"))?,
    };
    let dir = options.dir.clone();
    let mut fed = match Federation::up(options, started).await {
        Ok(f) => f,
        Err(e) => {
            return Err(DemoError::SetUp {
                dir,
                source: Box::new(e),
            })
        }
    };
    step(started, "running the VPN feature test (echo algorithm: parent on the first node, a child on every node)");
    let outcome = fed.feature_test(None).await;
    let ok = match &outcome {
        Ok(rows) => {
            println!("{}", crate::feature::table(rows));
            rows.iter().all(|r| r.probe.ok())
        }
        Err(e) => {
            eprintln!("the feature test failed: {e}");
            false
        }
    };
    if keep {
        println!(
            "left running (--keep). Server: {} (admin / {}); logs and configurations in {}.\n\
             Send another test: algonet test --server http://127.0.0.1:{} --collaboration {} \
             --username {} --password {}\nStop it: kill the algonet node/server processes \
             (their pids: {}), then docker rm -f {} && docker network rm {}",
            fed.api,
            ADMIN.1,
            dir.display(),
            fed.options.server_port,
            fed.collaboration,
            ADMIN.0,
            ADMIN.1,
            fed.nodes
                .iter()
                .filter_map(|n| n.child.as_ref().map(Child::id))
                .chain(fed.server.as_ref().map(Child::id))
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(" "),
            fed.vpn_server,
            fed.network
        );
        // Leave the processes running.
        fed.nodes.iter_mut().for_each(|n| drop(n.child.take()));
        drop(fed.server.take());
        return Ok(ok);
    }
    step(
        started,
        "tearing down (nodes remove their containers, then server, OpenVPN server, network)",
    );
    for e in fed.down().await {
        eprintln!("teardown: {e}");
    }
    step(
        started,
        if ok {
            "done: every organization pair reached"
        } else {
            "done: NOT every organization was reached"
        },
    );
    Ok(outcome.map(|_| ok)?)
}

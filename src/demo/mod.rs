//! `algonet demo`: a whole federation on one Linux host with Docker ([`federation`]), the
//! feature test across it, and everything torn down.

mod analysis;
mod configs;
mod federation;
mod kept;

pub use configs::{demo_ages, host_ip, key_file, Options, ADMIN, DEMO_NETWORK, VPN_SUBNET};
pub use federation::{step, stop, DemoError, Federation, NodeProc};

use std::process::Child;

use crate::server::pki::TunnelKind;
use federation::io;
use kept::Kept;
use std::time::Instant;

/// Where the demo keeps everything (configurations, databases, PKI, logs).
fn demo_dir() -> std::path::PathBuf {
    std::env::temp_dir().join("algonet-demo")
}

/// `algonet demo [--keep] [--tunnel openvpn|wireguard] [--vantage6-python PYTHON]`. Refuses,
/// touching nothing, while a kept demo runs. With a Python that has vantage6's algorithm tools,
/// it also runs a real analysis on the nodes' data.
pub async fn main(
    keep: bool,
    tunnel: TunnelKind,
    vantage6_python: Option<&std::path::Path>,
) -> Result<bool, DemoError> {
    let started = Instant::now();
    if let Some(k) = Kept::load(&demo_dir()) {
        let running = k.running();
        if !running.is_empty() {
            return Err(DemoError::Kept {
                pids: running
                    .iter()
                    .map(|p| format!("{} {}", p.what, p.pid))
                    .collect(),
            });
        }
        // Its processes are gone (the host restarted, say): clear what they left.
        step(started, "clearing what an earlier kept demo left");
        for line in k
            .stop(&demo_dir(), &crate::docker::Docker::connect().await?)
            .await
        {
            eprintln!("  {line}");
        }
    }
    let options = Options {
        dir: demo_dir(),
        tag: "demo".into(),
        organizations: vec!["amsterdam".into(), "berlin".into(), "copenhagen".into()],
        server_port: 7601,
        network: DEMO_NETWORK,
        tunnel,
        node_settings: String::new(),
        server_vpn: None,
        algonet: std::env::current_exe().map_err(io("finding this binary"))?,
        encrypted: false,
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
    let ok = match vantage6_python {
        Some(python) => {
            step(
                started,
                "computing the average age over every organization's data (vpn-average, vantage6's own tools, partials over the VPN)",
            );
            match analysis::average_age(&fed, python).await {
                Ok(line) => {
                    println!("{line}");
                    ok
                }
                Err(e) => {
                    eprintln!("the analysis failed: {e}");
                    false
                }
            }
        }
        None => ok,
    };
    if keep {
        let pid =
            |what: &str, c: &Option<Child>| c.as_ref().and_then(|c| kept::Proc::of(what, c.id()));
        let record = Kept {
            nodes: fed
                .nodes
                .iter()
                .filter_map(|n| pid(&n.organization, &n.child))
                .collect(),
            server: pid("server", &fed.server),
            vpn_server: fed.vpn_server.clone(),
            network: fed.network.clone(),
        };
        record.save(&dir)?;
        let server = format!("http://127.0.0.1:{}", fed.options.server_port);
        println!(
            "left running (--keep). Server: {server} (API {}, user {} / {}); logs, configurations \
             and the metrics addresses in {}.\n\
             Another test:  ALGONET_PASSWORD={} algonet test --server {server} --collaboration {}\n\
             A node's view: algonet node status --config {}\n\
             Stop it:       algonet demo stop",
            fed.api,
            ADMIN.0,
            ADMIN.1,
            dir.display(),
            ADMIN.1,
            fed.collaboration,
            fed.nodes
                .first()
                .map_or_else(String::new, |n| n.config.display().to_string()),
        );
        // Leave the processes running.
        fed.nodes.iter_mut().for_each(|n| drop(n.child.take()));
        drop(fed.server.take());
        return Ok(ok);
    }
    step(
        started,
        "tearing down (nodes remove their containers, then server, VPN server, network)",
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

/// `algonet demo stop`: ends a kept demo, nodes first (each clears its address and removes its
/// containers), then the server, the OpenVPN server and the network.
pub async fn stop_kept() -> Result<(), DemoError> {
    let dir = demo_dir();
    let Some(k) = Kept::load(&dir) else {
        println!("no kept demo ({} has no record of one)", dir.display());
        return Ok(());
    };
    let docker = crate::docker::Docker::connect().await?;
    for line in k.stop(&dir, &docker).await {
        println!("{line}");
    }
    Ok(())
}

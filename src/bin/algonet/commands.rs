//! What each subcommand of `algonet` does, once its arguments are parsed (`main.rs`).

use std::path::PathBuf;

use crate::usage;

pub fn revoke(config: PathBuf, who: algonet::server::Revoke) -> anyhow::Result<()> {
    let config = algonet::server::config::ServerConfig::load(&config)?;
    let rt = tokio::runtime::Runtime::new()?;
    let ended = rt.block_on(algonet::server::revoke(&config, &who))?;
    println!("ended {ended} live sessions of {who:?}: its tokens are refused from now on");
    Ok(())
}

pub fn import(
    config: PathBuf,
    file: &std::path::Path,
    keys: Option<PathBuf>,
) -> anyhow::Result<()> {
    let config = algonet::server::config::ServerConfig::load(&config)?;
    let rt = tokio::runtime::Runtime::new()?;
    let done = rt.block_on(algonet::server::import::import(&config, file, keys))?;
    for skipped in &done.skipped {
        println!("not imported: {skipped}");
    }
    if done.changed_nothing() {
        println!("nothing to import: everything in {} exists", file.display());
        return Ok(());
    }
    println!(
        "imported {} organizations, {} users, {} collaborations, {} memberships, {} nodes",
        done.organizations,
        done.users,
        done.collaborations,
        done.members,
        done.nodes.len()
    );
    if let Some(keys) = &done.keys_file {
        println!(
            "the new nodes' API keys are in {} (mode 0600): give each to its node, then keep the file safe or delete it",
            keys.display()
        );
    }
    Ok(())
}

pub fn server(path: PathBuf) -> anyhow::Result<()> {
    let config = algonet::server::config::ServerConfig::load(&path)?;
    algonet::logging::init(config.log_level, config.log_format);
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        // systemd and `docker stop` send TERM, a terminal INT: both stop the server. Taken
        // over before the server says it listens, so a TERM right after that is not fatal.
        use tokio::signal::unix::{signal, SignalKind};
        let (mut terminate, mut interrupt) = (
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        );
        let state = algonet::server::open(config).await?;
        let metrics = match state.config.metrics_listen {
            Some(addr) => {
                let (store, m) = (state.store.clone(), state.metrics.clone());
                let hub = state.vpn.hub().map(|h| h.counters());
                let (at, serve) = algonet::metrics::serve(addr, move || {
                    algonet::server::metrics::scrape(store.clone(), m.clone(), hub.clone())
                })
                .await?;
                tracing::info!("metrics on http://{at}/metrics");
                Some(tokio::spawn(serve))
            }
            None => None,
        };
        let (addr, serve) = algonet::server::bind(state).await?;
        tracing::info!("listening on http://{addr}");
        algonet::service::ready(&format!("listening on {addr}"));
        tokio::select! {
            r = serve => r?,
            _ = interrupt.recv() => tracing::info!("stopping (SIGINT)"),
            _ = terminate.recv() => tracing::info!("stopping (SIGTERM)"),
        }
        algonet::service::stopping();
        if let Some(m) = metrics {
            m.abort();
        }
        Ok(())
    })
}

/// `algonet server --check`.
pub fn server_check(path: PathBuf) -> anyhow::Result<()> {
    let config = algonet::server::config::ServerConfig::load(&path)?;
    let database = tokio::runtime::Runtime::new()?.block_on(algonet::server::check(&config))?;
    println!(
        "{}: ok (database {database} answers, listen addresses free)",
        path.display()
    );
    Ok(())
}

/// `algonet node --check`.
pub fn node_check(path: PathBuf) -> anyhow::Result<()> {
    let config = algonet::node::config::NodeConfig::load(&path)?;
    let id = tokio::runtime::Runtime::new()?.block_on(algonet::node::agent::check(&config))?;
    println!(
        "{}: ok (logged in as node {id}, Docker answers, images present)",
        path.display()
    );
    Ok(())
}

pub fn node(path: PathBuf) -> anyhow::Result<()> {
    let config = algonet::node::config::NodeConfig::load(&path)?;
    let recent = algonet::logging::init(config.log_level, config.log_format);
    Ok(tokio::runtime::Runtime::new()?.block_on(algonet::node::agent::run(config, recent))?)
}

pub fn node_status(
    config: Option<PathBuf>,
    socket: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<()> {
    use algonet::node::status;
    let socket = match (socket, config) {
        (Some(s), _) => s,
        (None, Some(c)) => algonet::node::config::NodeConfig::load(&c)?.status_socket(),
        (None, None) => usage("algonet node status needs --config <FILE> or --socket <PATH>"),
    };
    let s = tokio::runtime::Runtime::new()?.block_on(status::socket::ask(&socket))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print!("{}", status::table::table(&s));
    }
    Ok(())
}

pub fn images(vantage6_python: Option<PathBuf>) -> anyhow::Result<()> {
    use algonet::docker::images;
    tokio::runtime::Runtime::new()?.block_on(async {
        let docker = algonet::docker::Docker::connect().await?;
        let names = images::ImageNames::default();
        images::build(&docker, &names, &std::env::current_exe()?).await?;
        println!(
            "built {}, {}, {}",
            names.sandbox,
            names.vpn_client,
            images::ECHO_IMAGE
        );
        if let Some(python) = vantage6_python {
            algonet::docker::python::build_vpn_average(&docker, &python).await?;
            println!("built {}", images::VPN_AVERAGE_IMAGE);
        }
        Ok(())
    })
}

/// `algonet images build --algorithm DIR --tag NAME`.
pub fn algorithm_image(
    dir: &std::path::Path,
    tag: String,
    package: Option<String>,
    python: &std::path::Path,
    vantage6_version: &str,
    require: Vec<String>,
) -> anyhow::Result<()> {
    let mut pins = require;
    pins.push(format!("vantage6-algorithm-tools=={vantage6_version}"));
    let source = algonet::docker::python::AlgorithmSource {
        dir: dir.to_path_buf(),
        tag,
        package,
        pins,
    };
    tokio::runtime::Runtime::new()?.block_on(async {
        let docker = algonet::docker::Docker::connect().await?;
        let (tag, package) = algonet::docker::python::build_source(&docker, python, source).await?;
        println!("built {tag} (module {package})");
        anyhow::Ok(())
    })
}

pub fn finish(all_ok: bool) -> anyhow::Result<()> {
    anyhow::ensure!(all_ok, "not every organization was reached");
    Ok(())
}

pub fn demo(
    keep: bool,
    tunnel: algonet::server::pki::TunnelKind,
    vantage6_python: Option<PathBuf>,
) -> anyhow::Result<()> {
    let ok = tokio::runtime::Runtime::new()?.block_on(algonet::demo::main(
        keep,
        tunnel,
        vantage6_python.as_deref(),
    ))?;
    finish(ok)
}

pub fn demo_stop() -> anyhow::Result<()> {
    Ok(tokio::runtime::Runtime::new()?.block_on(algonet::demo::stop_kept())?)
}

pub fn feature_test(t: algonet::feature::Target) -> anyhow::Result<()> {
    let rows = tokio::runtime::Runtime::new()?.block_on(algonet::feature::run(&t))?;
    println!("{}", algonet::feature::table(&rows));
    finish(rows.iter().all(|r| r.probe.ok()))
}

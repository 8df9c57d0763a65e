//! The `algonet` command.

use std::path::PathBuf;
use std::process::ExitCode;

/// Direct algorithm-to-algorithm networking over a VPN for vantage6-style federations.
///
/// Exit codes: 0 done, 1 failed (the reason on stderr), 2 a usage error.
#[derive(Debug, clap::Parser)]
#[command(name = "algonet", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Run the central server (vantage6 4.x-compatible API).
    Server {
        /// The server's YAML configuration.
        #[arg(long, env = "ALGONET_SERVER_CONFIG", value_name = "FILE")]
        config: PathBuf,
    },
    /// Run a node agent (needs root and a Docker daemon).
    Node {
        /// The node's YAML configuration.
        #[arg(long, env = "ALGONET_NODE_CONFIG", value_name = "FILE")]
        config: PathBuf,
    },
    /// Container images, made offline from this host's binaries.
    Images {
        #[command(subcommand)]
        action: Images,
    },
    /// Run the VPN feature test (the echo algorithm) and print a table.
    Test(TestArgs),
    /// A whole federation on this host: server, OpenVPN server, three nodes, the feature test;
    /// then everything torn down.
    Demo {
        /// Leave the federation running.
        #[arg(long)]
        keep: bool,
    },
    /// The echo algorithm (runs inside its container).
    Echo,
    /// Print the version.
    Version,
}

#[derive(Debug, clap::Subcommand)]
enum Images {
    /// Build the sandbox, OpenVPN and echo images.
    Build {
        /// The python of a venv holding vantage6-algorithm-tools: also build the vpn-average
        /// algorithm (vantage6's own tools, on the VPN).
        #[arg(long, value_name = "PYTHON")]
        vantage6_python: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
struct TestArgs {
    /// The server, e.g. http://127.0.0.1:7601 (without the API path).
    #[arg(long, env = "ALGONET_SERVER", value_name = "URL")]
    server: String,
    /// The collaboration to test.
    #[arg(long)]
    collaboration: i64,
    /// The API path below the server.
    #[arg(long, default_value = "/api")]
    api_path: String,
    /// The administrator's user name.
    #[arg(long, env = "ALGONET_USERNAME", default_value = "admin")]
    username: String,
    /// The administrator's password (better from the environment than on a command line).
    #[arg(long, env = "ALGONET_PASSWORD", hide_env_values = true)]
    password: String,
    /// The organization that runs the parent (default: the collaboration's first).
    #[arg(long, value_name = "ORGANIZATION")]
    parent: Option<i64>,
    /// The echo algorithm's image.
    #[arg(long, default_value = algonet::docker::images::ECHO_IMAGE)]
    image: String,
}

fn main() -> ExitCode {
    let cli = match <Cli as clap::Parser>::try_parse() {
        Ok(c) => c,
        // --help and --version print and exit 0; a usage error exits 2.
        Err(e) => e.exit(),
    };
    let name = match &cli.command {
        Command::Server { .. } => "server",
        Command::Node { .. } => "node",
        Command::Images { .. } => "images",
        Command::Test(_) => "test",
        Command::Demo { .. } => "demo",
        Command::Echo => "echo",
        Command::Version => "version",
    };
    let result = match cli.command {
        Command::Version => {
            println!("algonet {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Server { config } => server(config),
        Command::Node { config } => node(config),
        Command::Images {
            action: Images::Build { vantage6_python },
        } => images(vantage6_python),
        Command::Echo => algonet::echo::main().map_err(Into::into),
        Command::Demo { keep } => demo(keep),
        Command::Test(t) => feature_test(target(t)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("algonet {name}: {}", causes(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each said once: many errors here already carry their cause's text.
fn causes(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain().map(ToString::to_string) {
        if !out.contains(&cause) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&cause);
        }
    }
    out
}

fn server(path: PathBuf) -> anyhow::Result<()> {
    let config = algonet::server::config::ServerConfig::load(&path)?;
    algonet::logging::init("info", "");
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
        let (addr, serve) = algonet::server::bind(state).await?;
        eprintln!("algonet server listening on http://{addr}");
        tokio::select! {
            r = serve => r?,
            _ = interrupt.recv() => eprintln!("algonet server: stopping"),
            _ = terminate.recv() => eprintln!("algonet server: stopping"),
        }
        Ok(())
    })
}

fn node(path: PathBuf) -> anyhow::Result<()> {
    let config = algonet::node::config::NodeConfig::load(&path)?;
    algonet::logging::init(&config.log_level, "");
    Ok(tokio::runtime::Runtime::new()?.block_on(algonet::node::agent::run(config))?)
}

fn images(vantage6_python: Option<PathBuf>) -> anyhow::Result<()> {
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
            images::build_vpn_average(&docker, &python).await?;
            println!("built {}", images::VPN_AVERAGE_IMAGE);
        }
        Ok(())
    })
}

fn finish(all_ok: bool) -> anyhow::Result<()> {
    anyhow::ensure!(all_ok, "not every organization was reached");
    Ok(())
}

fn demo(keep: bool) -> anyhow::Result<()> {
    let ok = tokio::runtime::Runtime::new()?.block_on(algonet::demo::main(keep))?;
    finish(ok)
}

fn target(t: TestArgs) -> algonet::feature::Target {
    algonet::feature::Target {
        api: format!("{}{}", t.server.trim_end_matches('/'), t.api_path),
        username: t.username,
        password: t.password,
        collaboration: algonet::api::CollaborationId(t.collaboration),
        image: t.image,
        parent: t.parent.map(algonet::api::OrganizationId),
        timeout: std::time::Duration::from_secs(90),
    }
}

fn feature_test(t: algonet::feature::Target) -> anyhow::Result<()> {
    let rows = tokio::runtime::Runtime::new()?.block_on(algonet::feature::run(&t))?;
    println!("{}", algonet::feature::table(&rows));
    finish(rows.iter().all(|r| r.probe.ok()))
}

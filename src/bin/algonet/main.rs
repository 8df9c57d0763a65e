//! The `algonet` command.

mod commands;

use std::path::PathBuf;
use std::process::ExitCode;

use commands::*;

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
    /// Run the central server (vantage6 4.x-compatible API), or set up its federation.
    Server {
        /// The server's YAML configuration.
        #[arg(
            long,
            env = "ALGONET_SERVER_CONFIG",
            value_name = "FILE",
            global = true
        )]
        config: Option<PathBuf>,
        /// Check the configuration, the database and the listen addresses, and exit (0: all
        /// good) without starting anything.
        #[arg(long)]
        check: bool,
        #[command(subcommand)]
        action: Option<ServerAction>,
    },
    /// Run a node agent (needs root and a Docker daemon), or ask a running one.
    Node {
        /// The node's YAML configuration.
        #[arg(long, env = "ALGONET_NODE_CONFIG", value_name = "FILE", global = true)]
        config: Option<PathBuf>,
        /// Check the configuration, the login at the server, Docker and the images, and exit (0:
        /// all good) without starting anything.
        #[arg(long)]
        check: bool,
        #[command(subcommand)]
        action: Option<NodeAction>,
    },
    /// Container images, made offline from this host's binaries.
    Images {
        #[command(subcommand)]
        action: Images,
    },
    /// Run the VPN feature test (the echo algorithm) and print a table.
    Test(TestArgs),
    /// A whole federation on this host: server, VPN server, three nodes, the feature test;
    /// then everything torn down.
    Demo {
        /// Leave the federation running (end it with `algonet demo stop`).
        #[arg(long)]
        keep: bool,
        /// The VPN's tunnel: an OpenVPN server container, or WireGuard with the server itself
        /// as the hub (no VPN container).
        #[arg(long, value_enum, default_value = "openvpn")]
        tunnel: algonet::server::pki::TunnelKind,
        /// The python of a venv holding vantage6-algorithm-tools: also compute an average
        /// over the nodes' data with vpn-average.
        #[arg(long, value_name = "PYTHON")]
        vantage6_python: Option<PathBuf>,
        #[command(subcommand)]
        action: Option<DemoAction>,
    },
    /// The echo algorithm (runs inside its container).
    Echo,
    /// Print the version.
    Version,
}

#[derive(Debug, clap::Subcommand)]
enum DemoAction {
    /// Stop a demo left running with --keep: nodes first, then the server, the OpenVPN server
    /// and the network.
    Stop,
}

#[derive(Debug, clap::Subcommand)]
enum ServerAction {
    /// Import organizations (with their users), collaborations and their participants' nodes
    /// from a YAML file in the shape of vantage6's `v6 server import`; what exists already is
    /// left as it is. The new nodes' API keys go to a new file of mode 0600.
    Import {
        /// The entities file.
        #[arg(value_name = "ENTITIES")]
        file: PathBuf,
        /// Where the new nodes' API keys go (default: a new file in the data directory).
        #[arg(long, value_name = "FILE")]
        keys: Option<PathBuf>,
    },
    /// End every session of a user or a node: its access and refresh tokens are refused from
    /// now on (it logs in again: a user with its password, a node with its API key).
    Revoke {
        /// The user, by name (the administrator's too).
        #[arg(
            long,
            value_name = "NAME",
            conflicts_with = "node",
            required_unless_present = "node"
        )]
        user: Option<String>,
        /// The node, by id.
        #[arg(long, value_name = "ID")]
        node: Option<i64>,
    },
}

#[derive(Debug, clap::Subcommand)]
enum NodeAction {
    /// What the running node is doing: VPN, runs with their ports and traffic, drops, recent
    /// problems (asked over its status socket).
    Status {
        /// Print the status as JSON, for scripts.
        #[arg(long)]
        json: bool,
        /// The node's status socket (default: the configuration's `status_socket`).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Subcommand)]
enum Images {
    /// Build the sandbox, OpenVPN and echo images.
    Build {
        /// The python of a venv holding vantage6-algorithm-tools: also build the vpn-average
        /// algorithm (vantage6's own tools, on the VPN).
        #[arg(long, value_name = "PYTHON", conflicts_with = "algorithm")]
        vantage6_python: Option<PathBuf>,
        /// Instead, package the vantage6 Python algorithm in this folder (a package with
        /// `setup.py` or `pyproject.toml`) with its PyPI dependencies, offline from any
        /// registry.
        #[arg(long, value_name = "DIR", requires = "tag")]
        algorithm: Option<PathBuf>,
        /// The algorithm image's name.
        #[arg(long, value_name = "NAME")]
        tag: Option<String>,
        /// The module vantage6's wrapper runs (default: the Dockerfile's `PKG_NAME`, else the
        /// folder's name with `-` as `_`).
        #[arg(long, value_name = "MODULE")]
        package: Option<String>,
        /// The Python to make the algorithm's venv with.
        #[arg(long, value_name = "PYTHON", default_value = "python3")]
        python: PathBuf,
        /// The version of vantage6's algorithm tools the algorithm gets (an algorithm that asks
        /// for them without a version would get the newest, vantage6 5's, otherwise).
        #[arg(long, value_name = "VERSION", default_value = "4.14.0")]
        vantage6_version: String,
        /// More requirements for the algorithm's venv, as pip takes them (`'pandas<3'` for an
        /// algorithm written before pandas 3, as vantage6's algorithm base image would give it).
        #[arg(long, value_name = "REQUIREMENT")]
        require: Vec<String>,
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
    /// Certificate authorities to trust for the server beside the system's (a PEM file).
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
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
    /// Seconds to stream to each organization and back (0 to 60; 0: no throughput figures).
    #[arg(long, default_value_t = algonet::echo::default_stream(), value_parser = stream_secs)]
    stream_secs: f64,
    /// Seconds the parent waits for every organization's address; a parent run no node took
    /// by then fails the test.
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout_secs: u64,
}

fn stream_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if (0.0..=60.0).contains(&x) => Ok(x),
        _ => Err(format!("{s:?} is not a number of seconds from 0 to 60")),
    }
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
        Command::Server {
            config,
            action: None,
            check,
        } => {
            let config = config.unwrap_or_else(|| usage("algonet server needs --config <FILE>"));
            if check {
                server_check(config)
            } else {
                server(config)
            }
        }
        Command::Server {
            config,
            action: Some(ServerAction::Import { file, keys }),
            ..
        } => import(
            config.unwrap_or_else(|| usage("algonet server import needs --config <FILE>")),
            &file,
            keys,
        ),
        Command::Server {
            config,
            action: Some(ServerAction::Revoke { user, node }),
            ..
        } => revoke(
            config.unwrap_or_else(|| usage("algonet server revoke needs --config <FILE>")),
            match (user, node) {
                (Some(name), _) => algonet::server::Revoke::User(name),
                (None, Some(id)) => algonet::server::Revoke::Node(algonet::api::NodeId(id)),
                (None, None) => usage("algonet server revoke needs --user or --node"),
            },
        ),
        Command::Node {
            config,
            action: None,
            check,
        } => {
            let config = config.unwrap_or_else(|| usage("algonet node needs --config <FILE>"));
            if check {
                node_check(config)
            } else {
                node(config)
            }
        }
        Command::Node {
            config,
            action: Some(NodeAction::Status { json, socket }),
            ..
        } => node_status(config, socket, json),
        Command::Images {
            action:
                Images::Build {
                    algorithm: Some(dir),
                    tag,
                    package,
                    python,
                    vantage6_version,
                    require,
                    ..
                },
        } => algorithm_image(
            &dir,
            tag.unwrap_or_default(),
            package,
            &python,
            &vantage6_version,
            require,
        ),
        Command::Images {
            action: Images::Build {
                vantage6_python, ..
            },
        } => images(vantage6_python),
        Command::Echo => algonet::echo::main().map_err(Into::into),
        Command::Demo {
            action: None,
            keep,
            tunnel,
            vantage6_python,
        } => demo(keep, tunnel, vantage6_python),
        Command::Demo {
            action: Some(DemoAction::Stop),
            ..
        } => demo_stop(),
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

/// Exits 2 with a usage error.
fn usage(message: &str) -> ! {
    <Cli as clap::CommandFactory>::command()
        .error(clap::error::ErrorKind::MissingRequiredArgument, message)
        .exit()
}

fn target(t: TestArgs) -> algonet::feature::Target {
    algonet::feature::Target {
        api: format!("{}{}", t.server.trim_end_matches('/'), t.api_path),
        ca_file: t.ca_file,
        username: t.username,
        password: t.password,
        collaboration: algonet::api::CollaborationId(t.collaboration),
        image: t.image,
        parent: t.parent.map(algonet::api::OrganizationId),
        timeout: std::time::Duration::from_secs(t.timeout_secs),
        stream: std::time::Duration::from_secs_f64(t.stream_secs),
    }
}

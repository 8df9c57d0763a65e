//! The `algonet` command.

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "\
algonet — direct algorithm-to-algorithm networking over a VPN

usage: algonet <command> [options]

commands:
  server --config <file.yaml>   run the central server (vantage6 4.x-compatible API)
  node --config <file.yaml>     run a node agent (needs root and a Docker daemon)
  images build [--vantage6-python <python>]
                                build the sandbox, OpenVPN and echo images offline; with the
                                python of a venv holding vantage6-algorithm-tools, also the
                                vpn-average algorithm (vantage6's own tools, on the VPN)
  test --server <url> --collaboration <id> [--username <u>] [--password <p>] [--api-path /api]
       [--parent <organization id>] [--image <echo image>]
                                run the VPN feature test (echo algorithm) and print a table
  demo [--keep]                 a whole federation on this host: server, OpenVPN server,
                                three nodes, the feature test; then tears it down
  echo                          the echo algorithm (runs inside its container)
  version                       print the version";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["version" | "--version" | "-V"] => {
            println!("algonet {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        [] | ["help" | "--help" | "-h"] => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        ["server", "--config", path] => server(PathBuf::from(path)),
        ["node", "--config", path] => node(PathBuf::from(path)),
        ["images", "build"] => images(None),
        ["images", "build", "--vantage6-python", python] => images(Some(PathBuf::from(python))),
        ["echo"] => algonet::echo::main().map_err(Into::into),
        ["demo"] => demo(false),
        ["demo", "--keep"] => demo(true),
        ["test", rest @ ..] => match test_target(rest) {
            Ok(t) => feature_test(t),
            Err(e) => return usage_error(&e),
        },
        ["server" | "node", ..] => {
            return usage_error(&format!("{} takes --config <file.yaml>", args[0]))
        }
        [other, ..] => return usage_error(&format!("unknown command or options: {other} ...")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("algonet {}: {}", args[0], causes(&e));
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

fn usage_error(what: &str) -> ExitCode {
    eprintln!("algonet: {what}\n\n{USAGE}");
    ExitCode::from(2)
}

fn server(path: PathBuf) -> anyhow::Result<()> {
    let config = algonet::server::config::ServerConfig::load(&path)?;
    algonet::logging::init("info", "");
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let state = algonet::server::open(config).await?;
        let (addr, serve) = algonet::server::bind(state).await?;
        eprintln!("algonet server listening on http://{addr}");
        tokio::select! {
            r = serve => r?,
            _ = tokio::signal::ctrl_c() => eprintln!("algonet server: stopping"),
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

fn test_target(args: &[&str]) -> Result<algonet::feature::Target, String> {
    let mut t = algonet::feature::Target {
        api: String::new(),
        username: "admin".into(),
        password: std::env::var("ALGONET_PASSWORD").unwrap_or_default(),
        collaboration: algonet::api::CollaborationId(0),
        image: algonet::docker::images::ECHO_IMAGE.into(),
        parent: None,
        timeout: std::time::Duration::from_secs(90),
    };
    let (mut server, mut api_path) = (None, "/api".to_string());
    for pair in args.chunks(2) {
        let [flag, value] = pair else {
            return Err(format!("{} needs a value", pair[0]));
        };
        match *flag {
            "--server" => server = Some(value.trim_end_matches('/').to_string()),
            "--api-path" => api_path = value.to_string(),
            "--collaboration" => {
                t.collaboration = value
                    .parse()
                    .map_err(|_| format!("--collaboration {value:?} is not a number"))?
            }
            "--username" => t.username = value.to_string(),
            "--password" => t.password = value.to_string(),
            "--image" => t.image = value.to_string(),
            "--parent" => {
                t.parent = Some(
                    value
                        .parse()
                        .map_err(|_| format!("--parent {value:?} is not an organization id"))?,
                )
            }
            other => return Err(format!("test: unknown option {other}")),
        }
    }
    let server = server.ok_or("test needs --server <url>")?;
    if t.collaboration.0 == 0 {
        return Err("test needs --collaboration <id>".into());
    }
    t.api = format!("{server}{api_path}");
    Ok(t)
}

fn feature_test(t: algonet::feature::Target) -> anyhow::Result<()> {
    let rows = tokio::runtime::Runtime::new()?.block_on(algonet::feature::run(&t))?;
    println!("{}", algonet::feature::table(&rows));
    finish(rows.iter().all(|r| r.probe.ok()))
}

//! The `algonet` command.

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "\
algonet — direct algorithm-to-algorithm networking over a VPN

usage: algonet <command> [options]

commands:
  server --config <file.yaml>   run the central server (vantage6 4.x-compatible API)
  version                       print the version

Not built yet: node, test, demo, images (see README.md, Status).";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("version" | "--version" | "-V") => {
            println!("algonet {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some("help" | "--help" | "-h") | None => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some("server") => match (args.get(1).map(String::as_str), args.get(2)) {
            (Some("--config"), Some(path)) if args.len() == 3 => {
                match server(PathBuf::from(path)) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("algonet server: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
            _ => usage_error("server takes --config <file.yaml>"),
        },
        Some(other) => usage_error(&format!("unknown command '{other}'")),
    }
}

fn usage_error(what: &str) -> ExitCode {
    eprintln!("algonet: {what}\n\n{USAGE}");
    ExitCode::from(2)
}

fn server(path: PathBuf) -> anyhow::Result<()> {
    let config = algonet::server::config::ServerConfig::load(&path)?;
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

//! The `algonet` command.

const USAGE: &str = "\
algonet — direct algorithm-to-algorithm networking over a VPN

usage: algonet <command>

commands:
  version    print the version

Not built yet: server, node, test, demo, images (see README.md, Status).";

fn main() -> std::process::ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("version" | "--version" | "-V") => {
            println!("algonet {}", env!("CARGO_PKG_VERSION"));
            std::process::ExitCode::SUCCESS
        }
        Some("help" | "--help" | "-h") | None => {
            println!("{USAGE}");
            std::process::ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("algonet: unknown command '{other}'\n\n{USAGE}");
            std::process::ExitCode::from(2)
        }
    }
}

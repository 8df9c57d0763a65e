//! vantage6's own node (`vantage6-node` 4.14.0 from PyPI, in the venv of
//! `ALGONET_V6_NODE_PYTHON`) as vantage6 runs it: `v6 node start` on the host starts the node
//! in a container of its node image, with the Docker socket, its data volume and its
//! configuration, and the node starts its algorithms beside it.
//!
//! vantage6's node image comes from vantage6's registry; there is none here, so the image is
//! built offline from the venv (the interpreter, its standard library and the venv's packages,
//! as `algonet images build --algorithm` does) under a name whose registry is a closed port on
//! loopback: every pull fails at once and vantage6 uses the local image, as it does when its
//! registry is out of reach. One thing of vantage6's is left out, in the image's
//! `sitecustomize`: the node pulls its VPN images at start even when it runs without VPN, and
//! stops when that fails.
//!
//! It cannot run as `vnode-local` on this machine's host: vantage6 decides where it runs by
//! `/.dockerenv`, which the test machine (itself a container) has, and 4.14.0's `vnode-local`
//! outside Docker fails on `NodeContext` having no `running_in_docker`.

use std::path::{Path, PathBuf};
use std::process::Command;

use algonet::docker::python::Algorithm;

use crate::server::TempDir;

/// The node image's name: its registry is a closed port on loopback (see above).
pub const IMAGE: &str = "localhost:1/algonet/vantage6-node:4.14.0";

/// Where the venv's packages are in the image (`algonet::docker::python`).
const SITE: &str = "/opt/vantage6/site";

const SITECUSTOMIZE: &str = "\
# vantage6's node pulls its VPN images when it starts, whether its VPN is on or not, and stops
# when that fails. This image runs the node without VPN where no registry can be reached.
from vantage6.node.docker import vpn_manager
vpn_manager.VPNManager._update_images = lambda self: None
";

fn docker_cli(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("the docker command")
}

/// Builds [`IMAGE`] from the node venv's interpreter `python`.
pub async fn build_image(docker: &algonet::docker::Docker, python: &str) {
    let exe = String::from_utf8(
        Command::new(python)
            .args([
                "-c",
                "import os, sys; print(os.path.realpath(sys.executable))",
            ])
            .output()
            .expect("the node venv's python")
            .stdout,
    )
    .expect("a path");
    // `v6 node start` runs `vnode-local start ...` in the image.
    let vnode_local = format!(
        "#!{}\nimport sys\nfrom vantage6.node.cli.node import cli_node\nsys.exit(cli_node())\n",
        exe.trim()
    );
    let base = format!("{IMAGE}-base");
    algonet::docker::python::build(
        docker,
        Path::new(python),
        Algorithm {
            tag: base.clone(),
            package: "vantage6.node".to_string(),
            sources: vec![
                (
                    "sitecustomize.py".to_string(),
                    SITECUSTOMIZE.as_bytes().to_vec(),
                ),
                ("bin/vnode-local".to_string(), vnode_local.into_bytes()),
            ],
            ports: Vec::new(),
        },
    )
    .await
    .expect("the vantage6 node image");
    let holder = format!("algonet-v6node-image-{}", std::process::id());
    let created = docker_cli(&["create", "--name", &holder, &base]);
    assert!(created.status.success(), "{created:?}");
    let committed = docker_cli(&[
        "commit",
        "--change",
        &format!("ENV PATH={SITE}/bin:/usr/local/bin:/usr/bin:/bin"),
        &holder,
        IMAGE,
    ]);
    let _ = docker_cli(&["rm", "-f", &holder]);
    let _ = docker_cli(&["rmi", &base]);
    assert!(committed.status.success(), "{committed:?}");
}

/// A vantage6 node started with `v6 node start`; stopped and its containers, networks and
/// volumes removed when dropped.
#[derive(Debug)]
pub struct Vantage6Node {
    pub name: String,
    v6: PathBuf,
    home: TempDir,
}

impl Vantage6Node {
    /// `v6` with this node's home.
    fn v6(&self, args: &[&str]) -> std::process::Output {
        Command::new(&self.v6)
            .args(args)
            .env("HOME", &self.home.0)
            .output()
            .expect("v6")
    }

    /// The node container's name, as `v6 node start` gives it.
    pub fn container(&self) -> String {
        format!("vantage6-{}-user", self.name)
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        let out = docker_cli(&["logs", &self.container()]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Stops the node as `v6 node stop` does: the container is stopped (SIGTERM, the node
    /// leaves the server, ten seconds' grace). `v6 node stop` itself then looks for the
    /// configuration where a node container keeps it, on this machine too (see above), and
    /// fails; the volumes it would remove go when this is dropped.
    pub fn stop(&self) -> std::process::Output {
        docker_cli(&["stop", &self.container()])
    }
}

impl Drop for Vantage6Node {
    fn drop(&mut self) {
        let _ = self.stop();
        let prefix = format!("vantage6-{}-", self.name);
        for (kind, list) in [
            ("container", &["ps", "-aq", "--filter"][..]),
            ("network", &["network", "ls", "-q", "--filter"][..]),
            ("volume", &["volume", "ls", "-q", "--filter"][..]),
        ] {
            let filter = format!("name={prefix}");
            let mut args = list.to_vec();
            args.push(&filter);
            let out = docker_cli(&args);
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let remove: &[&str] = match kind {
                    "container" => &["rm", "-f", id],
                    "network" => &["network", "rm", id],
                    _ => &["volume", "rm", "-f", id],
                };
                let _ = docker_cli(remove);
            }
        }
    }
}

/// Starts node `name` with `v6 node start` (the node venv's `v6`, its home in a fresh folder)
/// from `config` (vantage6's node configuration, YAML) and [`IMAGE`].
pub fn start(python: &str, name: &str, config: &str) -> Vantage6Node {
    let home = std::env::temp_dir().join(format!("algonet-v6node-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).expect("the node's home");
    let file = home.join(format!("{name}.yaml"));
    std::fs::write(&file, config).expect("the node's configuration");
    let node = Vantage6Node {
        name: name.to_string(),
        v6: Path::new(python).with_file_name("v6"),
        home: TempDir(home),
    };
    let out = node.v6(&[
        "node",
        "start",
        "--config",
        &file.to_string_lossy(),
        "--image",
        IMAGE,
        "--user",
        // Kept after it ends, for its log; removed when dropped.
        "--keep",
    ]);
    assert!(
        out.status.success(),
        "v6 node start: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    node
}

//! The Docker operations algonet needs, over bollard: images, containers found by label,
//! internal networks. Every container algonet makes carries [`LABEL_OWNER`], so a restarted
//! process finds and removes what the last one left.

pub mod images;
pub mod python;
pub mod specs;

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, ContainerSummary, ImageInspect, Ipam, IpamConfig, NetworkCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use futures_util::StreamExt;

/// Which algonet process made the container (`node:<name>`, `demo`).
pub const LABEL_OWNER: &str = "algonet.owner";
/// What the container is for (`router`, `vpn`, `sandbox`, `algorithm`, `vpn-server`).
pub const LABEL_ROLE: &str = "algonet.role";
/// The run a sandbox or algorithm container belongs to.
pub const LABEL_RUN: &str = "algonet.run";

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("cannot reach the Docker daemon ({0}); {hint}", hint = connect_hint(.0))]
    Connect(bollard::errors::Error),
    #[error("docker: {what}: {source}")]
    Call {
        what: String,
        source: bollard::errors::Error,
    },
    #[error("docker: {0}")]
    State(String),
}

/// What to do about a failed connection: a socket that refuses this user needs root (or the
/// docker group), anything else a running daemon.
fn connect_hint(e: &bollard::errors::Error) -> &'static str {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::PermissionDenied {
                return "permission denied on the Docker socket: run as root";
            }
        }
        source = s.source();
    }
    "is dockerd running?"
}

fn call(what: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> DockerError {
    let what = what.into();
    move |source| DockerError::Call { what, source }
}

fn not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

#[derive(Clone, Debug)]
pub struct Docker {
    api: bollard::Docker,
}

impl Docker {
    /// Connects to the local daemon (`DOCKER_HOST` or the unix socket) and agrees on an API
    /// version both speak (Debian 12's dockerd 20.10 speaks 1.41).
    pub async fn connect() -> Result<Docker, DockerError> {
        let api = bollard::Docker::connect_with_local_defaults()
            .map_err(DockerError::Connect)?
            .negotiate_version()
            .await
            .map_err(DockerError::Connect)?;
        Ok(Docker { api })
    }

    pub async fn image(&self, name: &str) -> Result<ImageInspect, DockerError> {
        self.api
            .inspect_image(name)
            .await
            .map_err(call(format!("inspect image {name}")))
    }

    /// `docker import`: an image from a root file system tar, with Dockerfile-like `changes`
    /// (`CMD`, `ENTRYPOINT`, `EXPOSE`, `LABEL`).
    pub async fn import(
        &self,
        name: &str,
        rootfs_tar: Vec<u8>,
        changes: Vec<String>,
    ) -> Result<(), DockerError> {
        // The image this name held before: replaced, it would be left dangling.
        let before = self.api.inspect_image(name).await.ok().and_then(|i| i.id);
        let (repo, tag) = name.rsplit_once(':').unwrap_or((name, "latest"));
        let options = CreateImageOptionsBuilder::new()
            .from_src("-")
            .repo(repo)
            .tag(tag)
            .changes(changes)
            .build();
        let mut progress = self.api.create_image(
            Some(options),
            Some(bollard::body_full(rootfs_tar.into())),
            None,
        );
        while let Some(step) = progress.next().await {
            step.map_err(call(format!("import image {name}")))?;
        }
        let after = self.image(name).await?.id;
        if let Some(old) = before.filter(|old| Some(old) != after.as_ref()) {
            // Refused while a container still uses it; then it goes with that container's
            // image clean-up, as any other.
            let _ = self
                .api
                .remove_image(
                    &old,
                    None::<bollard::query_parameters::RemoveImageOptions>,
                    None,
                )
                .await;
        }
        Ok(())
    }

    /// Creates and starts a container under `name`, replacing one of that name left behind.
    pub async fn run(&self, name: &str, body: ContainerCreateBody) -> Result<(), DockerError> {
        self.remove(name).await?;
        let options = CreateContainerOptionsBuilder::new().name(name).build();
        self.api
            .create_container(Some(options), body)
            .await
            .map_err(call(format!("create container {name}")))?;
        self.start(name).await
    }

    pub async fn start(&self, name: &str) -> Result<(), DockerError> {
        self.api
            .start_container(name, None)
            .await
            .map_err(call(format!("start container {name}")))
    }

    /// The process id of a running container: the way into its namespaces.
    pub async fn pid(&self, name: &str) -> Result<u32, DockerError> {
        let c = self
            .api
            .inspect_container(name, None)
            .await
            .map_err(call(format!("inspect container {name}")))?;
        let state = c.state.unwrap_or_default();
        match (state.running, state.pid) {
            (Some(true), Some(pid)) if pid > 0 => u32::try_from(pid)
                .map_err(|_| DockerError::State(format!("container {name} has pid {pid}"))),
            _ => Err(DockerError::State(format!(
                "container {name} is not running ({})",
                state
                    .status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "no state".into())
            ))),
        }
    }

    /// Whether the container exists and runs; `None` if it does not exist.
    pub async fn running(&self, name: &str) -> Result<Option<bool>, DockerError> {
        match self.api.inspect_container(name, None).await {
            Ok(c) => Ok(Some(c.state.and_then(|s| s.running).unwrap_or(false))),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(call(format!("inspect container {name}"))(e)),
        }
    }

    /// Removes the container, running or not; one that is gone already is fine.
    pub async fn remove(&self, name: &str) -> Result<(), DockerError> {
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match self.api.remove_container(name, Some(options)).await {
            Err(e) if !not_found(&e) => Err(call(format!("remove container {name}"))(e)),
            _ => Ok(()),
        }
    }

    /// Waits for the container to stop and returns its exit code.
    pub async fn wait(&self, name: &str) -> Result<i64, DockerError> {
        let options = WaitContainerOptionsBuilder::new()
            .condition("not-running")
            .build();
        let mut w = self.api.wait_container(name, Some(options));
        match w.next().await {
            Some(Ok(r)) => Ok(r.status_code),
            // bollard reports a non-zero exit as an error carrying the code.
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(call(format!("wait for container {name}"))(e)),
            None => Err(DockerError::State(format!(
                "waiting for container {name} ended without a status"
            ))),
        }
    }

    /// The last `tail` lines of the container's stdout and stderr.
    pub async fn logs(&self, name: &str, tail: usize) -> Result<String, DockerError> {
        let options = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .tail(&tail.to_string())
            .build();
        let mut out = String::new();
        let mut logs = self.api.logs(name, Some(options));
        while let Some(chunk) = logs.next().await {
            let chunk = chunk.map_err(call(format!("logs of container {name}")))?;
            out.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        }
        Ok(out)
    }

    /// All containers (running or not) with this owner label.
    pub async fn owned_by(&self, owner: &str) -> Result<Vec<ContainerSummary>, DockerError> {
        let filters = HashMap::from([("label", vec![format!("{LABEL_OWNER}={owner}")])]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        self.api
            .list_containers(Some(options))
            .await
            .map_err(call(format!("list containers of {owner}")))
    }

    /// An internal bridge network (no route off the host) with a fixed subnet, replacing one of
    /// that name.
    pub async fn internal_network(&self, name: &str, subnet: &str) -> Result<(), DockerError> {
        self.remove_network(name).await?;
        self.api
            .create_network(NetworkCreateRequest {
                name: name.into(),
                driver: Some("bridge".into()),
                internal: Some(true),
                ipam: Some(Ipam {
                    config: Some(vec![IpamConfig {
                        subnet: Some(subnet.into()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                labels: Some(HashMap::from([(LABEL_OWNER.into(), name.into())])),
                ..Default::default()
            })
            .await
            .map_err(call(format!("create network {name}")))?;
        Ok(())
    }

    pub async fn remove_network(&self, name: &str) -> Result<(), DockerError> {
        match self.api.remove_network(name).await {
            Err(e) if !not_found(&e) => Err(call(format!("remove network {name}"))(e)),
            _ => Ok(()),
        }
    }
}

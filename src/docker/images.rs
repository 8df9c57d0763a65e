//! `algonet images build`: the images a node and the demo need, made offline from this host's
//! binaries and the shared libraries they load (as `ldd` lists them), imported with
//! `docker import`. For a registry, `docker/*.Dockerfile` build the same images from Debian.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::docker::{Docker, DockerError};

/// Names of the images (configurable on the node; the demo uses these defaults).
#[derive(Clone, Debug, serde::Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ImageNames {
    /// The OpenVPN client (and, in the demo, server) image.
    #[serde(default = "default_openvpn")]
    pub vpn_client: String,
    /// The image of containers that only hold a network namespace.
    #[serde(default = "default_sandbox")]
    pub sandbox: String,
}

impl Default for ImageNames {
    fn default() -> Self {
        ImageNames {
            vpn_client: default_openvpn(),
            sandbox: default_sandbox(),
        }
    }
}

fn default_openvpn() -> String {
    "algonet/openvpn:latest".into()
}

fn default_sandbox() -> String {
    "algonet/sandbox:latest".into()
}

/// The echo algorithm (the VPN feature test).
pub const ECHO_IMAGE: &str = "algonet/echo:latest";

/// vpn-average (`algorithms/vpn-average`): a vantage6 algorithm written with vantage6's own
/// algorithm tools.
pub const VPN_AVERAGE_IMAGE: &str = "algonet/vpn-average:latest";

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot find {0} on this host (install it: {1})")]
    Missing(String, &'static str),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("ldd {path} failed: {reason}")]
    Ldd { path: PathBuf, reason: String },
    #[error("{python}: {reason}")]
    Python { python: PathBuf, reason: String },
    #[error(transparent)]
    Docker(#[from] DockerError),
}

/// The shared libraries (and the loader) a dynamically linked binary needs.
pub(super) fn libraries(binary: &Path) -> Result<Vec<PathBuf>, ImageError> {
    let out = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| ImageError::Ldd {
            path: binary.into(),
            reason: e.to_string(),
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // A static binary needs nothing.
        if text.contains("not a dynamic executable") {
            return Ok(vec![]);
        }
        return Err(ImageError::Ldd {
            path: binary.into(),
            reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" and "/lib64/ld-linux-x86-64.so.2 (0x…)"
    let mut libs = Vec::new();
    for line in text.lines() {
        if line.contains("not found") {
            return Err(ImageError::Ldd {
                path: binary.into(),
                reason: line.trim().to_string(),
            });
        }
        let target = line.split("=>").last().unwrap_or(line).trim();
        if let Some(path) = target
            .split_whitespace()
            .next()
            .filter(|p| p.starts_with('/'))
        {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// A file of an image: from the host (read through symlinks) or given, at a path inside.
#[derive(Debug)]
pub enum Source {
    Host(PathBuf),
    Data(Vec<u8>),
}

/// A root file system tar holding `binaries` (host path -> path in the image) and their
/// libraries at the paths the loader looks for them, plus an empty `/tmp`.
pub fn rootfs(binaries: &[(&Path, &str)]) -> Result<Vec<u8>, ImageError> {
    let mut files: Vec<(Source, String)> = Vec::new();
    for (host, inside) in binaries {
        files.push((Source::Host(host.to_path_buf()), inside.to_string()));
        for lib in libraries(host)? {
            let inside = lib.to_string_lossy().into_owned();
            files.push((Source::Host(lib), inside));
        }
    }
    tar_of(files)
}

/// A root file system tar of `files`, with their folders and an empty `/tmp`; a path given
/// twice keeps its first file.
pub fn tar_of(files: Vec<(Source, String)>) -> Result<Vec<u8>, ImageError> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut dirs = BTreeSet::from(["tmp".to_string()]);
    for (_, inside) in &files {
        let mut p = Path::new(inside.trim_start_matches('/')).parent();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(d.to_string_lossy().into_owned());
            p = d.parent();
        }
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ImageError::Read { path, source }
    };
    for d in &dirs {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(if d == "tmp" { 0o1777 } else { 0o755 });
        h.set_size(0);
        tar.append_data(&mut h, d, std::io::empty())
            .map_err(io(Path::new(d)))?;
    }
    let mut seen = BTreeSet::new();
    for (source, inside) in files {
        if !seen.insert(inside.clone()) {
            continue;
        }
        // Read through symlinks: the image gets the file under the name the loader asks for.
        let data = match source {
            Source::Host(host) => std::fs::read(&host).map_err(io(&host))?,
            Source::Data(d) => d,
        };
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o755);
        h.set_size(data.len() as u64);
        tar.append_data(&mut h, inside.trim_start_matches('/'), data.as_slice())
            .map_err(io(Path::new(&inside)))?;
    }
    tar.into_inner().map_err(io(Path::new("tar")))
}

fn host_binary(
    name: &str,
    candidates: &[&str],
    package: &'static str,
) -> Result<PathBuf, ImageError> {
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| ImageError::Missing(name.into(), package))
}

/// Builds the sandbox, OpenVPN and echo images; `algonet` is the binary to put in the echo
/// image (this one).
pub async fn build(docker: &Docker, names: &ImageNames, algonet: &Path) -> Result<(), ImageError> {
    // The sandbox only holds a namespace open: `sleep infinity` is enough.
    let sleep = host_binary("sleep", &["/usr/bin/sleep", "/bin/sleep"], "coreutils")?;
    docker
        .import(
            &names.sandbox,
            rootfs(&[(&sleep, "/bin/sleep")])?,
            vec![r#"CMD ["/bin/sleep", "infinity"]"#.into()],
        )
        .await?;
    let openvpn = host_binary("openvpn", &["/usr/sbin/openvpn"], "openvpn")?;
    docker
        .import(
            &names.vpn_client,
            rootfs(&[(&openvpn, "/usr/sbin/openvpn")])?,
            vec![r#"ENTRYPOINT ["/usr/sbin/openvpn"]"#.into()],
        )
        .await?;
    docker
        .import(
            ECHO_IMAGE,
            rootfs(&[(algonet, "/usr/bin/algonet")])?,
            vec![
                r#"ENTRYPOINT ["/usr/bin/algonet", "echo"]"#.into(),
                "EXPOSE 8888/tcp".into(),
                "EXPOSE 9000/udp".into(),
                r#"LABEL p8888="echo""#.into(),
                r#"LABEL p9000="echo-udp""#.into(),
            ],
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rootfs_holds_the_binary_its_libraries_and_tmp() {
        let sleep = host_binary("sleep", &["/usr/bin/sleep", "/bin/sleep"], "coreutils")
            .expect("sleep on this host");
        let tar = rootfs(&[(&sleep, "/bin/sleep")]).expect("rootfs");
        let mut names = Vec::new();
        for e in tar::Archive::new(tar.as_slice())
            .entries()
            .expect("entries")
        {
            let e = e.expect("entry");
            names.push(e.path().expect("path").to_string_lossy().into_owned());
        }
        assert!(names.contains(&"bin/sleep".to_string()), "{names:?}");
        assert!(names.contains(&"tmp".to_string()), "{names:?}");
        assert!(
            names.iter().any(|n| n.contains("libc.so")),
            "libc missing: {names:?}"
        );
        assert!(names.iter().any(|n| n.contains("ld-linux")), "{names:?}");
    }
}

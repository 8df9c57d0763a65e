//! Python algorithms as images, offline: a vantage6 algorithm (any package written with
//! vantage6's algorithm tools) is installed with its PyPI dependencies into a venv of this host's
//! Python, and the interpreter, its standard library and the venv's packages go into an image at
//! the paths they have here, with every library their binaries load; its command is vantage6's
//! wrapper. No registry is needed; a Dockerfile builds the same where there is one.

use std::path::{Path, PathBuf};

use crate::docker::images::{libraries, tar_of, ImageError, Source, VPN_AVERAGE_IMAGE};
use crate::docker::Docker;

/// Where an algorithm's packages go in its image.
const SITE: &str = "/opt/vantage6/site";

/// The vpn-average algorithm's source, built into this binary so the image needs no checkout.
const VPN_AVERAGE: &str = include_str!("../../algorithms/vpn-average/vpn_average/__init__.py");

/// Folders of the standard library an algorithm never imports.
const STDLIB_UNUSED: &[&str] = &[
    "site-packages",
    "test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "lib2to3",
    "__pycache__",
];

/// What an algorithm's image is made of, beside the interpreter and the venv's packages.
#[derive(Debug)]
pub struct Algorithm {
    /// The image's name.
    pub tag: String,
    /// The module vantage6's wrapper runs (`PKG_NAME`).
    pub package: String,
    /// Files that are not in the venv (path inside the image under [`SITE`], contents).
    pub sources: Vec<(String, Vec<u8>)>,
    /// The ports it serves (`8888/tcp`), each with its label, if any.
    pub ports: Vec<(String, Option<String>)>,
}

/// Every file below `dir` (through symlinked files, not symlinked folders), but those in
/// folders named in `skip`.
fn tree(dir: &Path, skip: &[&str], out: &mut Vec<PathBuf>) -> Result<(), ImageError> {
    let read = |source| ImageError::Read {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(read)? {
        let path = entry.map_err(read)?.path();
        let is_link = std::fs::symlink_metadata(&path).map_err(read)?.is_symlink();
        if path.is_dir() {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if !is_link && !skip.contains(&name) {
                tree(&path, skip, out)?;
            }
        } else if path.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

/// Builds `algorithm`'s image from `python`, the interpreter of a venv that holds
/// `vantage6-algorithm-tools` and the algorithm's dependencies.
pub async fn build(docker: &Docker, python: &Path, algorithm: Algorithm) -> Result<(), ImageError> {
    let fail = |reason: String| ImageError::Python {
        python: python.to_path_buf(),
        reason,
    };
    let out = std::process::Command::new(python)
        .args([
            "-c",
            "import json, os, site, sys, sysconfig, vantage6.algorithm.tools; \
             print(json.dumps([os.path.realpath(sys.executable), \
             sysconfig.get_paths()['stdlib'], site.getsitepackages()[0]]))",
        ])
        .output()
        .map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(format!(
            "not a python with vantage6-algorithm-tools (pip install \
             vantage6-algorithm-tools==4.14.0): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let [exe, stdlib, site]: [PathBuf; 3] =
        serde_json::from_slice(&out.stdout).map_err(|e| fail(e.to_string()))?;
    let mut stdlib_files = Vec::new();
    tree(&stdlib, STDLIB_UNUSED, &mut stdlib_files)?;
    let mut site_files = Vec::new();
    tree(&site, &["__pycache__", "pip"], &mut site_files)?;
    let mut files: Vec<(Source, String)> = Vec::new();
    let mut binaries = vec![exe.clone()];
    for f in &stdlib_files {
        files.push((Source::Host(f.clone()), f.to_string_lossy().into_owned()));
    }
    for f in &site_files {
        let inside = Path::new(SITE).join(f.strip_prefix(&site).unwrap_or(f));
        files.push((
            Source::Host(f.clone()),
            inside.to_string_lossy().into_owned(),
        ));
    }
    binaries.extend(
        stdlib_files
            .iter()
            .chain(&site_files)
            // A wheel's bundled libraries (`<package>.libs/`) are found through the extension
            // that loads them, whose ldd lists them and what they need.
            .filter(|f| {
                let name = f
                    .file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default();
                (name.ends_with(".so") || name.contains(".so."))
                    && !f
                        .parent()
                        .and_then(Path::file_name)
                        .is_some_and(|d| d.to_string_lossy().ends_with(".libs"))
            })
            .cloned(),
    );
    files.push((
        Source::Host(exe.clone()),
        exe.to_string_lossy().into_owned(),
    ));
    // Libraries inside the two trees travel with them (found by $ORIGIN); the others go
    // where this host has them.
    for binary in &binaries {
        for lib in libraries(binary)? {
            if !lib.starts_with(&site) && !lib.starts_with(&stdlib) {
                let inside = lib.to_string_lossy().into_owned();
                files.push((Source::Host(lib), inside));
            }
        }
    }
    for (path, bytes) in algorithm.sources {
        files.push((Source::Data(bytes), format!("{SITE}/{path}")));
    }
    let mut instructions = vec![
        format!(
            "ENV PYTHONPATH={SITE} PKG_NAME={} PYTHONDONTWRITEBYTECODE=1",
            algorithm.package
        ),
        format!(
            r#"CMD ["{}", "-c", "from vantage6.algorithm.tools.wrap import wrap_algorithm; wrap_algorithm()"]"#,
            exe.display()
        ),
    ];
    for (port, label) in &algorithm.ports {
        instructions.push(format!("EXPOSE {port}"));
        if let Some(l) = label {
            let number = port.split('/').next().unwrap_or(port);
            instructions.push(format!("LABEL p{number}={l:?}"));
        }
    }
    docker
        .import(&algorithm.tag, tar_of(files)?, instructions)
        .await?;
    Ok(())
}

/// Builds vpn-average's image (`algorithms/vpn-average`) from `python`, a venv's interpreter
/// with `vantage6-algorithm-tools`; `algorithms/vpn-average/Dockerfile` builds the same from a
/// registry.
pub async fn build_vpn_average(docker: &Docker, python: &Path) -> Result<(), ImageError> {
    let algorithm = Algorithm {
        tag: VPN_AVERAGE_IMAGE.into(),
        package: "vpn_average".into(),
        sources: vec![(
            "vpn_average/__init__.py".into(),
            VPN_AVERAGE.as_bytes().to_vec(),
        )],
        ports: vec![("8888/tcp".into(), Some("average".into()))],
    };
    build(docker, python, algorithm).await
}

/// What a vantage6 algorithm's Dockerfile says of its package and ports: `ARG`/`ENV PKG_NAME`,
/// `EXPOSE` and `LABEL p<port>=<label>`, as vantage6's algorithm template writes them.
pub fn from_dockerfile(text: &str) -> (Option<String>, Vec<(String, Option<String>)>) {
    let mut package = None;
    let mut ports: Vec<(String, Option<String>)> = Vec::new();
    let mut labels = std::collections::BTreeMap::new();
    let unquote = |v: &str| v.trim().trim_matches('"').trim_matches('\'').to_string();
    for line in text.lines().map(str::trim) {
        let mut words = line.splitn(2, char::is_whitespace);
        let (Some(word), Some(rest)) = (words.next(), words.next()) else {
            continue;
        };
        match word.to_ascii_uppercase().as_str() {
            "ARG" | "ENV" => {
                for pair in rest.split_whitespace() {
                    // `ENV PKG_NAME=${PKG_NAME}` repeats the ARG by reference.
                    if let Some(v) = pair.strip_prefix("PKG_NAME=").filter(|v| !v.contains('$')) {
                        package = Some(unquote(v));
                    }
                }
            }
            "EXPOSE" => {
                for p in rest.split_whitespace() {
                    let p = if p.contains('/') {
                        p.to_string()
                    } else {
                        format!("{p}/tcp")
                    };
                    ports.push((p, None));
                }
            }
            "LABEL" => {
                for pair in rest.split_whitespace() {
                    if let Some((k, v)) = pair.split_once('=') {
                        if let Some(n) = k.strip_prefix('p') {
                            labels.insert(n.to_string(), unquote(v));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    for (port, label) in &mut ports {
        let number = port.split('/').next().unwrap_or_default();
        *label = labels.get(number).cloned();
    }
    (package, ports)
}

/// A vantage6 Python algorithm's source, to build an image of (`algonet images build
/// --algorithm`).
#[derive(Debug)]
pub struct AlgorithmSource {
    /// The package's folder (`setup.py` or `pyproject.toml`, and its Dockerfile if any).
    pub dir: PathBuf,
    pub tag: String,
    /// The module vantage6's wrapper runs; by default the Dockerfile's `PKG_NAME`, else the
    /// folder's name with `-` as `_`.
    pub package: Option<String>,
    /// Requirements installed with it (the federation's vantage6 tools, say).
    pub pins: Vec<String>,
}

/// Installs `source` with its dependencies into its venv (see [`venv_for`]) made with `python`
/// and builds its image; returns the image's name and the module it runs.
pub async fn build_source(
    docker: &Docker,
    python: &Path,
    source: AlgorithmSource,
) -> Result<(String, String), ImageError> {
    let dir = source.dir.canonicalize().map_err(|e| ImageError::Read {
        path: source.dir.clone(),
        source: e,
    })?;
    let dockerfile = std::fs::read_to_string(dir.join("Dockerfile")).unwrap_or_default();
    let (named, ports) = from_dockerfile(&dockerfile);
    let package = source.package.or(named).unwrap_or_else(|| {
        dir.file_name()
            .map(|n| n.to_string_lossy().replace('-', "_"))
            .unwrap_or_default()
    });
    let venv = venv_for(&dir);
    tracing::info!(
        "installing {} and its dependencies into {}",
        dir.display(),
        venv.display()
    );
    let venv_python = install(python, &dir, &venv, &source.pins)?;
    let algorithm = Algorithm {
        tag: source.tag.clone(),
        package: package.clone(),
        sources: Vec::new(),
        ports,
    };
    build(docker, &venv_python, algorithm).await?;
    Ok((source.tag, package))
}

/// The venv an algorithm folder's packages are installed in, kept between builds (pip then
/// only adds what changed): under `$XDG_CACHE_HOME/algonet/venvs/` (or `~/.cache`).
pub fn venv_for(dir: &Path) -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("algonet/venvs")
        .join(
            dir.to_string_lossy()
                .trim_start_matches('/')
                .replace('/', "_"),
        )
}

/// Installs the algorithm in `dir` (a Python package: `setup.py` or `pyproject.toml`) with
/// its dependencies from PyPI into a venv of `python` at `venv`, made if absent, together with
/// `pins` (requirements such as `vantage6-algorithm-tools==4.14.0`, which an algorithm's
/// unpinned dependency on the tools then keeps to); returns the venv's interpreter.
pub fn install(
    python: &Path,
    dir: &Path,
    venv: &Path,
    pins: &[String],
) -> Result<PathBuf, ImageError> {
    let fail = |reason: String| ImageError::Python {
        python: python.to_path_buf(),
        reason,
    };
    let run = |cmd: &mut std::process::Command, what: &str| -> Result<(), ImageError> {
        let out = cmd.output().map_err(|e| fail(format!("{what}: {e}")))?;
        if out.status.success() {
            return Ok(());
        }
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(15).collect();
        Err(fail(format!(
            "{what} failed:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )))
    };
    if !dir.join("setup.py").is_file() && !dir.join("pyproject.toml").is_file() {
        return Err(fail(format!(
            "{}: no setup.py or pyproject.toml (an algorithm is a Python package)",
            dir.display()
        )));
    }
    let venv_python = venv.join("bin/python");
    if !venv_python.is_file() {
        run(
            std::process::Command::new(python)
                .arg("-m")
                .arg("venv")
                .arg(venv),
            "making a venv",
        )?;
    }
    run(
        std::process::Command::new(&venv_python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(pins)
            .arg(dir),
        "pip install",
    )?;
    Ok(venv_python)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vantage6_dockerfile_names_its_package_and_ports() {
        let text = "FROM harbor2.vantage6.ai/infrastructure/algorithm-base:4.15\n\
            ARG PKG_NAME=\"v6_crosstab_py\"\nCOPY . /app\nRUN pip install /app\n\
            ENV PKG_NAME=${PKG_NAME}\nEXPOSE 8888 9000/udp\nLABEL p8888=\"average\"\n";
        let (package, ports) = from_dockerfile(text);
        assert_eq!(package.as_deref(), Some("v6_crosstab_py"));
        assert_eq!(
            ports,
            [
                ("8888/tcp".to_string(), Some("average".to_string())),
                ("9000/udp".to_string(), None)
            ]
        );
        let (package, _) = from_dockerfile("ARG PKG_NAME=my_algo\n");
        assert_eq!(package.as_deref(), Some("my_algo"));
    }
}

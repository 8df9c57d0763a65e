//! vantage6's own server (`vantage6-server` 4.15.2 from PyPI, in the venv of
//! `ALGONET_V6_SERVER_PYTHON`) on 127.0.0.1, started from a configuration of its own through
//! `tests/python/vantage6_server.py`, SQLite in a folder removed at the end; the process is
//! ended (by its PID) when the handle drops. Its first start makes user `root` with password
//! `root`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::server::TempDir;

/// A running vantage6 server.
#[derive(Debug)]
pub struct Vantage6Server {
    /// Its API root, e.g. `http://127.0.0.1:5070/api`.
    pub base: String,
    pub port: u16,
    pub dir: PathBuf,
    child: std::process::Child,
    _dir: TempDir,
}

impl Drop for Vantage6Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts one and waits (up to 2 minutes) until it answers.
pub async fn start(server_python: &str, tag: &str) -> Vantage6Server {
    start_with(server_python, tag, "", &[]).await
}

/// [`start`] with `extra` settings (YAML) in its configuration, e.g. a `vpn_server`, and
/// `env` in its environment.
pub async fn start_with(
    server_python: &str,
    tag: &str,
    extra: &str,
    env: &[(&str, &std::ffi::OsStr)],
) -> Vantage6Server {
    let dir = std::env::temp_dir().join(format!("algonet-v6-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("vantage6's folder");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let config = dir.join("server.yaml");
    std::fs::write(
        &config,
        format!(
            "description: reference\nip: 127.0.0.1\nport: {port}\napi_path: /api\n\
             uri: sqlite:///{db}\nallow_drop_all: false\njwt_secret_key: reference\n\
             logging:\n  level: WARNING\n  file: {log}\n  use_console: false\n  backup_count: 1\n\
             \x20 max_size: 1024\n  format: \"%(asctime)s %(name)s %(levelname)s %(message)s\"\n\
             \x20 datefmt: \"%H:%M:%S\"\n  loggers: []\n{extra}",
            db = dir.join("reference.sqlite").display(),
            log = dir.join("reference.log").display(),
        ),
    )
    .expect("vantage6's configuration");
    let child = std::process::Command::new(server_python)
        .arg(format!(
            "{}/../tests/python/vantage6_server.py",
            env!("CARGO_MANIFEST_DIR")
        ))
        .arg(&config)
        .arg(port.to_string())
        .envs(env.iter().copied())
        .stdout(std::fs::File::create(dir.join("stdout")).expect("stdout"))
        .stderr(std::fs::File::create(dir.join("stderr")).expect("stderr"))
        .spawn()
        .expect("start vantage6's server");
    let server = Vantage6Server {
        base: format!("http://127.0.0.1:{port}/api"),
        port,
        dir: dir.clone(),
        child,
        _dir: TempDir(dir.clone()),
    };
    let http = reqwest::Client::new();
    let until = Instant::now() + Duration::from_secs(120);
    while http
        .get(format!("{}/version", server.base))
        .send()
        .await
        .is_err()
    {
        assert!(
            Instant::now() < until,
            "vantage6's server did not answer: {}",
            std::fs::read_to_string(dir.join("stderr")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    server
}

//! PostgreSQL for the tests: the private cluster the test command starts (its URL in
//! `ALGONET_TEST_POSTGRES`), a fresh database in it per server under test, and clusters of a
//! test's own that it may stop and start ([`Cluster`]).

use std::path::PathBuf;
use std::process::Command;

use sqlx::{Connection, Executor};

/// The test command's cluster, `postgres://postgres@127.0.0.1:<port>`; `None` (with a message)
/// when there is none, and a failure under CI, which must run the PostgreSQL tests.
pub fn shared(test: &str) -> Option<String> {
    match std::env::var("ALGONET_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{test}: needs ALGONET_TEST_POSTGRES (scripts/test.sh starts a cluster), and CI runs every tier"
            );
            eprintln!(
                "skipping {test}: no ALGONET_TEST_POSTGRES (scripts/test.sh starts a cluster)"
            );
            None
        }
    }
}

/// Whether servers under test keep their data in PostgreSQL (`ALGONET_TEST_BACKEND=postgres`,
/// set by the test command's second run of the server API tests) rather than SQLite.
pub fn servers_on_postgres() -> bool {
    std::env::var("ALGONET_TEST_BACKEND").is_ok_and(|b| b == "postgres")
}

/// A new, empty database in the cluster at `base`; its URL.
pub async fn database(base: &str, tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "algonet_{}_{}_{}",
        tag.replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let mut admin = sqlx::PgConnection::connect(&format!("{base}/postgres"))
        .await
        .expect("connect to the test cluster");
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name}"
        )))
        .await
        .expect("drop");
    admin
        .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .expect("create database");
    format!("{base}/{name}")
}

/// A private cluster of one test (initdb as the `postgres` user, in a folder of its own, on
/// 127.0.0.1 only): stopped and removed on drop.
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
}

/// The newest PostgreSQL installed (`/usr/lib/postgresql/<version>/bin`).
fn bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("Debian's postgresql is installed")
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
    });
    versions.pop().expect("an initdb")
}

fn as_postgres(args: &[&str]) -> std::process::Output {
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .args(args)
        .output()
        .expect("runuser");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl Cluster {
    /// Makes and starts a cluster named after the test, on a free port of 127.0.0.1.
    pub fn start(tag: &str) -> Cluster {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = std::env::temp_dir().join(format!("algonet-pg-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ok = Command::new("install")
            .args(["-d", "-o", "postgres", "-g", "postgres", "-m", "0700"])
            .arg(&dir)
            .status()
            .expect("install");
        assert!(ok.success(), "make {}", dir.display());
        let cluster = Cluster {
            dir,
            bin: bin(),
            port,
        };
        let data = cluster.data();
        as_postgres(&[
            &cluster.tool("initdb"),
            "-D",
            &data,
            "-A",
            "trust",
            "-U",
            "postgres",
        ]);
        cluster.up();
        cluster
    }

    fn tool(&self, name: &str) -> String {
        self.bin.join(name).display().to_string()
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    /// `postgres://postgres@127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    /// Starts the cluster (again); returns when it accepts connections.
    pub fn up(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("log").display().to_string();
        as_postgres(&[
            &self.tool("pg_ctl"),
            "-D",
            &self.data(),
            "-l",
            &log,
            "-w",
            "-o",
            &options,
            "start",
        ]);
    }

    /// Stops the cluster at once (`-m immediate`: as a crash or a lost host would).
    pub fn down(&self) {
        as_postgres(&[
            &self.tool("pg_ctl"),
            "-D",
            &self.data(),
            "-m",
            "immediate",
            "-w",
            "stop",
        ]);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .args([
                &self.tool("pg_ctl"),
                "-D",
                &self.data(),
                "-m",
                "immediate",
                "stop",
            ])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

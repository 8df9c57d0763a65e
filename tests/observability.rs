//! What an operator sees of a running server: JSON log lines with each request's span, and
//! Prometheus metrics that prometheus_client's own parser (from PyPI) accepts, counting requests
//! by matched route and status. The node's side is shown in the Docker tier
//! (`tests/docker_federation.rs`), where a node runs for real.

use algonet_testkit as common;

use std::io::BufRead;
use std::process::{Child, Command, Stdio};

struct Server {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    dir: std::path::PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Server {
    /// The next log line that contains `needle` (within 20 s).
    fn line_with(&self, needle: &str) -> String {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let left = until.saturating_duration_since(std::time::Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no log line with {needle:?}"));
            if line.contains(needle) {
                return line;
            }
        }
    }
}

/// A server process with its metrics on `metrics` and `extra` in its configuration.
fn start(tag: &str, metrics: &str, extra: &str) -> Server {
    let dir = std::env::temp_dir().join(format!("algonet-obs-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("server.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\nmetrics_listen: {metrics}\ndata_dir: {}\n\
             admin: {{username: root, password: correct-horse-battery}}\n{extra}",
            dir.join("data").display()
        ),
    )
    .expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_algonet"))
        .args(["server", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the server");
    let stderr = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    Server { child, lines, dir }
}

/// The `http://...` address a log line names.
fn address(line: &str) -> String {
    let start = line.find("http://").expect("an address");
    line[start..]
        .split(|c: char| c == '"' || c.is_whitespace())
        .next()
        .expect("address")
        .trim_end_matches("/metrics")
        .to_string()
}

#[tokio::test]
async fn json_logs_carry_each_requests_span_and_metrics_count_them() {
    let Some(python) = common::venv_python("ALGONET_V6_SERVER_PYTHON") else {
        return;
    };
    let server = start(
        "json",
        "127.0.0.1:0",
        "log_format: json\nlog_level: debug\n",
    );
    let metrics = address(&server.line_with("metrics on"));
    let api = format!("{}/api", address(&server.line_with("listening on")));
    let http = reqwest::Client::new();
    let get = |path: String| http.get(path).send();
    for (path, status) in [
        ("/version", 200),
        ("/version", 200),
        ("/no/such/thing", 404),
        ("/task/7", 401),
    ] {
        let answer = get(format!("{api}{path}")).await.expect("an answer");
        assert_eq!(answer.status(), status, "{path}");
    }
    let login = http
        .post(format!("{api}/token/user"))
        .json(&serde_json::json!({"username": "root", "password": "wrong password!"}))
        .send()
        .await
        .expect("login");
    assert_eq!(login.status(), 401);

    // Every line is a JSON object; a request's line carries its span and status.
    let line = server.line_with("\"/api/task/{id}\"");
    let event: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(event["level"], "DEBUG", "{line}");
    assert_eq!(event["span"]["method"], "GET", "{line}");
    assert_eq!(event["span"]["route"], "/api/task/{id}", "{line}");
    assert_eq!(event["span"]["status"], 401, "{line}");
    assert!(event["span"]["ms"].as_f64().is_some(), "{line}");

    let text = get(format!("{metrics}/metrics"))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("text");
    let samples = common::openmetrics(&python, &text);
    let requests = |route: &str, status: &str| {
        common::sample(
            &samples,
            "algonet_server_requests_total",
            &[("route", route), ("status", status)],
        )
    };
    assert_eq!(requests("/api/version", "200"), Some(2.0), "{text}");
    assert_eq!(requests("unmatched", "404"), Some(1.0), "{text}");
    assert_eq!(requests("/api/task/{id}", "401"), Some(1.0), "{text}");
    assert_eq!(requests("/api/token/user", "401"), Some(1.0), "{text}");
    assert_eq!(
        common::sample(
            &samples,
            "algonet_server_request_duration_seconds_count",
            &[]
        ),
        Some(5.0),
        "{text}"
    );
    assert_eq!(
        common::sample(&samples, "algonet_server_database_up", &[]),
        Some(1.0)
    );
    assert_eq!(
        common::sample(&samples, "algonet_server_nodes_with_vpn_address", &[]),
        Some(0.0)
    );
}

#[test]
fn a_taken_metrics_address_fails_the_start_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let mut server = start("taken", &addr.to_string(), "");
    let status = server.child.wait().expect("wait");
    assert_eq!(status.code(), Some(1));
    let line = server.line_with("metrics_listen");
    assert!(line.contains(&addr.to_string()), "{line}");
}

/// systemd and `docker stop` send TERM: the server stops as on Ctrl-C, exit 0.
#[test]
fn the_server_stops_cleanly_on_sigterm() {
    let mut server = start("term", "null", "");
    server.line_with("listening on");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(server.child.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let status = server.child.wait().expect("wait");
    assert!(status.success(), "{status}");
    server.line_with("stopping (SIGTERM)");
}

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

/// The audit trail an auditor or fail2ban reads, as JSON lines at info: failed logins and the
/// lockout with the account and the address, certificates issued, a node deleted with its
/// certificates revoked; never a password or an API key.
#[tokio::test]
async fn the_audit_trail_is_structured_and_holds_no_secrets() {
    let server = start(
        "audit",
        "null",
        "log_format: json\nvpn: {subnet: 10.76.0.0/16, remote: vpn.invalid}\n",
    );
    let api = format!("{}/api", address(&server.line_with("listening on")));
    let http = reqwest::Client::new();
    let post = |path: &str, token: Option<&str>, body: serde_json::Value| {
        let mut req = http.post(format!("{api}{path}")).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    let wrong = serde_json::json!({"username": "root", "password": "not-the-password"});
    for expected in [401, 401, 401, 429] {
        let answer = post("/token/user", None, wrong.clone())
            .await
            .expect("login");
        assert_eq!(answer.status(), expected);
    }
    let json = |line: String| -> serde_json::Value {
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    };
    let failed = json(server.line_with("login failed"));
    assert_eq!(failed["level"], "INFO");
    assert_eq!(failed["fields"]["user"], "root", "{failed}");
    assert_eq!(failed["fields"]["address"], "127.0.0.1", "{failed}");
    let refused = json(server.line_with("too many failures"));
    assert_eq!(refused["level"], "WARN");
    assert_eq!(refused["fields"]["user"], "root", "{refused}");
    assert_eq!(refused["fields"]["address"], "127.0.0.1", "{refused}");

    // A node gets a certificate, then is deleted: both in the trail, with the node's id.
    let right = serde_json::json!({"username": "root", "password": "correct-horse-battery"});
    tokio::time::sleep(std::time::Duration::from_secs(3)).await; // the lockout's delay
    let admin: serde_json::Value = post("/token/user", None, right)
        .await
        .expect("login")
        .json()
        .await
        .expect("token");
    let admin = admin["access_token"].as_str().expect("token").to_string();
    let created = |v: serde_json::Value| v["id"].clone();
    let org = post(
        "/organization",
        Some(&admin),
        serde_json::json!({"name": "o"}),
    );
    let org = created(org.await.expect("org").json().await.expect("json"));
    let col = serde_json::json!({"name": "c", "organization_ids": [org]});
    let col = created(
        post("/collaboration", Some(&admin), col)
            .await
            .expect("col")
            .json()
            .await
            .expect("json"),
    );
    let node = serde_json::json!({"organization_id": org, "collaboration_id": col});
    let node: serde_json::Value = post("/node", Some(&admin), node)
        .await
        .expect("node")
        .json()
        .await
        .expect("json");
    let api_key = node["api_key"].as_str().expect("key").to_string();
    let login = post("/token/node", None, serde_json::json!({"api_key": api_key}));
    let login: serde_json::Value = login.await.expect("node login").json().await.expect("json");
    let token = login["access_token"].as_str().expect("token");
    let profile = http.get(format!("{api}/vpn")).bearer_auth(token).send();
    assert_eq!(profile.await.expect("vpn").status(), 200);
    let issued = json(server.line_with("VPN certificate issued"));
    assert_eq!(
        issued["fields"]["node_id"],
        node["id"].to_string(),
        "{issued}"
    );
    let id = node["id"].as_i64().expect("id");
    let deleted = http
        .delete(format!("{api}/node/{id}"))
        .bearer_auth(&admin)
        .send();
    assert!(deleted.await.expect("delete").status().is_success());
    let deleted = json(server.line_with("node deleted; its certificates revoked"));
    assert_eq!(deleted["fields"]["node_id"], id.to_string(), "{deleted}");
    assert_eq!(deleted["level"], "INFO");

    // Nothing secret anywhere in the trail.
    let log = std::iter::from_fn(|| server.lines.try_recv().ok()).collect::<Vec<_>>();
    for line in [failed, refused, issued, deleted]
        .iter()
        .map(ToString::to_string)
        .chain(log)
    {
        for secret in [
            "not-the-password",
            "correct-horse-battery",
            api_key.as_str(),
            token,
        ] {
            assert!(!line.contains(secret), "a secret in the log: {line}");
        }
    }
}

/// The systemd units as shipped pass `systemd-analyze verify` without a warning (with the unit's
/// binary path pointed at this build).
#[test]
fn the_systemd_units_verify() {
    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("skipped: no systemd-analyze on this host");
        return;
    };
    assert!(out.status.success());
    let dir = std::env::temp_dir().join(format!("algonet-units-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let units = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/systemd");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&units).expect("deploy/systemd") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("unit");
        let text = text.replace("/usr/local/bin/algonet", env!("CARGO_BIN_EXE_algonet"));
        // A template is verified as one of its instances.
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .replace("@.", "@x.");
        std::fs::write(dir.join(&name), text).expect("write");
        names.push(dir.join(name));
    }
    assert_eq!(names.len(), 3, "{names:?}");
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&names)
        .output()
        .expect("systemd-analyze verify");
    let _ = std::fs::remove_dir_all(&dir);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}

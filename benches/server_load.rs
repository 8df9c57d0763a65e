//! The server under load (a benchmark, not a test; `scripts/bench-server.sh` runs it): N
//! simulated nodes, each with its own connection, poll for their pending runs, claim each,
//! register a port for it and report it completed, back to back, while the administrator adds a
//! task for every organization twice a second. Against the SQLite file, PostgreSQL with one
//! server process, and PostgreSQL with two (node i talks to process i mod 2). Each server is a
//! release `algonet server` process of its own; this process only makes the load.
//!
//!   server_load <algonet binary> <postgres base URL> [nodes...] [--seconds S]
//!
//! Prints one Markdown table row per case: requests per second, p50 and p99 latency, and
//! answers other than 2xx and 409 (a claim another poll won).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A server process, ended on drop.
struct ServerProcess {
    child: Child,
    base: String,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

async fn start(binary: &Path, dir: &Path, database: Option<&str>) -> ServerProcess {
    std::fs::create_dir_all(dir).expect("dir");
    let port = free_port();
    let config = dir.join("server.yaml");
    let database = database
        .map(|d| format!("database: {d}\n"))
        .unwrap_or_default();
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\ndata_dir: {}\nmetrics_listen: null\nlog_level: warn\n\
             max_connections: 4096\n{database}admin: {{username: root, password: correct-horse-battery}}\n",
            dir.join("data").display()
        ),
    )
    .expect("config");
    let child = Command::new(binary)
        .args(["server", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the server");
    // Owned from here: killed and waited for however this ends.
    let server = ServerProcess {
        child,
        base: format!("http://127.0.0.1:{port}/api"),
    };
    let http = reqwest::Client::new();
    for _ in 0..100 {
        if http
            .get(format!("{}/version", server.base))
            .send()
            .await
            .is_ok()
        {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the server at {} did not answer", server.base);
}

/// What one simulated node saw: each request's latency in microseconds, and the unexpected
/// answers.
#[derive(Default)]
struct Seen {
    latencies: Vec<u32>,
    errors: usize,
}

impl Seen {
    async fn call(
        &mut self,
        http: &reqwest::Client,
        method: reqwest::Method,
        url: String,
        token: &str,
        body: Option<Value>,
    ) -> Option<(u16, Value)> {
        let start = Instant::now();
        let mut req = http.request(method, url).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let answered = match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let v = resp.json().await.unwrap_or(Value::Null);
                Some((status, v))
            }
            Err(_) => None,
        };
        self.latencies
            .push(u32::try_from(start.elapsed().as_micros()).unwrap_or(u32::MAX));
        match &answered {
            Some((200..=299 | 409, _)) => {}
            _ => self.errors += 1,
        }
        answered
    }
}

/// One node: poll, claim, register a port, complete; until `stop`.
async fn node(base: String, token: String, stop: Arc<AtomicBool>, port: u16) -> Seen {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .expect("client");
    let mut seen = Seen::default();
    while !stop.load(Ordering::Relaxed) {
        let url = format!("{base}/run?per_page=10");
        let Some((200, page)) = seen
            .call(&http, reqwest::Method::GET, url, &token, None)
            .await
        else {
            continue;
        };
        let Some(id) = page["data"][0]["id"].as_i64() else {
            continue;
        };
        let url = format!("{base}/run/{id}/claim");
        let claimed = seen
            .call(&http, reqwest::Method::POST, url, &token, None)
            .await;
        if !matches!(claimed, Some((200, _))) {
            continue;
        }
        let body = json!({"run_id": id, "port": port, "label": "load"});
        let url = format!("{base}/port");
        seen.call(&http, reqwest::Method::POST, url, &token, Some(body))
            .await;
        let body = json!({"status": "completed", "result": ""});
        let url = format!("{base}/run/{id}");
        seen.call(&http, reqwest::Method::PATCH, url, &token, Some(body))
            .await;
    }
    seen
}

/// One case: `servers` on one database, `n` nodes for `seconds`.
async fn case(servers: &[ServerProcess], n: usize, seconds: u64) -> (f64, f64, f64, usize, usize) {
    let http = reqwest::Client::new();
    let base = |i: usize| servers[i % servers.len()].base.clone();
    let login = json!({"username": "root", "password": "correct-horse-battery"});
    let admin = algonet_testkit::call(
        &http,
        "POST",
        &format!("{}/token/user", base(0)),
        None,
        login,
    )
    .await;
    let admin = admin["access_token"].as_str().expect("token").to_string();
    let mut orgs = Vec::new();
    for i in 0..n {
        let v = algonet_testkit::call(
            &http,
            "POST",
            &format!("{}/organization", base(i)),
            Some(&admin),
            json!({"name": format!("org{i}")}),
        )
        .await;
        orgs.push(v["id"].as_i64().expect("id"));
    }
    let collab = algonet_testkit::call(
        &http,
        "POST",
        &format!("{}/collaboration", base(0)),
        Some(&admin),
        json!({"name": "load", "organization_ids": orgs}),
    )
    .await;
    let collab = collab["id"].as_i64().expect("id");
    let mut tokens = Vec::new();
    for (i, org) in orgs.iter().enumerate() {
        let node = algonet_testkit::call(
            &http,
            "POST",
            &format!("{}/node", base(i)),
            Some(&admin),
            json!({"organization_id": org, "collaboration_id": collab}),
        )
        .await;
        let login = algonet_testkit::call(
            &http,
            "POST",
            &format!("{}/token/node", base(i)),
            None,
            json!({"api_key": node["api_key"]}),
        )
        .await;
        tokens.push(login["access_token"].as_str().expect("token").to_string());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let task = json!({"name": "load", "image": "echo", "collaboration_id": collab,
                      "organizations": orgs.iter().map(|o| json!({"id": o})).collect::<Vec<_>>()});
    let feeder = {
        let (stop, url, admin) = (stop.clone(), format!("{}/task", base(0)), admin.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut made = 0usize;
            while !stop.load(Ordering::Relaxed) {
                if let Ok(r) = http.post(&url).bearer_auth(&admin).json(&task).send().await {
                    made += usize::from(r.status().is_success());
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            made
        })
    };
    let started = Instant::now();
    let workers: Vec<_> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, token)| {
            let port = 1024 + u16::try_from(i % 60_000).unwrap_or(0);
            tokio::spawn(node(base(i), token, stop.clone(), port))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    let mut errors = 0;
    for w in workers {
        let seen = w.await.expect("node");
        latencies.extend(seen.latencies);
        errors += seen.errors;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let tasks = feeder.await.expect("feeder");
    latencies.sort_unstable();
    let at = |q: f64| {
        let i = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        f64::from(latencies.get(i).copied().unwrap_or(0)) / 1000.0
    };
    (
        latencies.len() as f64 / elapsed,
        at(0.5),
        at(0.99),
        errors,
        tasks,
    )
}

#[tokio::main]
async fn main() {
    // `cargo bench` runs every bench with `--bench` alone; this one needs its script.
    let mut args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.is_empty() {
        eprintln!("server_load: skipped; run it with ./scripts/bench-server.sh");
        return;
    }
    let mut seconds = 10;
    if let Some(i) = args.iter().position(|a| a == "--seconds") {
        seconds = args
            .get(i + 1)
            .and_then(|s| s.parse().ok())
            .expect("--seconds S");
        args.drain(i..i + 2);
    }
    let (binary, pg) = match args.as_slice() {
        [binary, pg, ..] => (PathBuf::from(binary), pg.clone()),
        _ => panic!(
            "usage: server_load <algonet binary> <postgres base URL> [nodes...] [--seconds S]"
        ),
    };
    let sizes: Vec<usize> = if args.len() > 2 {
        args[2..]
            .iter()
            .map(|s| s.parse().expect("a number of nodes"))
            .collect()
    } else {
        vec![100, 1000]
    };
    let scratch = std::env::temp_dir().join(format!("algonet-server-load-{}", std::process::id()));
    println!("| database | server processes | nodes | requests/s | p50 ms | p99 ms | other answers | tasks made |");
    println!("|---|---|---|---|---|---|---|---|");
    for &n in &sizes {
        for (name, replicas) in [("SQLite", 1), ("PostgreSQL", 1), ("PostgreSQL", 2)] {
            let dir = scratch.join(format!("{name}-{replicas}-{n}"));
            let url = if name == "PostgreSQL" {
                Some(algonet_testkit::postgres::database(&pg, &format!("load{replicas}x{n}")).await)
            } else {
                None
            };
            let mut servers = Vec::new();
            for r in 0..replicas {
                servers.push(start(&binary, &dir.join(format!("r{r}")), url.as_deref()).await);
            }
            let (rps, p50, p99, errors, tasks) = case(&servers, n, seconds).await;
            println!("| {name} | {replicas} | {n} | {rps:.0} | {p50:.1} | {p99:.1} | {errors} | {tasks} |");
            drop(servers);
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
}

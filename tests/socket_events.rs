//! vantage6's socket.io channel on an algonet server, judged by the `python-socketio` client
//! vantage6's node pins (`tests/python/socket_client.py`, the token in the handshake's headers
//! as the node sends it): who joins which rooms and hears which events, what a bad token gets,
//! online and offline, a restart of the server process, and a second replica on PostgreSQL.

use algonet_testkit as common;

use std::io::Write as _;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use common::server::{server, Server};
use serde_json::{json, Value};

/// How long an event may take to arrive (the other replica looks once a second).
const WAIT: Duration = Duration::from_secs(20);

/// vantage6's node's socket.io client, connected to `base` (the server's root) with `token`.
/// Its waits block the thread (the tests run on a multi-threaded runtime, the server beside).
struct Client {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<Value>,
    /// Every event seen, in order.
    seen: Vec<Value>,
}

impl Client {
    fn connect(python: &str, base: &str, token: &str, transport: Transport) -> Client {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/socket_client.py");
        let mut child = Command::new(python)
            .args([script, base, token, transport.name()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the socket.io client");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let v = serde_json::from_str(&line).unwrap_or(Value::String(line));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        Client {
            stdin: child.stdin.take(),
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for event `name` (skipping others) and gives its first argument (or null).
    fn expect(&mut self, name: &str) -> Value {
        self.expect_event(name)["args"][0].clone()
    }

    /// Waits for event `name` (skipping others) and gives it as the client printed it.
    fn expect_event(&mut self, name: &str) -> Value {
        let end = Instant::now() + WAIT;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match tokio::task::block_in_place(|| self.lines.recv_timeout(left)) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if v["event"] == name {
                        return v;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no {name} within {WAIT:?}; seen: {:?}", self.seen)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("the client ended before {name}; seen: {:?}", self.seen)
                }
            }
        }
    }

    /// Every event seen so far and arriving within `settle`.
    fn all(&mut self, settle: Duration) -> &[Value] {
        while let Ok(v) = tokio::task::block_in_place(|| self.lines.recv_timeout(settle)) {
            self.seen.push(v);
        }
        &self.seen
    }

    fn emit(&mut self, name: &str, args: Value) {
        let stdin = self.stdin.as_mut().expect("open");
        writeln!(stdin, "{}", json!({"emit": name, "args": args})).expect("write");
    }

    fn close(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = writeln!(stdin, "{}", json!({"close": true}));
        }
        self.expect("closed");
    }
}

/// How the client reaches the server.
#[derive(Clone, Copy, Debug)]
enum Transport {
    /// Long polling only (vantage6's node as it installs: no websocket client).
    Polling,
    /// Polling, then the upgrade to a websocket.
    Websocket,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Polling => "polling",
            Transport::Websocket => "websocket",
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server's root (socket.io is there, the API under `/api`).
fn root(s: &Server) -> String {
    s.base.trim_end_matches("/api").to_string()
}

fn names(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| e["event"].as_str().map(str::to_string))
        .collect()
}

async fn node_status(s: &Server, admin: &str, node: i64) -> String {
    s.ok("GET", &format!("/node/{node}"), Some(admin), json!(null))
        .await["status"]
        .as_str()
        .expect("status")
        .to_string()
}

/// A node in a collaboration of its own: (node id, node token).
async fn elsewhere(s: &Server, admin: &str) -> (i64, String) {
    let org = s
        .ok(
            "POST",
            "/organization",
            Some(admin),
            json!({"name": "elsewhere"}),
        )
        .await["id"]
        .clone();
    let col = json!({"name": "elsewhere", "organization_ids": [org]});
    let col = s.ok("POST", "/collaboration", Some(admin), col).await["id"].clone();
    let body = json!({"organization_id": org, "collaboration_id": col});
    let node = s.ok("POST", "/node", Some(admin), body).await;
    let login = json!({"api_key": node["api_key"]});
    let token = s.ok("POST", "/token/node", None, login).await["access_token"]
        .as_str()
        .expect("token")
        .to_string();
    (node["id"].as_i64().expect("id"), token)
}

/// Two collaborations: two nodes in one, one in the other. A node hears its collaboration's new
/// tasks, kills and status changes, never the other's; a user hears every collaboration's; a
/// node passes on status changes of its own runs only; a bad token is told so and let go; a
/// node is online while connected and offline once it leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_hears_its_collaboration_and_nothing_else() {
    let Some(python) = common::venv_python("ALGONET_V6_NODE_PYTHON") else {
        return;
    };
    let s = server("socket-rooms", "").await;
    let admin = s.admin().await;
    let ours = s.nodes(2).await;
    let theirs = elsewhere(&s, &admin).await;
    let collab = s
        .ok(
            "GET",
            &format!("/node/{}", ours[0].0),
            Some(&admin),
            json!(null),
        )
        .await["collaboration"]["id"]
        .as_i64()
        .expect("collaboration");
    let mut node = Client::connect(&python, &root(&s), &ours[0].1, Transport::Polling);
    let mut other = Client::connect(&python, &root(&s), &theirs.1, Transport::Websocket);
    let mut user = Client::connect(&python, &root(&s), &admin, Transport::Websocket);
    let mut stranger = Client::connect(&python, &root(&s), "not.a.token", Transport::Polling);
    node.expect("connect");
    node.expect("sync");
    let joined = node.expect("message");
    assert!(
        joined
            .as_str()
            .is_some_and(|m| m.contains("joined room <collaboration_")),
        "{joined}"
    );
    other.expect("sync");
    user.expect("connect");
    // The user joined before the node announced itself, or after: wait for what it must hear.
    assert_eq!(node_status(&s, &admin, ours[0].0).await, "online");

    stranger.expect("invalid_token");
    stranger.expect("disconnect");

    let orgs: Vec<Value> = s
        .ok(
            "GET",
            &format!("/organization?collaboration_id={collab}"),
            Some(&admin),
            json!(null),
        )
        .await["data"]
        .as_array()
        .expect("organizations")
        .iter()
        .map(|o| json!({"id": o["id"], "input": ""}))
        .collect();
    let task = json!({"name": "t", "image": "echo", "collaboration_id": collab,
                      "organizations": orgs});
    let task = s.ok("POST", "/task", Some(&admin), task).await["id"].clone();
    let heard = node.expect_event("new_task");
    assert_eq!(heard["args"], json!([{"id": task, "parent_id": null}]));
    assert_eq!(heard["transport"], "polling");
    let heard = user.expect_event("new_task");
    assert_eq!(heard["args"], json!([{"id": task, "parent_id": null}]));
    assert_eq!(heard["transport"], "websocket", "the upgrade was taken");

    // A status change of its own run reaches the collaboration with the run's job; one of
    // another organization's run is not passed on.
    let runs = s.runs(&admin, task.as_i64().expect("id")).await;
    let own = runs
        .iter()
        .find(|r| r["node"]["id"] == ours[0].0)
        .expect("the node's run")["id"]
        .clone();
    let foreign = runs
        .iter()
        .find(|r| r["node"]["id"] == ours[1].0)
        .expect("the other node's run")["id"]
        .clone();
    node.emit(
        "algorithm_status_change",
        json!([{"run_id": foreign, "status": "crashed"}]),
    );
    node.emit(
        "algorithm_status_change",
        json!([{"run_id": own, "status": "active"}]),
    );
    let change = user.expect("algorithm_status_change");
    assert_eq!(change["run_id"], own, "{change}");
    assert_eq!(change["job_id"], task);
    assert_eq!(change["node_id"], ours[0].0);
    assert_eq!(change["collaboration_id"], collab);

    s.ok("POST", "/kill/task", Some(&admin), json!({"id": task}))
        .await;
    let kill = node.expect("kill_containers");
    assert_eq!(kill["collaboration_id"], collab);
    let mut killed: Vec<Value> = kill["kill_list"]
        .as_array()
        .expect("kill_list")
        .iter()
        .map(|k| k["run_id"].clone())
        .collect();
    killed.sort_by_key(Value::as_i64);
    assert_eq!(
        killed,
        vec![own.clone(), foreign.clone()]
            .into_iter()
            .collect::<Vec<_>>()
    );
    assert!(kill["kill_list"][0]["organization_id"].is_i64(), "{kill}");
    assert_eq!(kill["kill_list"][0]["task_id"], task);

    s.ok(
        "POST",
        "/kill/node/tasks",
        Some(&admin),
        json!({"id": ours[0].0}),
    )
    .await;
    assert_eq!(
        node.expect("kill_containers"),
        json!({"node_id": ours[0].0, "collaboration_id": collab})
    );

    // Nothing of this reached the other collaboration's node, and no status change of a run
    // that was not the sender's.
    let heard = names(other.all(Duration::from_secs(2)));
    for e in [
        "new_task",
        "kill_containers",
        "algorithm_status_change",
        "status_update",
    ] {
        assert!(!heard.contains(&e.to_string()), "{heard:?}");
    }
    let changes: Vec<&Value> = user
        .all(Duration::from_millis(500))
        .iter()
        .filter(|e| e["event"] == "algorithm_status_change")
        .collect();
    assert_eq!(changes.len(), 1, "{changes:?}");

    node.close();
    let offline = user.expect("node-offline");
    assert_eq!(offline["id"], ours[0].0);
    assert_eq!(node_status(&s, &admin, ours[0].0).await, "offline");
    let listed = s
        .ok("GET", "/node?status=online", Some(&admin), json!(null))
        .await;
    let ids: Vec<i64> = listed["data"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["id"].as_i64())
        .collect();
    assert!(!ids.contains(&ours[0].0), "{ids:?}");
    assert!(ids.contains(&theirs.0), "{ids:?}");
}

/// A federation of one organization with its node, made through `s`: (admin token,
/// collaboration, organization, node id, node token).
async fn one_node(s: &Server) -> (String, i64, i64, i64, String) {
    let admin = s.admin().await;
    let (node, token) = s.lone_node().await;
    let placed = s
        .ok("GET", &format!("/node/{node}"), Some(&admin), json!(null))
        .await;
    let collab = placed["collaboration"]["id"]
        .as_i64()
        .expect("collaboration");
    let org = placed["organization"]["id"].as_i64().expect("organization");
    (admin, collab, org, node, token)
}

fn task(collab: i64, org: i64) -> Value {
    json!({"name": "t", "image": "echo", "collaboration_id": collab,
           "organizations": [{"id": org, "input": ""}]})
}

/// A node connected to one replica hears of a task made on the other, and of its kill; the
/// other replica sees it online, then offline once it left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_a_node_on_the_other_replica() {
    let Some(python) = common::venv_python("ALGONET_V6_NODE_PYTHON") else {
        return;
    };
    let Some(base) = common::postgres::shared("events_reach_a_node_on_the_other_replica") else {
        return;
    };
    let url = common::postgres::database(&base, "socket_replicas").await;
    let a = server("socket-replica-a", &format!("database: {url}\n")).await;
    let b = server("socket-replica-b", &format!("database: {url}\n")).await;
    let (admin, collab, org, node, token) = one_node(&a).await;
    let mut client = Client::connect(&python, &root(&b), &token, Transport::Websocket);
    client.expect("sync");
    assert_eq!(node_status(&a, &admin, node).await, "online");

    let t = a.ok("POST", "/task", Some(&admin), task(collab, org)).await["id"].clone();
    assert_eq!(
        client.expect("new_task"),
        json!({"id": t, "parent_id": null})
    );
    a.ok("POST", "/kill/task", Some(&admin), json!({"id": t}))
        .await;
    let kill = client.expect("kill_containers");
    assert_eq!(kill["kill_list"][0]["task_id"], t, "{kill}");
    // Each event once, though both replicas look at the database.
    let heard = names(client.all(Duration::from_secs(3)));
    assert_eq!(
        heard.iter().filter(|e| *e == "new_task").count(),
        1,
        "{heard:?}"
    );

    client.close();
    // Replica b marks the node offline once it has handled the close; a reads the database.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut status = node_status(&a, &admin, node).await;
    while status != "offline" && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        status = node_status(&a, &admin, node).await;
    }
    assert_eq!(status, "offline", "still {status} 10 s after the node left");
}

/// A REST call to a server that runs as its own process (`base`: its root).
async fn call(base: &str, method: &str, path: &str, token: Option<&str>, body: Value) -> Value {
    let url = format!("{base}/api{path}");
    common::call(&reqwest::Client::new(), method, &url, token, body).await
}

/// A server process, ended when dropped.
struct Process(Child);

impl Process {
    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `algonet server` as a process on `port` with its data in `dir`; ready when it answers.
async fn start(dir: &std::path::Path, port: u16) -> Process {
    let config = dir.join("server.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\nmetrics_listen: 127.0.0.1:{}\ndata_dir: {}\n\
             admin: {{username: root, password: correct-horse-battery}}\n",
            port + 1,
            dir.join("data").display()
        ),
    )
    .expect("config");
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))
        .expect("log");
    let child = Command::new(env!("CARGO_BIN_EXE_algonet"))
        .args(["server", "--config"])
        .arg(&config)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .map(Process)
        .expect("algonet server");
    let end = Instant::now() + WAIT;
    while reqwest::get(format!("http://127.0.0.1:{port}/api/health"))
        .await
        .is_err()
    {
        assert!(Instant::now() < end, "the server did not answer");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child
}

/// The server process ends and starts again: vantage6's client connects again by itself, is
/// told to sync, and hears of the next task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_connects_again_after_a_server_restart() {
    let Some(python) = common::venv_python("ALGONET_V6_NODE_PYTHON") else {
        return;
    };
    let dir = common::server::TempDir(
        std::env::temp_dir().join(format!("algonet-socket-restart-{}", std::process::id())),
    );
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(&dir.0).expect("dir");
    let port = common::federation_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut first = start(&dir.0, port).await;
    let login = json!({"username": "root", "password": "correct-horse-battery"});
    let admin = call(&base, "POST", "/token/user", None, login.clone()).await["access_token"]
        .as_str()
        .expect("token")
        .to_string();
    let org = call(
        &base,
        "POST",
        "/organization",
        Some(&admin),
        json!({"name": "o"}),
    )
    .await["id"]
        .as_i64()
        .expect("org");
    let col = json!({"name": "c", "organization_ids": [org]});
    let collab = call(&base, "POST", "/collaboration", Some(&admin), col).await["id"]
        .as_i64()
        .expect("collaboration");
    let body = json!({"organization_id": org, "collaboration_id": collab});
    let key = call(&base, "POST", "/node", Some(&admin), body).await["api_key"].clone();
    let token = call(&base, "POST", "/token/node", None, json!({"api_key": key})).await
        ["access_token"]
        .as_str()
        .expect("token")
        .to_string();
    let mut client = Client::connect(&python, &base, &token, Transport::Polling);
    client.expect("sync");

    first.stop();
    client.expect("disconnect");
    let _second = start(&dir.0, port).await;
    client.expect("connect");
    client.expect("sync");
    let admin = call(&base, "POST", "/token/user", None, login).await["access_token"]
        .as_str()
        .expect("token")
        .to_string();
    let t = call(&base, "POST", "/task", Some(&admin), task(collab, org)).await["id"].clone();
    assert_eq!(
        client.expect("new_task"),
        json!({"id": t, "parent_id": null})
    );
    client.close();
}

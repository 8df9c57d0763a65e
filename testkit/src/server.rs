//! A server under test: started on 127.0.0.1 with a fresh data directory, called over HTTP.

use std::net::SocketAddr;

use algonet::server::config::ServerConfig;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

#[derive(Debug)]
pub struct Server {
    pub base: String,
    pub http: Client,
    pub dir: std::path::PathBuf,
    /// The server's own state: its store and its token signer.
    pub state: algonet::server::AppState,
    _dir: TempDir,
}

/// A directory removed on drop.
#[derive(Debug)]
pub struct TempDir(pub std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts a server on 127.0.0.1 with its data in a fresh directory (and, when the tests run on
/// PostgreSQL, a fresh database there); `extra` is more YAML (with a `database:` of its own, the
/// server uses that).
pub async fn server(tag: &str, extra: &str) -> Server {
    server_on(tag, "127.0.0.1:0", extra).await
}

/// [`server`] listening on `listen` (an address of the test's own, e.g. a gateway of a Docker
/// network it made, for clients in containers).
pub async fn server_on(tag: &str, listen: &str, extra: &str) -> Server {
    let dir = std::env::temp_dir().join(format!("algonet-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut extra = extra.to_string();
    if crate::postgres::servers_on_postgres() && !extra.contains("database:") {
        let base = crate::postgres::shared(tag).expect("the test cluster");
        let url = crate::postgres::database(&base, tag).await;
        extra.push_str(&format!("database: {url}\n"));
    }
    let config = ServerConfig::parse(&format!(
        "listen: {listen}\ndata_dir: {}\nadmin: {{username: root, password: correct-horse-battery}}\n{extra}",
        dir.display()
    ))
    .expect("config");
    let state = algonet::server::open(config).await.expect("open");
    let (addr, serve): (SocketAddr, _) = algonet::server::bind(state.clone()).await.expect("bind");
    tokio::spawn(serve);
    Server {
        base: format!("http://{addr}/api"),
        http: Client::new(),
        dir: dir.clone(),
        state,
        _dir: TempDir(dir),
    }
}

impl Server {
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method.parse().expect("method"), url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn ok(&self, method: &str, path: &str, token: Option<&str>, body: Value) -> Value {
        let (status, v) = self.call(method, path, token, Some(body)).await;
        assert!(status.is_success(), "{method} {path}: {status} {v}");
        v
    }
}

impl Server {
    /// The administrator's login: access and refresh token, links.
    pub async fn login(&self) -> Value {
        let login = json!({"username": "root", "password": "correct-horse-battery"});
        self.ok("POST", "/token/user", None, login).await
    }

    /// The administrator's token.
    pub async fn admin(&self) -> String {
        self.login().await["access_token"]
            .as_str()
            .expect("token")
            .to_string()
    }

    /// A container token for `task`'s run at the node of `node_token` (image `v6`).
    pub async fn container_token(&self, node_token: &str, task: &Value) -> String {
        let body = serde_json::json!({"task_id": task, "image": "v6"});
        self.ok("POST", "/token/container", Some(node_token), body)
            .await["container_token"]
            .as_str()
            .expect("token")
            .to_string()
    }

    /// The runs of `task` (`GET /run?task_id`, as `token` sees them), oldest first.
    pub async fn runs(&self, token: &str, task: i64) -> Vec<Value> {
        let page = self
            .ok(
                "GET",
                &format!("/run?task_id={task}&per_page=1000"),
                Some(token),
                json!(null),
            )
            .await;
        let mut runs = page["data"].as_array().expect("runs").clone();
        runs.sort_by_key(|r| r["id"].as_i64());
        runs
    }

    /// One organization in one collaboration with its node: (node id, node token).
    pub async fn lone_node(&self) -> (i64, String) {
        let mut nodes = self.nodes(1).await;
        nodes.remove(0)
    }

    /// `n` organizations in one collaboration, each with its node: (node id, node token) each.
    pub async fn nodes(&self, n: usize) -> Vec<(i64, String)> {
        self.collaboration("o", n).await
    }

    /// `n` organizations named `<prefix><i>` in a collaboration of their own (`<prefix>`),
    /// each with its node: (node id, node token) each.
    pub async fn collaboration(&self, prefix: &str, n: usize) -> Vec<(i64, String)> {
        let admin = self.admin().await;
        let mut orgs = Vec::new();
        for i in 0..n {
            let body = json!({"name": format!("{prefix}{i}")});
            orgs.push(self.ok("POST", "/organization", Some(&admin), body).await["id"].clone());
        }
        let col = json!({"name": prefix, "organization_ids": orgs});
        let col = self.ok("POST", "/collaboration", Some(&admin), col).await["id"].clone();
        let mut nodes = Vec::new();
        for org in &orgs {
            let body = json!({"organization_id": org, "collaboration_id": col});
            let node = self.ok("POST", "/node", Some(&admin), body).await;
            let login = json!({"api_key": node["api_key"]});
            let token = self.ok("POST", "/token/node", None, login).await["access_token"]
                .as_str()
                .expect("token")
                .to_string();
            nodes.push((node["id"].as_i64().expect("id"), token));
        }
        nodes
    }
}

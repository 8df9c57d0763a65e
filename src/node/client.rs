//! The node's side of the server API: login with the API key, runs, container tokens, ports, the
//! VPN profile and the node's address. A 401 logs in again once; an answer that is not what the
//! API promises is an error that says what came, never a panic.

use std::net::Ipv4Addr;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("server unreachable ({0})")]
    Unreachable(String),
    #[error("server refused {what}: {status} {message}")]
    Refused {
        what: String,
        status: StatusCode,
        message: String,
    },
    #[error("server answered {what} with something unexpected: {reason}")]
    Garbage { what: String, reason: String },
}

impl ClientError {
    /// Worth retrying later (the server may come back), as opposed to a refusal.
    pub fn transient(&self) -> bool {
        match self {
            ClientError::Unreachable(_) => true,
            ClientError::Refused { status, .. } => status.is_server_error(),
            ClientError::Garbage { .. } => false,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct TaskInfo {
    pub id: i64,
    pub image: String,
    #[serde(default)]
    pub parent_id: Option<i64>,
}

/// A run as `GET /run` and `POST /run/<id>/claim` show it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct RunInfo {
    pub id: i64,
    pub task: TaskInfo,
    pub status: String,
    #[serde(default)]
    pub input: Option<String>,
}

#[derive(Debug)]
pub struct ServerClient {
    http: reqwest::Client,
    base: String,
    api_key: String,
    token: tokio::sync::RwLock<String>,
    pub node_id: i64,
}

/// One JSON call of the server's API (`what` names it in errors): the one place that turns an
/// answer into a value or an error that says what came. Also used by the administrator's
/// client (`algonet test`) and by the echo algorithm.
pub async fn send(
    http: &reqwest::Client,
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
    what: &str,
) -> Result<Value, ClientError> {
    let mut req = http.request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| ClientError::Unreachable(e.to_string()))?;
    let status = resp.status();
    let text = resp
        .text()
        .await
        .map_err(|e| ClientError::Unreachable(e.to_string()))?;
    if !status.is_success() {
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.get("msg").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| text.chars().take(200).collect());
        return Err(ClientError::Refused {
            what: what.into(),
            status,
            message,
        });
    }
    serde_json::from_str(&text).map_err(|e| ClientError::Garbage {
        what: what.into(),
        reason: format!(
            "not JSON ({e}): {:?}",
            text.chars().take(80).collect::<String>()
        ),
    })
}

fn field<T: serde::de::DeserializeOwned>(
    v: &Value,
    key: &str,
    what: &str,
) -> Result<T, ClientError> {
    v.get(key)
        .cloned()
        .ok_or_else(|| format!("no {key:?}"))
        .and_then(|f| serde_json::from_value(f).map_err(|e| format!("{key}: {e}")))
        .map_err(|reason| ClientError::Garbage {
            what: what.into(),
            reason,
        })
}

impl ServerClient {
    /// `POST /token/node` with the API key.
    pub async fn login(
        server_url: &str,
        api_path: &str,
        api_key: &str,
    ) -> Result<ServerClient, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| ClientError::Unreachable(e.to_string()))?;
        let base = format!(
            "{}/{}",
            server_url.trim_end_matches('/'),
            api_path.trim_matches('/')
        );
        let base = base.trim_end_matches('/').to_string();
        let (token, node_id) = Self::token(&http, &base, api_key).await?;
        Ok(ServerClient {
            http,
            base,
            api_key: api_key.into(),
            token: tokio::sync::RwLock::new(token),
            node_id,
        })
    }

    async fn token(
        http: &reqwest::Client,
        base: &str,
        api_key: &str,
    ) -> Result<(String, i64), ClientError> {
        let what = "POST /token/node";
        let v = send(
            http,
            Method::POST,
            &format!("{base}/token/node"),
            None,
            Some(&json!({ "api_key": api_key })),
            what,
        )
        .await?;
        Ok((
            field(&v, "access_token", what)?,
            field(&v, "node_id", what)?,
        ))
    }

    /// The server's API root (the proxy forwards below it).
    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// One authenticated call; on 401 (token expired) logs in again and retries once.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ClientError> {
        let what = format!("{method} {path}");
        let url = format!("{}{path}", self.base);
        let token = self.token.read().await.clone();
        match send(
            &self.http,
            method.clone(),
            &url,
            Some(&token),
            body.as_ref(),
            &what,
        )
        .await
        {
            Err(ClientError::Refused {
                status: StatusCode::UNAUTHORIZED,
                ..
            }) => {
                let (fresh, _) = Self::token(&self.http, &self.base, &self.api_key).await?;
                *self.token.write().await = fresh.clone();
                send(&self.http, method, &url, Some(&fresh), body.as_ref(), &what).await
            }
            other => other,
        }
    }

    pub async fn pending_runs(&self) -> Result<Vec<RunInfo>, ClientError> {
        let v = self.call(Method::GET, "/run", None).await?;
        field(&v, "data", "GET /run")
    }

    /// Runs of this node in a given state (`active`, `initializing`: what a crash left).
    pub async fn runs_in(&self, status: &str) -> Result<Vec<RunInfo>, ClientError> {
        let v = self
            .call(Method::GET, &format!("/run?status={status}"), None)
            .await?;
        field(&v, "data", "GET /run")
    }

    pub async fn claim(&self, run: i64) -> Result<RunInfo, ClientError> {
        let v = self
            .call(Method::POST, &format!("/run/{run}/claim"), None)
            .await?;
        serde_json::from_value(v).map_err(|e| ClientError::Garbage {
            what: format!("POST /run/{run}/claim"),
            reason: e.to_string(),
        })
    }

    pub async fn report(
        &self,
        run: i64,
        status: &str,
        result: Option<&str>,
        log: Option<&str>,
    ) -> Result<(), ClientError> {
        let mut body = json!({ "status": status });
        if let Some(r) = result {
            body["result"] = r.into();
        }
        if let Some(l) = log {
            body["log"] = l.into();
        }
        self.call(Method::PATCH, &format!("/run/{run}"), Some(body))
            .await
            .map(drop)
    }

    pub async fn container_token(&self, task: i64, image: &str) -> Result<String, ClientError> {
        let v = self
            .call(
                Method::POST,
                "/token/container",
                Some(json!({ "task_id": task, "image": image })),
            )
            .await?;
        field(&v, "container_token", "POST /token/container")
    }

    pub async fn add_port(
        &self,
        run: i64,
        port: u16,
        label: Option<&str>,
    ) -> Result<(), ClientError> {
        self.call(
            Method::POST,
            "/port",
            Some(json!({ "run_id": run, "port": port, "label": label })),
        )
        .await
        .map(drop)
    }

    pub async fn remove_ports(&self, run: i64) -> Result<(), ClientError> {
        self.call(Method::DELETE, &format!("/port?run_id={run}"), None)
            .await
            .map(drop)
    }

    /// `GET /vpn`: a new profile.
    pub async fn new_profile(&self) -> Result<String, ClientError> {
        let v = self.call(Method::GET, "/vpn", None).await?;
        field(&v, "ovpn_config", "GET /vpn")
    }

    /// `POST /vpn/update`: the profile with a renewed key pair.
    pub async fn renew_profile(&self, current: &str) -> Result<String, ClientError> {
        let v = self
            .call(
                Method::POST,
                "/vpn/update",
                Some(json!({ "vpn_config": current })),
            )
            .await?;
        field(&v, "ovpn_config", "POST /vpn/update")
    }

    /// `PATCH /node/<id>`: the node's VPN address, or none.
    pub async fn set_ip(&self, ip: Option<Ipv4Addr>) -> Result<(), ClientError> {
        let body = match ip {
            Some(ip) => json!({ "ip": ip.to_string() }),
            None => json!({ "clear_ip": true }),
        };
        self.call(
            Method::PATCH,
            &format!("/node/{}", self.node_id),
            Some(body),
        )
        .await
        .map(drop)
    }
}

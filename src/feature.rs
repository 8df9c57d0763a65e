//! `algonet test`: the seed's "How to test the VPN connection" as a command. Sends the echo
//! algorithm's parent task to one organization of a collaboration (the first by default), with every
//! organization (its own included) as a child, shows progress while it runs, and prints one row
//! per organization.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::echo::{Input, Probe, Report};
use crate::node::client::send;

/// Where and as whom to run the test.
#[derive(Clone, Debug)]
pub struct Target {
    /// The server's API root, e.g. `http://127.0.0.1:7601/api`.
    pub api: String,
    pub username: String,
    pub password: String,
    pub collaboration: i64,
    pub image: String,
    /// The organization whose node runs the parent; the collaboration's first if `None`.
    pub parent: Option<i64>,
    /// How long the parent waits for its children's addresses.
    pub timeout: Duration,
}

#[derive(Debug)]
pub struct Row {
    pub organization: String,
    pub probe: Probe,
}

pub struct Admin {
    http: reqwest::Client,
    api: String,
    token: String,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("api", &self.api)
            .finish_non_exhaustive()
    }
}

impl Admin {
    pub async fn login(api: &str, username: &str, password: &str) -> anyhow::Result<Admin> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        let mut a = Admin {
            http,
            api: api.trim_end_matches('/').to_string(),
            token: String::new(),
        };
        let v = a
            .call(
                Method::POST,
                "/token/user",
                Some(json!({ "username": username, "password": password })),
            )
            .await?;
        a.token = v["access_token"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("login answered without access_token"))?
            .to_string();
        Ok(a)
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.api);
        let token = Some(self.token.as_str()).filter(|t| !t.is_empty());
        let what = format!("{method} {path}");
        Ok(send(&self.http, method, &url, token, body.as_ref(), &what).await?)
    }
}

/// An organization of a collaboration, as `GET /collaboration/<id>` shows it.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct Member {
    pub id: i64,
    pub name: String,
    /// Its node's VPN address, while it has one.
    pub ip: Option<String>,
}

impl Admin {
    pub async fn members(&self, collaboration: i64) -> anyhow::Result<Vec<Member>> {
        let c = self
            .call(
                Method::GET,
                &format!("/collaboration/{collaboration}"),
                None,
            )
            .await?;
        let orgs = c["organizations"].as_array().cloned().unwrap_or_default();
        orgs.into_iter()
            .map(|o| {
                let ip = o["node"]["ip"].clone();
                let mut m: Member = serde_json::from_value(o)?;
                m.ip = ip.as_str().map(str::to_string);
                Ok(m)
            })
            .collect()
    }
}

/// Runs the test and returns one row per organization; prints progress to stderr.
pub async fn run(t: &Target) -> anyhow::Result<Vec<Row>> {
    let admin = Admin::login(&t.api, &t.username, &t.password).await?;
    let orgs: Vec<(i64, String)> = admin
        .members(t.collaboration)
        .await?
        .into_iter()
        .map(|m| (m.id, m.name))
        .collect();
    anyhow::ensure!(
        !orgs.is_empty(),
        "collaboration {} has no organizations",
        t.collaboration
    );
    let parent = match t.parent {
        None => orgs[0].clone(),
        Some(id) => orgs.iter().find(|o| o.0 == id).cloned().ok_or_else(|| {
            anyhow::anyhow!(
                "organization {id} is not in collaboration {}",
                t.collaboration
            )
        })?,
    };
    let input = serde_json::to_value(Input::Parent {
        organizations: orgs.iter().map(|o| o.0).collect(),
        timeout_secs: t.timeout.as_secs(),
    })?;
    let task = admin
        .call(
            Method::POST,
            "/task",
            Some(json!({
                "name": "vpn-feature-test", "image": t.image, "collaboration_id": t.collaboration,
                "organizations": [{ "id": parent.0, "input": input }],
            })),
        )
        .await?;
    let task_id = task["id"]
        .as_i64()
        .ok_or_else(|| anyhow::anyhow!("task without id: {task}"))?;
    eprintln!(
        "echo task {task_id} sent to {} ({} organizations to reach)",
        parent.1,
        orgs.len()
    );
    let started = Instant::now();
    let deadline = started + t.timeout + Duration::from_secs(120);
    let mut last = String::new();
    let run = loop {
        let runs = admin
            .call(Method::GET, &format!("/run?task_id={task_id}"), None)
            .await?;
        let run = runs["data"][0].clone();
        let status = run["status"].as_str().unwrap_or("?").to_string();
        if status != last {
            eprintln!(
                "  {:>5.1}s  parent run {status}",
                started.elapsed().as_secs_f64()
            );
            last = status.clone();
        }
        if ["completed", "failed", "crashed", "killed"].contains(&status.as_str()) {
            break run;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the echo task did not finish in time (last status {status})"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let result = run["result"].as_str().unwrap_or_default();
    let report: Report = serde_json::from_str(result).map_err(|e| {
        anyhow::anyhow!(
            "the echo task ended {} without a report ({e}); its log:\n{}",
            run["status"],
            run["log"].as_str().unwrap_or("")
        )
    })?;
    Ok(report
        .probes
        .into_iter()
        .map(|probe| Row {
            organization: orgs
                .iter()
                .find(|o| o.0 == probe.organization_id)
                .map_or_else(|| probe.organization_id.to_string(), |o| o.1.clone()),
            probe,
        })
        .collect())
}

/// The table `algonet test` and `algonet demo` print.
pub fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<16} {:<15} {:>6} {:>6} {:>4} {:>4} {:>9} {:>10}  {}\n",
        "organization", "VPN address", "tcp", "udp", "tcp", "udp", "RTT ms", "Mbit/s", "note"
    );
    out.push_str(&format!(
        "{:<16} {:<15} {:>6} {:>6} {:>4} {:>4}\n",
        "", "", "port", "port", "ok", "ok"
    ));
    for r in rows {
        let p = &r.probe;
        let yes = |b: bool| if b { "yes" } else { "NO" };
        out.push_str(&format!(
            "{:<16} {:<15} {:>6} {:>6} {:>4} {:>4} {:>9} {:>10}  {}\n",
            r.organization,
            p.ip.as_deref().unwrap_or("-"),
            p.port.map_or("-".into(), |x| x.to_string()),
            p.udp_port.map_or("-".into(), |x| x.to_string()),
            yes(p.tcp_ok),
            yes(p.udp_ok),
            p.rtt_ms.map_or("-".into(), |x| format!("{x:.2}")),
            p.mbit_s.map_or("-".into(), |x| format!("{x:.0}")),
            p.error.as_deref().unwrap_or(""),
        ));
    }
    out
}

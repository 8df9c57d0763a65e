//! `algonet test`: vantage6's "How to test the VPN connection" as a command. Sends the echo
//! algorithm's parent task to one organization of a collaboration (the first by default), with every
//! organization (its own included) as a child, shows progress while it runs, and prints one row
//! per organization.

use std::time::{Duration, Instant};

use crate::api::client::{ClientError, Session};
use crate::api::codec;
use crate::api::{
    CollaborationId, NewTask, Node, Organization, OrganizationId, Page, RunId, RunResult,
    RunStatus, Task, TaskId, TaskOrganization,
};
use crate::echo::{Input, Probe, Report};

/// Where and as whom to run the test.
#[derive(Clone, Debug)]
pub struct Target {
    /// The server's API root, e.g. `http://127.0.0.1:7601/api`.
    pub api: String,
    /// Certificate authorities to trust beside the system's (a PEM file).
    pub ca_file: Option<std::path::PathBuf>,
    pub username: String,
    pub password: String,
    pub collaboration: CollaborationId,
    pub image: String,
    /// The organization whose node runs the parent; the collaboration's first if `None`.
    pub parent: Option<OrganizationId>,
    /// How long the parent waits for its children's addresses.
    pub timeout: Duration,
    /// How long the parent streams to each child, and from it.
    pub stream: Duration,
}

#[derive(Debug)]
pub struct Row {
    pub organization: String,
    pub probe: Probe,
}

/// Why the test could not be carried out (an organization not reached is a row, not an error).
#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    /// the server refused a call or answered garbage
    #[error(transparent)]
    Server(#[from] ClientError),
    #[error("collaboration {0} has no organizations")]
    NoOrganizations(CollaborationId),
    #[error("organization {organization} is not in collaboration {collaboration}")]
    NotAMember {
        organization: OrganizationId,
        collaboration: CollaborationId,
    },
    #[error("task {0} has no run")]
    NoRun(TaskId),
    #[error("the echo task did not finish in time (last status {0})")]
    Timeout(RunStatus),
    #[error(
        "the node of {organization} did not take the parent run within {secs}s: is it running \
         (`algonet node status` on its host)?"
    )]
    NeverTaken { organization: String, secs: u64 },
    #[error("the echo task ended {status} without a report ({reason}); its log:\n{log}")]
    NoReport {
        status: RunStatus,
        reason: String,
        log: String,
    },
}

/// The nodes of a collaboration, with their VPN addresses.
pub async fn nodes(
    admin: &Session,
    collaboration: CollaborationId,
) -> Result<Vec<Node>, ClientError> {
    admin
        .all(&format!("/node?collaboration_id={collaboration}"))
        .await
}

/// The organizations of a collaboration.
pub async fn members(
    admin: &Session,
    collaboration: CollaborationId,
) -> Result<Vec<Organization>, ClientError> {
    admin
        .all(&format!("/organization?collaboration_id={collaboration}"))
        .await
}

/// What the test reads of the parent's run: as every server lists a run, with or without its
/// task (vantage6's shows only a link to it).
#[derive(Debug, serde::Deserialize)]
struct ParentRun {
    id: RunId,
    status: RunStatus,
    log: Option<String>,
}

/// How often a run nobody took is mentioned again while the test waits.
const PENDING_HINT_EVERY: Duration = Duration::from_secs(15);

/// Says before the task is sent which organizations have no node with a VPN address: their
/// rows will read "not reached", and a parent there may never be taken.
async fn warn_without_address(
    admin: &Session,
    collaboration: CollaborationId,
    orgs: &[(OrganizationId, String)],
) -> Result<(), ClientError> {
    let nodes = nodes(admin, collaboration).await?;
    for (id, name) in orgs {
        let node = nodes.iter().find(|n| n.organization.id == *id);
        match node {
            None => eprintln!("note: {name} has no node in this collaboration"),
            Some(n) if n.ip.is_none() => eprintln!(
                "note: the node of {name} has no VPN address registered (it is down, or runs without VPN)"
            ),
            Some(_) => {}
        }
    }
    Ok(())
}

/// Runs the test and returns one row per organization; prints progress to stderr.
pub async fn run(t: &Target) -> Result<Vec<Row>, FeatureError> {
    let api = crate::api::client::Api::trusting(&t.api, t.ca_file.as_deref())?;
    let admin = Session::login(api, &t.username, &t.password).await?;
    let orgs: Vec<(OrganizationId, String)> = members(&admin, t.collaboration)
        .await?
        .into_iter()
        // Names come from the server: printed to a terminal, they are escaped.
        .map(|m| (m.id, crate::logging::shown(&m.name)))
        .collect();
    let parent = match t.parent {
        None => orgs
            .first()
            .cloned()
            .ok_or(FeatureError::NoOrganizations(t.collaboration))?,
        Some(id) => orgs
            .iter()
            .find(|o| o.0 == id)
            .cloned()
            .ok_or(FeatureError::NotAMember {
                organization: id,
                collaboration: t.collaboration,
            })?,
    };
    let input = codec::encode_json(&Input::Parent {
        organizations: orgs.iter().map(|o| o.0).collect(),
        timeout_secs: t.timeout.as_secs(),
        stream_secs: t.stream.as_secs_f64(),
    });
    let task = NewTask {
        name: "vpn-feature-test".into(),
        description: "algonet's VPN feature test".into(),
        image: t.image.clone(),
        collaboration_id: Some(t.collaboration),
        organizations: vec![TaskOrganization {
            id: parent.0,
            input,
        }],
        parent_id: None,
        databases: None,
    };
    warn_without_address(&admin, t.collaboration, &orgs).await?;
    let task: Task = admin.post("/task", &task).await?;
    let task_id = task.id;
    eprintln!(
        "echo task {task_id} sent to {} ({} organizations to reach)",
        parent.1,
        orgs.len()
    );
    let started = Instant::now();
    let deadline = started + t.timeout + Duration::from_secs(120);
    let mut last = None;
    let mut next_hint = PENDING_HINT_EVERY;
    let run = loop {
        let runs: Page<ParentRun> = admin.get(&format!("/run?task_id={task_id}")).await?;
        let run = runs
            .data
            .into_iter()
            .next()
            .ok_or(FeatureError::NoRun(task_id))?;
        if last != Some(run.status) {
            eprintln!(
                "  {:>5.1}s  parent run {}",
                started.elapsed().as_secs_f64(),
                run.status
            );
            last = Some(run.status);
        }
        if run.status.is_finished() {
            break run;
        }
        let waited = started.elapsed();
        // A parent not even taken within the children's timeout will not report in time.
        if run.status == RunStatus::Pending && waited >= t.timeout {
            return Err(FeatureError::NeverTaken {
                organization: parent.1,
                secs: waited.as_secs(),
            });
        }
        if Instant::now() >= deadline {
            return Err(FeatureError::Timeout(run.status));
        }
        if run.status == RunStatus::Pending && waited >= next_hint {
            eprintln!(
                "  {:>5.1}s  parent run still pending: the node of {} has not taken it yet (is it running?)",
                waited.as_secs_f64(),
                parent.1
            );
            next_hint += PENDING_HINT_EVERY;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let no_report = |reason: String| FeatureError::NoReport {
        status: run.status,
        reason,
        log: run.log.clone().unwrap_or_default(),
    };
    let result: RunResult = admin.get(&format!("/result/{}", run.id)).await?;
    let result = codec::decode(result.result.as_deref().unwrap_or_default())
        .map_err(|e| no_report(format!("the result is not base64: {e}")))?;
    let report: Report = serde_json::from_slice(&result).map_err(|e| no_report(e.to_string()))?;
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

fn mbit(x: Option<f64>) -> String {
    x.map_or("-".into(), |x| format!("{x:.0}"))
}

/// The table `algonet test` and `algonet demo` print.
pub fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<16} {:<15} {:>6} {:>6} {:>4} {:>4} {:>7} {:>7} {:>7}  {}\n",
        "organization", "VPN address", "tcp", "udp", "tcp", "udp", "RTT", "up", "down", "note"
    );
    out.push_str(&format!(
        "{:<16} {:<15} {:>6} {:>6} {:>4} {:>4} {:>7} {:>7} {:>7}\n",
        "", "", "port", "port", "ok", "ok", "ms", "Mbit/s", "Mbit/s"
    ));
    for r in rows {
        let p = &r.probe;
        let yes = |b: bool| if b { "yes" } else { "NO" };
        out.push_str(&format!(
            "{:<16} {:<15} {:>6} {:>6} {:>4} {:>4} {:>7} {:>7} {:>7}  {}\n",
            r.organization,
            p.ip.as_deref().unwrap_or("-"),
            p.port.map_or("-".into(), |x| x.to_string()),
            p.udp_port.map_or("-".into(), |x| x.to_string()),
            yes(p.tcp_ok),
            yes(p.udp_ok),
            p.rtt_ms.map_or("-".into(), |x| format!("{x:.2}")),
            mbit(p.up_mbit_s),
            mbit(p.down_mbit_s),
            p.error.as_deref().unwrap_or(""),
        ));
    }
    out
}

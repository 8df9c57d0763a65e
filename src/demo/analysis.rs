//! The demo's analysis: vpn-average, a vantage6 algorithm written with vantage6's own tools,
//! computes the average age over every demo organization's data. Each partial reads its node's
//! CSV with `@data(1)`; their counts and sums cross the VPN straight to the central run.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::configs::demo_ages;
use super::federation::Federation;
use crate::api::{codec, NewTask, Page, Run, RunStatus, Task, TaskOrganization};
use crate::docker::images::VPN_AVERAGE_IMAGE;

/// Builds vpn-average from `python` (a venv with vantage6-algorithm-tools), runs it, and
/// returns the line to print; an error says what failed.
pub async fn average_age(fed: &Federation, python: &Path) -> Result<String, String> {
    crate::docker::python::build_vpn_average(&fed.docker, python)
        .await
        .map_err(|e| e.to_string())?;
    let admin = fed.admin().await.map_err(|e| e.to_string())?;
    let first = fed.nodes.first().ok_or("no organizations")?;
    let task = NewTask {
        name: "average age".into(),
        description: "vpn-average over the demo data".into(),
        image: VPN_AVERAGE_IMAGE.into(),
        collaboration_id: Some(fed.collaboration),
        organizations: vec![TaskOrganization {
            id: first.organization_id,
            input: codec::encode_json(&json!({"method": "central", "kwargs": {"column": "age"}})),
        }],
        parent_id: None,
        databases: Some(json!([{"label": "default"}])),
    };
    let task: Task = admin
        .post("/task", &task)
        .await
        .map_err(|e| e.to_string())?;
    let until = Instant::now() + Duration::from_secs(180);
    let run = loop {
        let page: Page<Run> = admin
            .get(&format!("/run?task_id={}", task.id))
            .await
            .map_err(|e| e.to_string())?;
        if let Some(r) = page
            .data
            .into_iter()
            .next()
            .filter(|r| r.status.is_finished())
        {
            break r;
        }
        if Instant::now() > until {
            return Err("vpn-average did not finish in 180 s".into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    if run.status != RunStatus::Completed {
        return Err(format!(
            "vpn-average ended {}: {}",
            run.status,
            run.log.unwrap_or_default()
        ));
    }
    let result: Value = admin
        .get(&format!("/result/{}", run.id))
        .await
        .map_err(|e| e.to_string())?;
    let bytes =
        codec::decode(result["result"].as_str().unwrap_or_default()).map_err(|e| e.to_string())?;
    let answer: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    let people: usize = (0..fed.nodes.len()).map(|i| demo_ages(i).len()).sum();
    Ok(format!(
        "average age over {people} people at {} organizations: {:.2} (each organization's count \
         and sum crossed the VPN: {})",
        fed.nodes.len(),
        answer["average"].as_f64().unwrap_or(f64::NAN),
        answer["over_vpn"]
    ))
}

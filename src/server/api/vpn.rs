//! `GET /vpn`, `POST /vpn/update` (nodes) and `GET /vpn/algorithm/addresses` (algorithms).

use std::collections::HashMap;

use axum::extract::State;

use super::caller::{ContainerCaller, NodeCaller};
use super::error::ApiError;
use super::{ApiResult, Json, Query};
use crate::api::{Addresses, VpnProfile, VpnUpdate};
use crate::server::state::AppState;
use crate::server::{provision, store};

/// A new profile.
pub async fn get(
    State(s): State<AppState>,
    NodeCaller(n): NodeCaller,
) -> ApiResult<Json<VpnProfile>> {
    Ok(Json(provision::profile(&s, n.id).await?))
}

/// A fresh key pair for the node's profile (vantage6 4.6+ broke this; here it works). The
/// certificate it replaces is revoked.
pub async fn update(
    State(s): State<AppState>,
    NodeCaller(n): NodeCaller,
    Json(b): Json<VpnUpdate>,
) -> ApiResult<Json<VpnProfile>> {
    if !b.vpn_config.contains("<cert>") {
        return Err(ApiError::bad(
            "vpn_config: not an OpenVPN profile with a <cert> block",
        ));
    }
    Ok(Json(provision::profile(&s, n.id).await?))
}

/// The VPN addresses and ports of the runs around the caller's task, with vantage6 4.x's flag
/// semantics (a flag counts as set when present and non-empty).
pub async fn addresses(
    State(s): State<AppState>,
    ContainerCaller(c): ContainerCaller,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Addresses>> {
    let set = |f: &str| q.get(f).is_some_and(|v| !v.is_empty());
    let only = ["only_children", "only_parent", "only_siblings", "only_self"];
    if only.iter().filter(|f| set(f)).count() > 1 {
        return Err(ApiError::bad(
            "You can only specify one of the only_<...> parameters!",
        ));
    }
    let mut db = s.store.read().await?;
    let parent = store::task(&mut db, c.task_id)
        .await?
        .ok_or_else(|| ApiError::not_found("task", c.task_id))?
        .parent_id;
    let children = store::task_children(&mut db, c.task_id).await?;
    let mut tasks = if set("only_children") {
        children.clone()
    } else if set("only_parent") {
        parent.into_iter().collect()
    } else {
        vec![c.task_id]
    };
    if set("include_children") && !set("only_children") {
        tasks.extend(&children);
    }
    if set("include_parent") && !set("only_parent") {
        tasks.extend(parent);
    }
    tasks.sort_unstable();
    tasks.dedup();
    let label = q.get("label").filter(|l| !l.is_empty());
    let mut addresses = Vec::new();
    for task in tasks {
        for a in store::task_addresses(&mut db, task).await? {
            let keep = if set("only_siblings") {
                a.organization_id != c.organization_id
            } else if set("only_self") {
                a.organization_id == c.organization_id
            } else {
                true
            };
            if keep && label.is_none_or(|l| a.label.as_deref() == Some(l.as_str())) {
                addresses.push(a);
            }
        }
    }
    Ok(Json(Addresses { addresses }))
}

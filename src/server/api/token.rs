//! `POST /token/user`, `/token/node`, `/token/container`: logins, and a node asking for the
//! token of a run's algorithm.

use std::net::SocketAddr;
use std::sync::PoisonError;

use axum::extract::{ConnectInfo, State};

use super::caller::NodeCaller;
use super::error::ApiError;
use super::{ApiResult, Json};
use crate::api::{
    ContainerIdentity, ContainerLogin, ContainerToken, NodeLogin, NodeToken, UserLogin, UserToken,
};
use crate::server::auth::{hash_key, same, Claimed};
use crate::server::state::{now, AppState};
use crate::server::store;

/// Throttled per user name and per source address (see [`crate::server::throttle`]).
pub async fn user(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(b): Json<UserLogin>,
) -> ApiResult<Json<UserToken>> {
    let a = &s.config.admin;
    let from = peer.ip();
    let lock = || s.logins.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(secs) = lock().wait(&b.username, from, now()) {
        return Err(ApiError::too_many_logins(secs));
    }
    if !(same(b.username.as_bytes(), a.username.as_bytes())
        && same(b.password.as_bytes(), a.password.as_bytes()))
    {
        lock().failed(&b.username, from, now());
        return Err(ApiError::unauthorized("Invalid username or password"));
    }
    lock().succeeded(&b.username, from);
    let access_token = s.signer.issue(
        &Claimed::User(a.username.clone()),
        now(),
        Some(s.config.token_lifetime_secs),
    );
    Ok(Json(UserToken { access_token }))
}

pub async fn node(
    State(s): State<AppState>,
    Json(b): Json<NodeLogin>,
) -> ApiResult<Json<NodeToken>> {
    let id = store::node_by_key_hash(&mut *s.store.read().await?, &hash_key(&b.api_key))
        .await?
        .ok_or_else(|| ApiError::unauthorized("Invalid API key"))?;
    let access_token = s.signer.issue(
        &Claimed::Node(id),
        now(),
        Some(s.config.token_lifetime_secs),
    );
    Ok(Json(NodeToken {
        access_token,
        node_id: id,
    }))
}

/// Refused for another collaboration's task, for another image, and for a task whose runs have
/// all finished. The token names the run's node, organization, collaboration, task and image.
pub async fn container(
    State(s): State<AppState>,
    NodeCaller(n): NodeCaller,
    Json(b): Json<ContainerLogin>,
) -> ApiResult<Json<ContainerToken>> {
    let mut db = s.store.read().await?;
    let task = store::task(&mut db, b.task_id)
        .await?
        .ok_or_else(|| ApiError::not_found("task", b.task_id))?;
    if task.collaboration_id != n.collaboration_id {
        return Err(ApiError::forbidden(
            "The task is not in this node's collaboration",
        ));
    }
    if task.image != b.image {
        return Err(ApiError::bad(format!(
            "The task's image is {:?}, not {:?}",
            task.image, b.image
        )));
    }
    if store::open_runs(&mut db, b.task_id).await? == 0 {
        return Err(ApiError::bad("The task has finished"));
    }
    let identity = ContainerIdentity {
        client_type: "container".into(),
        node_id: n.id,
        organization_id: n.organization_id,
        collaboration_id: n.collaboration_id,
        task_id: b.task_id,
        image: task.image,
        databases: vec![],
    };
    // No expiry: the token is good while its node exists and its run is unfinished, which
    // every use checks (see `caller`).
    let container_token = s.signer.issue(&Claimed::Container(identity), now(), None);
    Ok(Json(ContainerToken { container_token }))
}

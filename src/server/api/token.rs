//! `POST /token/user`, `/token/node`, `/token/refresh`, `/token/container`: logins, refreshes,
//! and a node asking for the token of a run's algorithm.

use std::net::SocketAddr;
use std::sync::PoisonError;

use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use super::caller::{bearer, NodeCaller};
use super::error::ApiError;
use super::{ApiResult, Json};
use crate::api::{
    ContainerIdentity, ContainerLogin, ContainerToken, NodeId, NodeLogin, NodeToken, UserLogin,
    UserToken,
};
use crate::server::auth::{
    hash_key, password_matches, same, Claimed, Use, ADMIN_USER, NO_PASSWORD,
};
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
    let user = if same(b.username.as_bytes(), a.username.as_bytes()) {
        same(b.password.as_bytes(), a.password.as_bytes()).then_some(ADMIN_USER)
    } else {
        account(&s, b.username.clone(), b.password).await?
    };
    let Some(user) = user else {
        lock().failed(&b.username, from, now());
        return Err(ApiError::unauthorized("Invalid username or password"));
    };
    lock().succeeded(&b.username, from);
    Ok(Json(user_tokens(&s, user)))
}

/// The account `username` if `password` is its own. The hash is computed off the async
/// threads, and for an unknown name too (against a hash nothing matches).
async fn account(s: &AppState, username: String, password: String) -> ApiResult<Option<i64>> {
    let found = store::account_login(&mut *s.store.read().await?, &username).await?;
    let (id, stored) = match found {
        Some((id, stored)) => (Some(id), stored),
        None => (None, NO_PASSWORD.to_string()),
    };
    let matches = tokio::task::spawn_blocking(move || password_matches(&password, &stored))
        .await
        .map_err(|e| ApiError::internal(format!("password check: {e}")))?;
    Ok(id.filter(|_| matches))
}

pub async fn node(
    State(s): State<AppState>,
    Json(b): Json<NodeLogin>,
) -> ApiResult<Json<NodeToken>> {
    let id = store::node_by_key_hash(&mut *s.store.read().await?, &hash_key(&b.api_key))
        .await?
        .ok_or_else(|| ApiError::unauthorized("Invalid API key"))?;
    Ok(Json(node_tokens(&s, id)))
}

/// A refresh token (as the bearer) buys a new pair, as vantage6's `refresh_url` does; a
/// deleted node's refresh token buys nothing.
pub async fn refresh(State(s): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let refused = || ApiError::unauthorized("Missing or invalid refresh token");
    let claimed = bearer(&headers)
        .and_then(|t| s.signer.check(t, Use::Refresh, now()))
        .ok_or_else(refused)?;
    match claimed {
        Claimed::User(ADMIN_USER) => Ok(Json(user_tokens(&s, ADMIN_USER)).into_response()),
        Claimed::User(id) => {
            store::account(&mut *s.store.read().await?, id)
                .await?
                .ok_or_else(refused)?;
            Ok(Json(user_tokens(&s, id)).into_response())
        }
        Claimed::Node(id) => {
            store::node(&mut *s.store.read().await?, id)
                .await?
                .ok_or_else(refused)?;
            Ok(Json(node_tokens(&s, id)).into_response())
        }
        _ => Err(refused()),
    }
}

fn user_tokens(s: &AppState, user: i64) -> UserToken {
    let (access_token, refresh_token) = pair(s, &Claimed::User(user));
    UserToken {
        access_token,
        refresh_token,
        refresh_url: format!("{}/token/refresh", s.config.api_path),
        user_url: format!("{}/user/{user}", s.config.api_path),
    }
}

fn node_tokens(s: &AppState, id: NodeId) -> NodeToken {
    let (access_token, refresh_token) = pair(s, &Claimed::Node(id));
    NodeToken {
        access_token,
        refresh_token,
        refresh_url: format!("{}/token/refresh", s.config.api_path),
        node_url: format!("{}/node/{id}", s.config.api_path),
        node_id: id,
    }
}

/// An access token and a refresh token for the same caller.
fn pair(s: &AppState, claimed: &Claimed) -> (String, String) {
    let c = &s.config;
    (
        s.signer
            .issue(claimed, Use::Access, now(), Some(c.token_lifetime_secs)),
        s.signer.issue(
            claimed,
            Use::Refresh,
            now(),
            Some(c.refresh_token_lifetime_secs),
        ),
    )
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
    let container_token = s
        .signer
        .issue(&Claimed::Container(identity), Use::Access, now(), None);
    Ok(Json(ContainerToken { container_token }))
}

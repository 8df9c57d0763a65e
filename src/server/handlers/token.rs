//! `POST /token/user`, `/token/node`, `/token/refresh`, `/token/container`: logins, refreshes,
//! and a node asking for the token of a run's algorithm.

use std::net::SocketAddr;

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
    hash_key, password_matches, random_secret, same, Claimed, Session, Use, ADMIN_USER, NO_PASSWORD,
};
use crate::server::state::{now, AppState};
use crate::server::store;

/// Throttled per user name and source address (see [`crate::server::throttle`]); each try is
/// in the log, with the name and the address.
pub async fn user(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(b): Json<UserLogin>,
) -> ApiResult<Json<UserToken>> {
    let a = &s.config.admin;
    let from = peer.ip();
    let name = crate::logging::shown(&b.username);
    let lock = || crate::sync::lock(&s.logins);
    if let Some(secs) = lock().wait(&b.username, from, now()) {
        tracing::warn!(user = %name, address = %from, retry_after = secs, "login refused: too many failures");
        return Err(ApiError::too_many_logins(secs));
    }
    let (user, known) = if same(b.username.as_bytes(), a.username.as_bytes()) {
        let ok = same(b.password.as_bytes(), a.password.as_bytes());
        (ok.then_some(ADMIN_USER), true)
    } else {
        account(&s, &b.username, b.password, from).await?
    };
    let Some(user) = user else {
        let failures = {
            let mut l = lock();
            l.failed(&b.username, from, known, now());
            l.failures(&b.username, from)
        };
        tracing::info!(user = %name, address = %from, known, failures, "login failed");
        return Err(ApiError::unauthorized("Invalid username or password"));
    };
    lock().succeeded(&b.username, from);
    tracing::info!(user = %name, user_id = user, address = %from, "login");
    let pair = start_session(&s, &Claimed::User(user)).await?;
    Ok(Json(user_tokens(&s, user, pair)))
}

/// Password checks under way at once: each takes a core for a tenth of a second or more, and
/// the server is to stay responsive under a flood of logins.
static CHECKING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// The account `username` if `password` is its own, and whether the name is an account. The
/// hash is computed off the async threads, and for an unknown name too (against a hash nothing
/// matches), unless that address has tried too many unknown names (429).
async fn account(
    s: &AppState,
    username: &str,
    password: String,
    from: std::net::IpAddr,
) -> ApiResult<(Option<i64>, bool)> {
    let found = store::account_login(&mut *s.store.connection().await?, username).await?;
    let (id, stored) = match found {
        Some((id, stored)) => (Some(id), stored),
        None => {
            let wait = crate::sync::lock(&s.logins).wait_unknown(from, now());
            if let Some(secs) = wait {
                tracing::warn!(address = %from, retry_after = secs, "login refused: too many unknown names");
                return Err(ApiError::too_many_logins(secs));
            }
            (None, NO_PASSWORD.to_string())
        }
    };
    let _turn = CHECKING
        .acquire()
        .await
        .map_err(|e| ApiError::internal(format!("password check: {e}")))?;
    let matches = tokio::task::spawn_blocking(move || password_matches(&password, &stored))
        .await
        .map_err(|e| ApiError::internal(format!("password check: {e}")))?;
    Ok((id.filter(|_| matches), id.is_some()))
}

pub async fn node(
    State(s): State<AppState>,
    Json(b): Json<NodeLogin>,
) -> ApiResult<Json<NodeToken>> {
    let id = store::node_by_key_hash(&mut *s.store.connection().await?, &hash_key(&b.api_key))
        .await?
        .ok_or_else(|| ApiError::unauthorized("Invalid API key"))?;
    tracing::info!(node_id = %id, "node login");
    let pair = start_session(&s, &Claimed::Node(id)).await?;
    Ok(Json(node_tokens(&s, id, pair)))
}

/// A refresh token (as the bearer) buys a new pair, as vantage6's `refresh_url` does, once:
/// the refresh token it took is retired, and a retired one used again ends its session, every
/// token of it (a copy is in someone else's hands). A deleted node's or account's refresh token
/// buys nothing.
pub async fn refresh(State(s): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let refused = || ApiError::unauthorized("Missing or invalid refresh token");
    let checked = bearer(&headers)
        .and_then(|t| s.signer.check(t, Use::Refresh, now()))
        .ok_or_else(refused)?;
    let (
        Some(subject),
        Some(Session {
            id,
            refresh: Some(used),
        }),
    ) = (checked.claimed.session_subject(), &checked.session)
    else {
        return Err(refused());
    };
    match checked.claimed {
        Claimed::User(ADMIN_USER) => {}
        Claimed::User(id) => {
            store::account(&mut *s.store.connection().await?, id)
                .await?
                .ok_or_else(refused)?;
        }
        Claimed::Node(id) => {
            store::node(&mut *s.store.connection().await?, id)
                .await?
                .ok_or_else(refused)?;
        }
        Claimed::Container(_) => return Err(refused()),
    }
    let next = secret()?;
    let now = now();
    let expires = now.saturating_add(s.config.refresh_token_lifetime_secs);
    let mut tx = s.store.write().await?;
    let found = store::rotate_refresh(&mut tx, id, &subject, used, &next, now, expires).await?;
    store::commit(tx).await?;
    match found {
        store::Refresh::Rotated => {}
        store::Refresh::Reused => {
            tracing::warn!(
                subject = %subject,
                "a retired refresh token was used again: its session is ended"
            );
            return Err(ApiError::unauthorized(
                "This refresh token was used before: its session is ended; log in again",
            ));
        }
        store::Refresh::Gone => return Err(refused()),
    }
    tracing::info!(subject = %subject, "token refreshed");
    let pair = tokens(&s, &checked.claimed, id, &next);
    match checked.claimed {
        Claimed::User(user) => Ok(Json(user_tokens(&s, user, pair)).into_response()),
        Claimed::Node(node) => Ok(Json(node_tokens(&s, node, pair)).into_response()),
        Claimed::Container(_) => Err(refused()),
    }
}

fn secret() -> ApiResult<String> {
    random_secret().map_err(|e| ApiError::internal(format!("no randomness: {e}")))
}

/// A new session for `claimed` and its first pair of tokens.
async fn start_session(s: &AppState, claimed: &Claimed) -> ApiResult<(String, String)> {
    let subject = claimed
        .session_subject()
        .ok_or_else(|| ApiError::internal("a session of a container"))?;
    let (id, refresh) = (secret()?, secret()?);
    let now = now();
    let expires = now.saturating_add(s.config.refresh_token_lifetime_secs);
    store::insert_session(
        &mut *s.store.connection().await?,
        &id,
        &subject,
        &refresh,
        now,
        expires,
    )
    .await?;
    Ok(tokens(s, claimed, &id, &refresh))
}

fn user_tokens(
    s: &AppState,
    user: i64,
    (access_token, refresh_token): (String, String),
) -> UserToken {
    UserToken {
        access_token,
        refresh_token,
        refresh_url: format!("{}/token/refresh", s.config.api_path),
        user_url: format!("{}/user/{user}", s.config.api_path),
    }
}

fn node_tokens(
    s: &AppState,
    id: NodeId,
    (access_token, refresh_token): (String, String),
) -> NodeToken {
    NodeToken {
        access_token,
        refresh_token,
        refresh_url: format!("{}/token/refresh", s.config.api_path),
        node_url: format!("{}/node/{id}", s.config.api_path),
        node_id: Some(id),
    }
}

/// An access token and the refresh token `refresh` of session `session`, for `claimed`.
fn tokens(s: &AppState, claimed: &Claimed, session: &str, refresh: &str) -> (String, String) {
    let c = &s.config;
    let access = Session {
        id: session.to_string(),
        refresh: None,
    };
    let renewal = Session {
        id: session.to_string(),
        refresh: Some(refresh.to_string()),
    };
    (
        s.signer.issue(
            claimed,
            Some(&access),
            Use::Access,
            now(),
            Some(c.token_lifetime_secs),
        ),
        s.signer.issue(
            claimed,
            Some(&renewal),
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
    let mut db = s.store.connection().await?;
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
        databases: store::task_databases(&mut db, b.task_id)
            .await?
            .iter()
            .map(crate::api::TaskDatabase::flattened)
            .collect(),
    };
    // No expiry: the token is good while its node exists and its run is unfinished, which
    // every use checks (see `caller`).
    let container_token = s.signer.issue(
        &Claimed::Container(identity),
        None,
        Use::Access,
        now(),
        None,
    );
    Ok(Json(ContainerToken { container_token }))
}

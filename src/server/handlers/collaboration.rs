//! `POST /collaboration` (administrator), `GET /collaboration/<id>` and `GET /collaboration`
//! (the administrator any; a node or an algorithm its own).

use axum::extract::State;
use serde::Deserialize;

use super::caller::{AdminCaller, Caller};
use super::error::ApiError;
use super::hypermedia::{Links, Listing};
use super::{ApiResult, Json, Path, Query};
use crate::api::{Collaboration, CollaborationId, NewCollaboration, OrganizationId, Page};
use crate::server::state::AppState;
use crate::server::store;

pub fn present(l: Links, c: store::CollaborationRow) -> Collaboration {
    let id = c.id;
    Collaboration {
        organizations: l.list("organization", "collaboration_id", id),
        nodes: l.list("node", "collaboration_id", id),
        tasks: l.list("task", "collaboration_id", id),
        algorithm_stores: l.list("algorithmstore", "collaboration_id", id),
        studies: l.list("study", "collaboration_id", id),
        id,
        name: c.name,
        encrypted: c.encrypted != 0,
    }
}

/// Answers 200, not 201, as vantage6 does here.
pub async fn create(
    State(s): State<AppState>,
    AdminCaller(a): AdminCaller,
    Json(b): Json<NewCollaboration>,
) -> ApiResult<Json<Collaboration>> {
    let mut tx = s.store.write().await?;
    let id = store::insert_collaboration(&mut tx, &b.name, b.encrypted).await?;
    for &org in &b.organization_ids {
        if store::organization(&mut tx, org, None).await?.is_none() {
            return Err(ApiError::not_found("organization", org));
        }
        store::insert_member(&mut tx, id, org).await?;
    }
    store::commit(tx).await?;
    tracing::info!(collaboration_id = %id, name = %crate::logging::shown(&b.name), encrypted = b.encrypted, user_id = a.user, "collaboration created");
    let row = store::CollaborationRow {
        id,
        name: b.name,
        encrypted: i32::from(b.encrypted),
    };
    Ok(Json(present(Links::of(&s), row)))
}

pub async fn get(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<CollaborationId>,
) -> ApiResult<Json<Collaboration>> {
    caller.within(Some(id))?;
    let row = store::collaboration(&mut *s.store.connection().await?, id)
        .await?
        .ok_or_else(|| ApiError::not_found("collaboration", id))?;
    Ok(Json(present(Links::of(&s), row)))
}

#[derive(Debug, Deserialize)]
pub struct CollaborationFilter {
    organization_id: Option<OrganizationId>,
    /// `1` or `true`: the encrypted ones; `0` or `false`: the others.
    encrypted: Option<String>,
}

pub async fn list(
    State(s): State<AppState>,
    caller: Caller,
    listing: Listing,
    Query(f): Query<CollaborationFilter>,
) -> ApiResult<Json<Page<Collaboration>>> {
    let own = caller.within(None)?;
    let encrypted = match f
        .encrypted
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None => None,
        Some("1" | "true") => Some(true),
        Some("0" | "false") => Some(false),
        Some(other) => {
            return Err(ApiError::bad(format!(
                "encrypted: {other:?} is neither true (1) nor false (0)"
            )))
        }
    };
    let rows = store::collaborations(&mut *s.store.connection().await?, f.organization_id).await?;
    let l = Links::of(&s);
    Ok(Json(
        listing.page(
            rows.into_iter()
                .filter(|c| own.is_none_or(|o| o == c.id))
                .filter(|c| encrypted.is_none_or(|e| e == (c.encrypted != 0)))
                .map(|c| present(l, c))
                .collect(),
        ),
    ))
}

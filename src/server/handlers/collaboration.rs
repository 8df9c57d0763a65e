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

pub fn present(l: Links, id: CollaborationId, name: String) -> Collaboration {
    Collaboration {
        organizations: l.list("organization", "collaboration_id", id),
        nodes: l.list("node", "collaboration_id", id),
        tasks: l.list("task", "collaboration_id", id),
        algorithm_stores: l.list("algorithmstore", "collaboration_id", id),
        studies: l.list("study", "collaboration_id", id),
        id,
        name,
        encrypted: false,
    }
}

/// Answers 200, not 201, as vantage6 does here. An encrypted collaboration is refused: algonet keeps inputs and results as sent and has no
/// organization keys, so a client could never read what it stored.
pub async fn create(
    State(s): State<AppState>,
    AdminCaller(a): AdminCaller,
    Json(b): Json<NewCollaboration>,
) -> ApiResult<Json<Collaboration>> {
    if b.encrypted {
        return Err(ApiError::bad(
            "encrypted: algonet does not support encrypted collaborations; create it with \
             encrypted false (inputs and results are kept as sent)",
        ));
    }
    let mut tx = s.store.write().await?;
    let id = store::insert_collaboration(&mut tx, &b.name).await?;
    for &org in &b.organization_ids {
        if store::organization(&mut tx, org, None).await?.is_none() {
            return Err(ApiError::not_found("organization", org));
        }
        store::insert_member(&mut tx, id, org).await?;
    }
    store::commit(tx).await?;
    tracing::info!(collaboration_id = %id, name = %crate::logging::shown(&b.name), user_id = a.user, "collaboration created");
    Ok(Json(present(Links::of(&s), id, b.name)))
}

pub async fn get(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<CollaborationId>,
) -> ApiResult<Json<Collaboration>> {
    caller.within(Some(id))?;
    let name = store::collaboration_name(&mut *s.store.connection().await?, id)
        .await?
        .ok_or_else(|| ApiError::not_found("collaboration", id))?;
    Ok(Json(present(Links::of(&s), id, name)))
}

#[derive(Debug, Deserialize)]
pub struct CollaborationFilter {
    organization_id: Option<OrganizationId>,
}

pub async fn list(
    State(s): State<AppState>,
    caller: Caller,
    listing: Listing,
    Query(f): Query<CollaborationFilter>,
) -> ApiResult<Json<Page<Collaboration>>> {
    let own = caller.within(None)?;
    let rows = store::collaborations(&mut *s.store.connection().await?, f.organization_id).await?;
    let l = Links::of(&s);
    Ok(Json(
        listing.page(
            rows.into_iter()
                .filter(|(id, _)| own.is_none_or(|o| o == *id))
                .map(|(id, name)| present(l, id, name))
                .collect(),
        ),
    ))
}

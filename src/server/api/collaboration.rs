//! `POST /collaboration` and `GET /collaboration/<id>` (administrator).

use axum::extract::State;

use super::caller::AdminCaller;
use super::error::ApiError;
use super::{ApiResult, Created, Json, Path};
use crate::api::{Collaboration, CollaborationId, CollaborationMembers, NewCollaboration};
use crate::server::state::AppState;
use crate::server::store;

pub async fn create(
    State(s): State<AppState>,
    _: AdminCaller,
    Json(b): Json<NewCollaboration>,
) -> ApiResult<Created<Collaboration>> {
    let mut tx = s.store.write().await?;
    let id = store::insert_collaboration(&mut tx, &b.name).await?;
    for &org in &b.organization_ids {
        if store::organization_name(&mut tx, org).await?.is_none() {
            return Err(ApiError::not_found("organization", org));
        }
        store::insert_member(&mut tx, id, org).await?;
    }
    store::commit(tx).await?;
    Ok(Created(Collaboration {
        id,
        name: b.name,
        organization_ids: b.organization_ids,
    }))
}

/// Its organizations, each with its node's id and VPN address (null while the node has none).
pub async fn get(
    State(s): State<AppState>,
    _: AdminCaller,
    Path(id): Path<CollaborationId>,
) -> ApiResult<Json<CollaborationMembers>> {
    let mut db = s.store.read().await?;
    let name = store::collaboration_name(&mut db, id)
        .await?
        .ok_or_else(|| ApiError::not_found("collaboration", id))?;
    let organizations = store::members(&mut db, id).await?;
    Ok(Json(CollaborationMembers {
        id,
        name,
        organizations,
    }))
}

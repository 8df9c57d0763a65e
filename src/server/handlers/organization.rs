//! `POST /organization` (administrator), `GET /organization/<id>` and `GET /organization`
//! (the administrator any; a node or an algorithm those of its collaboration: vantage6's
//! algorithm client reads an organization's public key before it creates a subtask for it, and
//! lists its collaboration's organizations).

use axum::extract::State;
use serde::Deserialize;

use super::caller::{AdminCaller, Caller};
use super::error::ApiError;
use super::hypermedia::{Links, Listing};
use super::{ApiResult, Created, Json, Path, Query};
use crate::api::{CollaborationId, NewOrganization, Organization, OrganizationId, Page};
use crate::server::state::AppState;
use crate::server::store::{self, OrganizationRow};

pub fn present(l: Links, o: OrganizationRow) -> Organization {
    Organization {
        collaborations: l.list("collaboration", "organization_id", o.id),
        nodes: l.list("node", "organization_id", o.id),
        users: l.list("user", "organization_id", o.id),
        tasks: l.list("task", "init_org_id", o.id),
        runs: l.list("run", "organization_id", o.id),
        studies: l.list("study", "organization_id", o.id),
        public_key: String::new(),
        id: o.id,
        name: o.name,
        domain: o.domain,
        address1: o.address1,
        address2: o.address2,
        zipcode: o.zipcode,
        country: o.country,
    }
}

pub async fn create(
    State(s): State<AppState>,
    AdminCaller(a): AdminCaller,
    Json(b): Json<NewOrganization>,
) -> ApiResult<Created<Organization>> {
    let row = store::insert_organization(&mut *s.store.connection().await?, &b).await?;
    tracing::info!(organization_id = %row.id, name = %crate::logging::shown(&row.name), user_id = a.user, "organization created");
    Ok(Created(present(Links::of(&s), row)))
}

pub async fn get(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<OrganizationId>,
) -> ApiResult<Json<Organization>> {
    let mut db = s.store.connection().await?;
    // Another collaboration's organization answers as one that does not exist: which ids
    // exist is not for a node or an algorithm to learn.
    if let Some(c) = caller.collaboration() {
        if !store::is_member(&mut db, c, id).await? {
            return Err(ApiError::not_found("organization", id));
        }
    }
    let row = store::organization(&mut db, id, None)
        .await?
        .ok_or_else(|| ApiError::not_found("organization", id))?;
    Ok(Json(present(Links::of(&s), row)))
}

#[derive(Debug, Deserialize)]
pub struct OrganizationFilter {
    collaboration_id: Option<CollaborationId>,
}

pub async fn list(
    State(s): State<AppState>,
    caller: Caller,
    listing: Listing,
    Query(f): Query<OrganizationFilter>,
) -> ApiResult<Json<Page<Organization>>> {
    let collaboration = caller.within(f.collaboration_id)?;
    let rows = store::organizations(&mut *s.store.connection().await?, collaboration).await?;
    let l = Links::of(&s);
    Ok(Json(
        listing.page(rows.into_iter().map(|o| present(l, o)).collect()),
    ))
}

//! `POST /organization` (administrator), `GET /organization/<id>` and `GET /organization`
//! (the administrator any; a node or an algorithm those of its collaboration and those that
//! created a task there: vantage6's algorithm client reads an organization's public key before it
//! creates a subtask for it, a node the key of a task's creator to encrypt its result for, and
//! both list the collaboration's organizations), `PATCH /organization/<id>` (an administrator any, a
//! node its own; the public key only a member of the organization, as vantage6 has it).

use axum::extract::State;
use serde::Deserialize;

use super::caller::{AdminCaller, Caller};
use super::error::ApiError;
use super::hypermedia::{Links, Listing};
use super::{ApiResult, Created, Json, Path, Query};
use crate::api::{
    CollaborationId, NewOrganization, Organization, OrganizationChange, OrganizationId, Page,
};
use crate::crypto::PublicKey;
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
        public_key: o.public_key,
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
    // exist is not for a node or an algorithm to learn. One that created a task in the
    // collaboration is seen: its public key encrypts the task's results.
    if let Some(c) = caller.collaboration() {
        if !store::is_seen_from(&mut db, c, id).await? {
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

/// vantage6's answer to a caller that may not change an organization.
const NOT_YOURS: &str = "You lack the permission to do that!";

pub async fn patch(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<OrganizationId>,
    Json(b): Json<OrganizationChange>,
) -> ApiResult<Json<Organization>> {
    let mut tx = s.store.write().await?;
    // The caller's own organization, and whether it may change others (an administrator).
    let (own, any, by) = match &caller {
        Caller::Admin(a) => (
            a.own_organization(&mut tx).await?,
            true,
            format!("user {}", a.user),
        ),
        Caller::Node(n) => (n.organization_id, false, format!("node {}", n.id)),
        // 401, as vantage6 refuses an algorithm here.
        Caller::Container(_) => return Err(ApiError::unauthorized(NOT_YOURS)),
    };
    let current = store::organization(&mut tx, id, None)
        .await?
        .ok_or_else(|| ApiError::not_found("organization", id))?;
    if !any && own != id {
        return Err(ApiError::unauthorized(NOT_YOURS));
    }
    if let Some(key) = b.public_key.as_deref() {
        if own != id {
            return Err(ApiError::unauthorized(
                "Only members of an organization can update its public key!",
            ));
        }
        // Empty takes the key away; anything else must be a key the organization's peers can
        // encrypt for, or every input for it would fail at their side, not here.
        if !key.is_empty() {
            PublicKey::from_base64(key).map_err(|e| ApiError::bad(format!("public_key: {e}")))?;
        }
    }
    if let Some(name) = b.name.as_deref() {
        if name.trim().is_empty() {
            return Err(ApiError::bad("name: must not be empty"));
        }
        if name != current.name && store::organization_by_name(&mut tx, name).await?.is_some() {
            return Err(ApiError::bad(format!(
                "Organization with name '{name}' already exists!"
            )));
        }
    }
    let row = store::update_organization(&mut tx, id, &b)
        .await?
        .ok_or_else(|| ApiError::not_found("organization", id))?;
    store::commit(tx).await?;
    if b.public_key.is_some() {
        tracing::info!(organization_id = %id, by = %by, "organization public key set");
    } else {
        tracing::info!(organization_id = %id, by = %by, "organization updated");
    }
    Ok(Json(present(Links::of(&s), row)))
}

//! `POST /organization` (administrator) and `GET /organization/<id>` (the administrator, or a
//! node or an algorithm of a collaboration the organization is in: vantage6's algorithm client
//! reads an organization's public key before it creates a subtask for it).

use axum::extract::State;

use super::caller::{AdminCaller, Caller};
use super::error::ApiError;
use super::{ApiResult, Created, Json, Path};
use crate::api::{NewOrganization, Organization, OrganizationId};
use crate::server::state::AppState;
use crate::server::store;

pub async fn create(
    State(s): State<AppState>,
    _: AdminCaller,
    Json(b): Json<NewOrganization>,
) -> ApiResult<Created<Organization>> {
    let id = store::insert_organization(&mut *s.store.read().await?, &b.name).await?;
    Ok(Created(Organization::new(id, b.name)))
}

pub async fn get(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<OrganizationId>,
) -> ApiResult<Json<Organization>> {
    let mut db = s.store.read().await?;
    let name = store::organization_name(&mut db, id)
        .await?
        .ok_or_else(|| ApiError::not_found("organization", id))?;
    if let Some(c) = caller.collaboration() {
        if !store::is_member(&mut db, c, id).await? {
            return Err(ApiError::forbidden(
                "The organization is not in the caller's collaboration",
            ));
        }
    }
    Ok(Json(Organization::new(id, name)))
}

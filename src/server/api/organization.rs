//! `POST /organization` (administrator).

use axum::extract::State;

use super::caller::AdminCaller;
use super::{ApiResult, Created, Json};
use crate::api::{NewOrganization, Organization};
use crate::server::state::AppState;
use crate::server::store;

pub async fn create(
    State(s): State<AppState>,
    _: AdminCaller,
    Json(b): Json<NewOrganization>,
) -> ApiResult<Created<Organization>> {
    let id = store::insert_organization(&mut *s.store.read().await?, &b.name).await?;
    Ok(Created(Organization { id, name: b.name }))
}

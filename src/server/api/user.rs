//! `GET /user/<id>` and `GET /user` (administrator): the server's one user, the administrator,
//! user 1 of organization `root`, as vantage6's user client reads it after logging in.

use axum::extract::State;

use super::caller::AdminCaller;
use super::error::ApiError;
use super::links::{Links, Listing, Resource};
use super::{ApiResult, Json, Path};
use crate::api::{Page, User};
use crate::server::auth::ADMIN_USER;
use crate::server::state::AppState;
use crate::server::store;

async fn admin(s: &AppState) -> ApiResult<User> {
    let l = Links::of(s);
    let organization = store::root_organization(&mut *s.store.read().await?).await?;
    Ok(User {
        id: ADMIN_USER,
        kind: "user".into(),
        username: s.config.admin.username.clone(),
        firstname: None,
        lastname: None,
        email: None,
        ip: None,
        last_seen: None,
        status: None,
        otp_secret: None,
        last_email_failed_login_sent: None,
        last_email_recover_password_sent: None,
        organization: l.one(Resource::Organization, organization),
        roles: l.list("role", "user_id", ADMIN_USER),
        rules: l.list("rule", "user_id", ADMIN_USER),
    })
}

pub async fn get(
    State(s): State<AppState>,
    _: AdminCaller,
    Path(id): Path<i64>,
) -> ApiResult<Json<User>> {
    if id != ADMIN_USER {
        return Err(ApiError::not_found("user", id));
    }
    Ok(Json(admin(&s).await?))
}

pub async fn list(
    State(s): State<AppState>,
    _: AdminCaller,
    listing: Listing,
) -> ApiResult<Json<Page<User>>> {
    Ok(Json(listing.page(vec![admin(&s).await?])))
}

//! `GET /user/<id>` and `GET /user` (administrators): the configuration's administrator, user 1
//! of organization `root`, and the user accounts, as vantage6's user client reads them after
//! logging in.

use axum::extract::State;

use super::caller::AdminCaller;
use super::error::ApiError;
use super::hypermedia::{Links, Listing, Resource};
use super::{ApiResult, Json, Path};
use crate::api::{OrganizationId, Page, User};
use crate::server::auth::ADMIN_USER;
use crate::server::state::AppState;
use crate::server::store::{self, AccountRow};

fn present(l: &Links, a: AccountRow) -> User {
    User {
        id: a.id,
        kind: "user".into(),
        username: a.username,
        firstname: a.firstname,
        lastname: a.lastname,
        email: a.email,
        ip: None,
        last_seen: None,
        status: None,
        otp_secret: None,
        last_email_failed_login_sent: None,
        last_email_recover_password_sent: None,
        organization: l.one(Resource::Organization, a.organization_id),
        roles: l.list("role", "user_id", a.id),
        rules: l.list("rule", "user_id", a.id),
    }
}

/// The configuration's administrator, as an account.
async fn admin(s: &AppState) -> ApiResult<AccountRow> {
    let organization: OrganizationId =
        store::root_organization(&mut *s.store.connection().await?).await?;
    Ok(AccountRow {
        id: ADMIN_USER,
        username: s.config.admin.username.clone(),
        organization_id: organization,
        firstname: None,
        lastname: None,
        email: None,
    })
}

pub async fn get(
    State(s): State<AppState>,
    _: AdminCaller,
    Path(id): Path<i64>,
) -> ApiResult<Json<User>> {
    let account = if id == ADMIN_USER {
        Some(admin(&s).await?)
    } else {
        store::account(&mut *s.store.connection().await?, id).await?
    };
    let account = account.ok_or_else(|| ApiError::not_found("user", id))?;
    Ok(Json(present(&Links::of(&s), account)))
}

pub async fn list(
    State(s): State<AppState>,
    _: AdminCaller,
    listing: Listing,
) -> ApiResult<Json<Page<User>>> {
    let l = Links::of(&s);
    let mut users = vec![admin(&s).await?];
    users.extend(store::accounts(&mut *s.store.connection().await?).await?);
    Ok(Json(
        listing.page(users.into_iter().map(|a| present(&l, a)).collect()),
    ))
}

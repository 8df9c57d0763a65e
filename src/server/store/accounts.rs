//! User accounts besides the administrator of the configuration (user 1).

use super::{Db, Result};
use crate::api::OrganizationId;

/// An account, without its password.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct AccountRow {
    pub id: i64,
    pub username: String,
    pub organization_id: OrganizationId,
    pub firstname: Option<String>,
    pub lastname: Option<String>,
    pub email: Option<String>,
}

/// A new account's fields; the password already hashed.
#[derive(Debug)]
pub struct NewAccount<'a> {
    pub username: &'a str,
    pub organization: OrganizationId,
    pub password_hash: &'a str,
    pub firstname: Option<&'a str>,
    pub lastname: Option<&'a str>,
    pub email: Option<&'a str>,
}

pub async fn insert_account(db: &mut Db, a: &NewAccount<'_>) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "INSERT INTO account (username, organization_id, password_hash, firstname, lastname, email) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(a.username)
    .bind(a.organization)
    .bind(a.password_hash)
    .bind(a.firstname)
    .bind(a.lastname)
    .bind(a.email)
    .fetch_one(db)
    .await?)
}

/// An account's id and stored password, by name.
pub async fn account_login(db: &mut Db, username: &str) -> Result<Option<(i64, String)>> {
    Ok(
        sqlx::query_as("SELECT id, password_hash FROM account WHERE username = $1")
            .bind(username)
            .fetch_optional(db)
            .await?,
    )
}

pub async fn account(db: &mut Db, id: i64) -> Result<Option<AccountRow>> {
    Ok(sqlx::query_as(
        "SELECT id, username, organization_id, firstname, lastname, email FROM account WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(db)
    .await?)
}

/// Every account, by id.
pub async fn accounts(db: &mut Db) -> Result<Vec<AccountRow>> {
    Ok(sqlx::query_as(
        "SELECT id, username, organization_id, firstname, lastname, email FROM account ORDER BY id",
    )
    .fetch_all(db)
    .await?)
}

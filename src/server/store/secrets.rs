//! The server's secrets, shared by every server process on the database.

use super::{Db, Result, StoreError};

pub async fn secret(db: &mut Db, name: &str) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT value FROM secret WHERE name = $1")
            .bind(name)
            .fetch_optional(db)
            .await?,
    )
}

/// Keeps `value` as secret `name` unless one is kept already, and returns the kept one: when
/// two server processes make a secret at once, the first to commit wins and both use it.
pub async fn keep_secret(db: &mut Db, name: &str, value: &str) -> Result<String> {
    sqlx::query("INSERT INTO secret (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
        .bind(name)
        .bind(value)
        .execute(&mut *db)
        .await?;
    secret(db, name)
        .await?
        .ok_or(StoreError::Database(sqlx::Error::RowNotFound))
}

/// Sets secret `name` to `value`, whatever it was.
pub async fn replace_secret(db: &mut Db, name: &str, value: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO secret (name, value) VALUES ($1, $2) \
         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
    )
    .bind(name)
    .bind(value)
    .execute(db)
    .await?;
    Ok(())
}

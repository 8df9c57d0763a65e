//! Sessions of users and nodes (see the `session` table), and the change counter that tells
//! every server process on the database that a run's peers may have changed.

use super::{Db, Result};

/// What a session is of: `user:<id>` or `node:<id>`.
pub fn subject(kind: &str, id: i64) -> String {
    format!("{kind}:{id}")
}

/// A new session whose refresh token `refresh` is good until `expires` (seconds since the
/// epoch). Ended sessions that have expired are forgotten on the way.
pub async fn insert_session(
    db: &mut Db,
    id: &str,
    subject: &str,
    refresh: &str,
    now: u64,
    expires: u64,
) -> Result<()> {
    sqlx::query("DELETE FROM session WHERE expires < $1")
        .bind(secs(now))
        .execute(&mut *db)
        .await?;
    sqlx::query("INSERT INTO session (id, subject, refresh, expires) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(subject)
        .bind(refresh)
        .bind(secs(expires))
        .execute(db)
        .await?;
    Ok(())
}

/// What a refresh finds of a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refresh {
    /// The session's current refresh token: it is retired and `next` takes its place.
    Rotated,
    /// A retired refresh token: someone kept a copy. The session is ended.
    Reused,
    /// No such session of that subject, or ended, or expired.
    Gone,
}

/// Retires refresh token `used` of session `id` and makes `next` the session's current one,
/// good until `expires`; a retired one ends the session. Run in a write transaction.
pub async fn rotate_refresh(
    db: &mut Db,
    id: &str,
    subject: &str,
    used: &str,
    next: &str,
    now: u64,
    expires: u64,
) -> Result<Refresh> {
    let found: Option<(String, i64, i64)> = sqlx::query_as(
        "SELECT refresh, revoked, expires FROM session WHERE id = $1 AND subject = $2",
    )
    .bind(id)
    .bind(subject)
    .fetch_optional(&mut *db)
    .await?;
    let Some((current, revoked, until)) = found else {
        return Ok(Refresh::Gone);
    };
    if revoked != 0 || until < secs(now) {
        return Ok(Refresh::Gone);
    }
    if current != used {
        sqlx::query("UPDATE session SET revoked = 1 WHERE id = $1")
            .bind(id)
            .execute(db)
            .await?;
        return Ok(Refresh::Reused);
    }
    sqlx::query("UPDATE session SET refresh = $1, expires = $2 WHERE id = $3")
        .bind(next)
        .bind(secs(expires))
        .bind(id)
        .execute(db)
        .await?;
    Ok(Refresh::Rotated)
}

/// Whether session `id` of `subject` is live (not ended, not expired).
pub async fn session_live(db: &mut Db, id: &str, subject: &str, now: u64) -> Result<bool> {
    let found: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM session WHERE id = $1 AND subject = $2 AND revoked = 0 AND expires >= $3",
    )
    .bind(id)
    .bind(subject)
    .bind(secs(now))
    .fetch_optional(db)
    .await?;
    Ok(found.is_some())
}

/// Ends every session of `subject`; how many were live.
pub async fn end_sessions(db: &mut Db, subject: &str) -> Result<u64> {
    Ok(
        sqlx::query("UPDATE session SET revoked = 1 WHERE subject = $1 AND revoked = 0")
            .bind(subject)
            .execute(db)
            .await?
            .rows_affected(),
    )
}

/// Counts one more change that can change a run's peers.
pub async fn count_change(db: &mut Db) -> Result<()> {
    sqlx::query("UPDATE change_counter SET n = n + 1 WHERE id = 1")
        .execute(db)
        .await?;
    Ok(())
}

/// The changes counted so far.
pub async fn changes(db: &mut Db) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT n FROM change_counter WHERE id = 1")
            .fetch_one(db)
            .await?,
    )
}

/// Seconds as the database keeps them (a signed 64-bit integer).
fn secs(s: u64) -> i64 {
    i64::try_from(s).unwrap_or(i64::MAX)
}

//! The socket.io events one server process sent, for the other processes on the database to
//! send to their own clients (see the `socket_event` table).

use super::{Db, Result};

/// An event as recorded: its id (rising), the room it went to, its name and its JSON data.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RelayedEvent {
    pub id: i64,
    pub room: String,
    pub name: String,
    pub data: String,
}

/// Records an event that process `origin` sent at `at` (seconds since the epoch).
pub async fn record_event(
    db: &mut Db,
    origin: i64,
    room: &str,
    name: &str,
    data: &str,
    at: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO socket_event (origin, room, name, data, at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(origin)
    .bind(room)
    .bind(name)
    .bind(data)
    .bind(at)
    .execute(db)
    .await?;
    Ok(())
}

/// The events sent at or after `since` (seconds since the epoch) by another process than
/// `origin`, oldest first.
pub async fn events_since(db: &mut Db, since: i64, origin: i64) -> Result<Vec<RelayedEvent>> {
    Ok(sqlx::query_as(
        "SELECT id, room, name, data FROM socket_event WHERE at >= $1 AND origin <> $2 ORDER BY id",
    )
    .bind(since)
    .bind(origin)
    .fetch_all(db)
    .await?)
}

/// Forgets the events sent before `before` (seconds since the epoch).
pub async fn forget_events(db: &mut Db, before: i64) -> Result<()> {
    sqlx::query("DELETE FROM socket_event WHERE at < $1")
        .bind(before)
        .execute(db)
        .await?;
    Ok(())
}

//! `POST /port` and `DELETE /port?run_id=` (nodes): the public ports of a node's runs.

use axum::extract::State;

use super::caller::NodeCaller;
use super::error::ApiError;
use super::run::own_run;
use super::{ApiResult, Created, Json, Query};
use crate::api::PUBLIC_PORTS;
use crate::api::{Msg, NewPort, Port, RunQuery, RunRef};
use crate::server::state::AppState;
use crate::server::store;

/// The longest port label, vantage6's limit for it.
const MAX_LABEL: usize = 128;

pub async fn create(
    State(s): State<AppState>,
    NodeCaller(n): NodeCaller,
    Json(b): Json<NewPort>,
) -> ApiResult<Created<Port>> {
    if !PUBLIC_PORTS.contains(&b.port.0) {
        return Err(ApiError::bad(format!(
            "port: {} is outside the nodes' public range {}-{}",
            b.port,
            PUBLIC_PORTS.start(),
            PUBLIC_PORTS.end()
        )));
    }
    if b.label
        .as_ref()
        .is_some_and(|l| l.chars().count() > MAX_LABEL)
    {
        return Err(ApiError::bad(format!(
            "label: longer than {MAX_LABEL} characters"
        )));
    }
    let mut db = s.store.connection().await?;
    own_run(&mut db, &n, b.run_id).await?;
    let id = store::insert_port(&mut db, b.run_id, b.port, b.label.as_deref()).await?;
    drop(db);
    s.changed().await;
    Ok(Created(Port {
        id,
        port: b.port,
        label: b.label,
        run: RunRef { id: b.run_id },
    }))
}

pub async fn delete(
    State(s): State<AppState>,
    NodeCaller(n): NodeCaller,
    Query(q): Query<RunQuery>,
) -> ApiResult<Json<Msg>> {
    let mut db = s.store.connection().await?;
    own_run(&mut db, &n, q.run_id).await?;
    store::delete_ports(&mut db, q.run_id).await?;
    drop(db);
    s.changed().await;
    Ok(Json(Msg {
        msg: "Ports removed from the database.".into(),
    }))
}

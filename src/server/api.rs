//! The HTTP API: vantage6 4.x shapes on the VPN surface (see docs/vantage6-api.md), errors as
//! JSON `{"msg": ...}`. The one place where errors become HTTP statuses is [`ApiError`].

use std::collections::HashMap;
use std::net::Ipv4Addr;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::{Row, SqlitePool};

use crate::server::auth::{hash_key, random_secret, same, Claimed, ContainerIdentity};
use crate::server::AppState;

/// An error as the caller sees it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    msg: String,
}

impl ApiError {
    fn new(status: StatusCode, msg: impl Into<String>) -> ApiError {
        ApiError {
            status,
            msg: msg.into(),
        }
    }
    fn bad(msg: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, msg)
    }
    fn forbidden(msg: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, msg)
    }
    fn not_found(what: &str, id: i64) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, format!("{what} id={id} not found"))
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> ApiError {
        match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                ApiError::new(StatusCode::CONFLICT, "already exists")
            }
            _ => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("database error: {e}"),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(json!({ "msg": self.msg }))).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// JSON body whose rejections (malformed, wrong types, too large) answer 400 `{"msg"}`.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(JsonRejection::BytesRejection(e)) => {
                Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e.body_text()))
            }
            Err(e) => Err(ApiError::bad(e.body_text())),
        }
    }
}

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// The authenticated caller.
#[derive(Clone, Debug)]
pub enum Caller {
    Admin,
    Node(NodeRow),
    Container(ContainerIdentity),
}

#[derive(Clone, Debug)]
pub struct NodeRow {
    pub id: i64,
    pub organization_id: i64,
    pub collaboration_id: i64,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let unauthorized = || {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "Missing or invalid authorization token",
            )
        };
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(unauthorized)?;
        match state
            .signer
            .check(token, crate::server::now())
            .ok_or_else(unauthorized)?
        {
            Claimed::User(name) if name == state.config.admin.username => Ok(Caller::Admin),
            Claimed::User(_) => Err(unauthorized()),
            // A deleted node's token dies with it.
            Claimed::Node(id) => node(&state.db, id)
                .await?
                .map(Caller::Node)
                .ok_or_else(unauthorized),
            Claimed::Container(c) => Ok(Caller::Container(c)),
        }
    }
}

async fn node(db: &SqlitePool, id: i64) -> ApiResult<Option<NodeRow>> {
    let row = sqlx::query("SELECT id, organization_id, collaboration_id FROM node WHERE id = ?")
        .bind(id)
        .fetch_optional(db)
        .await?;
    Ok(row.map(|r| NodeRow {
        id: r.get(0),
        organization_id: r.get(1),
        collaboration_id: r.get(2),
    }))
}

/// A transaction that takes SQLite's write lock at once. A deferred one (plain BEGIN) reads
/// first and fails with "database is locked" when it then writes after another writer committed
/// in between: SQLite cannot wait that out (SQLITE_BUSY_SNAPSHOT), so concurrent task creation
/// failed now and then.
async fn write_tx(db: &SqlitePool) -> ApiResult<Tx> {
    Ok(db.begin_with("BEGIN IMMEDIATE").await?)
}

fn admin_only(c: &Caller) -> ApiResult<()> {
    match c {
        Caller::Admin => Ok(()),
        _ => Err(ApiError::forbidden("Only an administrator may do this")),
    }
}

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/token/user", post(token_user))
        .route("/token/node", post(token_node))
        .route("/token/container", post(token_container))
        .route("/organization", post(create_organization))
        .route("/collaboration", post(create_collaboration))
        .route("/collaboration/{id}", get(get_collaboration))
        .route("/node", post(create_node))
        .route("/node/{id}", patch(patch_node).delete(delete_node))
        .route("/task", post(create_task))
        .route("/port", post(create_port).delete(delete_ports))
        .route("/run", get(list_runs))
        .route("/run/{id}", patch(update_run))
        .route("/run/{id}/claim", post(claim_run))
        .route("/vpn", get(get_vpn))
        .route("/vpn/update", post(update_vpn))
        .route("/vpn/algorithm/addresses", get(addresses))
        .layer(axum::extract::DefaultBodyLimit::max(1 << 20))
        .with_state(state.clone());
    if state.config.api_path.is_empty() {
        api
    } else {
        Router::new().nest(&state.config.api_path, api)
    }
}

#[derive(Deserialize)]
struct UserLogin {
    username: String,
    password: String,
}

async fn token_user(State(s): State<AppState>, Json(b): Json<UserLogin>) -> ApiResult<Json<Value>> {
    let a = &s.config.admin;
    if !(same(b.username.as_bytes(), a.username.as_bytes())
        && same(b.password.as_bytes(), a.password.as_bytes()))
    {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Invalid username or password",
        ));
    }
    let token = s.signer.issue(
        &Claimed::User(a.username.clone()),
        crate::server::now(),
        s.config.token_lifetime_secs,
    );
    Ok(Json(json!({ "access_token": token })))
}

#[derive(Deserialize)]
struct NodeLogin {
    api_key: String,
}

async fn token_node(State(s): State<AppState>, Json(b): Json<NodeLogin>) -> ApiResult<Json<Value>> {
    let id: Option<i64> = sqlx::query_scalar("SELECT id FROM node WHERE api_key_hash = ?")
        .bind(hash_key(&b.api_key))
        .fetch_optional(&s.db)
        .await?;
    let id = id.ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "Invalid API key"))?;
    let token = s.signer.issue(
        &Claimed::Node(id),
        crate::server::now(),
        s.config.token_lifetime_secs,
    );
    Ok(Json(json!({ "access_token": token, "node_id": id })))
}

#[derive(Deserialize)]
struct ContainerLogin {
    task_id: i64,
    image: String,
}

async fn token_container(
    State(s): State<AppState>,
    caller: Caller,
    Json(b): Json<ContainerLogin>,
) -> ApiResult<Json<Value>> {
    let Caller::Node(n) = caller else {
        return Err(ApiError::forbidden(
            "Only nodes may request container tokens",
        ));
    };
    let task = sqlx::query("SELECT collaboration_id, image FROM task WHERE id = ?")
        .bind(b.task_id)
        .fetch_optional(&s.db)
        .await?
        .ok_or_else(|| ApiError::not_found("task", b.task_id))?;
    let (collaboration_id, image): (i64, String) = (task.get(0), task.get(1));
    if collaboration_id != n.collaboration_id {
        return Err(ApiError::forbidden(
            "The task is not in this node's collaboration",
        ));
    }
    if image != b.image {
        return Err(ApiError::bad(format!(
            "The task's image is {image:?}, not {:?}",
            b.image
        )));
    }
    let open: i64 =
        sqlx::query_scalar("SELECT count(*) FROM run WHERE task_id = ? AND finished_at IS NULL")
            .bind(b.task_id)
            .fetch_one(&s.db)
            .await?;
    if open == 0 {
        return Err(ApiError::bad("The task has finished"));
    }
    let identity = ContainerIdentity {
        client_type: "container".into(),
        node_id: n.id,
        organization_id: n.organization_id,
        collaboration_id: n.collaboration_id,
        task_id: b.task_id,
        image,
        databases: vec![],
    };
    // A container lives as long as its task; a day bounds a forgotten token.
    let token = s.signer.issue(
        &Claimed::Container(identity),
        crate::server::now(),
        24 * 3600,
    );
    Ok(Json(json!({ "container_token": token })))
}

#[derive(Deserialize)]
struct NewOrganization {
    name: String,
}

async fn create_organization(
    State(s): State<AppState>,
    caller: Caller,
    Json(b): Json<NewOrganization>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    admin_only(&caller)?;
    let id: i64 = sqlx::query_scalar("INSERT INTO organization (name) VALUES (?) RETURNING id")
        .bind(&b.name)
        .fetch_one(&s.db)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": id, "name": b.name })),
    ))
}

#[derive(Deserialize)]
struct NewCollaboration {
    name: String,
    organization_ids: Vec<i64>,
}

async fn create_collaboration(
    State(s): State<AppState>,
    caller: Caller,
    Json(b): Json<NewCollaboration>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    admin_only(&caller)?;
    let mut tx = write_tx(&s.db).await?;
    let id: i64 = sqlx::query_scalar("INSERT INTO collaboration (name) VALUES (?) RETURNING id")
        .bind(&b.name)
        .fetch_one(&mut *tx)
        .await?;
    for org in &b.organization_ids {
        let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM organization WHERE id = ?")
            .bind(org)
            .fetch_optional(&mut *tx)
            .await?;
        exists.ok_or_else(|| ApiError::not_found("organization", *org))?;
        sqlx::query("INSERT INTO member (collaboration_id, organization_id) VALUES (?, ?)")
            .bind(id)
            .bind(org)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": id, "name": b.name, "organization_ids": b.organization_ids })),
    ))
}

/// `GET /collaboration/<id>` (administrator): its organizations, each with its node's id and
/// VPN address (null while the node has none).
async fn get_collaboration(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<Value>> {
    admin_only(&caller)?;
    let name: String = sqlx::query_scalar("SELECT name FROM collaboration WHERE id = ?")
        .bind(id)
        .fetch_optional(&s.db)
        .await?
        .ok_or_else(|| ApiError::not_found("collaboration", id))?;
    let rows = sqlx::query(
        "SELECT organization.id, organization.name, node.id, node.ip FROM member \
         JOIN organization ON organization.id = member.organization_id \
         LEFT JOIN node ON node.organization_id = member.organization_id AND node.collaboration_id = member.collaboration_id \
         WHERE member.collaboration_id = ? ORDER BY organization.id",
    )
    .bind(id)
    .fetch_all(&s.db)
    .await?;
    let orgs: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "id": r.get::<i64, _>(0), "name": r.get::<String, _>(1),
                "node": r.get::<Option<i64>, _>(2).map(|n| json!({ "id": n, "ip": r.get::<Option<String>, _>(3) })),
            })
        })
        .collect();
    Ok(Json(
        json!({ "id": id, "name": name, "organizations": orgs }),
    ))
}

#[derive(Deserialize)]
struct NewNode {
    organization_id: i64,
    collaboration_id: i64,
    name: Option<String>,
}

async fn is_member(
    db: &SqlitePool,
    collaboration_id: i64,
    organization_id: i64,
) -> ApiResult<bool> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM member WHERE collaboration_id = ? AND organization_id = ?",
    )
    .bind(collaboration_id)
    .bind(organization_id)
    .fetch_one(db)
    .await?;
    Ok(n > 0)
}

async fn create_node(
    State(s): State<AppState>,
    caller: Caller,
    Json(b): Json<NewNode>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    admin_only(&caller)?;
    if !is_member(&s.db, b.collaboration_id, b.organization_id).await? {
        return Err(ApiError::bad(
            "The organization is not a member of the collaboration",
        ));
    }
    let api_key = random_secret().map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("no randomness: {e}"),
        )
    })?;
    let name = b
        .name
        .unwrap_or_else(|| format!("node-{}-{}", b.organization_id, b.collaboration_id));
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO node (name, organization_id, collaboration_id, api_key_hash) VALUES (?, ?, ?, ?) RETURNING id",
    )
    .bind(&name)
    .bind(b.organization_id)
    .bind(b.collaboration_id)
    .bind(hash_key(&api_key))
    .fetch_one(&s.db)
    .await?;
    // The API key is shown once, here; only its hash is kept.
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": id, "name": name, "organization_id": b.organization_id,
            "collaboration_id": b.collaboration_id, "api_key": api_key, "ip": null,
        })),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodePatch {
    ip: Option<String>,
    #[serde(default)]
    clear_ip: bool,
}

async fn patch_node(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
    Json(b): Json<NodePatch>,
) -> ApiResult<Json<Value>> {
    match &caller {
        Caller::Admin => {}
        Caller::Node(n) if n.id == id => {}
        _ => return Err(ApiError::forbidden("A node may only change itself")),
    }
    let ip = match (b.ip, b.clear_ip) {
        (Some(_), true) => return Err(ApiError::bad("Give either ip or clear_ip, not both")),
        (Some(ip), false) => Some(
            ip.parse::<Ipv4Addr>()
                .map_err(|_| ApiError::bad(format!("ip: {ip:?} is not an IPv4 address")))?
                .to_string(),
        ),
        (None, true) => None,
        (None, false) => return Err(ApiError::bad("Nothing to change: give ip or clear_ip")),
    };
    let row = sqlx::query(
        "UPDATE node SET ip = ? WHERE id = ? RETURNING name, organization_id, collaboration_id, ip",
    )
    .bind(&ip)
    .bind(id)
    .fetch_optional(&s.db)
    .await?
    .ok_or_else(|| ApiError::not_found("node", id))?;
    Ok(Json(json!({
        "id": id, "name": row.get::<String, _>(0), "organization_id": row.get::<i64, _>(1),
        "collaboration_id": row.get::<i64, _>(2), "ip": row.get::<Option<String>, _>(3),
    })))
}

#[derive(Deserialize)]
struct NewTask {
    name: String,
    image: String,
    collaboration_id: Option<i64>,
    organizations: Vec<TaskOrganization>,
    parent_id: Option<i64>,
}

#[derive(Deserialize)]
struct TaskOrganization {
    id: i64,
    #[serde(default)]
    input: Value,
}

async fn create_task(
    State(s): State<AppState>,
    caller: Caller,
    Json(b): Json<NewTask>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    // An algorithm creates subtasks of its own task, in its own collaboration.
    let (collaboration_id, parent_id, init_org) = match &caller {
        Caller::Admin => (
            b.collaboration_id
                .ok_or_else(|| ApiError::bad("collaboration_id is required"))?,
            b.parent_id,
            None,
        ),
        Caller::Container(c) => {
            if b.collaboration_id
                .is_some_and(|id| id != c.collaboration_id)
            {
                return Err(ApiError::forbidden(
                    "An algorithm may only create tasks in its own collaboration",
                ));
            }
            (c.collaboration_id, Some(c.task_id), Some(c.organization_id))
        }
        Caller::Node(_) => return Err(ApiError::forbidden("Nodes do not create tasks")),
    };
    if b.organizations.is_empty() {
        return Err(ApiError::bad("organizations: at least one"));
    }
    let mut tx = write_tx(&s.db).await?;
    for o in &b.organizations {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM member WHERE collaboration_id = ? AND organization_id = ?",
        )
        .bind(collaboration_id)
        .bind(o.id)
        .fetch_one(&mut *tx)
        .await?;
        if n == 0 {
            return Err(ApiError::bad(format!(
                "organization {} is not a member of collaboration {collaboration_id}",
                o.id
            )));
        }
    }
    if let Some(p) = parent_id {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM task WHERE id = ? AND collaboration_id = ?")
                .bind(p)
                .bind(collaboration_id)
                .fetch_one(&mut *tx)
                .await?;
        if n == 0 {
            return Err(ApiError::not_found("parent task", p));
        }
    }
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO task (name, image, collaboration_id, parent_id, init_organization_id, created_at) \
         VALUES (?, ?, ?, ?, ?, datetime('now')) RETURNING id",
    )
    .bind(&b.name)
    .bind(&b.image)
    .bind(collaboration_id)
    .bind(parent_id)
    .bind(init_org)
    .fetch_one(&mut *tx)
    .await?;
    let mut runs = Vec::new();
    for o in &b.organizations {
        let run: i64 = sqlx::query_scalar(
            "INSERT INTO run (task_id, organization_id, input) VALUES (?, ?, ?) RETURNING id",
        )
        .bind(id)
        .bind(o.id)
        .bind(o.input.to_string())
        .fetch_one(&mut *tx)
        .await?;
        runs.push(json!({ "id": run, "organization_id": o.id, "status": "pending" }));
    }
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": id, "name": b.name, "image": b.image, "collaboration_id": collaboration_id,
            "parent_id": parent_id, "runs": runs,
        })),
    ))
}

/// The run `run_id`, if it runs on node `n` (its organization, in its collaboration).
async fn own_run(db: &SqlitePool, n: &NodeRow, run_id: i64) -> ApiResult<()> {
    let row = sqlx::query("SELECT run.organization_id, task.collaboration_id FROM run JOIN task ON task.id = run.task_id WHERE run.id = ?")
        .bind(run_id)
        .fetch_optional(db)
        .await?
        .ok_or_else(|| ApiError::not_found("run", run_id))?;
    if (row.get::<i64, _>(0), row.get::<i64, _>(1)) != (n.organization_id, n.collaboration_id) {
        return Err(ApiError::forbidden(format!(
            "run {run_id} does not run on this node"
        )));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPort {
    port: u16,
    run_id: i64,
    label: Option<String>,
}

async fn create_port(
    State(s): State<AppState>,
    caller: Caller,
    Json(b): Json<NewPort>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Caller::Node(n) = caller else {
        return Err(ApiError::forbidden("Only nodes register ports"));
    };
    if b.port == 0 {
        return Err(ApiError::bad("port: must be between 1 and 65535"));
    }
    own_run(&s.db, &n, b.run_id).await?;
    let id: i64 =
        sqlx::query_scalar("INSERT INTO port (run_id, port, label) VALUES (?, ?, ?) RETURNING id")
            .bind(b.run_id)
            .bind(i64::from(b.port))
            .bind(&b.label)
            .fetch_one(&s.db)
            .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": id, "port": b.port, "label": b.label, "run": { "id": b.run_id } })),
    ))
}

#[derive(Deserialize)]
struct RunQuery {
    run_id: i64,
}

async fn delete_ports(
    State(s): State<AppState>,
    caller: Caller,
    Query(q): Query<RunQuery>,
) -> ApiResult<Json<Value>> {
    let Caller::Node(n) = caller else {
        return Err(ApiError::forbidden("Only nodes remove ports"));
    };
    own_run(&s.db, &n, q.run_id).await?;
    sqlx::query("DELETE FROM port WHERE run_id = ?")
        .bind(q.run_id)
        .execute(&s.db)
        .await?;
    Ok(Json(json!({ "msg": "Ports removed from the database." })))
}

async fn get_vpn(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let Caller::Node(n) = caller else {
        return Err(ApiError::forbidden("Only nodes get VPN configurations"));
    };
    Ok(Json(profile_json(new_profile(&s, &n).await?)))
}

/// vantage6's answer, with `expires` (when the certificate ends, as eduVPN's `Expires` header
/// says) added when known, so a node can renew in time.
fn profile_json((ovpn, expires): (String, Option<String>)) -> Value {
    match expires {
        Some(e) => json!({ "ovpn_config": ovpn, "expires": e }),
        None => json!({ "ovpn_config": ovpn }),
    }
}

#[derive(Deserialize)]
struct VpnUpdate {
    vpn_config: String,
}

/// `POST /vpn/update`: a fresh key pair for the node's profile (vantage6 4.6+ broke this; here it
/// works). The certificate it replaces is revoked.
async fn update_vpn(
    State(s): State<AppState>,
    caller: Caller,
    Json(b): Json<VpnUpdate>,
) -> ApiResult<Json<Value>> {
    let Caller::Node(n) = caller else {
        return Err(ApiError::forbidden("Only nodes renew VPN configurations"));
    };
    if !b.vpn_config.contains("<cert>") {
        return Err(ApiError::bad(
            "vpn_config: not an OpenVPN profile with a <cert> block",
        ));
    }
    Ok(Json(profile_json(new_profile(&s, &n).await?)))
}

/// Issues the node a new client certificate, revokes its earlier ones, and returns the profile.
async fn new_profile(s: &AppState, n: &NodeRow) -> ApiResult<(String, Option<String>)> {
    let Some(pki) = &s.pki else {
        let Some(edu) = &s.config.vpn_server else {
            return Err(ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                "This server does not support VPN",
            ));
        };
        use crate::server::eduvpn::EduVpnError;
        return match crate::server::eduvpn::fetch_profile(edu).await {
            Ok(p) => Ok((p.ovpn, p.expires)),
            Err(e @ EduVpnError::Unreachable(_)) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                e.to_string(),
            )),
            Err(e) => Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                e.to_string(),
            )),
        };
    };
    let failed = |e: crate::server::pki::PkiError| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("VPN provisioning failed: {e}"),
        )
    };
    let pki = pki.lock().await;
    let cert = pki.issue(n.id).map_err(failed)?;
    let mut tx = write_tx(&s.db).await?;
    revoke_node_certificates(&mut tx, n.id).await?;
    sqlx::query(
        "INSERT INTO vpn_certificate (serial, node_id, issued_at) VALUES (?, ?, datetime('now'))",
    )
    .bind(&cert.serial)
    .bind(n.id)
    .execute(&mut *tx)
    .await?;
    // The CRL is written before the commit: if the commit fails, an unused certificate is
    // revoked, never a used one left valid.
    write_crl(&mut tx, &pki).await?;
    tx.commit().await?;
    Ok((pki.profile(&cert), None))
}

type Tx = sqlx::Transaction<'static, sqlx::Sqlite>;

async fn revoke_node_certificates(tx: &mut Tx, node_id: i64) -> ApiResult<()> {
    sqlx::query("UPDATE vpn_certificate SET revoked_at = datetime('now') WHERE node_id = ? AND revoked_at IS NULL")
        .bind(node_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Rewrites the CRL with every revoked certificate.
async fn write_crl(tx: &mut Tx, pki: &crate::server::pki::Pki) -> ApiResult<()> {
    let revoked: Vec<String> =
        sqlx::query_scalar("SELECT serial FROM vpn_certificate WHERE revoked_at IS NOT NULL")
            .fetch_all(&mut **tx)
            .await?;
    pki.write_crl(&revoked).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot write the certificate revocation list: {e}"),
        )
    })
}

/// `DELETE /node/<id>` (administrator): the node goes, and with the built-in VPN its
/// certificates are revoked, so its profile no longer connects.
async fn delete_node(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<Value>> {
    admin_only(&caller)?;
    let pki = match &s.pki {
        Some(p) => Some(p.lock().await),
        None => None,
    };
    let mut tx = write_tx(&s.db).await?;
    let gone = sqlx::query("DELETE FROM node WHERE id = ?")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    if gone.rows_affected() == 0 {
        return Err(ApiError::not_found("node", id));
    }
    revoke_node_certificates(&mut tx, id).await?;
    if let Some(pki) = &pki {
        write_crl(&mut tx, pki).await?;
    }
    tx.commit().await?;
    Ok(Json(json!({ "msg": format!("Node id={id} deleted.") })))
}

/// `GET /vpn/algorithm/addresses`: the VPN addresses and ports of the runs around the caller's
/// task, with vantage6 4.x's flag semantics (a flag counts as set when present and non-empty).
async fn addresses(
    State(s): State<AppState>,
    caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let Caller::Container(c) = caller else {
        return Err(ApiError::forbidden(
            "Only algorithm containers may look up addresses",
        ));
    };
    let set = |f: &str| q.get(f).is_some_and(|v| !v.is_empty());
    let only = ["only_children", "only_parent", "only_siblings", "only_self"];
    if only.iter().filter(|f| set(f)).count() > 1 {
        return Err(ApiError::bad(
            "You can only specify one of the only_<...> parameters!",
        ));
    }
    let parent: Option<i64> = sqlx::query_scalar("SELECT parent_id FROM task WHERE id = ?")
        .bind(c.task_id)
        .fetch_optional(&s.db)
        .await?
        .ok_or_else(|| ApiError::not_found("task", c.task_id))?;
    let children: Vec<i64> = sqlx::query_scalar("SELECT id FROM task WHERE parent_id = ?")
        .bind(c.task_id)
        .fetch_all(&s.db)
        .await?;
    let mut tasks = if set("only_children") {
        children.clone()
    } else if set("only_parent") {
        parent.into_iter().collect()
    } else {
        vec![c.task_id]
    };
    if set("include_children") && !set("only_children") {
        tasks.extend(&children);
    }
    if set("include_parent") && !set("only_parent") {
        tasks.extend(parent);
    }
    tasks.sort_unstable();
    tasks.dedup();
    let label = q.get("label").filter(|l| !l.is_empty());
    let mut out = Vec::new();
    for task in tasks {
        let rows = sqlx::query(
            "SELECT port.port, port.label, node.ip, run.organization_id, task.id, task.parent_id \
             FROM port JOIN run ON run.id = port.run_id JOIN task ON task.id = run.task_id \
             LEFT JOIN node ON node.organization_id = run.organization_id AND node.collaboration_id = task.collaboration_id \
             WHERE task.id = ? ORDER BY port.id",
        )
        .bind(task)
        .fetch_all(&s.db)
        .await?;
        for r in rows {
            let org: i64 = r.get(3);
            let keep = if set("only_siblings") {
                org != c.organization_id
            } else if set("only_self") {
                org == c.organization_id
            } else {
                true
            };
            let port_label: Option<String> = r.get(1);
            if !keep || label.is_some_and(|l| port_label.as_deref() != Some(l.as_str())) {
                continue;
            }
            out.push(json!({
                "port": r.get::<i64, _>(0), "label": port_label, "ip": r.get::<Option<String>, _>(2),
                "organization_id": org, "task_id": r.get::<i64, _>(4), "parent_id": r.get::<Option<i64>, _>(5),
            }));
        }
    }
    Ok(Json(json!({ "addresses": out })))
}

/// Run statuses as vantage6 4.x names them; the last four end a run.
const STATUSES: [&str; 7] = [
    "pending",
    "initializing",
    "active",
    "completed",
    "failed",
    "crashed",
    "killed",
];
const FINISHED: [&str; 4] = ["completed", "failed", "crashed", "killed"];

/// A run query with the columns [`run_json`] reads, and the given condition.
macro_rules! select_runs {
    ($condition:literal) => {
        concat!(
            "SELECT run.id, run.task_id, run.organization_id, run.status, run.input, run.result, run.log, ",
            "task.image, task.name, task.parent_id, task.collaboration_id ",
            "FROM run JOIN task ON task.id = run.task_id WHERE ",
            $condition
        )
    };
}

fn run_json(r: &sqlx::sqlite::SqliteRow) -> Value {
    json!({
        "id": r.get::<i64, _>(0),
        "task": { "id": r.get::<i64, _>(1), "image": r.get::<String, _>(7), "name": r.get::<String, _>(8),
                  "parent_id": r.get::<Option<i64>, _>(9), "collaboration_id": r.get::<i64, _>(10) },
        "organization_id": r.get::<i64, _>(2),
        "status": r.get::<String, _>(3),
        "input": r.get::<Option<String>, _>(4),
        "result": r.get::<Option<String>, _>(5),
        "log": r.get::<Option<String>, _>(6),
    })
}

#[derive(Deserialize)]
struct RunFilter {
    task_id: Option<i64>,
    status: Option<String>,
}

/// `GET /run`: a node sees the runs for its organization in its collaboration (by default the
/// pending ones); an algorithm sees the runs of a task of its collaboration (`task_id`), with
/// results; the administrator sees any task's runs.
async fn list_runs(
    State(s): State<AppState>,
    caller: Caller,
    Query(f): Query<RunFilter>,
) -> ApiResult<Json<Value>> {
    let rows = match &caller {
        Caller::Node(n) => {
            let status = f.status.unwrap_or_else(|| "pending".into());
            sqlx::query(select_runs!(
                "run.organization_id = ? AND task.collaboration_id = ? AND run.status = ? \
                 AND (? IS NULL OR run.task_id = ?) ORDER BY run.id"
            ))
            .bind(n.organization_id)
            .bind(n.collaboration_id)
            .bind(status)
            .bind(f.task_id)
            .bind(f.task_id)
            .fetch_all(&s.db)
            .await?
        }
        Caller::Container(c) => {
            let task = f
                .task_id
                .ok_or_else(|| ApiError::bad("task_id is required"))?;
            sqlx::query(select_runs!(
                "run.task_id = ? AND task.collaboration_id = ? ORDER BY run.id"
            ))
            .bind(task)
            .bind(c.collaboration_id)
            .fetch_all(&s.db)
            .await?
        }
        Caller::Admin => {
            let task = f
                .task_id
                .ok_or_else(|| ApiError::bad("task_id is required"))?;
            sqlx::query(select_runs!("run.task_id = ? ORDER BY run.id"))
                .bind(task)
                .fetch_all(&s.db)
                .await?
        }
    };
    Ok(Json(
        json!({ "data": rows.iter().map(run_json).collect::<Vec<_>>() }),
    ))
}

/// `POST /run/<id>/claim`: a node takes a pending run for itself. One conditional update, so of
/// two concurrent claims exactly one wins; the other gets 409.
async fn claim_run(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<Value>> {
    let Caller::Node(n) = caller else {
        return Err(ApiError::forbidden("Only nodes claim runs"));
    };
    own_run(&s.db, &n, id).await?;
    let claimed = sqlx::query(
        "UPDATE run SET status = 'initializing', assigned_at = datetime('now') WHERE id = ? AND status = 'pending'",
    )
    .bind(id)
    .execute(&s.db)
    .await?;
    if claimed.rows_affected() == 0 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("run {id} is not pending (claimed already?)"),
        ));
    }
    let row = sqlx::query(select_runs!("run.id = ?"))
        .bind(id)
        .fetch_one(&s.db)
        .await?;
    Ok(Json(run_json(&row)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunUpdate {
    status: Option<String>,
    result: Option<String>,
    log: Option<String>,
}

/// `PATCH /run/<id>`: the node reports status, result and log of its run.
async fn update_run(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
    Json(b): Json<RunUpdate>,
) -> ApiResult<Json<Value>> {
    let Caller::Node(n) = caller else {
        return Err(ApiError::forbidden("Only nodes report on runs"));
    };
    own_run(&s.db, &n, id).await?;
    if let Some(st) = &b.status {
        if !STATUSES.contains(&st.as_str()) {
            return Err(ApiError::bad(format!(
                "status: {st:?} is not one of {STATUSES:?}"
            )));
        }
    }
    let finished = b.status.as_deref().is_some_and(|st| FINISHED.contains(&st));
    sqlx::query(
        "UPDATE run SET status = coalesce(?, status), result = coalesce(?, result), log = coalesce(?, log), \
         finished_at = CASE WHEN ? THEN datetime('now') ELSE finished_at END WHERE id = ?",
    )
    .bind(&b.status)
    .bind(&b.result)
    .bind(&b.log)
    .bind(finished)
    .bind(id)
    .execute(&s.db)
    .await?;
    let row = sqlx::query(select_runs!("run.id = ?"))
        .bind(id)
        .fetch_one(&s.db)
        .await?;
    Ok(Json(run_json(&row)))
}

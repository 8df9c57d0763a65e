//! The HTTP API: vantage6 4.x shapes on the VPN surface (see docs/vantage6-api.md), one file per
//! resource, errors as JSON `{"msg": ...}` ([`error`]), callers told apart by their token
//! ([`caller`]). Handlers check who may do what and shape answers; the queries are the store's.

pub mod caller;
pub mod error;

mod collaboration;
mod hypermedia;
mod kill;
mod node;
mod organization;
mod port;
mod run;
mod task;
mod token;
mod user;
pub(crate) mod vpn;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;

use crate::server::state::AppState;
use error::ApiError;

/// Largest request body the server reads.
const MAX_BODY: usize = 1 << 20;

pub fn routes(state: AppState) -> Router {
    let api = Router::new()
        .route("/token/user", post(token::user))
        .route("/token/node", post(token::node))
        .route("/token/container", post(token::container))
        .route("/token/refresh", post(token::refresh))
        .route("/user", get(user::list))
        .route("/user/{id}", get(user::get))
        .route(
            "/organization",
            get(organization::list).post(organization::create),
        )
        .route(
            "/organization/{id}",
            get(organization::get).patch(organization::patch),
        )
        .route(
            "/collaboration",
            get(collaboration::list).post(collaboration::create),
        )
        .route("/collaboration/{id}", get(collaboration::get))
        .route("/node", get(node::list).post(node::create))
        .route(
            "/node/{id}",
            get(node::get).patch(node::patch).delete(node::delete),
        )
        .route("/task", get(task::list).post(task::create))
        .route("/task/{id}", get(task::get))
        .route("/task/{id}/status", get(task::status))
        .route("/result", get(run::results))
        .route("/result/{id}", get(run::result))
        .route("/port", post(port::create).delete(port::delete))
        .route("/run", get(run::list))
        .route("/run/{id}", get(run::get).patch(run::update))
        .route("/run/{id}/claim", post(run::claim))
        .route("/kill/task", post(kill::task))
        .route("/kill/node/tasks", post(kill::node_tasks))
        .route("/vpn", get(vpn::get))
        .route("/vpn/update", post(vpn::update))
        .route("/vpn/algorithm/addresses", get(vpn::addresses))
        .route("/vpn/peers", get(vpn::peers))
        .route(vpn::TCP_PATH, get(vpn::tcp))
        .route("/version", get(version))
        .route("/health", get(health))
        .route("/blobstream/status", get(blob_store))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            crate::server::metrics::observe,
        ))
        .with_state(state.clone());
    let app = if state.config.api_path.is_empty() {
        api
    } else {
        Router::new().nest(&state.config.api_path, api)
    };
    // vantage6's socket.io channel is at the host's root, whatever the API's path.
    let events = state.events.layer();
    state.events.clone().open(state);
    app.layer(events)
}

type ApiResult<T> = Result<T, ApiError>;

/// vantage6's `GET /version`: algonet's own version.
async fn version() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "version": env!("CARGO_PKG_VERSION") }))
}

/// vantage6's `GET /health`: whether the database answers.
async fn health(
    axum::extract::State(s): axum::extract::State<AppState>,
) -> ApiResult<Json<serde_json::Value>> {
    s.store.connection().await?;
    Ok(Json(serde_json::json!({ "database": true })))
}

/// vantage6's clients ask before they send a task whether results go to a blob store; algonet
/// keeps them in the database.
async fn blob_store() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "blob_store_enabled": false }))
}

/// An unknown route: 404 with a JSON `msg`, as every other error.
async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        error::Kind::NotFound,
        format!("No such endpoint: {}", uri.path()),
    )
}

/// A known route asked with a method it does not take.
async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        error::Kind::MethodNotAllowed,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// A path parameter whose rejection (not a number, say) answers 400 `{"msg"}`.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| Path(v))
            .map_err(|e| ApiError::bad(e.body_text()))
    }
}

/// JSON body whose rejections (malformed, wrong types, too large, late) answer 400, 413 or 408
/// `{"msg"}`.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(JsonRejection::BytesRejection(e))
                if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Err(ApiError::too_large(e.body_text()))
            }
            // The other way a body fails to arrive: it was late (see `crate::http`), or the
            // client went away before it ended.
            Err(JsonRejection::BytesRejection(_)) => Err(ApiError::new(
                error::Kind::Timeout,
                "The request's body did not arrive in time",
            )),
            Err(e) => Err(ApiError::bad(e.body_text())),
        }
    }
}

/// A query string whose rejections answer 400 `{"msg"}`.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Query(v))
            .map_err(|e| ApiError::bad(e.body_text()))
    }
}

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// A created resource: 201 with its JSON.
#[derive(Debug)]
pub struct Created<T>(pub T);

impl<T: serde::Serialize> IntoResponse for Created<T> {
    fn into_response(self) -> Response {
        (axum::http::StatusCode::CREATED, axum::Json(self.0)).into_response()
    }
}

//! An error as the caller sees it: a kind and a message. [`Kind::status`] is the one place that
//! maps a failure to an HTTP status; the body is vantage6's `{"msg": ...}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::api::Msg;
use crate::server::eduvpn::EduVpnError;
use crate::server::provision::ProvisionError;
use crate::server::store::StoreError;

/// What went wrong, in the caller's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    TooLarge,
    /// The request did not arrive in time.
    Timeout,
    /// Too many tries: wait this many seconds (`Retry-After`).
    TooMany(u64),
    /// A limit reached for good (429 without `Retry-After`: waiting does not help).
    Limit,
    Internal,
    NotImplemented,
    Unavailable,
}

impl Kind {
    pub fn status(self) -> StatusCode {
        match self {
            Kind::BadRequest => StatusCode::BAD_REQUEST,
            Kind::Unauthorized => StatusCode::UNAUTHORIZED,
            Kind::Forbidden => StatusCode::FORBIDDEN,
            Kind::NotFound => StatusCode::NOT_FOUND,
            Kind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Kind::Conflict => StatusCode::CONFLICT,
            Kind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Kind::Timeout => StatusCode::REQUEST_TIMEOUT,
            Kind::TooMany(_) | Kind::Limit => StatusCode::TOO_MANY_REQUESTS,
            Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Kind::NotImplemented => StatusCode::NOT_IMPLEMENTED,
            Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

#[derive(Debug)]
pub struct ApiError {
    pub kind: Kind,
    pub msg: String,
}

impl ApiError {
    pub fn new(kind: Kind, msg: impl Into<String>) -> ApiError {
        ApiError {
            kind,
            msg: msg.into(),
        }
    }
    pub fn bad(msg: impl Into<String>) -> ApiError {
        ApiError::new(Kind::BadRequest, msg)
    }
    pub fn unauthorized(msg: impl Into<String>) -> ApiError {
        ApiError::new(Kind::Unauthorized, msg)
    }
    pub fn forbidden(msg: impl Into<String>) -> ApiError {
        ApiError::new(Kind::Forbidden, msg)
    }
    pub fn conflict(msg: impl Into<String>) -> ApiError {
        ApiError::new(Kind::Conflict, msg)
    }
    pub fn too_large(msg: impl Into<String>) -> ApiError {
        ApiError::new(Kind::TooLarge, msg)
    }
    pub fn too_many_logins(retry_after_secs: u64) -> ApiError {
        ApiError::new(
            Kind::TooMany(retry_after_secs),
            format!("Too many failed logins; try again in {retry_after_secs} s"),
        )
    }
    pub fn internal(msg: impl Into<String>) -> ApiError {
        ApiError::new(Kind::Internal, msg)
    }
    pub fn not_found(what: &str, id: impl std::fmt::Display) -> ApiError {
        ApiError::new(Kind::NotFound, format!("{what} id={id} is not found"))
    }
}

impl From<StoreError> for ApiError {
    /// The caller learns that the database failed, not how: the cause goes to the log.
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Conflict => ApiError::conflict("already exists"),
            StoreError::Unavailable(cause) => {
                tracing::warn!("database unavailable: {cause}");
                ApiError::new(
                    Kind::Unavailable,
                    "The database is unavailable; try again shortly",
                )
            }
            StoreError::Database(cause) => {
                tracing::error!("database: {cause}");
                ApiError::internal("Internal server error (database); see the server's log")
            }
        }
    }
}

impl From<ProvisionError> for ApiError {
    fn from(e: ProvisionError) -> ApiError {
        let kind = match e {
            ProvisionError::Store(e) => return e.into(),
            ProvisionError::TooMany(secs) => Kind::TooMany(secs),
            ProvisionError::NotSupported => Kind::NotImplemented,
            ProvisionError::EduVpn(EduVpnError::Unreachable(_)) => Kind::Unavailable,
            ProvisionError::NoKey | ProvisionError::Key(_) => Kind::BadRequest,
            _ => Kind::Internal,
        };
        ApiError::new(kind, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.kind.status(), axum::Json(Msg { msg: self.msg })).into_response();
        if let Kind::TooMany(secs) = self.kind {
            r.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        r
    }
}

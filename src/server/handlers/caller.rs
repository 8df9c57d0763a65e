//! Who is calling, from the bearer token: an administrator (the configuration's, or a user
//! account: every account may do what the administrator does, as every user vantage6's import
//! makes is a super user), a node, or an algorithm container.
//! A handler names the caller it serves by its extractor ([`AdminCaller`], [`NodeCaller`],
//! [`ContainerCaller`]); any other caller gets 403, no token or a bad one 401.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::error::ApiError;
use crate::api::{CollaborationId, ContainerIdentity, OrganizationId};
use crate::server::auth::{Claimed, Use, ADMIN_USER};
use crate::server::state::AppState;
use crate::server::store::{self, NodeRow};

/// An administrator: which user, and of which organization (`None`: the root organization of
/// the configuration's administrator).
#[derive(Clone, Copy, Debug)]
pub struct Admin {
    pub user: i64,
    pub organization: Option<OrganizationId>,
}

impl Admin {
    /// The administrator's organization: the account's, or `root` for the configuration's.
    pub async fn own_organization(
        &self,
        db: &mut store::Db,
    ) -> Result<OrganizationId, store::StoreError> {
        match self.organization {
            Some(o) => Ok(o),
            None => store::root_organization(db).await,
        }
    }
}

/// Any authenticated caller.
#[derive(Clone, Debug)]
pub enum Caller {
    Admin(Admin),
    Node(NodeRow),
    Container(ContainerIdentity),
}

impl Caller {
    /// The collaboration a node or an algorithm belongs to; `None` for the administrator, who
    /// sees all of them.
    pub fn collaboration(&self) -> Option<CollaborationId> {
        match self {
            Caller::Admin(_) => None,
            Caller::Node(n) => Some(n.collaboration_id),
            Caller::Container(c) => Some(c.collaboration_id),
        }
    }

    /// Refuses a task or run outside the caller's collaboration, in vantage6's words (401).
    pub fn sees(&self, collaboration: CollaborationId) -> Result<(), ApiError> {
        if self.collaboration().is_some_and(|c| c != collaboration) {
            return Err(ApiError::unauthorized(
                "You lack the permission to do that!",
            ));
        }
        Ok(())
    }

    /// The collaboration a list or a look-up is kept to: the one asked for, which for a node or
    /// an algorithm must be its own (its own also when none is asked for; another is 403).
    pub fn within(
        &self,
        asked: Option<CollaborationId>,
    ) -> Result<Option<CollaborationId>, ApiError> {
        match (self.collaboration(), asked) {
            (None, asked) => Ok(asked),
            (Some(own), Some(asked)) if asked != own => Err(ApiError::forbidden(
                "A node or an algorithm sees only its own collaboration",
            )),
            (Some(own), _) => Ok(Some(own)),
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let unauthorized = || ApiError::unauthorized("Missing or invalid authorization token");
        let token = bearer(&parts.headers).ok_or_else(unauthorized)?;
        let now = crate::server::state::now();
        let checked = state
            .signer
            .check(token, Use::Access, now)
            .ok_or_else(unauthorized)?;
        // A user's or a node's token is good while its session is (see `token::refresh`).
        if let (Some(subject), Some(session)) =
            (checked.claimed.session_subject(), &checked.session)
        {
            if !store::session_live(
                &mut *state.store.connection().await?,
                &session.id,
                &subject,
                now,
            )
            .await?
            {
                return Err(unauthorized());
            }
        }
        match checked.claimed {
            Claimed::User(ADMIN_USER) => Ok(Caller::Admin(Admin {
                user: ADMIN_USER,
                organization: None,
            })),
            // A deleted account's token dies with it.
            Claimed::User(id) => store::account(&mut *state.store.connection().await?, id)
                .await?
                .map(|a| {
                    Caller::Admin(Admin {
                        user: a.id,
                        organization: Some(a.organization_id),
                    })
                })
                .ok_or_else(unauthorized),
            // A deleted node's token dies with it. A call is a sign of life (`last_seen`).
            Claimed::Node(id) => {
                let node = store::node(&mut *state.store.connection().await?, id)
                    .await?
                    .ok_or_else(unauthorized)?;
                // Not worth refusing the call for: the next one writes it.
                if let Err(e) = state.node_seen(id).await {
                    tracing::warn!(node_id = %id, "noting the node's last call: {e}");
                }
                Ok(Caller::Node(node))
            }
            // A container token is good while its node exists and its run is unfinished.
            Claimed::Container(c) => {
                let live = store::container_run_open(
                    &mut *state.store.connection().await?,
                    c.node_id,
                    c.task_id,
                )
                .await?;
                live.then_some(Caller::Container(c))
                    .ok_or_else(unauthorized)
            }
        }
    }
}

/// The token of an `Authorization: Bearer` header.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// An administrator.
#[derive(Clone, Copy, Debug)]
pub struct AdminCaller(pub Admin);

/// A node, as the database has it now.
#[derive(Clone, Debug)]
pub struct NodeCaller(pub NodeRow);

/// An algorithm container, as its token names it.
#[derive(Clone, Debug)]
pub struct ContainerCaller(pub ContainerIdentity);

macro_rules! only {
    ($extractor:ident, $pattern:pat => $value:expr, $refusal:literal) => {
        impl FromRequestParts<AppState> for $extractor {
            type Rejection = ApiError;
            async fn from_request_parts(
                parts: &mut Parts,
                state: &AppState,
            ) -> Result<Self, Self::Rejection> {
                match Caller::from_request_parts(parts, state).await? {
                    $pattern => Ok($value),
                    _ => Err(ApiError::forbidden($refusal)),
                }
            }
        }
    };
}

only!(AdminCaller, Caller::Admin(a) => AdminCaller(a), "Only an administrator may do this");
only!(NodeCaller, Caller::Node(n) => NodeCaller(n), "Only nodes may do this");
only!(
    ContainerCaller,
    Caller::Container(c) => ContainerCaller(c),
    "Only algorithm containers may do this"
);

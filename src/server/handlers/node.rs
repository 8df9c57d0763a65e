//! `POST /node`, `DELETE /node/<id>` (administrator), `PATCH /node/<id>` (the administrator,
//! or the node itself: its VPN address), `GET /node/<id>` and `GET /node` (the administrator
//! any; a node or an algorithm those of its collaboration).

use std::net::Ipv4Addr;

use axum::extract::State;

use serde::Deserialize;

use super::caller::{AdminCaller, Caller};
use super::error::ApiError;
use super::hypermedia::{Links, Listing, Resource};
use super::{ApiResult, Created, Json, Path, Query};
use crate::api::{
    CollaborationId, Msg, NewNode, NewNodeKey, Node, NodeId, NodePatch, OrganizationId, Page,
};
use crate::server::auth::{hash_key, random_secret};
use crate::server::provider::VpnProvider;
use crate::server::state::AppState;
use crate::server::store::NodeRow;
use crate::server::{provision, store};

pub async fn create(
    State(s): State<AppState>,
    AdminCaller(a): AdminCaller,
    Json(b): Json<NewNode>,
) -> ApiResult<Created<NewNodeKey>> {
    let mut db = s.store.connection().await?;
    if !store::is_member(&mut db, b.collaboration_id, b.organization_id).await? {
        return Err(ApiError::bad(
            "The organization is not a member of the collaboration",
        ));
    }
    let api_key = random_secret().map_err(|e| ApiError::internal(format!("no randomness: {e}")))?;
    let name = match b.name {
        Some(n) => n,
        // vantage6's default name.
        None => {
            let organization = store::organization(&mut db, b.organization_id, None).await?;
            let collaboration = store::collaboration(&mut db, b.collaboration_id).await?;
            NewNode::default_name(
                &organization.map(|o| o.name).unwrap_or_default(),
                &collaboration.map(|c| c.name).unwrap_or_default(),
            )
        }
    };
    let id = store::insert_node(
        &mut db,
        &name,
        b.organization_id,
        b.collaboration_id,
        &hash_key(&api_key),
    )
    .await?;
    tracing::info!(node_id = %id, organization_id = %b.organization_id, collaboration_id = %b.collaboration_id, user_id = a.user, "node created");
    // The API key is shown once, here; only its hash is kept.
    let node = NodeRow {
        id,
        name,
        organization_id: b.organization_id,
        collaboration_id: b.collaboration_id,
        ip: None,
        last_seen: None,
    };
    Ok(Created(NewNodeKey {
        node: present(Links::of(&s), node),
        api_key,
    }))
}

pub async fn patch(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<NodeId>,
    Json(b): Json<NodePatch>,
) -> ApiResult<Json<Node>> {
    match &caller {
        Caller::Admin(_) => {}
        Caller::Node(n) if n.id == id => {}
        _ => return Err(ApiError::forbidden("A node may only change itself")),
    }
    let ip = match (b.ip, b.clear_ip) {
        (Some(_), true) => return Err(ApiError::bad("Give either ip or clear_ip, not both")),
        (Some(ip), false) => Some(
            ip.parse::<Ipv4Addr>()
                .map_err(|_| ApiError::bad(format!("ip: {ip:?} is not an IPv4 address")))?,
        ),
        (None, true) => None,
        (None, false) => return Err(ApiError::bad("Nothing to change: give ip or clear_ip")),
    };
    let mut db = s.store.connection().await?;
    if let Some(ip) = ip {
        // With the built-in VPN the server gave the node its address (its client config);
        // eduVPN's subnet is its own.
        if let Some(vpn) = s.vpn.builtin() {
            let own = vpn.address_of(id);
            if own != Some(ip) {
                return Err(ApiError::bad(format!(
                    "ip: {ip} is not this node's VPN address ({})",
                    own.map_or("none".to_string(), |a| a.to_string())
                )));
            }
        }
        let edu = match &s.vpn {
            VpnProvider::EduVpn { config, .. } => config.vpn_subnet().ok().flatten(),
            _ => None,
        };
        if let Some(net) = edu {
            let first = Ipv4Addr::from_bits(net.network().to_bits() + 1);
            if !net.contains(&ip) || [net.network(), net.broadcast(), first].contains(&ip) {
                return Err(ApiError::bad(format!(
                    "ip: {ip} is not a node's address in the VPN subnet {net}"
                )));
            }
        }
        if let Some(other) = store::node_with_ip(&mut db, &ip.to_string()).await? {
            if other != id {
                return Err(ApiError::conflict(format!(
                    "ip: {ip} is node {other}'s VPN address"
                )));
            }
        }
    }
    if ip.is_none() {
        // The node leaves the VPN (it clears its address as it stops).
        s.vpn.release(id).await;
    }
    let ip = ip.map(|ip| ip.to_string());
    let node = store::set_node_ip(&mut db, id, ip.as_deref())
        .await?
        .ok_or_else(|| ApiError::not_found("node", id))?;
    drop(db);
    s.changed().await;
    Ok(Json(present(Links::of(&s), node)))
}

pub async fn get(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<NodeId>,
) -> ApiResult<Json<Node>> {
    // Another collaboration's node answers as one that does not exist.
    let node = store::node(&mut *s.store.connection().await?, id)
        .await?
        .filter(|n| caller.within(Some(n.collaboration_id)).is_ok())
        .ok_or_else(|| ApiError::not_found("node", id))?;
    Ok(Json(present(Links::of(&s), node)))
}

#[derive(Debug, Deserialize)]
pub struct NodeFilter {
    collaboration_id: Option<CollaborationId>,
    organization_id: Option<OrganizationId>,
    /// `online` or `offline`, as vantage6's `node.list(is_online=...)` asks.
    status: Option<String>,
}

pub async fn list(
    State(s): State<AppState>,
    caller: Caller,
    listing: Listing,
    Query(f): Query<NodeFilter>,
) -> ApiResult<Json<Page<Node>>> {
    let collaboration = caller.within(f.collaboration_id)?;
    let wanted = match f.status.as_deref() {
        None => None,
        Some(s @ ("online" | "offline")) => Some(s == "online"),
        Some(other) => {
            return Err(ApiError::bad(format!(
                "status: {other:?} is neither online nor offline"
            )))
        }
    };
    let rows = store::nodes(
        &mut *s.store.connection().await?,
        collaboration,
        f.organization_id,
    )
    .await?;
    let l = Links::of(&s);
    Ok(Json(
        listing.page(
            rows.into_iter()
                .filter(|n| wanted.is_none_or(|w| online(n) == w))
                .map(|n| present(l, n))
                .collect(),
        ),
    ))
}

/// Whether the node called the server lately.
fn online(n: &NodeRow) -> bool {
    let now = i64::try_from(crate::server::state::now()).unwrap_or(i64::MAX);
    n.last_seen
        .as_deref()
        .and_then(store::unstamp)
        .is_some_and(|t| now - t <= crate::server::state::ONLINE_WITHIN_SECS)
}

pub fn present(l: Links, n: NodeRow) -> Node {
    Node {
        organization: l.one(Resource::Organization, n.organization_id),
        collaboration: l.one(Resource::Collaboration, n.collaboration_id),
        config: vec![],
        id: n.id,
        kind: "node".into(),
        status: Some(if online(&n) { "online" } else { "offline" }.into()),
        last_seen: n.last_seen,
        ip: n.ip,
        name: n.name,
    }
}

/// The node goes, and with the built-in VPN its certificates are revoked.
pub async fn delete(
    State(s): State<AppState>,
    AdminCaller(a): AdminCaller,
    Path(id): Path<NodeId>,
) -> ApiResult<Json<Msg>> {
    if !provision::delete_node(&s, id).await? {
        return Err(ApiError::not_found("node", id));
    }
    s.vpn.release(id).await;
    tracing::info!(node_id = %id, user_id = a.user, "node deleted; its certificates revoked");
    s.changed().await;
    Ok(Json(Msg {
        msg: format!("Node id={id} deleted."),
    }))
}

//! `GET /vpn`, `POST /vpn/update`, `GET /vpn/peers` (nodes) and `GET /vpn/algorithm/addresses`
//! (algorithms).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::caller::{ContainerCaller, NodeCaller};
use super::error::{ApiError, Kind};
use super::{ApiResult, Json, Query};
use crate::api::{Addresses, Peers, RunPeers, TaskId, VpnProfile, VpnUpdate};
use crate::server::state::AppState;
use crate::server::{provision, store};

/// A new profile; for WireGuard, for the key in `?public_key=`, and with `?prefer_tcp=yes`
/// (eduVPN's parameter) one that reaches the hub over TCP where the provider offers it.
pub async fn get(
    State(s): State<AppState>,
    NodeCaller(n): NodeCaller,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<VpnProfile>> {
    let key = q.get("public_key").map(String::as_str);
    let tcp = q.get("prefer_tcp").is_some_and(|v| v == "yes");
    Ok(Json(provision::profile(&s, n.id, key, tcp).await?))
}

/// Where the built-in hub takes WireGuard over TCP, below the API's path.
pub const TCP_PATH: &str = "/vpn/tcp";

/// `GET /vpn/tcp` (algonet; eduVPN's ProxyGuard protocol): WireGuard over TCP to the built-in
/// hub, for nodes whose site lets no UDP out. The request asks to switch to `UoTLV/1`; the
/// connection then carries WireGuard's datagrams to and from the hub's UDP port (see
/// [`crate::wireguard::tcp`]). No token: only WireGuard's own, encrypted and authenticated
/// packets cross, as they would to the hub's UDP port. The connection counts against the
/// server's connection bounds for as long as it lives.
pub async fn tcp(State(s): State<AppState>, mut req: axum::extract::Request) -> Response {
    use axum::http::header::{CONNECTION, UPGRADE};
    let Some(hub) = s.vpn.hub() else {
        return ApiError::new(Kind::NotFound, "This server's VPN is not a WireGuard hub")
            .into_response();
    };
    let switch = [(UPGRADE, uotlv::UPGRADE), (CONNECTION, "Upgrade")];
    if !crate::wireguard::tcp::asks_upgrade(req.headers()) {
        let msg = format!("Ask to switch to {} (Connection: Upgrade)", uotlv::UPGRADE);
        let body = Json(serde_json::json!({ "msg": msg }));
        return (StatusCode::UPGRADE_REQUIRED, switch, body).into_response();
    }
    let held = req.extensions().get::<crate::http::Held>().cloned();
    let upgrade = hyper::upgrade::on(&mut req);
    let hub_at = SocketAddr::from((Ipv4Addr::LOCALHOST, hub.port()));
    let counters = hub.counters();
    tokio::spawn(async move {
        let _held = held;
        counters.tcp_connections.fetch_add(1, Ordering::Relaxed);
        let ended = async {
            let stream =
                hyper_util::rt::TokioIo::new(upgrade.await.map_err(std::io::Error::other)?);
            let udp = tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
            udp.connect(hub_at).await?;
            crate::wireguard::tcp::relay(stream, &udp, &std::sync::Mutex::new(Some(hub_at))).await
        };
        if let Err(e) = ended.await {
            tracing::debug!("WireGuard over TCP: a connection ended: {e}");
        }
        counters.tcp_connections.fetch_sub(1, Ordering::Relaxed);
    });
    (StatusCode::SWITCHING_PROTOCOLS, switch).into_response()
}

/// A fresh key pair for the node's profile (vantage6 4.6+ broke this; here it works). The
/// certificate it replaces is revoked.
pub async fn update(
    State(s): State<AppState>,
    NodeCaller(n): NodeCaller,
    Json(b): Json<VpnUpdate>,
) -> ApiResult<Json<VpnProfile>> {
    if !b.vpn_config.contains("<cert>") {
        return Err(ApiError::bad(
            "vpn_config: not an OpenVPN profile with a <cert> block",
        ));
    }
    Ok(Json(provision::profile(&s, n.id, None, false).await?))
}

/// How long `GET /vpn/peers?known=` waits for a change before it answers the same again.
const PEERS_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// `GET /vpn/peers` (algonet): whom each of the node's open runs may talk to. With
/// `?known=<etag>` it answers once the answer is not that one any more, after 20 s, or when a
/// newer wait of the same node takes its place (see [`crate::server::waits`]); with too many
/// waits under way in all, 503 at once.
pub async fn peers(
    State(s): State<AppState>,
    NodeCaller(n): NodeCaller,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Peers>> {
    let Some(known) = q.get("known").cloned() else {
        return Ok(Json(peers_now(&s, &n).await?));
    };
    let wait = s.waits.enter(n.id).ok_or_else(|| {
        ApiError::new(
            Kind::Unavailable,
            "Too many requests are waiting for changes; try again shortly",
        )
    })?;
    let until = tokio::time::Instant::now() + PEERS_WAIT;
    let mut changes = s.changes.subscribe();
    loop {
        changes.borrow_and_update();
        let answer = peers_now(&s, &n).await?;
        if known != answer.etag {
            return Ok(Json(answer));
        }
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return Ok(Json(answer));
                }
            }
            () = tokio::time::sleep_until(until) => return Ok(Json(answer)),
            () = wait.ended.notified() => return Ok(Json(answer)),
        }
    }
}

async fn peers_now(s: &AppState, n: &store::NodeRow) -> ApiResult<Peers> {
    let mut db = s.store.connection().await?;
    let collaboration = store::collaboration_addresses(&mut db, n.collaboration_id).await?;
    let mut runs = Vec::new();
    for (run_id, root_task_id) in store::open_runs_with_roots(&mut db, n.id).await? {
        let (addresses, ports) = store::family_peers(&mut db, root_task_id).await?;
        runs.push(RunPeers {
            run_id,
            root_task_id,
            addresses,
            ports,
        });
    }
    let wireguard = match s.vpn.hub() {
        Some(hub) => hub.mesh(&mut db, n.id, n.collaboration_id).await?,
        None => Vec::new(),
    };
    let mut answer = Peers {
        etag: String::new(),
        collaboration,
        runs,
        wireguard,
    };
    let text = serde_json::to_vec(&answer).map_err(|e| ApiError::internal(e.to_string()))?;
    answer.etag = hex(&sha2::Digest::finalize(sha2::Digest::chain_update(
        sha2::Sha256::default(),
        &text,
    )));
    Ok(answer)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// The address-lookup flags; each counts as set when present and non-empty, as vantage6 reads
/// them (`True if args.get(flag) else False`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Flags {
    include_children: bool,
    include_parent: bool,
    only_children: bool,
    only_parent: bool,
    only_siblings: bool,
    only_self: bool,
}

const ONE_ONLY: &str = "You can only specify one of the only_<...> parameters!";

/// The tasks whose ports answer the lookup, exactly as vantage6 4.14's `VPNAddress.get` picks
/// them: the caller's task; its children added (`include_children`) or instead (`only_children`);
/// then its parent added (`include_parent`) or instead (`only_parent`), but only if it has one;
/// and with `only_siblings` or `only_self` just the caller's task, whatever else was asked.
fn lookup_tasks(
    f: Flags,
    own: TaskId,
    parent: Option<TaskId>,
    children: &[TaskId],
) -> Result<Vec<TaskId>, &'static str> {
    let only = [f.only_children, f.only_parent, f.only_siblings, f.only_self];
    if only.iter().filter(|&&o| o).count() > 1 {
        return Err(ONE_ONLY);
    }
    let mut tasks = vec![own];
    if f.include_children || f.only_children {
        if f.only_children {
            tasks = children.to_vec();
        } else {
            tasks.extend_from_slice(children);
        }
    }
    if f.include_parent || f.only_parent {
        if let Some(p) = parent {
            if f.only_parent {
                tasks = vec![p];
            } else {
                tasks.push(p);
            }
        }
    }
    if f.only_siblings || f.only_self {
        tasks = vec![own];
    }
    Ok(tasks)
}

/// The VPN addresses and ports of the runs around the caller's task, with vantage6 4.14's flag
/// semantics ([`lookup_tasks`]), in the order of the ports' registration.
pub async fn addresses(
    State(s): State<AppState>,
    ContainerCaller(c): ContainerCaller,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Addresses>> {
    let set = |f: &str| q.get(f).is_some_and(|v| !v.is_empty());
    let flags = Flags {
        include_children: set("include_children"),
        include_parent: set("include_parent"),
        only_children: set("only_children"),
        only_parent: set("only_parent"),
        only_siblings: set("only_siblings"),
        only_self: set("only_self"),
    };
    let mut db = s.store.connection().await?;
    let parent = store::task(&mut db, c.task_id)
        .await?
        .ok_or_else(|| ApiError::not_found("task", c.task_id))?
        .parent_id;
    let children = store::task_children(&mut db, c.task_id).await?;
    let tasks = lookup_tasks(flags, c.task_id, parent, &children).map_err(ApiError::bad)?;
    let label = q.get("label").filter(|l| !l.is_empty());
    let addresses = store::tasks_addresses(&mut db, &tasks)
        .await?
        .into_iter()
        .filter(|a| {
            if flags.only_siblings {
                a.organization_id != c.organization_id
            } else if flags.only_self {
                a.organization_id == c.organization_id
            } else {
                true
            }
        })
        .filter(|a| label.is_none_or(|l| a.label.as_deref() == Some(l.as_str())))
        .collect();
    Ok(Json(Addresses { addresses }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: TaskId = TaskId(2);
    const PARENT: TaskId = TaskId(1);
    const KIDS: [TaskId; 2] = [TaskId(3), TaskId(4)];

    fn tasks(f: Flags, parent: Option<TaskId>) -> Result<Vec<TaskId>, &'static str> {
        lookup_tasks(f, OWN, parent, &KIDS)
    }

    #[test]
    fn the_task_set_is_vantage6s_for_every_flag_combination() {
        let none = Flags::default();
        assert_eq!(tasks(none, Some(PARENT)), Ok(vec![OWN]));
        let f = Flags {
            include_children: true,
            include_parent: true,
            ..none
        };
        assert_eq!(
            tasks(f, Some(PARENT)),
            Ok(vec![OWN, KIDS[0], KIDS[1], PARENT])
        );
        let f = Flags {
            only_children: true,
            include_parent: true,
            ..none
        };
        assert_eq!(tasks(f, Some(PARENT)), Ok(vec![KIDS[0], KIDS[1], PARENT]));
        // only_parent without a parent: the caller's own task, as vantage6 answers.
        let f = Flags {
            only_parent: true,
            ..none
        };
        assert_eq!(tasks(f, None), Ok(vec![OWN]));
        assert_eq!(tasks(f, Some(PARENT)), Ok(vec![PARENT]));
        // only_parent with include_children: the children are dropped for the parent, or kept
        // beside the caller's task when there is no parent.
        let f = Flags {
            only_parent: true,
            include_children: true,
            ..none
        };
        assert_eq!(tasks(f, Some(PARENT)), Ok(vec![PARENT]));
        assert_eq!(tasks(f, None), Ok(vec![OWN, KIDS[0], KIDS[1]]));
        // only_siblings and only_self ignore the include flags.
        for only in [
            Flags {
                only_siblings: true,
                include_children: true,
                include_parent: true,
                ..none
            },
            Flags {
                only_self: true,
                include_children: true,
                include_parent: true,
                ..none
            },
        ] {
            assert_eq!(tasks(only, Some(PARENT)), Ok(vec![OWN]));
        }
        let two = Flags {
            only_self: true,
            only_parent: true,
            ..none
        };
        assert_eq!(tasks(two, Some(PARENT)), Err(ONE_ONLY));
    }
}

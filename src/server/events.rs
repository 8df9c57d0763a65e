//! vantage6's socket.io channel: `/socket.io`, namespace `/tasks`, with the rooms and events
//! vantage6-server 4.x uses, so that vantage6's own nodes (and its clients) hear of new tasks,
//! kills and status changes from an algonet server. algonet's nodes do not need it: they wait
//! on `GET /vpn/peers` and list their runs.
//!
//! A client is identified at connection by the bearer token of its handshake (vantage6's node
//! sends its REST headers). A node joins `all_nodes`, `collaboration_<c>` and
//! `collaboration_<c>_organization_<o>`, is told to `sync` and is announced online to its rooms;
//! a user (every algonet account is an administrator) joins every collaboration's room. A bad
//! token gets `invalid_token` (vantage6's node then logs in again) and is disconnected shortly
//! after. Every event a process sends is also recorded in the database, and every other server
//! process on it sends it to its own clients within a second ([`follow`]): a node connected to
//! one replica hears of a task made on another.

use std::collections::HashSet;
use std::time::Duration;

use axum::extract::FromRequestParts;
use serde::ser::SerializeTuple;
use serde_json::{json, Value};
use socketioxide::extract::{Data, SocketRef};
use socketioxide::layer::SocketIoLayer;
use socketioxide::SocketIo;

use crate::api::{CollaborationId, OrganizationId, RunId};
use crate::server::handlers::caller::Caller;
use crate::server::state::AppState;
use crate::server::store::{self, NodeRow, Store};

/// vantage6's namespace for nodes and users.
pub const NAMESPACE: &str = "/tasks";
/// The room of every node, whatever its collaboration: never told of joins and leaves.
const ALL_NODES: &str = "all_nodes";
/// vantage6 gives clients a minute to answer the engine's ping.
const PING_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a client with a bad token stays connected after it was told so.
const REFUSED_GRACE: Duration = Duration::from_secs(10);
/// How often the events of other server processes are looked for.
const LOOK: Duration = Duration::from_secs(1);
/// How far back each look reaches: an event committed later than this after it was recorded
/// is not relayed.
const WINDOW_SECS: i64 = 10;
/// How long a recorded event is kept.
const KEEP_SECS: i64 = 300;

/// The room of a collaboration: its nodes and the users who may see it.
pub fn collaboration_room(c: CollaborationId) -> String {
    format!("collaboration_{c}")
}

/// The room of one organization's node in a collaboration.
fn organization_room(c: CollaborationId, o: OrganizationId) -> String {
    format!("collaboration_{c}_organization_{o}")
}

/// The socket.io side of the server: the layer that serves `/socket.io`, and what sends events.
#[derive(Clone)]
pub struct Events {
    io: SocketIo,
    layer: SocketIoLayer,
    /// This process among the server processes on the database.
    origin: i64,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Events(origin {})", self.origin)
    }
}

/// An event's arguments, sent as separate arguments (`["sync"]`, `["new_task", {...}]`): what
/// vantage6's handlers take.
struct Args<'a>(&'a [Value]);

impl serde::Serialize for Args<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(self.0.len())?;
        for v in self.0 {
            t.serialize_element(v)?;
        }
        t.end()
    }
}

/// Who a socket is, once identified.
#[derive(Clone, Debug)]
enum Client {
    Node(NodeRow),
    User,
}

impl Events {
    pub fn new() -> Result<Events, getrandom::Error> {
        let (layer, io) = SocketIo::builder().ping_timeout(PING_TIMEOUT).build_layer();
        let mut origin = [0u8; 8];
        getrandom::fill(&mut origin)?;
        Ok(Events {
            io,
            layer,
            origin: i64::from_ne_bytes(origin),
        })
    }

    /// The layer that answers `/socket.io` in front of the API.
    pub fn layer(&self) -> SocketIoLayer {
        self.layer.clone()
    }

    /// Serves the `/tasks` namespace with `state`.
    pub fn open(&self, state: AppState) {
        self.io.ns(NAMESPACE, async move |s: SocketRef| {
            connected(s, state).await;
        });
    }

    /// Sends event `name` with `args` to `room`: to this process's clients at once, to the
    /// other processes' through the database. The change it tells of is made already, so a
    /// failure is logged, not returned.
    pub async fn send(&self, store: &Store, room: &str, name: &str, args: &[Value]) {
        self.send_here(room, name, args).await;
        let data = Value::Array(args.to_vec()).to_string();
        let now = i64::try_from(crate::server::state::now()).unwrap_or(i64::MAX);
        let recorded = match store.connection().await {
            Ok(mut db) => store::record_event(&mut db, self.origin, room, name, &data, now).await,
            Err(e) => Err(e),
        };
        if let Err(e) = recorded {
            tracing::warn!(
                event = name,
                room,
                "recording an event for the other server processes: {e}"
            );
        }
    }

    /// Sends an event to this process's clients in `room`.
    async fn send_here(&self, room: &str, name: &str, args: &[Value]) {
        let Some(ns) = self.io.of(NAMESPACE) else {
            return;
        };
        if let Err(e) = ns.to(room.to_string()).emit(name, &Args(args)).await {
            tracing::debug!(event = name, room, "sending an event: {e}");
        }
    }
}

/// A client connected to `/tasks`: identified by its token, or told that it is not.
async fn connected(s: SocketRef, state: AppState) {
    let mut parts = s.req_parts().clone();
    let client = match Caller::from_request_parts(&mut parts, &state).await {
        Ok(Caller::Node(n)) => Client::Node(n),
        Ok(Caller::Admin(_)) => Client::User,
        Ok(Caller::Container(_)) | Err(_) => {
            tracing::info!(sid = %s.id, "socket.io client without a valid node or user token");
            let _ = s.emit("invalid_token", &Args(&[]));
            tokio::spawn(async move {
                tokio::time::sleep(REFUSED_GRACE).await;
                let _ = s.disconnect();
            });
            return;
        }
    };
    let rooms = match &client {
        Client::Node(n) => vec![
            ALL_NODES.to_string(),
            collaboration_room(n.collaboration_id),
            organization_room(n.collaboration_id, n.organization_id),
        ],
        Client::User => match state.store.connection().await {
            Ok(mut db) => match store::collaborations(&mut db, None).await {
                Ok(c) => c.iter().map(|c| collaboration_room(c.id)).collect(),
                Err(e) => return refuse_for(s, e),
            },
            Err(e) => return refuse_for(s, e),
        },
    };
    s.extensions.insert(client.clone());
    if let Client::Node(n) = &client {
        // vantage6's node lists its open runs when told to.
        let _ = s.emit("sync", &Args(&[]));
        tracing::info!(node_id = %n.id, "node connected to the task events");
    }
    for room in &rooms {
        s.join(room.clone());
        if room != ALL_NODES {
            let who = match &client {
                Client::Node(n) => format!("Node <{}>", n.name),
                Client::User => "User".to_string(),
            };
            let _ = s
                .within(room.clone())
                .emit("message", &format!("{who} joined room <{room}>"))
                .await;
        }
    }
    if let Client::Node(n) = &client {
        announce(&state, n, "node-online").await;
        on_node_events(&s, &state, n);
    }
    let st = state.clone();
    s.on_disconnect(async move |s: SocketRef| {
        if let Some(Client::Node(n)) = s.extensions.get::<Client>() {
            // Another connection of the same node (a reconnect that came first) keeps it online.
            let still = st.events.io.of(NAMESPACE).is_some_and(|ns| {
                ns.local().sockets().iter().any(|o| {
                    o.id != s.id
                        && matches!(o.extensions.get::<Client>(), Some(Client::Node(m)) if m.id == n.id)
                })
            });
            if !still {
                if let Err(e) = st.node_gone(n.id).await {
                    tracing::warn!(node_id = %n.id, "noting the node offline: {e}");
                }
                announce(&st, &n, "node-offline").await;
            }
        }
    });
}

/// Refuses a client the database could not place: it may connect again.
fn refuse_for(s: SocketRef, e: store::StoreError) {
    tracing::warn!(sid = %s.id, "placing a socket.io client: {e}");
    let _ = s.disconnect();
}

/// Tells `node`'s rooms that it came online or went offline.
async fn announce(state: &AppState, node: &NodeRow, event: &str) {
    let data = json!({"id": node.id, "name": node.name, "org_id": node.organization_id});
    for room in [
        collaboration_room(node.collaboration_id),
        organization_room(node.collaboration_id, node.organization_id),
    ] {
        state
            .events
            .send(&state.store, &room, event, std::slice::from_ref(&data))
            .await;
    }
}

/// A node's status change of one of its runs, as vantage6's node sends it.
#[derive(Debug, serde::Deserialize)]
struct StatusChange {
    run_id: RunId,
    status: String,
}

/// What a node may send: `ping` (it is alive), `algorithm_status_change` (passed on to its
/// collaboration, for its own runs only). Its configuration, metrics and algorithm logs are
/// not kept.
fn on_node_events(s: &SocketRef, state: &AppState, node: &NodeRow) {
    let (st, id) = (state.clone(), node.id);
    s.on("ping", async move || {
        if let Err(e) = st.node_seen(id).await {
            tracing::warn!(node_id = %id, "noting the node's ping: {e}");
        }
    });
    let (st, n) = (state.clone(), node.clone());
    s.on(
        "algorithm_status_change",
        async move |Data(c): Data<StatusChange>| status_change(&st, &n, c).await,
    );
    for ignored in ["node_info_update", "node_metrics_update", "algorithm_log"] {
        let id = node.id;
        s.on(ignored, async move || {
            tracing::debug!(node_id = %id, event = ignored, "not kept");
        });
    }
}

async fn status_change(state: &AppState, node: &NodeRow, c: StatusChange) {
    let run = match state.store.connection().await {
        Ok(mut db) => store::run(&mut db, c.run_id).await,
        Err(e) => Err(e),
    };
    let run = match run {
        Ok(Some(r))
            if r.organization_id == node.organization_id
                && r.collaboration_id == node.collaboration_id =>
        {
            r
        }
        Ok(_) => {
            tracing::warn!(node_id = %node.id, run_id = %c.run_id, "status change for a run that is not the node's");
            return;
        }
        Err(e) => {
            tracing::warn!(node_id = %node.id, "status change: {e}");
            return;
        }
    };
    let status = c.status.chars().take(64).collect::<String>();
    tracing::info!(node_id = %node.id, run_id = %run.id, job_id = %run.job_id, status, "algorithm status change");
    let data = json!({
        "status": status,
        "run_id": run.id,
        "task_id": run.task_id,
        "job_id": run.job_id,
        "collaboration_id": run.collaboration_id,
        "node_id": node.id,
        "organization_id": run.organization_id,
        "parent_id": run.parent_id,
    });
    state
        .events
        .send(
            &state.store,
            &collaboration_room(run.collaboration_id),
            "algorithm_status_change",
            &[data],
        )
        .await;
}

/// Sends this process's clients the events other server processes on the database sent; runs
/// until the server ends, forgetting events older than a few minutes on the way. Events are
/// looked for by when they were sent, not by id: ids are handed out before commit, so a
/// smaller one may become visible after a larger one.
pub async fn follow(events: Events, store: Store) {
    let mut sent: Option<HashSet<i64>> = None;
    let mut rounds = 0u64;
    loop {
        if let Ok(mut db) = store.connection().await {
            let now = i64::try_from(crate::server::state::now()).unwrap_or(i64::MAX);
            if let Ok(recent) = store::events_since(&mut db, now - WINDOW_SECS, events.origin).await
            {
                // What was recent when this process started was sent before it had clients.
                if let Some(sent) = &sent {
                    for e in recent.iter().filter(|e| !sent.contains(&e.id)) {
                        if let Ok(Value::Array(args)) = serde_json::from_str(&e.data) {
                            events.send_here(&e.room, &e.name, &args).await;
                        }
                    }
                }
                sent = Some(recent.iter().map(|e| e.id).collect());
            }
            if rounds.is_multiple_of(60) {
                let _ = store::forget_events(&mut db, now - KEEP_SECS).await;
            }
        }
        rounds += 1;
        tokio::time::sleep(LOOK).await;
    }
}

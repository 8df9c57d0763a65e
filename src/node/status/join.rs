//! A [`Status`]: what the node's tasks recorded, joined with the router's counters.

use std::collections::BTreeMap;

use super::view::{self, RunView, Status, Traffic};
use crate::node::state::Node;

impl Node {
    /// The node as it is now.
    pub async fn status(&self) -> Status {
        let snapshot = self.hub.snapshot().await.ok();
        let mut runs: Vec<RunView> = self.observed.runs();
        let router = snapshot.as_ref().map(|s| {
            let traffic: BTreeMap<netstack::RunId, &netstack::RunTraffic> =
                s.runs.iter().map(|(r, t)| (*r, t)).collect();
            for run in &mut runs {
                if let Some(t) = traffic.get(&run.id.into()) {
                    run.traffic = Traffic {
                        packets_in: t.packets[0],
                        bytes_in: t.bytes[0],
                        packets_out: t.packets[1],
                        bytes_out: t.bytes[1],
                        connections: t.connections,
                    };
                }
            }
            view::router_view(s)
        });
        Status {
            node: self.name.clone(),
            vpn: self.observed.vpn(),
            runs,
            router,
            problems: self.observed.recent.list(),
        }
    }
}

//! What a running node shows of itself, one [`Status`] for both readers: `algonet node status`
//! (JSON over a Unix socket only the node's user may open, [`socket`], printed by [`table`] or
//! passed on with `--json`) and Prometheus ([`metrics`]). The node's tasks write what they do
//! into a [`Recorder`]; a status joins it with the router's counters, read from the data plane
//! between two batches of packets, never by locking its path.

mod join;
pub mod metrics;
pub mod recorder;
pub mod socket;
pub mod table;
pub mod view;

pub use recorder::{Recorder, VpnState};
pub use view::{Phase, RunPort, Status};

//! `algonet node`: the node agent. [`agent`] starts the node, takes runs and shuts it down;
//! [`state`] is what its tasks share; [`run`] carries one run from claim to report; [`vpn`]
//! keeps the tunnel; [`hub`] owns the hub namespace; [`proxy`] serves the algorithms'
//! API calls; [`client`] speaks to the server; [`ports`] and [`allocator`] turn an image's
//! ports into public ones; [`retry`] waits out what is away; [`status`] is what the node shows of
//! itself (`algonet node status`, metrics); [`scope`] keeps whom each run may talk to; [`data`]
//! and [`policy`] are what the node's data gives a run and whose runs it admits; [`kills`] ends
//! the runs the server was told to kill; [`encryption`] is the node's part in an encrypted
//! collaboration.

pub mod agent;
pub mod allocator;
pub mod client;
pub mod config;
pub mod data;
pub mod encryption;
pub mod hub;
pub mod kills;
pub mod lock;
pub mod policy;
pub mod ports;
pub mod proxy;
pub mod reports;
pub mod retry;
pub mod run;
pub mod scope;
pub mod state;
pub mod status;
pub mod vpn;

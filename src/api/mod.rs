//! The server's API as data: the typed ids, the run-status vocabulary, every request and answer
//! (serde), the environment vantage6 gives an algorithm, and the one HTTP client that the node,
//! `algonet test`, the demo and the echo algorithm use. Server and clients share these types,
//! so a field cannot be spelled two ways.

pub mod client;
pub mod codec;
pub mod env;
mod ids;
mod messages;
mod resources;
mod task_database;

pub use ids::{
    CollaborationId, ContainerPort, NodeId, OrganizationId, PublicPort, RunId, TaskId, PUBLIC_PORTS,
};
pub use messages::*;
pub use resources::*;
pub use task_database::*;

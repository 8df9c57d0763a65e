//! Typed ids and ports: a run id cannot be passed where a task id belongs, nor a container's
//! port where a public one does. On the wire and in the database each is its bare number.

macro_rules! id {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
            serde::Serialize, serde::Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = std::num::ParseIntError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse().map($name)
            }
        }
    };
}

id!(
    /// A run: one organization's part of a task.
    RunId(i64)
);
id!(
    /// A task: an image and its input for some organizations of a collaboration.
    TaskId(i64)
);
id!(
    /// A node: one organization's agent in one collaboration.
    NodeId(i64)
);
id!(
    /// An organization.
    OrganizationId(i64)
);
id!(
    /// A collaboration of organizations.
    CollaborationId(i64)
);
id!(
    /// A port on the node's VPN address that VPN peers connect to.
    PublicPort(u16)
);
id!(
    /// A port an algorithm listens on inside its container.
    ContainerPort(u16)
);

impl From<RunId> for netstack::RunId {
    /// The router's name for the run (ids are positive: SQLite's row ids).
    fn from(r: RunId) -> netstack::RunId {
        netstack::RunId(r.0.unsigned_abs())
    }
}

/// The public ports nodes hand out to runs, as vantage6's do; the server takes no other.
pub const PUBLIC_PORTS: std::ops::RangeInclusive<u16> = 49152..=65534;

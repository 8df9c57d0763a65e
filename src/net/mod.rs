//! Linux networking of the node: namespaces and links (rtnetlink, /proc/sys). No `ip`,
//! `iptables` or `nft` process is ever started.

pub mod dataplane;
pub mod links;
pub mod netns;
pub mod plan;

//! Organizations, collaborations and their members, and nodes.

use super::{Db, Result};
use crate::api::{CollaborationId, Member, MemberNode, NodeId, OrganizationId};

/// A node, as its token and its own changes see it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct NodeRow {
    pub id: NodeId,
    pub name: String,
    pub organization_id: OrganizationId,
    pub collaboration_id: CollaborationId,
    pub ip: Option<String>,
}

impl From<NodeRow> for crate::api::Node {
    fn from(r: NodeRow) -> Self {
        crate::api::Node {
            id: r.id,
            name: r.name,
            organization_id: r.organization_id,
            collaboration_id: r.collaboration_id,
            ip: r.ip,
        }
    }
}

/// A node statement that returns the columns of a [`NodeRow`].
macro_rules! node_sql {
    ($before:literal, $after:literal) => {
        concat!(
            $before,
            " id, name, organization_id, collaboration_id, ip ",
            $after
        )
    };
}

pub async fn node(db: &mut Db, id: NodeId) -> Result<Option<NodeRow>> {
    Ok(
        sqlx::query_as(node_sql!("SELECT", "FROM node WHERE id = ?"))
            .bind(id)
            .fetch_optional(db)
            .await?,
    )
}

pub async fn node_by_key_hash(db: &mut Db, hash: &str) -> Result<Option<NodeId>> {
    Ok(
        sqlx::query_scalar("SELECT id FROM node WHERE api_key_hash = ?")
            .bind(hash)
            .fetch_optional(db)
            .await?,
    )
}

pub async fn insert_node(
    db: &mut Db,
    name: &str,
    organization: OrganizationId,
    collaboration: CollaborationId,
    key_hash: &str,
) -> Result<NodeId> {
    Ok(sqlx::query_scalar(
        "INSERT INTO node (name, organization_id, collaboration_id, api_key_hash) VALUES (?, ?, ?, ?) RETURNING id",
    )
    .bind(name)
    .bind(organization)
    .bind(collaboration)
    .bind(key_hash)
    .fetch_one(db)
    .await?)
}

/// Sets (or clears) a node's VPN address; `None` if there is no such node.
pub async fn set_node_ip(db: &mut Db, id: NodeId, ip: Option<&str>) -> Result<Option<NodeRow>> {
    Ok(sqlx::query_as(node_sql!(
        "UPDATE node SET ip = ? WHERE id = ? RETURNING",
        ""
    ))
    .bind(ip)
    .bind(id)
    .fetch_optional(db)
    .await?)
}

/// The node that holds VPN address `ip`, if any.
pub async fn node_with_ip(db: &mut Db, ip: &str) -> Result<Option<NodeId>> {
    Ok(sqlx::query_scalar("SELECT id FROM node WHERE ip = ?")
        .bind(ip)
        .fetch_optional(db)
        .await?)
}

/// Deletes a node; false if there was none.
pub async fn delete_node(db: &mut Db, id: NodeId) -> Result<bool> {
    let gone = sqlx::query("DELETE FROM node WHERE id = ?")
        .bind(id)
        .execute(db)
        .await?;
    Ok(gone.rows_affected() > 0)
}

pub async fn insert_organization(db: &mut Db, name: &str) -> Result<OrganizationId> {
    Ok(
        sqlx::query_scalar("INSERT INTO organization (name) VALUES (?) RETURNING id")
            .bind(name)
            .fetch_one(db)
            .await?,
    )
}

pub async fn organization_name(db: &mut Db, id: OrganizationId) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT name FROM organization WHERE id = ?")
            .bind(id)
            .fetch_optional(db)
            .await?,
    )
}

pub async fn insert_collaboration(db: &mut Db, name: &str) -> Result<CollaborationId> {
    Ok(
        sqlx::query_scalar("INSERT INTO collaboration (name) VALUES (?) RETURNING id")
            .bind(name)
            .fetch_one(db)
            .await?,
    )
}

pub async fn insert_member(
    db: &mut Db,
    collaboration: CollaborationId,
    organization: OrganizationId,
) -> Result<()> {
    sqlx::query("INSERT INTO member (collaboration_id, organization_id) VALUES (?, ?)")
        .bind(collaboration)
        .bind(organization)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn collaboration_name(db: &mut Db, id: CollaborationId) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT name FROM collaboration WHERE id = ?")
            .bind(id)
            .fetch_optional(db)
            .await?,
    )
}

#[derive(sqlx::FromRow)]
struct MemberRow {
    id: OrganizationId,
    name: String,
    node_id: Option<NodeId>,
    node_ip: Option<String>,
}

/// A collaboration's organizations, each with its node there (if any).
pub async fn members(db: &mut Db, collaboration: CollaborationId) -> Result<Vec<Member>> {
    let rows: Vec<MemberRow> = sqlx::query_as(
        "SELECT organization.id, organization.name, node.id AS node_id, node.ip AS node_ip FROM member \
         JOIN organization ON organization.id = member.organization_id \
         LEFT JOIN node ON node.organization_id = member.organization_id AND node.collaboration_id = member.collaboration_id \
         WHERE member.collaboration_id = ? ORDER BY organization.id",
    )
    .bind(collaboration)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Member {
            id: r.id,
            name: r.name,
            node: r.node_id.map(|id| MemberNode { id, ip: r.node_ip }),
        })
        .collect())
}

/// The organizations of a collaboration.
pub async fn member_ids(
    db: &mut Db,
    collaboration: CollaborationId,
) -> Result<std::collections::HashSet<OrganizationId>> {
    let ids: Vec<OrganizationId> =
        sqlx::query_scalar("SELECT organization_id FROM member WHERE collaboration_id = ?")
            .bind(collaboration)
            .fetch_all(db)
            .await?;
    Ok(ids.into_iter().collect())
}

pub async fn is_member(
    db: &mut Db,
    collaboration: CollaborationId,
    organization: OrganizationId,
) -> Result<bool> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM member WHERE collaboration_id = ? AND organization_id = ?",
    )
    .bind(collaboration)
    .bind(organization)
    .fetch_one(db)
    .await?;
    Ok(n > 0)
}

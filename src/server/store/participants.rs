//! Organizations, collaborations and their members, and nodes.

use super::{Db, Result};
use crate::api::{CollaborationId, NewOrganization, NodeId, OrganizationChange, OrganizationId};

/// A node, as its token and its own changes see it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct NodeRow {
    pub id: NodeId,
    pub name: String,
    pub organization_id: OrganizationId,
    pub collaboration_id: CollaborationId,
    pub ip: Option<String>,
    /// When it last called the server (as vantage6 shows times: `YYYY-MM-DDTHH:MM:SS`).
    pub last_seen: Option<String>,
}

/// A node statement that returns the columns of a [`NodeRow`].
macro_rules! node_sql {
    ($before:literal, $after:literal) => {
        concat!(
            $before,
            " id, name, organization_id, collaboration_id, ip, \
             replace(last_seen, ' ', 'T') AS last_seen ",
            $after
        )
    };
}

pub async fn node(db: &mut Db, id: NodeId) -> Result<Option<NodeRow>> {
    Ok(
        sqlx::query_as(node_sql!("SELECT", "FROM node WHERE id = $1"))
            .bind(id)
            .fetch_optional(db)
            .await?,
    )
}

pub async fn node_by_key_hash(db: &mut Db, hash: &str) -> Result<Option<NodeId>> {
    Ok(
        sqlx::query_scalar("SELECT id FROM node WHERE api_key_hash = $1")
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
        "INSERT INTO node (name, organization_id, collaboration_id, api_key_hash) VALUES ($1, $2, $3, $4) RETURNING id",
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
        "UPDATE node SET ip = $1 WHERE id = $2 RETURNING",
        ""
    ))
    .bind(ip)
    .bind(id)
    .fetch_optional(db)
    .await?)
}

/// Notes that node `id` called the server at `at`.
pub async fn node_seen(db: &mut Db, id: NodeId, at: &str) -> Result<()> {
    sqlx::query("UPDATE node SET last_seen = $1 WHERE id = $2")
        .bind(at)
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// Notes that node `id` left: offline until it calls again.
pub async fn node_left(db: &mut Db, id: NodeId) -> Result<()> {
    sqlx::query("UPDATE node SET last_seen = NULL WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// The node that holds VPN address `ip`, if any.
pub async fn node_with_ip(db: &mut Db, ip: &str) -> Result<Option<NodeId>> {
    Ok(sqlx::query_scalar("SELECT id FROM node WHERE ip = $1")
        .bind(ip)
        .fetch_optional(db)
        .await?)
}

/// Deletes a node; false if there was none.
pub async fn delete_node(db: &mut Db, id: NodeId) -> Result<bool> {
    let gone = sqlx::query("DELETE FROM node WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(gone.rows_affected() > 0)
}

/// An organization's own fields.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct OrganizationRow {
    pub id: OrganizationId,
    pub name: String,
    pub domain: Option<String>,
    pub address1: Option<String>,
    pub address2: Option<String>,
    pub zipcode: Option<String>,
    pub country: Option<String>,
    /// Base64 of its PEM public key; empty when it has none.
    pub public_key: String,
}

/// The columns of an [`OrganizationRow`].
macro_rules! organization_columns {
    () => {
        "id, name, domain, address1, address2, zipcode, country, public_key"
    };
}

pub async fn insert_organization(db: &mut Db, o: &NewOrganization) -> Result<OrganizationRow> {
    Ok(sqlx::query_as(concat!(
        "INSERT INTO organization (name, domain, address1, address2, zipcode, country) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING ",
        organization_columns!()
    ))
    .bind(&o.name)
    .bind(&o.details.domain)
    .bind(&o.details.address1)
    .bind(&o.details.address2)
    .bind(&o.details.zipcode)
    .bind(&o.details.country)
    .fetch_one(db)
    .await?)
}

/// Organization `id`, or with `collaboration` only one of its members.
pub async fn organization(
    db: &mut Db,
    id: OrganizationId,
    collaboration: Option<CollaborationId>,
) -> Result<Option<OrganizationRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        organization_columns!(),
        " FROM organization WHERE id = $1 \
         AND ($2 IS NULL OR id IN (SELECT organization_id FROM member WHERE collaboration_id = $2))"
    ))
    .bind(id)
    .bind(collaboration)
    .fetch_optional(db)
    .await?)
}

/// The organizations, or those of a collaboration, by id.
pub async fn organizations(
    db: &mut Db,
    collaboration: Option<CollaborationId>,
) -> Result<Vec<OrganizationRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        organization_columns!(),
        " FROM organization \
         WHERE $1 IS NULL OR id IN (SELECT organization_id FROM member WHERE collaboration_id = $1) ORDER BY id"
    ))
    .bind(collaboration)
    .fetch_all(db)
    .await?)
}

/// Changes the fields of `change` that are given; `None` if there is no such organization.
pub async fn update_organization(
    db: &mut Db,
    id: OrganizationId,
    change: &OrganizationChange,
) -> Result<Option<OrganizationRow>> {
    Ok(sqlx::query_as(concat!(
        "UPDATE organization SET name = COALESCE($2, name), domain = COALESCE($3, domain), \
         address1 = COALESCE($4, address1), address2 = COALESCE($5, address2), \
         zipcode = COALESCE($6, zipcode), country = COALESCE($7, country), \
         public_key = COALESCE($8, public_key) WHERE id = $1 RETURNING ",
        organization_columns!()
    ))
    .bind(id)
    .bind(&change.name)
    .bind(&change.details.domain)
    .bind(&change.details.address1)
    .bind(&change.details.address2)
    .bind(&change.details.zipcode)
    .bind(&change.details.country)
    .bind(&change.public_key)
    .fetch_optional(db)
    .await?)
}

/// The administrator's organization (made by the first migration that knew users).
pub async fn root_organization(db: &mut Db) -> Result<OrganizationId> {
    Ok(
        sqlx::query_scalar("SELECT id FROM organization WHERE name = 'root'")
            .fetch_one(db)
            .await?,
    )
}

pub async fn insert_collaboration(
    db: &mut Db,
    name: &str,
    encrypted: bool,
) -> Result<CollaborationId> {
    Ok(sqlx::query_scalar(
        "INSERT INTO collaboration (name, encrypted) VALUES ($1, $2) RETURNING id",
    )
    .bind(name)
    .bind(i32::from(encrypted))
    .fetch_one(db)
    .await?)
}

pub async fn insert_member(
    db: &mut Db,
    collaboration: CollaborationId,
    organization: OrganizationId,
) -> Result<()> {
    sqlx::query("INSERT INTO member (collaboration_id, organization_id) VALUES ($1, $2)")
        .bind(collaboration)
        .bind(organization)
        .execute(db)
        .await?;
    Ok(())
}

/// A collaboration's own fields.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct CollaborationRow {
    pub id: CollaborationId,
    pub name: String,
    /// Inputs and results are encrypted for their organizations (1) or not (0).
    pub encrypted: i32,
}

pub async fn collaboration(db: &mut Db, id: CollaborationId) -> Result<Option<CollaborationRow>> {
    Ok(
        sqlx::query_as("SELECT id, name, encrypted FROM collaboration WHERE id = $1")
            .bind(id)
            .fetch_optional(db)
            .await?,
    )
}

/// The collaborations, or those an organization is in.
pub async fn collaborations(
    db: &mut Db,
    organization: Option<OrganizationId>,
) -> Result<Vec<CollaborationRow>> {
    Ok(sqlx::query_as(
        "SELECT id, name, encrypted FROM collaboration WHERE $1 IS NULL \
         OR id IN (SELECT collaboration_id FROM member WHERE organization_id = $1) ORDER BY id",
    )
    .bind(organization)
    .fetch_all(db)
    .await?)
}

/// The nodes, or those of a collaboration and of an organization, by id.
pub async fn nodes(
    db: &mut Db,
    collaboration: Option<CollaborationId>,
    organization: Option<OrganizationId>,
) -> Result<Vec<NodeRow>> {
    Ok(sqlx::query_as(node_sql!(
        "SELECT",
        "FROM node WHERE ($1 IS NULL OR collaboration_id = $1) AND ($2 IS NULL OR organization_id = $2) ORDER BY id"
    ))
    .bind(collaboration)
    .bind(organization)
    .fetch_all(db)
    .await?)
}

/// The organizations of a collaboration.
pub async fn member_ids(
    db: &mut Db,
    collaboration: CollaborationId,
) -> Result<std::collections::HashSet<OrganizationId>> {
    let ids: Vec<OrganizationId> =
        sqlx::query_scalar("SELECT organization_id FROM member WHERE collaboration_id = $1")
            .bind(collaboration)
            .fetch_all(db)
            .await?;
    Ok(ids.into_iter().collect())
}

/// Whether a node or an algorithm of `collaboration` may see organization `organization`: a
/// member, or one that created a task there (its public key encrypts the task's results).
pub async fn is_seen_from(
    db: &mut Db,
    collaboration: CollaborationId,
    organization: OrganizationId,
) -> Result<bool> {
    let n: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM member WHERE collaboration_id = $1 AND organization_id = $2) \
         + (SELECT count(*) FROM (SELECT 1 FROM task WHERE collaboration_id = $1 \
            AND init_organization_id = $2 LIMIT 1) AS t)",
    )
    .bind(collaboration)
    .bind(organization)
    .fetch_one(db)
    .await?;
    Ok(n > 0)
}

pub async fn is_member(
    db: &mut Db,
    collaboration: CollaborationId,
    organization: OrganizationId,
) -> Result<bool> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM member WHERE collaboration_id = $1 AND organization_id = $2",
    )
    .bind(collaboration)
    .bind(organization)
    .fetch_one(db)
    .await?;
    Ok(n > 0)
}

pub async fn organization_by_name(db: &mut Db, name: &str) -> Result<Option<OrganizationId>> {
    Ok(
        sqlx::query_scalar("SELECT id FROM organization WHERE name = $1")
            .bind(name)
            .fetch_optional(db)
            .await?,
    )
}

pub async fn collaboration_by_name(db: &mut Db, name: &str) -> Result<Option<CollaborationId>> {
    Ok(
        sqlx::query_scalar("SELECT id FROM collaboration WHERE name = $1")
            .bind(name)
            .fetch_optional(db)
            .await?,
    )
}

/// The node of an organization in a collaboration, if it has one.
pub async fn node_of(
    db: &mut Db,
    organization: OrganizationId,
    collaboration: CollaborationId,
) -> Result<Option<NodeId>> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM node WHERE organization_id = $1 AND collaboration_id = $2",
    )
    .bind(organization)
    .bind(collaboration)
    .fetch_optional(db)
    .await?)
}

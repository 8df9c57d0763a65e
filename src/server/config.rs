//! The server's YAML configuration (read as [`crate::config`] says). A bad file fails at start,
//! naming the file, the key and the reason.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::config::ConfigError;

use serde::Deserialize;

/// The administrator's credential (the server's one user).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    pub username: String,
    pub password: String,
}

/// vantage6's `vpn_server` block: an eduVPN instance that provisions nodes.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EduVpn {
    pub url: String,
    pub portal_username: String,
    pub portal_userpass: String,
    pub client_id: String,
    pub client_secret: String,
    pub redirect_url: String,
    /// The subnet eduVPN gives out (optional): a node then registers only an address in it
    /// that is not its network, broadcast or gateway (first) address.
    #[serde(default)]
    pub subnet: Option<String>,
    /// Which profiles to ask eduVPN for: `openvpn` (as vantage6 does) or `wireguard` (for the
    /// public key each node sends; eduVPN's profile must offer WireGuard).
    #[serde(default)]
    pub tunnel: crate::server::pki::TunnelKind,
}

impl EduVpn {
    /// The configured subnet, or why it is not one.
    pub fn vpn_subnet(&self) -> Result<Option<ipnet::Ipv4Net>, String> {
        self.subnet
            .as_deref()
            .map(|s| crate::net::parse_subnet(s).map_err(|e| format!("vpn_server.subnet: {e}")))
            .transpose()
    }
}

/// How many subtasks an algorithm may create: a run in all and per second, and a job (a task
/// a user made, with every task below it) in all. Past one, `POST /task` answers 429.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Subtasks {
    pub per_run: u32,
    pub per_second: u32,
    pub per_job: u32,
}

impl Default for Subtasks {
    fn default() -> Subtasks {
        Subtasks {
            per_run: 1000,
            per_second: 20,
            per_job: 10_000,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Where to listen.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Prefix of every endpoint (vantage6 uses `/api`).
    #[serde(default = "default_api_path")]
    pub api_path: String,
    /// Holds the SQLite database file (without `database`) and the built-in VPN's files.
    pub data_dir: PathBuf,
    /// `postgres://user:password@host:port/database`: the server's data in PostgreSQL, which
    /// several server processes may share; without it, a SQLite file in `data_dir`.
    #[serde(default)]
    pub database: Option<String>,
    pub admin: Admin,
    /// eduVPN provisioning; without it (and without a built-in VPN) `GET /vpn` answers 501.
    #[serde(default)]
    pub vpn_server: Option<EduVpn>,
    /// The built-in VPN provider (the server's own OpenVPN PKI).
    #[serde(default)]
    pub vpn: Option<crate::server::pki::BuiltinVpn>,
    /// Lifetime of node and user tokens, in seconds.
    #[serde(default = "default_token_lifetime")]
    pub token_lifetime_secs: u64,
    /// Lifetime of the refresh tokens users and nodes get with their tokens, in seconds.
    #[serde(default = "default_refresh_lifetime")]
    pub refresh_token_lifetime_secs: u64,
    /// How long a client may take to send a request's headers (also between requests on a
    /// kept-alive connection) before the connection is closed, in seconds.
    #[serde(default = "default_header_timeout")]
    pub header_timeout_secs: u64,
    /// How long a client may take to send a request's body once its headers arrived, in
    /// seconds; a late body fails the request (408).
    #[serde(default = "default_body_timeout")]
    pub body_timeout_secs: u64,
    /// Most connections served at once; more are answered 503 with `Retry-After` at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Most connections served at once from one source address (behind a proxy that does
    /// not keep the client's address, all clients share one: raise it there).
    #[serde(default = "default_max_connections_per_address")]
    pub max_connections_per_address: usize,
    /// What an algorithm may create of subtasks.
    #[serde(default)]
    pub subtasks: Subtasks,
    #[serde(default)]
    pub log_level: crate::logging::Level,
    #[serde(default)]
    pub log_format: crate::logging::Format,
    /// Where Prometheus metrics are served (`GET /metrics`, apart from the API); `null`: not
    /// at all.
    #[serde(default = "default_metrics_listen")]
    pub metrics_listen: Option<SocketAddr>,
}

fn default_metrics_listen() -> Option<SocketAddr> {
    Some(SocketAddr::from(([127, 0, 0, 1], 7611)))
}

fn default_header_timeout() -> u64 {
    10
}

fn default_body_timeout() -> u64 {
    30
}

fn default_max_connections_per_address() -> usize {
    128
}

fn default_max_connections() -> usize {
    1024
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7601))
}

fn default_api_path() -> String {
    "/api".into()
}

/// The password the README's sample configuration shows: never a real one.
pub const SAMPLE_PASSWORD: &str = "change-me-to-12-or-more-characters";

fn default_token_lifetime() -> u64 {
    6 * 3600
}

/// vantage6's default (`refresh_token_expires_hours: 48`).
fn default_refresh_lifetime() -> u64 {
    48 * 3600
}

impl ServerConfig {
    /// Where the server's data lives.
    pub fn database(&self) -> crate::server::store::Location {
        match &self.database {
            Some(url) => crate::server::store::Location::Postgres(url.clone()),
            None => crate::server::store::Location::Sqlite(self.data_dir.join("algonet.sqlite")),
        }
    }

    pub fn load(path: &Path) -> Result<ServerConfig, ConfigError> {
        crate::config::load(path, ServerConfig::parse)
    }

    /// Parses and checks a configuration; the error names the key and the reason.
    pub fn parse(text: &str) -> Result<ServerConfig, String> {
        let config: ServerConfig = yaml_serde::from_str(text).map_err(|e| e.to_string())?;
        if !config.api_path.is_empty()
            && (!config.api_path.starts_with('/') || config.api_path.ends_with('/'))
        {
            return Err(format!(
                "api_path: {:?} must be empty or start, and not end, with '/'",
                config.api_path
            ));
        }
        if config.admin.password.len() < 12 {
            return Err("admin.password: at least 12 characters".into());
        }
        if config.admin.password == SAMPLE_PASSWORD {
            return Err(
                "admin.password: this is the README's sample password; choose your own".into(),
            );
        }
        if let Some(edu) = &config.vpn_server {
            edu.vpn_subnet()?;
        }
        if let Some(vpn) = &config.vpn {
            vpn.network()?;
            if config.vpn_server.is_some() {
                return Err("vpn, vpn_server: configure one VPN provider, not both".into());
            }
        }
        if let Some(url) = &config.database {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(format!(
                    "database: {:?} is not a postgres:// URL (leave it out for the SQLite file in data_dir)",
                    crate::server::store::hide_password(url)
                ));
            }
        }
        if config.token_lifetime_secs == 0 {
            return Err("token_lifetime_secs: must be positive".into());
        }
        if config.header_timeout_secs == 0 {
            return Err("header_timeout_secs: must be positive".into());
        }
        if config.body_timeout_secs == 0 {
            return Err("body_timeout_secs: must be positive".into());
        }
        if config.max_connections_per_address == 0 {
            return Err("max_connections_per_address: must be positive".into());
        }
        let t = &config.subtasks;
        for (key, value) in [
            ("per_run", t.per_run),
            ("per_second", t.per_second),
            ("per_job", t.per_job),
        ] {
            if value == 0 {
                return Err(format!("subtasks.{key}: must be positive"));
            }
        }
        if config.max_connections == 0 {
            return Err("max_connections: must be positive".into());
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_key_and_the_reason() {
        let base = "data_dir: /tmp/x\nadmin: {username: root, password: correct-horse-battery}\n";
        assert!(ServerConfig::parse(base).is_ok());
        let e = ServerConfig::parse("data_dir: /tmp/x\nadmin: {username: root, password: short}\n")
            .expect_err("must be refused");
        assert!(e.contains("admin.password"), "{e}");
        let e =
            ServerConfig::parse(&format!("{base}listen: nowhere\n")).expect_err("must be refused");
        assert!(e.contains("listen"), "{e}");
        let e = ServerConfig::parse(&format!("{base}vpn_server: {{url: x}}\n"))
            .expect_err("must be refused");
        assert!(
            e.contains("vpn_server") && e.contains("portal_username"),
            "{e}"
        );
        for (extra, key) in [
            ("colour: blue\n", "colour"),
            ("log_level: loud\n", "log_level"),
            ("log_format: xml\n", "log_format"),
            ("metrics_listen: 7611\n", "metrics_listen"),
            ("database: mysql://root:hunter2@db/x\n", "database"),
        ] {
            let e = ServerConfig::parse(&format!("{base}{extra}")).expect_err("must be refused");
            assert!(e.contains(key), "{extra}: {e}");
        }
        let c = ServerConfig::parse(&format!("{base}metrics_listen: null\nlog_format: json\n"))
            .expect("valid");
        assert_eq!(
            (c.metrics_listen, c.log_format),
            (None, crate::logging::Format::Json)
        );
        let e = ServerConfig::parse(&format!(
            "data_dir: /tmp/x\nadmin: {{username: root, password: {SAMPLE_PASSWORD}}}\n"
        ))
        .expect_err("the sample password must be refused");
        assert!(e.contains("sample"), "{e}");
    }
}

//! Tokens: HS256 JSON Web Tokens in the shape vantage6 4.x issues (flask-jwt-extended), so that
//! vantage6's algorithm tools can read their own identity from the token they are given.
//!
//! - user: `sub` = user id (the administrator is user 1), `client_type` = "user"
//! - node: `sub` = node id, `client_type` = "node"
//! - container: `sub` = {client_type, node_id, organization_id, collaboration_id, task_id,
//!   image, databases}, `client_type` = "container"
//!
//! Users and nodes also get a refresh token (`type` = "refresh"), good only at
//! `POST /token/refresh`; every other call takes an access token (`type` = "access"). Their
//! tokens name their session (`sid`), and a refresh token its own id (`jti`): the server keeps
//! which refresh token of a session is good now (see `store::sessions`).

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::api::{ContainerIdentity, NodeId};

/// The administrator's user id (vantage6's root user is user 1 too).
pub const ADMIN_USER: i64 = 1;

/// Who a valid token says the caller is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claimed {
    User(i64),
    Node(NodeId),
    Container(ContainerIdentity),
}

impl Claimed {
    /// What a session is of: a user or a node (a container has none).
    pub fn session_subject(&self) -> Option<String> {
        match self {
            Claimed::User(id) => Some(crate::server::store::subject("user", *id)),
            Claimed::Node(id) => Some(crate::server::store::subject("node", id.0)),
            Claimed::Container(_) => None,
        }
    }
}

/// What a token is good for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Use {
    /// The API's calls.
    Access,
    /// `POST /token/refresh` only.
    Refresh,
}

impl Use {
    fn as_str(self) -> &'static str {
        match self {
            Use::Access => "access",
            Use::Refresh => "refresh",
        }
    }
}

/// The session a user's or a node's token belongs to, and for a refresh token its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub id: String,
    /// The refresh token's own id (`jti`); `None` in an access token.
    pub refresh: Option<String>,
}

/// A token that checked out: who, and of which session (`None` for a container's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    pub claimed: Claimed,
    pub session: Option<Session>,
}

/// Signs and checks tokens with the server's secret.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

fn mac(key: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length.
    <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
}

impl Signer {
    pub fn new(key: Vec<u8>) -> Signer {
        Signer { key }
    }

    /// Issues a token for `claimed` of `session`, valid `lifetime_secs` from `now` (seconds since
    /// the epoch), or, with `None`, without an expiry: a container token, which lives as long
    /// as its run (the server checks that on every use), as vantage6's do.
    pub fn issue(
        &self,
        claimed: &Claimed,
        session: Option<&Session>,
        used: Use,
        now: u64,
        lifetime_secs: Option<u64>,
    ) -> String {
        let (sub, client_type) = match claimed {
            Claimed::User(name) => (json!(name), "user"),
            Claimed::Node(id) => (json!(id), "node"),
            Claimed::Container(c) => (json!(c), "container"),
        };
        let header = B64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let mut claims = json!({
            "sub": sub,
            "client_type": client_type,
            "type": used.as_str(),
            "iat": now,
            "nbf": now,
        });
        if let Some(l) = lifetime_secs {
            claims["exp"] = json!(now.saturating_add(l));
        }
        if let Some(session) = session {
            claims["sid"] = json!(session.id);
            if let Some(jti) = &session.refresh {
                claims["jti"] = json!(jti);
            }
        }
        let payload = B64.encode(claims.to_string());
        let signing_input = format!("{header}.{payload}");
        let mut m = mac(&self.key);
        m.update(signing_input.as_bytes());
        let sig = B64.encode(m.finalize().into_bytes());
        format!("{signing_input}.{sig}")
    }

    /// Checks the signature, the expiry and the use; `None` for anything else than a valid
    /// token for `used`. Whether its session is still live is the store's to say.
    pub fn check(&self, token: &str, used: Use, now: u64) -> Option<Checked> {
        let mut parts = token.split('.');
        let (header_b64, payload, sig) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let header: Value = serde_json::from_slice(&B64.decode(header_b64).ok()?).ok()?;
        if header.get("alg")? != "HS256" {
            return None;
        }
        let mut m = mac(&self.key);
        m.update(format!("{header_b64}.{payload}").as_bytes());
        m.verify_slice(&B64.decode(sig).ok()?).ok()?;
        let claims: Value = serde_json::from_slice(&B64.decode(payload).ok()?).ok()?;
        if claims.get("type")?.as_str()? != used.as_str() {
            return None;
        }
        let client_type = claims.get("client_type")?.as_str()?;
        let expired = match claims.get("exp") {
            Some(exp) => exp.as_u64()? <= now,
            // Only a container token has no expiry.
            None => client_type != "container",
        };
        if expired || claims.get("nbf").and_then(Value::as_u64).unwrap_or(0) > now {
            return None;
        }
        let sub = claims.get("sub")?;
        let text = |key: &str| claims.get(key).and_then(Value::as_str).map(str::to_string);
        let session = text("sid").map(|id| Session {
            id,
            refresh: text("jti"),
        });
        let claimed = match client_type {
            "user" => Claimed::User(sub.as_i64()?),
            "node" => Claimed::Node(NodeId(sub.as_i64()?)),
            "container" => Claimed::Container(serde_json::from_value(sub.clone()).ok()?),
            _ => return None,
        };
        // A user's or a node's token without its session (or a refresh token without its id)
        // was not issued by this server.
        match (&claimed, &session) {
            (Claimed::Container(_), None) => {}
            (Claimed::Container(_), Some(_)) | (_, None) => return None,
            (_, Some(s)) if s.refresh.is_some() != (used == Use::Refresh) => return None,
            _ => {}
        }
        Some(Checked { claimed, session })
    }
}

/// SHA-256 hex of an API key, as stored.
pub fn hash_key(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// PBKDF2-HMAC-SHA256 rounds for a stored password (OWASP's figure for this hash).
const PASSWORD_ROUNDS: u32 = 600_000;

fn pbkdf2(password: &str, salt: &[u8], rounds: std::num::NonZeroU32) -> [u8; 32] {
    let mut out = [0u8; 32];
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA256,
        rounds,
        salt,
        password.as_bytes(),
        &mut out,
    );
    out
}

/// A password as stored: `pbkdf2-sha256$<rounds>$<salt>$<hash>` (base64), with a random salt.
pub fn hash_password(password: &str) -> Result<String, getrandom::Error> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt)?;
    let rounds = std::num::NonZeroU32::new(PASSWORD_ROUNDS).unwrap_or(std::num::NonZeroU32::MIN);
    let hash = pbkdf2(password, &salt, rounds);
    Ok(format!(
        "pbkdf2-sha256${PASSWORD_ROUNDS}${}${}",
        B64.encode(salt),
        B64.encode(hash)
    ))
}

/// Whether `password` is the one `stored` was made from. Anything that is not a stored password
/// is no match; the work is the same whether the user exists or not (see [`NO_PASSWORD`]).
pub fn password_matches(password: &str, stored: &str) -> bool {
    let mut parts = stored.split('$');
    let (Some("pbkdf2-sha256"), Some(rounds), Some(salt), Some(hash), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    let (Ok(rounds), Ok(salt), Ok(hash)) = (
        rounds.parse::<std::num::NonZeroU32>(),
        B64.decode(salt),
        B64.decode(hash),
    ) else {
        return false;
    };
    // A stored hash never asks for more work than the server's own.
    if rounds.get() > PASSWORD_ROUNDS {
        return false;
    }
    same(&pbkdf2(password, &salt, rounds), &hash)
}

/// What a login for an unknown name is checked against, so that it takes as long as one for a
/// known name (which name exists is not told by the time an answer takes).
pub const NO_PASSWORD: &str =
    "pbkdf2-sha256$600000$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// A new random secret of 32 bytes, URL-safe base64.
pub fn random_secret() -> Result<String, getrandom::Error> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b)?;
    Ok(B64.encode(b))
}

/// Constant-time comparison of two byte strings (for the admin password).
pub fn same(a: &[u8], b: &[u8]) -> bool {
    let (ha, hb) = (Sha256::digest(a), Sha256::digest(b));
    ha.iter()
        .zip(hb.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CollaborationId, OrganizationId, TaskId};

    #[test]
    fn pbkdf2_is_rfc_7914s() {
        // RFC 7914, section 11: PBKDF2-HMAC-SHA256 ("passwd", "salt", 1).
        let rounds = std::num::NonZeroU32::MIN;
        let hex: String = pbkdf2("passwd", b"salt", rounds)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"
        );
    }

    #[test]
    fn passwords_are_salted_and_only_their_own_matches() {
        let a = hash_password("correct horse").expect("hash");
        let b = hash_password("correct horse").expect("hash");
        assert_ne!(a, b, "a salt of its own");
        assert!(password_matches("correct horse", &a) && password_matches("correct horse", &b));
        assert!(!password_matches("correct horsf", &a));
        assert!(!password_matches("", &a));
        for garbage in [
            "",
            "plain",
            "pbkdf2-sha256$0$AAAA$AAAA",
            "pbkdf2-sha256$4000000000$AAAA$AAAA",
            "pbkdf2-sha256$1$!!$AAAA",
            &format!("{a}$more"),
            NO_PASSWORD,
        ] {
            assert!(!password_matches("correct horse", garbage), "{garbage}");
        }
    }

    #[test]
    fn tokens_round_trip_and_refuse_tampering_and_expiry() {
        let s = Signer::new(b"secret".to_vec());
        let c = Claimed::Container(ContainerIdentity {
            client_type: "container".into(),
            node_id: NodeId(1),
            organization_id: OrganizationId(2),
            collaboration_id: CollaborationId(3),
            task_id: TaskId(4),
            image: "echo".into(),
            databases: vec![],
        });
        let t = s.issue(&c, None, Use::Access, 1000, Some(60));
        let container = |c: &Claimed| {
            Some(Checked {
                claimed: c.clone(),
                session: None,
            })
        };
        assert_eq!(s.check(&t, Use::Access, 1001), container(&c));
        assert_eq!(s.check(&t, Use::Access, 1060), None, "expired");
        let lasting = s.issue(&c, None, Use::Access, 1000, None);
        assert_eq!(
            s.check(&lasting, Use::Access, 1000 + 10 * 365 * 86400),
            container(&c)
        );
        assert_eq!(
            Signer::new(b"other".to_vec()).check(&t, Use::Access, 1001),
            None,
            "wrong key"
        );
        let mut forged = t.clone();
        forged.insert(forged.find('.').expect("dot") + 3, 'x');
        assert_eq!(s.check(&forged, Use::Access, 1001), None, "tampered");
        assert_eq!(s.check("a.b", Use::Access, 1001), None);
        assert_eq!(s.check("", Use::Access, 1001), None);
        let access = Session {
            id: "s1".into(),
            refresh: None,
        };
        let refresh = Session {
            id: "s1".into(),
            refresh: Some("r1".into()),
        };
        let node = s.issue(
            &Claimed::Node(NodeId(7)),
            Some(&access),
            Use::Access,
            1000,
            Some(60),
        );
        assert_eq!(
            s.check(&node, Use::Access, 1000),
            Some(Checked {
                claimed: Claimed::Node(NodeId(7)),
                session: Some(access.clone()),
            })
        );
        let sessionless = s.issue(&Claimed::Node(NodeId(7)), None, Use::Access, 1000, Some(60));
        assert_eq!(s.check(&sessionless, Use::Access, 1000), None, "no session");
        let forever = s.issue(
            &Claimed::Node(NodeId(7)),
            Some(&access),
            Use::Access,
            1000,
            None,
        );
        assert_eq!(
            s.check(&forever, Use::Access, 1000),
            None,
            "only container tokens may lack an expiry"
        );
        let user = s.issue(
            &Claimed::User(1),
            Some(&refresh),
            Use::Refresh,
            1000,
            Some(60),
        );
        assert_eq!(
            s.check(&user, Use::Refresh, 1000),
            Some(Checked {
                claimed: Claimed::User(1),
                session: Some(refresh.clone()),
            })
        );
        let without_id = s.issue(
            &Claimed::User(1),
            Some(&access),
            Use::Refresh,
            1000,
            Some(60),
        );
        assert_eq!(
            s.check(&without_id, Use::Refresh, 1000),
            None,
            "a refresh token names itself"
        );
        assert_eq!(
            s.check(&user, Use::Access, 1000),
            None,
            "a refresh token is no access token"
        );
        assert_eq!(
            s.check(&node, Use::Refresh, 1000),
            None,
            "nor the other way"
        );
    }
}

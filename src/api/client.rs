//! The one HTTP client of the API: a call sends a typed body and reads a typed answer, or ends
//! in an error that says what came (never a panic, never a made-up value). Used by the node,
//! the administrator's client of `algonet test` and the demo, and the echo algorithm.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::messages::Msg;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// no answer: connection refused, name not found, TLS refused, timed out, or broken
    #[error("server unreachable: {0}")]
    Unreachable(String),
    /// the server answered with an error status
    #[error("server refused {what}: {status} {message}")]
    Refused {
        what: String,
        status: StatusCode,
        message: String,
    },
    /// the answer is not what the API promises
    #[error("server answered {what} with something unexpected: {reason}")]
    Garbage { what: String, reason: String },
}

impl ClientError {
    /// Worth retrying later (the server may come back), as opposed to a refusal.
    pub fn transient(&self) -> bool {
        match self {
            ClientError::Unreachable(_) => true,
            ClientError::Refused { status, .. } => status.is_server_error(),
            ClientError::Garbage { .. } => false,
        }
    }

    /// The status of a refusal.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The API root of a server and the HTTP client that calls it.
#[derive(Clone, Debug)]
pub struct Api {
    http: reqwest::Client,
    base: String,
}

/// How long one call may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// What kind of failure a request met, and every cause it gives, in one line: whether the
/// connection was refused, the name not found, the server's certificate not trusted (with
/// rustls's reason), or the time up.
pub(crate) fn unreachable(e: &reqwest::Error) -> ClientError {
    let mut causes = Vec::new();
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !causes.iter().any(|t: &String| t.contains(&text)) {
            causes.push(text);
        }
        cause = c.source();
    }
    let all = causes.join(": ").to_lowercase();
    let kind = if e.is_timeout() {
        "timed out"
    } else if all.contains("certificate") || all.contains("tls") || all.contains("handshake") {
        "TLS"
    } else if all.contains("dns error") || all.contains("failed to lookup") {
        "name not found"
    } else if all.contains("connection refused") {
        "connection refused"
    } else {
        "no answer"
    };
    let url = e.url().map_or_else(String::new, |u| format!(" ({u})"));
    ClientError::Unreachable(format!("{kind}{url}: {}", causes.join(": ")))
}

/// Reads the certificates of a PEM file, to trust beside the system's.
pub fn trusted(ca_file: &std::path::Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(ca_file).map_err(|e| format!("{}: {e}", ca_file.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("{}: not PEM certificates: {e}", ca_file.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", ca_file.display()));
    }
    Ok(certs)
}

impl Api {
    /// The API at `base`, e.g. `http://127.0.0.1:7601/api` (a trailing `/` is dropped), trusting
    /// the system's certificate authorities (and `SSL_CERT_FILE`) and the built-in public ones.
    pub fn new(base: &str) -> Result<Api, ClientError> {
        Api::trusting(base, None)
    }

    /// [`Api::new`], trusting also the authorities in `ca_file` (a hospital's own CA).
    pub fn trusting(base: &str, ca_file: Option<&std::path::Path>) -> Result<Api, ClientError> {
        let mut builder = reqwest::Client::builder().timeout(TIMEOUT);
        if let Some(file) = ca_file {
            for cert in trusted(file).map_err(ClientError::Unreachable)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Unreachable(e.to_string()))?;
        Ok(Api {
            http,
            base: base.trim_end_matches('/').to_string(),
        })
    }

    /// The API root (the node's proxy forwards below it).
    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// One call: `path` below the root, with a bearer `token` and a JSON `body` if given.
    pub async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T, ClientError> {
        let what = format!("{method} {path}");
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| unreachable(&e))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| unreachable(&e))?;
        if !status.is_success() {
            let message = serde_json::from_str::<Msg>(&text)
                .map(|m| m.msg)
                .unwrap_or_else(|_| text.chars().take(200).collect());
            return Err(ClientError::Refused {
                what,
                status,
                message,
            });
        }
        serde_json::from_str(&text).map_err(|e| ClientError::Garbage {
            what,
            reason: format!("{e}: {:?}", text.chars().take(80).collect::<String>()),
        })
    }
}

/// Every item of the paged list at `path` (with its query), asking `get` for each page in
/// turn until the last.
pub async fn all_pages<T, F, Fut>(path: &str, get: F) -> Result<Vec<T>, ClientError>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<super::Page<T>, ClientError>>,
{
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut items = Vec::new();
    for page in 1.. {
        let p = get(format!("{path}{sep}per_page=100&page={page}")).await?;
        items.extend(p.data);
        if p.links.next.is_none() {
            break;
        }
    }
    Ok(items)
}

/// The API with one token: the administrator's, or an algorithm's container token.
#[derive(Clone, Debug)]
pub struct Session {
    pub api: Api,
    token: String,
}

/// A call's body when it has none.
pub const NO_BODY: Option<&()> = None;

impl Session {
    pub fn new(api: Api, token: String) -> Session {
        Session { api, token }
    }

    /// `POST /token/user`: the administrator's session.
    pub async fn login_user(
        base: &str,
        username: &str,
        password: &str,
    ) -> Result<Session, ClientError> {
        Session::login(Api::new(base)?, username, password).await
    }

    /// A user's session on `api`.
    pub async fn login(api: Api, username: &str, password: &str) -> Result<Session, ClientError> {
        let login = super::UserLogin {
            username: username.into(),
            password: password.into(),
        };
        let t: super::UserToken = api
            .send(Method::POST, "/token/user", None, Some(&login))
            .await?;
        Ok(Session::new(api, t.access_token))
    }

    /// One authenticated call.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T, ClientError> {
        self.api.send(method, path, Some(&self.token), body).await
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::GET, path, NO_BODY).await
    }

    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &(impl Serialize + ?Sized),
    ) -> Result<T, ClientError> {
        self.call(Method::POST, path, Some(body)).await
    }

    /// Every item of a paged list (`path` with its query), page after page.
    pub async fn all<T: DeserializeOwned>(&self, path: &str) -> Result<Vec<T>, ClientError> {
        all_pages(path, |page| async move { self.get(&page).await }).await
    }
}

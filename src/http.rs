//! Serving HTTP/1.1 within bounds, for the server's API and for the server's and the node's
//! metrics listeners alike: what one client, or many, may hold of a process.
//!
//! - A request's head must arrive within `head_timeout` of the connection opening (or of the
//!   last answer, on a kept-alive connection), its body within `body_timeout` of the head; a
//!   body that is late fails the request with 408 and the connection closes.
//! - At most `max_connections` are served at once, and at most `per_address` of them from one
//!   source address. A connection past either bound is answered at once with 503 and
//!   `Retry-After`, not left waiting in the kernel's backlog.
//! - Each request carries its peer's address for the handlers (`ConnectInfo`).

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the clients of one listener may hold.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub head_timeout: Duration,
    pub body_timeout: Duration,
    pub max_connections: usize,
    pub per_address: usize,
}

impl Limits {
    /// A metrics listener's: a scraper or two, never many.
    pub const METRICS: Limits = Limits {
        head_timeout: Duration::from_secs(10),
        body_timeout: Duration::from_secs(10),
        max_connections: 64,
        per_address: 16,
    };
}

/// Descriptors a process needs beside its connections: the database's pool, the metrics
/// listener's connections, the refused ones, files and sockets of its own.
const OTHER_DESCRIPTORS: u64 = 256;

/// Raises this process's soft limit of open files so that `max_connections` can be served (a
/// descriptor each), as far as the hard limit allows; past the hard limit, the answer says what
/// to raise. Debian's default soft limit, 1024, is below the default `max_connections`' needs.
pub fn reserve_descriptors(max_connections: usize) -> Result<u64, String> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let needed = u64::try_from(max_connections)
        .unwrap_or(u64::MAX)
        .saturating_add(OTHER_DESCRIPTORS);
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| e.to_string())?;
    if soft >= needed {
        return Ok(soft);
    }
    let raised = needed.min(hard);
    setrlimit(Resource::RLIMIT_NOFILE, raised, hard).map_err(|e| e.to_string())?;
    if raised < needed {
        return Err(format!(
            "max_connections {max_connections} needs about {needed} open files, but the hard \
             limit is {hard}: raise it (LimitNOFILE= in the unit, ulimit -Hn) or lower \
             max_connections"
        ));
    }
    Ok(raised)
}

/// Connections refused with a 503 at once; past this many being refused, a connection is closed
/// without an answer (a flood is not to cost a task per connection).
const REFUSING: usize = 64;
/// How long a refused connection may take to send its request before it is answered anyway.
const REFUSE_READ: Duration = Duration::from_millis(500);

/// The connections being served: in all and by source address.
#[derive(Debug, Default)]
struct Served {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// One served connection's place; given back when dropped.
#[derive(Debug)]
struct Place {
    served: Arc<Mutex<Served>>,
    address: IpAddr,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut s = crate::sync::lock(&self.served);
        s.total = s.total.saturating_sub(1);
        if let Some(n) = s.by_address.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                s.by_address.remove(&self.address);
            }
        }
    }
}

/// A connection's place, as each of its requests carries it: a handler that takes the
/// connection over (an upgrade) keeps it, so that the connection counts against the bounds
/// for as long as it lives, not only while it speaks HTTP.
#[derive(Clone, Debug)]
pub struct Held {
    _place: Arc<Place>,
}

/// A place for a connection from `address`, if neither bound is reached.
fn take_place(served: &Arc<Mutex<Served>>, address: IpAddr, limits: &Limits) -> Option<Place> {
    let mut s = crate::sync::lock(served);
    let from = s.by_address.get(&address).copied().unwrap_or(0);
    if s.total >= limits.max_connections || from >= limits.per_address {
        return None;
    }
    s.total += 1;
    *s.by_address.entry(address).or_insert(0) += 1;
    Some(Place {
        served: served.clone(),
        address,
    })
}

/// Serves `app` on `listener` within `limits` until the listener fails for good.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: Limits,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt;
    let served = Arc::new(Mutex::new(Served::default()));
    let refusing = Arc::new(tokio::sync::Semaphore::new(REFUSING));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors, or a connection reset before it was accepted: not the
                // listener's end. Pause briefly rather than spin.
                tracing::warn!("accepting a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(place) = take_place(&served, peer.ip(), &limits) else {
            if let Ok(turn) = refusing.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    refuse(stream).await;
                    drop(turn);
                });
            }
            continue;
        };
        let held = Held {
            _place: Arc::new(place),
        };
        let body_timeout = limits.body_timeout;
        let app =
            app.clone()
                .map_request(move |req: axum::http::Request<hyper::body::Incoming>| {
                    let mut req = req.map(|body| {
                        axum::body::Body::new(Deadline {
                            body,
                            timer: Box::pin(tokio::time::sleep(body_timeout)),
                        })
                    });
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    req.extensions_mut().insert(held.clone());
                    req
                });
        tokio::spawn(async move {
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.head_timeout)
                .serve_connection(
                    TokioIo::new(stream),
                    hyper_util::service::TowerToHyperService::new(app),
                )
                // socket.io's websocket transport.
                .with_upgrades()
                .await;
            if let Err(e) = served {
                tracing::debug!("connection from {peer}: {e}");
            }
        });
    }
}

/// The answer to a connection past the bounds. Its request is read first (briefly, and only
/// its first bytes), so that closing does not reset the connection before the client reads it.
async fn refuse(mut stream: tokio::net::TcpStream) {
    const BODY: &str = r#"{"msg": "The server is busy; try again shortly"}"#;
    let mut head = [0u8; 4096];
    let _ = tokio::time::timeout(REFUSE_READ, async {
        let mut seen = 0;
        while seen < head.len() {
            match stream.read(&mut head[seen..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen += n,
            }
            if head[..seen].windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(REFUSE_READ, async {
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Why a request's body failed: it did not arrive within the body timeout.
#[derive(Debug, thiserror::Error)]
#[error("the request's body did not arrive in time")]
pub struct LateBody;

/// A request body that fails once its deadline passes.
struct Deadline {
    body: hyper::body::Incoming,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl http_body::Body for Deadline {
    type Data = hyper::body::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(LateBody.into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The soft limit rises to what the connections need, up to the hard limit; past it, the
    /// answer names what to raise.
    #[test]
    fn descriptors_are_reserved_up_to_the_hard_limit() {
        use nix::sys::resource::{getrlimit, Resource};
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("limits");
        if hard > 4096 {
            let soft = reserve_descriptors(2048).expect("within the hard limit");
            assert!(soft >= 2048 + OTHER_DESCRIPTORS);
            let (now, _) = getrlimit(Resource::RLIMIT_NOFILE).expect("limits");
            assert_eq!(now, soft);
        }
        let past = usize::try_from(hard).unwrap_or(usize::MAX);
        let e = reserve_descriptors(past).expect_err("past the hard limit");
        assert!(e.contains("LimitNOFILE"), "{e}");
    }

    #[test]
    fn places_are_bounded_in_all_and_per_address_and_given_back() {
        let limits = Limits {
            max_connections: 3,
            per_address: 2,
            ..Limits::METRICS
        };
        let served = Arc::default();
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        let a1 = take_place(&served, a, &limits).expect("first");
        let _a2 = take_place(&served, a, &limits).expect("second");
        assert!(take_place(&served, a, &limits).is_none(), "per address");
        let b1 = take_place(&served, b, &limits).expect("another address");
        assert!(take_place(&served, b, &limits).is_none(), "in all");
        drop(a1);
        drop(b1);
        let _a3 = take_place(&served, a, &limits).expect("given back");
        let _b2 = take_place(&served, b, &limits).expect("given back");
        let s = served.lock().expect("lock");
        assert_eq!((s.total, s.by_address.len()), (3, 2));
    }
}

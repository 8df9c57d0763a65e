//! The algorithm proxy against a server of the test's own on 127.0.0.1: bodies stream through
//! both ways (the proxy never holds a whole request or answer), and the number of requests it
//! serves at once is bounded, so what it buffers is bounded in total.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::routing::{get, post};
use futures_util::StreamExt;
use tokio::sync::{mpsc, Notify};

/// A server whose `/api/slow` answers "first", then the rest once `release` is notified, and
/// whose `/api/sink` reports each request chunk as it arrives.
async fn upstream(release: Arc<Notify>, chunks: mpsc::UnboundedSender<Bytes>) -> String {
    let app = axum::Router::new()
        .route(
            "/api/slow",
            get(move || {
                let release = release.clone();
                async move {
                    let rest = futures_util::stream::once(async move {
                        release.notified().await;
                        Ok::<_, std::io::Error>(Bytes::from_static(b" and the rest"))
                    });
                    let first = futures_util::stream::once(async {
                        Ok::<_, std::io::Error>(Bytes::from_static(b"first"))
                    });
                    Body::from_stream(first.chain(rest))
                }
            }),
        )
        .route(
            "/api/sink",
            post(move |body: Body| {
                let chunks = chunks.clone();
                async move {
                    let mut s = body.into_data_stream();
                    while let Some(Ok(c)) = s.next().await {
                        let _ = chunks.send(c);
                    }
                    "{}"
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/api")
}

/// The proxy on 127.0.0.1, serving 127.0.0.1 as its one container.
fn proxy(base: String) -> SocketAddr {
    algonet_testkit::proxy(base, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_stream_through_and_requests_at_once_are_bounded() {
    let release = Arc::new(Notify::new());
    let (chunks_tx, mut chunks) = mpsc::unbounded_channel();
    let at = proxy(upstream(release.clone(), chunks_tx).await);
    let http = reqwest::Client::new();

    // The answer's first part arrives while the server still holds back the rest.
    let resp = tokio::time::timeout(
        Duration::from_secs(5),
        http.get(format!("http://{at}/slow")).send(),
    )
    .await
    .expect("the answer began before it was complete")
    .expect("answer");
    let mut answer = resp.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(5), answer.next())
        .await
        .expect("the first part came before the answer was complete")
        .expect("a chunk")
        .expect("bytes");
    assert_eq!(&first[..], b"first");
    release.notify_one();
    let rest = answer.next().await.expect("the rest").expect("bytes");
    assert_eq!(&rest[..], b" and the rest");

    // A request's first part reaches the server while the algorithm still holds back the rest.
    let (body_tx, body_rx) = mpsc::unbounded_channel::<Result<Bytes, std::io::Error>>();
    let body = reqwest::Body::wrap_stream(tokio_stream(body_rx));
    let sending = tokio::spawn({
        let http = http.clone();
        async move {
            http.post(format!("http://{at}/sink"))
                .body(body)
                .send()
                .await
        }
    });
    body_tx
        .send(Ok(Bytes::from_static(b"model update, part 1")))
        .expect("send");
    let got = tokio::time::timeout(Duration::from_secs(5), chunks.recv())
        .await
        .expect("the first part reached the server before the request was complete")
        .expect("a chunk");
    assert_eq!(&got[..], b"model update, part 1");
    drop(body_tx);
    assert!(sending
        .await
        .expect("join")
        .expect("sent")
        .status()
        .is_success());

    // Too large by its declared length: refused before anything is read.
    let (st, _) = {
        let r = http
            .post(format!("http://{at}/sink"))
            .header("content-length", (64u64 << 20) + 1)
            .body(vec![0u8; 16])
            .send()
            .await;
        (r.map(|r| r.status()), ())
    };
    assert_eq!(st.ok(), Some(reqwest::StatusCode::PAYLOAD_TOO_LARGE));

    // Requests under way are bounded: with every slot held by a slow answer, one more is refused
    // at once; when they finish, the proxy serves again.
    let mut held = Vec::new();
    for _ in 0..algonet::node::proxy::MAX_REQUESTS {
        held.push(
            http.get(format!("http://{at}/slow"))
                .send()
                .await
                .expect("answer"),
        );
    }
    let over = http
        .get(format!("http://{at}/slow"))
        .send()
        .await
        .expect("answer");
    assert_eq!(over.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    for r in held {
        release.notify_one();
        let _ = r.bytes().await;
    }
    release.notify_one();
    let again = http
        .get(format!("http://{at}/slow"))
        .send()
        .await
        .expect("answer");
    assert!(again.status().is_success());
    release.notify_one();
    assert_eq!(
        &again.bytes().await.expect("body")[..],
        b"first and the rest"
    );
}

/// A receiver as a stream (tokio-stream is not a dependency).
fn tokio_stream(
    mut rx: mpsc::UnboundedReceiver<Result<Bytes, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

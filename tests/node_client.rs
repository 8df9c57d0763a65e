//! The node's server client against a server that answers garbage: every call ends in an error
//! that says what came, never a panic and never a made-up value.

use std::net::Ipv4Addr;

use algonet::api::{NodeId, RunId, TaskId};
use algonet::node::client::{ClientError, ServerClient};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;

async fn garbage_server(status: StatusCode, body: &'static str) -> String {
    let app = axum::Router::new()
        .route(
            "/api/token/node",
            post(|| async { axum::Json(serde_json::json!({"access_token": "t", "node_id": 7})) }),
        )
        .fallback(move || async move { (status, body).into_response() });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test]
async fn garbage_answers_are_errors() {
    for (status, body) in [
        (StatusCode::OK, "<html>not json</html>"),
        (StatusCode::OK, "{"),
        (StatusCode::OK, "null"),
        (StatusCode::OK, ""),
        (
            StatusCode::OK,
            r#"{"data": 5, "ovpn_config": 7, "container_token": []}"#,
        ),
        (StatusCode::OK, r#"{"data": [{"id": "x"}]}"#),
        (StatusCode::INTERNAL_SERVER_ERROR, "boom"),
        (StatusCode::BAD_GATEWAY, r#"{"msg": "upstream"}"#),
    ] {
        let url = garbage_server(status, body).await;
        let c = ServerClient::login(&url, "/api", "key", None)
            .await
            .expect("login");
        assert_eq!(c.node_id, NodeId(7));
        let what = format!("{status} {body:?}");
        let check = |r: Result<(), ClientError>| {
            let e = r.expect_err(&what);
            assert!(!e.to_string().is_empty());
        };
        check(c.pending_runs().await.map(drop));
        check(c.claim(RunId(1)).await.map(drop));
        check(c.container_token(TaskId(1), "img").await.map(drop));
        check(c.new_profile().await.map(drop));
        check(c.renew_profile("x").await.map(drop));
        if status.is_success() {
            // Calls whose answer the node does not read succeed on any 2xx with JSON...
            let _ = c.set_ip(Some(Ipv4Addr::LOCALHOST)).await;
        } else {
            // ...and fail, as transient, on a server error.
            let e = c.remove_ports(RunId(1)).await.expect_err(&what);
            assert!(e.transient(), "{e}");
        }
    }
}

#[tokio::test]
async fn an_unreachable_server_is_transient() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let e = ServerClient::login(&format!("http://127.0.0.1:{port}"), "/api", "k", None)
        .await
        .expect_err("nothing listens");
    assert!(e.transient(), "{e}");
}

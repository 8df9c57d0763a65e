//! The node's server client against a server that answers garbage: every call ends in an error
//! that says what came, never a panic and never a made-up value; and against a server that goes
//! away while the node stops: the run's end is kept and reported at the next start.

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
        check(c.new_profile(None, false).await.map(drop));
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

/// A relay on 127.0.0.1 to `backend` that can be taken away (its connections too) and brought
/// back on the same port.
struct Relay {
    port: u16,
    tasks: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Relay {
    async fn start(backend: std::net::SocketAddr, port: u16) -> Relay {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind");
        let relay = Relay {
            port: listener.local_addr().expect("addr").port(),
            tasks: Default::default(),
        };
        let tasks = relay.tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut a, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut b) = tokio::net::TcpStream::connect(backend).await {
                        let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                    }
                });
                tasks.lock().expect("tasks").push(conn);
            }
        });
        relay.tasks.lock().expect("tasks").push(accept);
        relay
    }

    /// Takes the relay away: its tasks are ended and waited for, so that its listener is
    /// closed (and its port free to bind again) when this returns.
    async fn stop(&self) {
        let tasks: Vec<_> = self.tasks.lock().expect("tasks").drain(..).collect();
        for t in tasks {
            t.abort();
            let _ = t.await;
        }
    }
}

/// A run's end the server does not take once the node stops is kept in the task folder (0600)
/// and reported at the next start; one the server refuses for good is not kept, and a file that
/// is not a report is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_end_the_server_missed_is_kept_and_reported_later() {
    use algonet::node::reports::{self, RunEnd};
    use std::os::unix::fs::PermissionsExt;

    let s = algonet_testkit::server::server("kept-reports", "").await;
    let admin = s.admin().await;
    let org = s
        .ok(
            "POST",
            "/organization",
            Some(&admin),
            serde_json::json!({"name": "o"}),
        )
        .await["id"]
        .clone();
    let col = serde_json::json!({"name": "c", "organization_ids": [org]});
    let col = s.ok("POST", "/collaboration", Some(&admin), col).await["id"].clone();
    let body = serde_json::json!({"organization_id": org, "collaboration_id": col});
    let key = s.ok("POST", "/node", Some(&admin), body).await["api_key"]
        .as_str()
        .expect("key")
        .to_string();
    let backend: std::net::SocketAddr = s
        .base
        .trim_start_matches("http://")
        .trim_end_matches("/api")
        .parse()
        .expect("address");
    let relay = Relay::start(backend, 0).await;
    let url = format!("http://127.0.0.1:{}", relay.port);
    let client = ServerClient::login(&url, "/api", &key, None)
        .await
        .expect("login");
    let task = serde_json::json!({"name": "t", "image": "echo", "collaboration_id": col,
                                  "organizations": [{"id": org, "input": ""}]});
    s.ok("POST", "/task", Some(&admin), task).await;
    let run = client.pending_runs().await.expect("runs")[0].id;
    client.claim(run).await.expect("claim");

    let task_dir = s.dir.join("node-tasks");
    algonet::private::dir(&task_dir).expect("task dir");
    relay.stop().await;
    let end = RunEnd {
        run,
        status: algonet::api::RunStatus::Completed,
        result: Some("cmVzdWx0".into()),
        log: "done\n".into(),
    };
    // The node is stopping: one try, then the end is kept.
    reports::report(&client, &task_dir, end.clone(), || false).await;
    let kept = task_dir.join("unreported").join(format!("{run}.json"));
    let mode = std::fs::metadata(&kept).expect("kept").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    std::fs::write(
        task_dir.join("unreported").join("stray.json"),
        "not a report",
    )
    .expect("w");

    let _back = Relay::start(backend, relay.port).await;
    reports::send_kept(&client, &task_dir).await;
    assert!(!kept.exists(), "a reported end is not kept");
    assert!(task_dir.join("unreported").join("stray.json").exists());
    let runs = s.runs(&admin, 1).await;
    assert_eq!(runs[0]["status"], "completed", "{runs:?}");
    assert_eq!(runs[0]["log"], "done\n");

    // Kept again, the server refuses it (the run has finished): reported once, then gone.
    reports::report(&client, &task_dir, end, || false).await;
    assert!(!kept.exists(), "a refusal for good is not kept");
}

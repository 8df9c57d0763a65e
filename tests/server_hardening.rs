//! What no client may do to the server: hold it with slow or idle connections, crowd others
//! out from one address or from many, pile up long-polls, grow its metrics, keep a session
//! alive with a copied refresh token, or learn which ids exist. Every flood here is bounded in
//! count and time, and goes only to the test's own server on loopback.

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::time::{Duration, Instant};

use algonet_testkit as common;

use common::server::{server, Server};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// The server's `host:port`.
fn address(s: &Server) -> String {
    s.base
        .trim_start_matches("http://")
        .trim_end_matches("/api")
        .to_string()
}

/// A raw connection from `from` (any address of 127.0.0.0/8) to the server.
async fn connect(s: &Server, from: [u8; 4]) -> TcpStream {
    connect_to(from, &address(s)).await
}

/// A blocking connection to `to` from the loopback address `from` (bound first, so that the
/// server sees it).
async fn connect_to(from: [u8; 4], to: &str) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(std::net::SocketAddr::from((from, 0)))
        .expect("bind");
    let stream = socket
        .connect(to.parse().expect("address"))
        .await
        .expect("connect")
        .into_std()
        .expect("std");
    stream.set_nonblocking(false).expect("blocking");
    stream
        .set_read_timeout(Some(Duration::from_secs(8)))
        .expect("timeout");
    stream
}

/// How long until the server closes `c` (whatever it answered first); `None` if it did not
/// within the read timeout.
fn closed_within(mut c: TcpStream) -> Option<(Duration, String)> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    let start = Instant::now();
    loop {
        match c.read(&mut buf) {
            Ok(0) => return Some((start.elapsed(), String::from_utf8_lossy(&seen).into())),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some((start.elapsed(), String::from_utf8_lossy(&seen).into()))
            }
            Err(_) => return None,
        }
    }
}

/// A client whose connections come from `from`.
fn client_from(from: [u8; 4], timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from(from))
        .timeout(timeout)
        .build()
        .expect("client")
}

/// Half-sent headers, a silent connection, a body that never comes or comes a byte at a time,
/// and an idle kept-alive connection are all cut off within the timeouts.
#[tokio::test]
async fn slow_and_idle_clients_hold_nothing_for_long() {
    let s = server(
        "slow-clients",
        "header_timeout_secs: 1\nbody_timeout_secs: 1\n",
    )
    .await;
    let mut cases: Vec<(&str, TcpStream)> = Vec::new();
    let mut partial = connect(&s, [127, 0, 0, 1]).await;
    partial
        .write_all(b"GET /api/run HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .expect("write");
    cases.push(("half-sent headers", partial));
    cases.push(("a silent connection", connect(&s, [127, 0, 0, 1]).await));
    let mut no_body = connect(&s, [127, 0, 0, 1]).await;
    no_body
        .write_all(
            b"POST /api/token/user HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n",
        )
        .expect("write");
    cases.push(("a body that never comes", no_body));
    let mut kept = connect(&s, [127, 0, 0, 1]).await;
    kept.write_all(b"GET /api/version HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    cases.push(("an idle kept-alive connection", kept));
    let mut trickle = connect(&s, [127, 0, 0, 1]).await;
    trickle
        .write_all(
            b"POST /api/token/user HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n",
        )
        .expect("write");
    let dripping = trickle.try_clone().expect("clone");
    let drip = std::thread::spawn(move || {
        let mut d = dripping;
        for _ in 0..8 {
            if d.write_all(b" ").is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(400));
        }
    });
    cases.push(("a body a byte at a time", trickle));
    let waits: Vec<_> = cases
        .into_iter()
        .map(|(what, c)| (what, tokio::task::spawn_blocking(move || closed_within(c))))
        .collect();
    for (what, w) in waits {
        let closed = w.await.expect("join");
        assert!(
            closed.as_ref().is_some_and(|(d, _)| d.as_secs() < 4),
            "{what} held: {closed:?}"
        );
        if what.starts_with("a body") {
            let answer = closed.map(|(_, a)| a).unwrap_or_default();
            assert!(answer.starts_with("HTTP/1.1 408"), "{what}: {answer}");
        }
    }
    tokio::task::spawn_blocking(move || drip.join())
        .await
        .expect("join")
        .expect("drip");
}

/// One address holds at most its share; past it, and past the cap in all, a connection is
/// answered 503 with Retry-After at once, while a client from another address is served.
#[tokio::test]
async fn a_flood_from_one_address_or_many_leaves_others_served() {
    let s = server(
        "connection-flood",
        "max_connections: 24\nmax_connections_per_address: 8\n",
    )
    .await;
    // A login's complete headers and then no body: held for the body timeout (30 s).
    let hold = |from: [u8; 4]| {
        let s = &s;
        async move {
            let mut c = connect(s, from).await;
            c.write_all(
                b"POST /api/token/user HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n",
            )
            .expect("write");
            c
        }
    };
    let mut held: Vec<TcpStream> = Vec::new();
    for _ in 0..8 {
        held.push(hold([127, 0, 0, 1]).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let version = |from: [u8; 4]| {
        let url = format!("{}/version", s.base);
        async move {
            let started = Instant::now();
            let r = client_from(from, Duration::from_secs(5))
                .get(url)
                .send()
                .await
                .expect("an answer");
            (
                r.status(),
                r.headers().get("retry-after").cloned(),
                started.elapsed(),
            )
        }
    };
    let (status, retry, took) = version([127, 0, 0, 1]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        retry.is_some() && took < Duration::from_secs(1),
        "{retry:?} {took:?}"
    );
    let (status, _, took) = version([127, 0, 0, 2]).await;
    assert_eq!(status, StatusCode::OK, "another address is served");
    assert!(took < Duration::from_secs(1), "{took:?}");
    // Many addresses fill the cap in all: the next is answered at once, not left waiting.
    for last in 3..5 {
        for _ in 0..8 {
            held.push(hold([127, 0, 0, last]).await);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, retry, took) = version([127, 0, 0, 9]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(retry.is_some() && took < Duration::from_secs(1), "{took:?}");
    held.truncate(20);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _, _) = version([127, 0, 0, 9]).await;
    assert_eq!(status, StatusCode::OK, "served again once some closed");
}

/// The metrics listener is bounded as the API is: idle connections are closed, a flood from
/// one address is answered 503; and made-up methods do not grow the metrics.
#[tokio::test]
async fn metrics_stay_bounded_and_their_listener_holds_nothing() {
    let s = server("metrics-bounds", "").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let state = s.state.clone();
    let (at, serve) = algonet::metrics::serve_on(listener, move || {
        algonet::server::metrics::scrape(state.store.clone(), state.metrics.clone(), None)
    });
    tokio::spawn(serve);
    let at = at.to_string();
    let mut idle = Vec::new();
    for _ in 0..algonet::http::Limits::METRICS.per_address {
        idle.push(connect_to([127, 0, 0, 1], &at).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = client_from([127, 0, 0, 1], Duration::from_secs(2))
        .get(format!("http://{at}/metrics"))
        .send()
        .await
        .expect("an answer");
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let first = idle.into_iter().next().expect("one");
    first
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let closed = tokio::task::spawn_blocking(move || closed_within(first))
        .await
        .expect("join");
    assert!(
        closed.is_some_and(
            |(d, _)| d <= algonet::http::Limits::METRICS.head_timeout + Duration::from_secs(2)
        ),
        "an idle metrics connection was held"
    );

    // 10 000 requests with made-up methods, ten at a time.
    let before =
        algonet::server::metrics::scrape(s.state.store.clone(), s.state.metrics.clone(), None)
            .await
            .len();
    let client = reqwest::Client::new();
    let mut sent = 0;
    for batch in 0..1000 {
        let calls = (0..10).map(|i| {
            let method =
                reqwest::Method::from_bytes(format!("M{batch}X{i}").as_bytes()).expect("a token");
            client.request(method, format!("{}/version", s.base)).send()
        });
        for r in futures_util::future::join_all(calls).await {
            assert_eq!(r.expect("answer").status(), StatusCode::METHOD_NOT_ALLOWED);
            sent += 1;
        }
    }
    let after =
        algonet::server::metrics::scrape(s.state.store.clone(), s.state.metrics.clone(), None)
            .await;
    assert_eq!(sent, 10_000);
    assert!(
        after.len() < before + 2_000,
        "{} -> {} bytes",
        before,
        after.len()
    );
    assert!(after.contains("method=\"other\""), "{after}");
}

/// 500 long-polls of one node: at most a few wait, the rest are answered at once, and an
/// administrator is served within a second all along.
#[tokio::test]
async fn long_polls_are_bounded_per_node() {
    let s = server("long-polls", "").await;
    let (_, node) = s.lone_node().await;
    let (_, first) = s.call("GET", "/vpn/peers", Some(&node), None).await;
    let etag = first["etag"].as_str().expect("etag").to_string();
    let url = format!("{}/vpn/peers?known={etag}", s.base);
    let poller = client_from([127, 0, 0, 1], Duration::from_secs(30));
    let polls: Vec<_> = (0..500)
        .map(|_| {
            let (p, url, node) = (poller.clone(), url.clone(), node.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let status = p
                    .get(url)
                    .bearer_auth(node)
                    .send()
                    .await
                    .map(|r| r.status());
                (status, started.elapsed())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let admin = s.admin().await;
    let other = client_from([127, 0, 0, 2], Duration::from_secs(5));
    for _ in 0..5 {
        let started = Instant::now();
        let r = other
            .get(format!("{}/collaboration", s.base))
            .bearer_auth(&admin)
            .send()
            .await
            .expect("served");
        assert_eq!(r.status(), StatusCode::OK);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }
    assert!(
        s.state.waits.waiting() <= algonet::server::waits::PER_NODE,
        "{} waits of one node",
        s.state.waits.waiting()
    );
    let mut early = 0;
    for p in polls {
        let (status, took) = p.await.expect("join");
        if took < Duration::from_secs(10) {
            early += 1;
        }
        // Past the connection bound of one address a poll is refused at once (503).
        let status = status.expect("answered");
        assert!(
            status == StatusCode::OK || status == StatusCode::SERVICE_UNAVAILABLE,
            "{status}"
        );
    }
    assert!(early >= 500 - algonet::server::waits::PER_NODE, "{early}");
}

/// A refresh token is good once: the refresh hands out the next one, the one it took is
/// retired, and a retired one used again ends the session, every token of it.
#[tokio::test]
async fn refresh_tokens_rotate_and_a_reused_one_ends_its_session() {
    let s = server("refresh-rotation", "").await;
    let login = s.login().await;
    let first = login["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_string();
    let (st, renewed) = s.call("POST", "/token/refresh", Some(&first), None).await;
    assert_eq!(st, StatusCode::OK, "{renewed}");
    let second = renewed["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_string();
    let access = renewed["access_token"]
        .as_str()
        .expect("access")
        .to_string();
    assert_ne!(first, second);
    let (st, _) = s.call("GET", "/user/1", Some(&access), None).await;
    assert_eq!(st, StatusCode::OK);
    // The thief replays the first one: refused, and the whole session ends.
    let (st, v) = s.call("POST", "/token/refresh", Some(&first), None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
    let (st, _) = s.call("POST", "/token/refresh", Some(&second), None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "the chain is revoked");
    let (st, _) = s.call("GET", "/user/1", Some(&access), None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "so are its access tokens");
    // A new login is a new session.
    let again = s.admin().await;
    let (st, _) = s.call("GET", "/user/1", Some(&again), None).await;
    assert_eq!(st, StatusCode::OK);
}

/// A restart keeps sessions; a new administrator password ends the administrator's sessions
/// minted before it; `algonet server revoke` ends a node's.
#[tokio::test]
async fn sessions_end_with_a_password_change_and_a_revocation() {
    let dir = std::env::temp_dir().join(format!("algonet-sessions-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let db = match common::postgres::servers_on_postgres() {
        true => {
            let base = common::postgres::shared("sessions").expect("the test cluster");
            format!(
                "database: {}\n",
                common::postgres::database(&base, "sessions").await
            )
        }
        false => String::new(),
    };
    let config = |password: &str| {
        algonet::server::config::ServerConfig::parse(&format!(
            "listen: 127.0.0.1:0\ndata_dir: {}\nadmin: {{username: root, password: {password}}}\n{db}",
            dir.display()
        ))
        .expect("config")
    };
    let start = |password: &str| {
        let c = config(password);
        async move {
            let state = algonet::server::open(c).await.expect("open");
            let (addr, serve) = algonet::server::bind(state).await.expect("bind");
            (format!("http://{addr}/api"), tokio::spawn(serve))
        }
    };
    let http = reqwest::Client::new();
    let login = |base: &String, password: &str| {
        let req = http
            .post(format!("{base}/token/user"))
            .json(&json!({"username": "root", "password": password}));
        async move {
            let v: Value = req.send().await.expect("login").json().await.expect("json");
            v["access_token"].as_str().expect("token").to_string()
        }
    };
    let works = |base: &String, token: &String| {
        let req = http.get(format!("{base}/user/1")).bearer_auth(token);
        async move { req.send().await.expect("answer").status() == StatusCode::OK }
    };
    let (base, served) = start("correct-horse-battery").await;
    let old = login(&base, "correct-horse-battery").await;
    served.abort();
    let (base, served) = start("correct-horse-battery").await;
    assert!(works(&base, &old).await, "a restart keeps sessions");
    // A node, and its session revoked from the command line's function.
    let admin = login(&base, "correct-horse-battery").await;
    let org = http
        .post(format!("{base}/organization"))
        .bearer_auth(&admin)
        .json(&json!({"name": "o"}))
        .send()
        .await
        .expect("org");
    let org: Value = org.json().await.expect("json");
    let col: Value = http
        .post(format!("{base}/collaboration"))
        .bearer_auth(&admin)
        .json(&json!({"name": "c", "organization_ids": [org["id"]]}))
        .send()
        .await
        .expect("collaboration")
        .json()
        .await
        .expect("json");
    let node: Value = http
        .post(format!("{base}/node"))
        .bearer_auth(&admin)
        .json(&json!({"organization_id": org["id"], "collaboration_id": col["id"]}))
        .send()
        .await
        .expect("node")
        .json()
        .await
        .expect("json");
    let node_login: Value = http
        .post(format!("{base}/token/node"))
        .json(&json!({"api_key": node["api_key"]}))
        .send()
        .await
        .expect("node login")
        .json()
        .await
        .expect("json");
    let node_token = node_login["access_token"]
        .as_str()
        .expect("token")
        .to_string();
    let node_id = algonet::api::NodeId(node["id"].as_i64().expect("id"));
    let node_works = |token: &String| {
        let req = http.get(format!("{base}/run")).bearer_auth(token);
        async move { req.send().await.expect("answer").status() == StatusCode::OK }
    };
    assert!(node_works(&node_token).await);
    let ended = algonet::server::revoke(
        &config("correct-horse-battery"),
        &algonet::server::Revoke::Node(node_id),
    )
    .await
    .expect("revoke");
    assert_eq!(ended, 1);
    assert!(!node_works(&node_token).await, "a revoked node's token");
    served.abort();
    // The administrator's password changes: every token minted before is refused.
    let (base, served) = start("a-new-longer-password").await;
    assert!(!works(&base, &old).await, "a token of the old password");
    assert!(!works(&base, &admin).await, "a token of the old password");
    let new = login(&base, "a-new-longer-password").await;
    assert!(works(&base, &new).await);
    served.abort();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Another collaboration's organization or node answers as an absent one does.
#[tokio::test]
async fn ids_outside_a_collaboration_answer_as_absent_ones() {
    let s = server("existence-oracle", "").await;
    let nodes = s.nodes(1).await;
    let admin = s.admin().await;
    let other = s
        .ok(
            "POST",
            "/organization",
            Some(&admin),
            json!({"name": "elsewhere"}),
        )
        .await["id"]
        .clone();
    let node = &nodes[0].1;
    let (absent, a) = s.call("GET", "/organization/99999", Some(node), None).await;
    let (theirs, t) = s
        .call("GET", &format!("/organization/{other}"), Some(node), None)
        .await;
    assert_eq!(
        (absent, theirs),
        (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND)
    );
    assert_eq!(
        a["msg"].as_str().map(|m| m.replace("99999", "N")),
        t["msg"]
            .as_str()
            .map(|m| m.replace(&other.to_string(), "N"))
    );
}

/// A task of image `fork` for the one organization of `s`'s lone node, and a container token
/// of its run: (organization id, container token, the node's token).
async fn forking_task(s: &Server) -> (Value, String, String) {
    let (node_id, node) = s.lone_node().await;
    let admin = s.admin().await;
    let row = s
        .ok(
            "GET",
            &format!("/node/{node_id}"),
            Some(&admin),
            json!(null),
        )
        .await;
    let (org, col) = (
        row["organization"]["id"].clone(),
        row["collaboration"]["id"].clone(),
    );
    let body = json!({"name": "root", "image": "fork", "collaboration_id": col, "organizations": [{"id": org}]});
    let root = s.ok("POST", "/task", Some(&admin), body).await["id"].clone();
    let token = container_token(s, &node, &root).await;
    (org, token, node)
}

async fn container_token(s: &Server, node: &str, task: &Value) -> String {
    let body = json!({"task_id": task, "image": "fork"});
    s.ok("POST", "/token/container", Some(node), body).await["container_token"]
        .as_str()
        .expect("token")
        .to_string()
}

/// A subtask of the caller's own image for `org`: its answer, and Retry-After if any.
async fn fork(s: &Server, token: &str, org: &Value) -> (StatusCode, Value, bool) {
    let body = json!({"name": "child", "image": "fork", "organizations": [{"id": org}]});
    let r = s
        .http
        .post(format!("{}/task", s.base))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("answer");
    let (status, retry) = (r.status(), r.headers().contains_key("retry-after"));
    (status, r.json().await.expect("json"), retry)
}

/// An algorithm that creates subtasks of its own image, and whose subtasks do the same, is
/// stopped at the run's limit, the job's limit and the rate, with 429.
#[tokio::test]
async fn an_algorithm_cannot_multiply_without_bound() {
    let s = server(
        "subtask-limits",
        "subtasks: {per_run: 30, per_second: 1000, per_job: 45}\n",
    )
    .await;
    let (org, parent, node) = forking_task(&s).await;
    let mut created = Vec::new();
    let mut refused = None;
    for _ in 0..1000 {
        let (st, v, _) = fork(&s, &parent, &org).await;
        if st == StatusCode::CREATED {
            created.push(v["id"].clone());
        } else {
            refused = Some((st, v));
            break;
        }
    }
    let (st, v) = refused.expect("a refusal before 1000");
    assert_eq!(created.len(), 30, "the run's limit");
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert!(
        v["msg"].as_str().is_some_and(|m| m.contains("limit")),
        "{v}"
    );
    // A child does the same: the job holds 1 + 30 tasks, so 14 more, then the job's limit.
    let child = container_token(&s, &node, &created[0]).await;
    let mut more = 0;
    loop {
        let (st, v, _) = fork(&s, &child, &org).await;
        if st != StatusCode::CREATED {
            assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "{v}");
            break;
        }
        more += 1;
        assert!(more <= 14, "past the job's limit");
    }
    assert_eq!(more, 14);

    // The rate: a burst past the per-second limit answers 429 with Retry-After.
    let s = server(
        "subtask-rate",
        "subtasks: {per_run: 1000, per_second: 5, per_job: 10000}\n",
    )
    .await;
    let (org, token, _) = forking_task(&s).await;
    let mut answers = Vec::new();
    for _ in 0..12 {
        let (st, _, retry) = fork(&s, &token, &org).await;
        answers.push((st, retry));
    }
    let limited: Vec<_> = answers
        .iter()
        .filter(|(st, _)| *st == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert!(!limited.is_empty(), "{answers:?}");
    assert!(limited.iter().all(|(_, retry)| *retry), "{answers:?}");
    let made = answers
        .iter()
        .filter(|(st, _)| *st == StatusCode::CREATED)
        .count();
    assert!((5..=10).contains(&made), "{answers:?}");
}

/// A node registers ports only in the nodes' public range and labels of at most vantage6's
/// 128 characters: no `10.76.0.1:22` handed to peers as a run's port.
#[tokio::test]
async fn ports_outside_the_public_range_and_long_labels_are_refused() {
    let s = server("port-bounds", "").await;
    let (org, token, node) = forking_task(&s).await;
    let _ = (org, token);
    let runs = s
        .ok("GET", "/run?status=pending", Some(&node), json!(null))
        .await;
    let run = runs["data"][0]["id"].clone();
    for (port, label) in [
        (22, json!("ssh")),
        (1194, json!(null)),
        (7601, json!(null)),
        (49151, json!(null)),
        (65535, json!(null)),
        (49152, json!("x".repeat(129))),
        (49152, json!("x".repeat(1_000_000))),
    ] {
        let (st, v) = s
            .call(
                "POST",
                "/port",
                Some(&node),
                Some(json!({"port": port, "run_id": run, "label": label})),
            )
            .await;
        assert!(
            st == StatusCode::BAD_REQUEST || st == StatusCode::PAYLOAD_TOO_LARGE,
            "{port}: {st} {v}"
        );
    }
    let (st, v) = s
        .call(
            "POST",
            "/port",
            Some(&node),
            Some(json!({"port": 49152, "run_id": run, "label": "x".repeat(128)})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
}

/// Keys the built-in VPN keeps under `data_dir/vpn` are made private again at every start,
/// whatever loosened them in between; every node's client config is there.
#[tokio::test]
async fn vpn_keys_are_tightened_again_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("algonet-vpn-modes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = algonet::server::config::ServerConfig::parse(&format!(
        "listen: 127.0.0.1:0\ndata_dir: {}\nadmin: {{username: root, password: correct-horse-battery}}\n\
         vpn: {{subnet: 10.76.0.0/16, remote: 127.0.0.1}}\n",
        dir.display()
    ))
    .expect("config");
    drop(algonet::server::open(config.clone()).await.expect("open"));
    let vpn = dir.join("vpn");
    let loosen = |p: &std::path::Path, mode| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod")
    };
    loosen(&vpn, 0o755);
    for key in ["ca.key", "server.key", "tls-crypt.key"] {
        loosen(&vpn.join(key), 0o644);
    }
    drop(algonet::server::open(config).await.expect("open again"));
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode(&vpn), 0o700);
    for key in ["ca.key", "server.key", "tls-crypt.key"] {
        assert_eq!(mode(&vpn.join(key)), 0o600, "{key}");
    }
    let conf = std::fs::read_to_string(vpn.join("server.conf")).expect("server.conf");
    assert!(
        conf.contains("client-config-dir ccd\nccd-exclusive\n"),
        "{conf}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// With eduVPN and its subnet configured, a node registers no network, broadcast or gateway
/// address and none outside; the first node to hold an address keeps it.
#[tokio::test]
async fn eduvpn_addresses_are_checked_against_its_subnet() {
    let s = server(
        "eduvpn-subnet",
        "vpn_server: {url: 'http://127.0.0.1:9', portal_username: u, portal_userpass: p, \
         client_id: c, client_secret: s, redirect_url: 'http://localhost', subnet: 10.80.0.0/24}\n",
    )
    .await;
    let nodes = s.nodes(2).await;
    let patch = |i: usize, ip: &str| {
        let (id, token) = nodes[i].clone();
        let body = json!({"ip": ip});
        let s = &s;
        async move {
            s.call("PATCH", &format!("/node/{id}"), Some(&token), Some(body))
                .await
                .0
        }
    };
    for ip in ["10.80.0.0", "10.80.0.1", "10.80.0.255", "10.81.0.7"] {
        assert_eq!(patch(0, ip).await, StatusCode::BAD_REQUEST, "{ip}");
    }
    assert_eq!(patch(0, "10.80.0.7").await, StatusCode::OK);
    assert_eq!(
        patch(1, "10.80.0.7").await,
        StatusCode::CONFLICT,
        "held by the first"
    );
    assert_eq!(patch(1, "10.80.0.8").await, StatusCode::OK);
}

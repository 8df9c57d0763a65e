//! The server's API through real HTTP on 127.0.0.1 against a real SQLite file: callers, tokens,
//! the VPN surface with vantage6's exact address-flag semantics, and bad input.

use algonet_testkit as common;

use common::server::{server, Server};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A federation: three organizations in one collaboration, a node each, a parent task on org 1
/// and, created by the parent's algorithm, a child task on all three.
struct Fed {
    s: Server,
    admin: String,
    nodes: Vec<(i64, String)>,
    parent_container: String,
    child_containers: Vec<String>,
    child_runs: Vec<i64>,
    child_task: i64,
    parent_task: i64,
}

async fn federation(tag: &str) -> Fed {
    let s = server(tag, "").await;
    let admin = s
        .ok(
            "POST",
            "/token/user",
            None,
            json!({"username": "root", "password": "correct-horse-battery"}),
        )
        .await["access_token"]
        .as_str()
        .expect("token")
        .to_string();
    let mut orgs = Vec::new();
    for name in ["alpha", "beta", "gamma"] {
        orgs.push(
            s.ok("POST", "/organization", Some(&admin), json!({"name": name}))
                .await["id"]
                .as_i64()
                .expect("id"),
        );
    }
    let collab = s
        .ok(
            "POST",
            "/collaboration",
            Some(&admin),
            json!({"name": "c", "organization_ids": orgs}),
        )
        .await["id"]
        .as_i64()
        .expect("id");
    let mut nodes = Vec::new();
    for org in &orgs {
        let n = s
            .ok(
                "POST",
                "/node",
                Some(&admin),
                json!({"organization_id": org, "collaboration_id": collab}),
            )
            .await;
        let key = n["api_key"].as_str().expect("key");
        let login = s
            .ok("POST", "/token/node", None, json!({"api_key": key}))
            .await;
        nodes.push((
            n["id"].as_i64().expect("id"),
            login["access_token"].as_str().expect("token").to_string(),
        ));
    }
    let parent = s
        .ok("POST", "/task", Some(&admin), json!({"name": "vpn test", "image": "echo", "collaboration_id": collab, "organizations": [{"id": orgs[0]}]}))
        .await;
    let parent_task = parent["id"].as_i64().expect("id");
    let parent_container = s
        .ok(
            "POST",
            "/token/container",
            Some(&nodes[0].1),
            json!({"task_id": parent_task, "image": "echo"}),
        )
        .await["container_token"]
        .as_str()
        .expect("token")
        .to_string();
    let child = s
        .ok("POST", "/task", Some(&parent_container), json!({"name": "echo", "image": "echo", "organizations": orgs.iter().map(|o| json!({"id": o})).collect::<Vec<_>>()}))
        .await;
    assert_eq!(child["parent"]["id"].as_i64(), Some(parent_task));
    let child_task = child["id"].as_i64().expect("id");
    let child_runs: Vec<i64> = s
        .runs(&admin, child_task)
        .await
        .iter()
        .map(|r| r["id"].as_i64().expect("id"))
        .collect();
    let mut child_containers = Vec::new();
    for (_, token) in &nodes {
        let c = s
            .ok(
                "POST",
                "/token/container",
                Some(token),
                json!({"task_id": child_task, "image": "echo"}),
            )
            .await;
        child_containers.push(c["container_token"].as_str().expect("token").to_string());
    }
    Fed {
        s,
        admin,
        nodes,
        parent_container,
        child_containers,
        child_runs,
        child_task,
        parent_task,
    }
}

#[tokio::test]
async fn the_vpn_surface_answers_like_vantage6() {
    let f = federation("vpn").await;
    let s = &f.s;
    // Each node registers its address and the ports of its child run.
    for (i, (id, token)) in f.nodes.iter().enumerate() {
        let ip = format!("10.76.0.{}", 10 + i);
        let n = s
            .ok(
                "PATCH",
                &format!("/node/{id}"),
                Some(token),
                json!({"ip": ip}),
            )
            .await;
        assert_eq!(n["ip"], json!(ip));
        let p = s
            .ok(
                "POST",
                "/port",
                Some(token),
                json!({"port": 49152 + i, "run_id": f.child_runs[i], "label": "echo"}),
            )
            .await;
        assert_eq!(p["run"]["id"].as_i64(), Some(f.child_runs[i]));
        s.ok(
            "POST",
            "/port",
            Some(token),
            json!({"port": 50000 + i, "run_id": f.child_runs[i], "label": null}),
        )
        .await;
    }
    // Another node's run: refused, nothing written.
    let (st, _) = s
        .call(
            "POST",
            "/port",
            Some(&f.nodes[0].1),
            Some(json!({"port": 49990, "run_id": f.child_runs[1]})),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);

    let get = |token: &str, q: &str| {
        let (s, token, q) = (s, token.to_string(), q.to_string());
        async move {
            s.call(
                "GET",
                &format!("/vpn/algorithm/addresses{q}"),
                Some(&token),
                None,
            )
            .await
        }
    };
    let entries = |v: &Value| v["addresses"].as_array().expect("addresses").clone();

    // The parent finds its children's echo ports, with the nodes' addresses.
    let (st, v) = get(&f.parent_container, "?only_children=1&label=echo").await;
    assert_eq!(st, StatusCode::OK);
    let e = entries(&v);
    assert_eq!(e.len(), 3);
    for (i, entry) in e.iter().enumerate() {
        assert_eq!(entry["port"], json!(49152 + i));
        assert_eq!(entry["ip"], json!(format!("10.76.0.{}", 10 + i)));
        assert_eq!(entry["label"], json!("echo"));
        assert_eq!(entry["task_id"], json!(f.child_task));
        assert_eq!(entry["parent_id"], json!(f.parent_task));
    }
    assert_eq!(
        entries(&get(&f.parent_container, "?only_children=1").await.1).len(),
        6,
        "all labels"
    );
    // "=0" and "=false" also mean set; an empty value does not.
    assert_eq!(
        entries(&get(&f.parent_container, "?only_children=false").await.1).len(),
        6
    );
    assert_eq!(
        entries(&get(&f.parent_container, "?only_children=").await.1).len(),
        0,
        "own task has no ports"
    );
    assert_eq!(
        entries(&get(&f.parent_container, "?include_children=1").await.1).len(),
        6
    );
    // A child sees itself and its siblings, its parent (no ports), or a filtered view.
    let child0 = &f.child_containers[0];
    assert_eq!(entries(&get(child0, "").await.1).len(), 6);
    assert_eq!(entries(&get(child0, "?only_parent=1").await.1).len(), 0);
    assert_eq!(entries(&get(child0, "?include_parent=1").await.1).len(), 6);
    let own = entries(&get(child0, "?only_self=1").await.1);
    assert_eq!(own.len(), 2);
    assert!(own.iter().all(|e| e["ip"] == json!("10.76.0.10")));
    assert_eq!(
        entries(&get(child0, "?only_siblings=1&label=echo").await.1).len(),
        2
    );
    // Two only_ flags: 400 with vantage6's words.
    let (st, v) = get(child0, "?only_self=1&only_parent=1").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(
        v["msg"],
        json!("You can only specify one of the only_<...> parameters!")
    );

    // A node without an address: its entries have ip null.
    s.ok(
        "PATCH",
        &format!("/node/{}", f.nodes[2].0),
        Some(&f.nodes[2].1),
        json!({"clear_ip": true}),
    )
    .await;
    let e = entries(
        &get(&f.parent_container, "?only_children=1&label=echo")
            .await
            .1,
    );
    assert_eq!(e[2]["ip"], Value::Null);

    // Ports go with DELETE /port?run_id=, only for the node's own run.
    let path = format!("/port?run_id={}", f.child_runs[1]);
    let (st, _) = s.call("DELETE", &path, Some(&f.nodes[0].1), None).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, v) = s.call("DELETE", &path, Some(&f.nodes[1].1), None).await;
    assert_eq!(
        (st, v["msg"].clone()),
        (StatusCode::OK, json!("Ports removed from the database."))
    );
    assert_eq!(
        entries(&get(&f.parent_container, "?only_children=1").await.1).len(),
        4
    );

    // Without VPN configured: 501 with vantage6's words.
    let (st, v) = s.call("GET", "/vpn", Some(&f.nodes[0].1), None).await;
    assert_eq!(
        (st, v["msg"].clone()),
        (
            StatusCode::NOT_IMPLEMENTED,
            json!("This server does not support VPN")
        )
    );
}

#[tokio::test]
async fn every_endpoint_refuses_the_wrong_caller_with_401_or_403() {
    let f = federation("callers").await;
    let s = &f.s;
    let node = f.nodes[0].1.as_str();
    let container = f.child_containers[0].as_str();
    let cases: Vec<(&str, String, Option<&str>, Value, StatusCode)> = vec![
        (
            "GET",
            "/vpn/algorithm/addresses".into(),
            None,
            Value::Null,
            StatusCode::UNAUTHORIZED,
        ),
        (
            "GET",
            "/vpn/algorithm/addresses".into(),
            Some("not.a.token"),
            Value::Null,
            StatusCode::UNAUTHORIZED,
        ),
        (
            "GET",
            "/vpn/algorithm/addresses".into(),
            Some(node),
            Value::Null,
            StatusCode::FORBIDDEN,
        ),
        (
            "POST",
            "/organization".into(),
            Some(node),
            json!({"name": "x"}),
            StatusCode::FORBIDDEN,
        ),
        (
            "POST",
            "/organization".into(),
            Some(container),
            json!({"name": "x"}),
            StatusCode::FORBIDDEN,
        ),
        (
            "POST",
            "/node".into(),
            Some(node),
            json!({"organization_id": 1, "collaboration_id": 1}),
            StatusCode::FORBIDDEN,
        ),
        (
            "PATCH",
            format!("/node/{}", f.nodes[1].0),
            Some(node),
            json!({"ip": "10.76.0.9"}),
            StatusCode::FORBIDDEN,
        ),
        (
            "PATCH",
            format!("/node/{}", f.nodes[1].0),
            Some(container),
            json!({"ip": "10.76.0.9"}),
            StatusCode::FORBIDDEN,
        ),
        (
            "POST",
            "/port".into(),
            Some(container),
            json!({"port": 1, "run_id": f.child_runs[0]}),
            StatusCode::FORBIDDEN,
        ),
        (
            "POST",
            "/port".into(),
            Some(&f.admin),
            json!({"port": 1, "run_id": f.child_runs[0]}),
            StatusCode::FORBIDDEN,
        ),
        (
            "POST",
            "/task".into(),
            Some(node),
            json!({"name": "t", "image": "i", "organizations": [{"id": 1}]}),
            StatusCode::FORBIDDEN,
        ),
        (
            "POST",
            "/token/container".into(),
            Some(container),
            json!({"task_id": f.child_task, "image": "echo"}),
            StatusCode::FORBIDDEN,
        ),
        (
            "GET",
            "/vpn".into(),
            Some(container),
            Value::Null,
            StatusCode::FORBIDDEN,
        ),
        (
            "POST",
            "/token/node".into(),
            None,
            json!({"api_key": "wrong"}),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "POST",
            "/token/user".into(),
            None,
            json!({"username": "root", "password": "wrong"}),
            StatusCode::UNAUTHORIZED,
        ),
    ];
    for (method, path, token, body, want) in cases {
        let body = (!body.is_null()).then_some(body);
        let (st, v) = s.call(method, &path, token, body).await;
        assert_eq!(st, want, "{method} {path}: {v}");
        assert!(
            v["msg"].is_string(),
            "{method} {path}: errors carry a msg: {v}"
        );
    }
    // A container token for another image, or a task of another collaboration, is refused.
    let (st, _) = s
        .call(
            "POST",
            "/token/container",
            Some(node),
            Some(json!({"task_id": f.child_task, "image": "evil"})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let _ = f.parent_container;
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_writes_nothing() {
    let f = federation("input").await;
    let s = &f.s;
    let (node_id, node) = (f.nodes[0].0, f.nodes[0].1.as_str());
    let raw = |body: &'static str| {
        let url = format!("{}/port", s.base);
        s.http
            .post(url)
            .bearer_auth(node)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for body in [
        "{",
        "[]",
        "{\"port\": \"x\", \"run_id\": 1}",
        "{\"port\": 70000, \"run_id\": 1}",
        "{\"run_id\": 1}",
    ] {
        let r = raw(body).await.expect("send");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body}");
        let v: Value = r.json().await.expect("json error");
        assert!(v["msg"].is_string());
    }
    let (st, _) = s
        .call(
            "POST",
            "/port",
            Some(node),
            Some(json!({"port": 0, "run_id": f.child_runs[0]})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = s
        .call(
            "POST",
            "/port",
            Some(node),
            Some(json!({"port": 49991, "run_id": 999_999})),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, v) = s
        .call(
            "PATCH",
            &format!("/node/{node_id}"),
            Some(node),
            Some(json!({"ip": "not-an-ip"})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    let (st, _) = s
        .call(
            "PATCH",
            &format!("/node/{node_id}"),
            Some(node),
            Some(json!({"ip": "10.76.0.1", "clear_ip": true})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let big = "x".repeat(2 << 20);
    let (st, _) = s
        .call(
            "POST",
            "/port",
            Some(node),
            Some(json!({"port": 5, "run_id": f.child_runs[0], "label": big})),
        )
        .await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    // Nothing of the above was written.
    let (_, v) = s
        .call(
            "GET",
            "/vpn/algorithm/addresses?include_children=1",
            Some(&f.parent_container),
            None,
        )
        .await;
    assert_eq!(v["addresses"], json!([]));
    let (st, _) = s
        .call(
            "POST",
            "/organization",
            Some(&f.admin),
            Some(json!({"name": "alpha"})),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT);
}

#[tokio::test]
async fn nodes_claim_runs_once_and_report_them() {
    let f = federation("runs").await;
    let s = &f.s;
    let (_, node1) = &f.nodes[1];
    // Node 1 sees its pending child run only.
    let (st, v) = s.call("GET", "/run", Some(node1), None).await;
    assert_eq!(st, StatusCode::OK);
    let runs = v["data"].as_array().expect("data").clone();
    assert_eq!(runs.len(), 1);
    let run = runs[0]["id"].as_i64().expect("id");
    assert_eq!(run, f.child_runs[1]);
    assert_eq!(runs[0]["task"]["image"], json!("echo"));
    // Many claims at once: exactly one wins.
    let claim = format!("/run/{run}/claim");
    let claims = (0..8).map(|_| s.call("POST", &claim, Some(node1), None));
    let results = futures_util::future::join_all(claims).await;
    let won = results
        .iter()
        .filter(|(st, _)| *st == StatusCode::OK)
        .count();
    let lost = results
        .iter()
        .filter(|(st, _)| *st == StatusCode::CONFLICT)
        .count();
    assert_eq!((won, lost), (1, 7), "{results:?}");
    // Another node cannot claim or report it.
    let (st, _) = s
        .call(
            "POST",
            &format!("/run/{run}/claim"),
            Some(&f.nodes[0].1),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = s
        .call(
            "PATCH",
            &format!("/run/{run}"),
            Some(&f.nodes[0].1),
            Some(json!({"status": "completed"})),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    // Reporting: a bad status is refused; the result reaches the parent algorithm.
    let (st, _) = s
        .call(
            "PATCH",
            &format!("/run/{run}"),
            Some(node1),
            Some(json!({"status": "great"})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let r = s
        .ok(
            "PATCH",
            &format!("/run/{run}"),
            Some(node1),
            json!({"status": "completed", "result": "{\"ok\": true}", "log": "done"}),
        )
        .await;
    assert_eq!(r["status"], json!("completed"));
    // The parent algorithm reads the run's log with its runs and its result with the results.
    let find = |v: &Value| {
        v["data"]
            .as_array()
            .expect("data")
            .iter()
            .find(|r| r["id"] == json!(run))
            .cloned()
            .expect("run")
    };
    let (f, s) = (&f, s);
    let get = |what: &str| {
        let path = format!("/{what}?task_id={}", f.child_task);
        async move {
            s.call("GET", &path, Some(&f.parent_container), None)
                .await
                .1
        }
    };
    let (runs, results) = (get("run").await, get("result").await);
    assert_eq!(
        (find(&results)["result"].clone(), find(&runs)["log"].clone()),
        (json!("{\"ok\": true}"), json!("done"))
    );
    // A finished run stays finished: its node cannot set it back or rewrite its result.
    let (st, v) = s
        .call(
            "PATCH",
            &format!("/run/{run}"),
            Some(node1),
            Some(json!({"status": "active", "result": "forged"})),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    let (runs, results) = (get("run").await, get("result").await);
    assert_eq!(
        (
            find(&runs)["status"].clone(),
            find(&results)["result"].clone()
        ),
        (json!("completed"), json!("{\"ok\": true}"))
    );
    // When every run of the task has finished, no more container tokens are given for it.
    for (i, (_, token)) in f.nodes.iter().enumerate() {
        if f.child_runs[i] == run {
            continue;
        }
        s.ok(
            "PATCH",
            &format!("/run/{}", f.child_runs[i]),
            Some(token),
            json!({"status": "completed"}),
        )
        .await;
    }
    let (st, v) = s
        .call(
            "POST",
            "/token/container",
            Some(node1),
            Some(json!({"task_id": f.child_task, "image": "echo"})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
}

#[tokio::test]
async fn a_deleted_node_loses_its_token() {
    let f = federation("delete").await;
    let s = &f.s;
    let (id, token) = &f.nodes[2];
    let (st, _) = s
        .call("DELETE", &format!("/node/{id}"), Some(&f.nodes[0].1), None)
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, v) = s
        .call("DELETE", &format!("/node/{id}"), Some(&f.admin), None)
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, _) = s.call("GET", "/run", Some(token), None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _) = s
        .call("DELETE", &format!("/node/{id}"), Some(&f.admin), None)
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn concurrent_writers_all_succeed() {
    // Deferred SQLite transactions failed with "database is locked" when two wrote at once.
    let f = federation("writers").await;
    let s = &f.s;
    // Organization 2: alpha, the first after the administrator's own.
    let body = json!({"name": "sub", "image": "echo", "organizations": [{"id": 2, "input": ""}]});
    let tasks = (0..16).map(|_| {
        s.call(
            "POST",
            "/task",
            Some(&f.parent_container),
            Some(body.clone()),
        )
    });
    let results = futures_util::future::join_all(tasks).await;
    assert!(
        results.iter().all(|(st, _)| *st == StatusCode::CREATED),
        "{results:?}"
    );
}

/// The identity a container token names, re-signed with the server's own secret as if it had
/// been issued `age_secs` ago.
fn reissued(s: &Server, token: &str, age_secs: u64) -> String {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64");
    let claims: Value = serde_json::from_slice(&bytes).expect("claims");
    let identity: algonet::api::ContainerIdentity =
        serde_json::from_value(claims["sub"].clone()).expect("identity");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    s.state.signer.issue(
        &algonet::server::auth::Claimed::Container(identity),
        None,
        algonet::server::auth::Use::Access,
        now - age_secs,
        None,
    )
}

/// A container token has no fixed expiry (a run of days keeps its API access) but is good only
/// while its node exists and its run is unfinished; an algorithm creates subtasks only with its
/// own image.
#[tokio::test]
async fn container_tokens_live_and_die_with_their_run() {
    let f = federation("container-life").await;
    let s = &f.s;
    let lookup = |token: String| async move {
        s.call("GET", "/vpn/algorithm/addresses", Some(&token), None)
            .await
            .0
    };
    let two_days_old = reissued(s, &f.child_containers[1], 2 * 86400);
    assert_eq!(lookup(two_days_old.clone()).await, StatusCode::OK);
    assert_eq!(lookup(f.child_containers[1].clone()).await, StatusCode::OK);

    // Subtasks: only with the algorithm's own image.
    let subtask =
        |image: &str| json!({"name": "sub", "image": image, "organizations": [{"id": 2}]});
    let (st, v) = s
        .call(
            "POST",
            "/task",
            Some(&f.child_containers[0]),
            Some(subtask("other")),
        )
        .await;
    // 401, as vantage6 refuses it (tests/python/differential.py compares).
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
    let (st, v) = s
        .call(
            "POST",
            "/task",
            Some(&f.child_containers[0]),
            Some(subtask("echo")),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");

    // The run ends: its token, however old, is refused; the other runs' are not.
    s.ok(
        "PATCH",
        &format!("/run/{}", f.child_runs[1]),
        Some(&f.nodes[1].1),
        json!({"status": "completed"}),
    )
    .await;
    assert_eq!(
        lookup(f.child_containers[1].clone()).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(lookup(two_days_old).await, StatusCode::UNAUTHORIZED);
    let (st, _) = s
        .call(
            "POST",
            "/task",
            Some(&f.child_containers[1]),
            Some(subtask("echo")),
        )
        .await;
    assert_eq!(
        st,
        StatusCode::UNAUTHORIZED,
        "a finished run creates no subtasks"
    );
    assert_eq!(lookup(f.child_containers[2].clone()).await, StatusCode::OK);

    // The node goes: its containers' tokens go with it.
    s.ok(
        "DELETE",
        &format!("/node/{}", f.nodes[2].0),
        Some(&f.admin),
        json!(null),
    )
    .await;
    assert_eq!(
        lookup(f.child_containers[2].clone()).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(lookup(f.parent_container.clone()).await, StatusCode::OK);
}

/// With the built-in VPN a node registers only the address its client config gives it.
#[tokio::test]
async fn a_node_registers_only_its_own_vpn_address() {
    let s = server(
        "node-ip",
        "vpn: {subnet: 10.76.0.0/16, remote: 127.0.0.1}\n",
    )
    .await;
    let nodes = s.nodes(2).await;
    let patch = |i: usize, ip: &str| {
        let (id, token) = nodes[i].clone();
        let s = &s;
        let ip = ip.to_string();
        async move {
            s.call(
                "PATCH",
                &format!("/node/{id}"),
                Some(&token),
                Some(json!({"ip": ip})),
            )
            .await
        }
    };
    // With the built-in VPN each node's address is the one its client config fixes: host
    // id + 1 of the subnet. Every other address is refused, whoever holds it.
    let own = |i: usize| format!("10.76.0.{}", nodes[i].0 + 1);
    for ip in [
        "10.77.0.5",
        "10.76.0.0",
        "10.76.0.1",
        "10.76.255.255",
        own(1).as_str(),
        "10.76.0.200",
    ] {
        let (st, v) = patch(0, ip).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{ip}: {v}");
        assert!(
            v["msg"].as_str().is_some_and(|m| m.contains(&own(0))),
            "{v}"
        );
    }
    assert_eq!(patch(0, &own(0)).await.0, StatusCode::OK);
    assert_eq!(patch(0, &own(0)).await.0, StatusCode::OK, "its own again");
    assert_eq!(patch(1, &own(1)).await.0, StatusCode::OK);
    // A node's profile comes with its client config, which fixes that address at the OpenVPN
    // server; a deleted node's goes, and the OpenVPN server admits it no more.
    let (id, token) = nodes[0].clone();
    let (st, _) = s.call("GET", "/vpn", Some(&token), None).await;
    assert_eq!(st, StatusCode::OK);
    let ccd = s.dir.join(format!("vpn/ccd/algonet-node-{id}"));
    assert_eq!(
        std::fs::read_to_string(&ccd).expect("client config"),
        format!("ifconfig-push {} 255.255.0.0\n", own(0))
    );
    let admin = s.admin().await;
    s.ok("DELETE", &format!("/node/{id}"), Some(&admin), json!(null))
        .await;
    assert!(!ccd.exists(), "a deleted node's client config");
}

/// A task names each organization once and at most a thousand; a failing database is reported
/// as such, without its internals.
#[tokio::test]
async fn task_lists_are_bounded_and_errors_hide_the_database() {
    let f = federation("task-bounds").await;
    let s = &f.s;
    let task = |orgs: Vec<i64>| json!({"name": "t", "image": "echo", "organizations": orgs.iter().map(|o| json!({"id": o})).collect::<Vec<_>>()});
    let (st, v) = s
        .call(
            "POST",
            "/task",
            Some(&f.parent_container),
            // Organizations 2 and 3: the first two after the administrator's own.
            Some(task(vec![2, 2, 3, 2])),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let id = v["id"].as_i64().expect("id");
    assert_eq!(
        s.runs(&f.admin, id).await.len(),
        2,
        "one run per organization: {v}"
    );
    let many: Vec<i64> = (1..=1001).collect();
    let (st, v) = s
        .call("POST", "/task", Some(&f.parent_container), Some(task(many)))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["msg"]
            .as_str()
            .is_some_and(|m| m.contains("at most 1000")),
        "{v}"
    );

    // Break the database under the server: the answer says it failed, not how.
    sqlx::query("DROP TABLE port")
        .execute(&mut *s.state.store.connection().await.expect("a connection"))
        .await
        .expect("drop");
    let (st, v) = s
        .call(
            "POST",
            "/port",
            Some(&f.nodes[0].1),
            Some(json!({"port": 49152, "run_id": f.child_runs[0]})),
        )
        .await;
    assert_eq!(st, StatusCode::INTERNAL_SERVER_ERROR, "{v}");
    let msg = v["msg"].as_str().unwrap_or_default();
    assert!(
        msg.contains("database") && !msg.contains("port") && !msg.contains("table"),
        "{v}"
    );
}

/// A data directory made by hand (or by an older version) is tightened at start: the folder to
/// 0700, the database to 0600. The token key an older version kept in `token-secret` moves into
/// the database: tokens it issued stay good.
#[tokio::test]
async fn the_data_directory_is_the_servers_alone() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("algonet-data-modes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::write(dir.join("token-secret"), "an older version's key").expect("key");
    let older = algonet::server::auth::Signer::new(b"an older version's key".to_vec());
    let claimed = algonet::server::auth::Claimed::User(1);
    let token = |signer: &algonet::server::auth::Signer| {
        signer.issue(
            &claimed,
            None,
            algonet::server::auth::Use::Access,
            1_796_000_000,
            Some(60),
        )
    };
    let config = algonet::server::config::ServerConfig::parse(&format!(
        "listen: 127.0.0.1:0\ndata_dir: {}\nadmin: {{username: root, password: correct-horse-battery}}\n",
        dir.display()
    ))
    .expect("config");
    let state = algonet::server::open(config.clone()).await.expect("open");
    assert_eq!(token(&state.signer), token(&older));
    drop(state);
    std::fs::remove_file(dir.join("token-secret")).expect("remove the old key");
    let db = dir.join("algonet.sqlite");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let state = algonet::server::open(config).await.expect("open again");
    assert_eq!(
        token(&state.signer),
        token(&older),
        "the key is the database's"
    );
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&db), 0o600);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Guessing a password is slowed per name and address: after three failures a try from that
/// address answers 429 with Retry-After, even with the right password, while the same account
/// from another address logs in at once; each failure is in the log with name and address.
#[tokio::test]
async fn password_guessing_is_throttled() {
    let s = server("throttle", "").await;
    let login = |password: &str, from: [u8; 4]| {
        let body = json!({"username": "root", "password": password});
        let client = reqwest::Client::builder()
            .local_address(std::net::IpAddr::from(from))
            .build()
            .expect("client");
        let url = format!("{}/token/user", s.base);
        async move { client.post(url).json(&body).send().await }
    };
    let attacker = [127, 0, 0, 1];
    for _ in 0..algonet::server::throttle::FREE {
        let r = login("wrong-guess-here", attacker).await.expect("answer");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = login("correct-horse-battery", attacker)
        .await
        .expect("answer");
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=2).contains(&wait), "{wait}");
    let v: Value = r.json().await.expect("json");
    assert!(v["msg"].is_string(), "{v}");
    let r = login("correct-horse-battery", [127, 0, 0, 2])
        .await
        .expect("answer");
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "the administrator from another address is not locked out"
    );
}

/// Asking for VPN profiles in a loop does not grow the CRL without bound: a node is issued at
/// most ten certificates an hour, then 429 with Retry-After.
#[tokio::test]
async fn vpn_profiles_in_a_loop_leave_the_crl_bounded() {
    let s = server(
        "crl-bound",
        "vpn: {subnet: 10.76.0.0/16, remote: 127.0.0.1}\n",
    )
    .await;
    let (_, token) = s.lone_node().await;
    let crl = s.dir.join("vpn").join("crl.pem");
    let get = || {
        s.http
            .get(format!("{}/vpn", s.base))
            .bearer_auth(&token)
            .send()
    };
    for i in 0..10 {
        let r = get().await.expect("answer");
        assert_eq!(r.status(), StatusCode::OK, "profile {i}");
    }
    let size = std::fs::metadata(&crl).expect("crl").len();
    for _ in 0..5 {
        let r = get().await.expect("answer");
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        let wait: u64 = r
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .expect("Retry-After");
        assert!((1..=3600).contains(&wait), "{wait}");
    }
    assert_eq!(
        std::fs::metadata(&crl).expect("crl").len(),
        size,
        "the CRL grew"
    );
}

/// What the server does not serve answers in vantage6's JSON too: an unknown route 404, a known
/// route with the wrong method 405, a path parameter that is not an id 400, each with a `msg`.
#[tokio::test]
async fn unknown_routes_and_bad_paths_answer_json() {
    let s = server("unknown-routes", "").await;
    let admin = s.admin().await;
    for (method, path, want) in [
        ("GET", "/no/such/thing", StatusCode::NOT_FOUND),
        ("GET", "/organization/1/nonsense", StatusCode::NOT_FOUND),
        ("DELETE", "/task", StatusCode::METHOD_NOT_ALLOWED),
        ("GET", "/collaboration/abc", StatusCode::BAD_REQUEST),
        ("PATCH", "/node/abc", StatusCode::BAD_REQUEST),
    ] {
        let (st, v) = s.call(method, path, Some(&admin), Some(json!({}))).await;
        assert_eq!(st, want, "{method} {path}: {v}");
        assert!(v["msg"].is_string(), "{method} {path}: {v}");
    }
}

/// Users and nodes get refresh tokens as vantage6's clients expect (`refresh_url`); a refresh
/// token buys a new pair and nothing else, an access token is no refresh token, and a deleted
/// node's refresh token buys nothing.
#[tokio::test]
async fn refresh_tokens_renew_and_do_nothing_else() {
    let f = federation("refresh").await;
    let s = &f.s;
    let login = s.login().await;
    assert_eq!(login["refresh_url"], json!("/api/token/refresh"));
    assert_eq!(login["user_url"], json!("/api/user/1"));
    let refresh = login["refresh_token"].as_str().expect("refresh token");
    let (st, renewed) = s.call("POST", "/token/refresh", Some(refresh), None).await;
    assert_eq!(st, StatusCode::OK, "{renewed}");
    let access = renewed["access_token"].as_str().expect("access token");
    let (st, me) = s.call("GET", "/user/1", Some(access), None).await;
    assert_eq!((st, &me["organization"]["id"]), (StatusCode::OK, &json!(1)));
    let (st, _) = s.call("GET", "/user/1", Some(refresh), None).await;
    assert_eq!(
        st,
        StatusCode::UNAUTHORIZED,
        "a refresh token is no access token"
    );
    let (st, _) = s.call("POST", "/token/refresh", Some(access), None).await;
    assert_eq!(
        st,
        StatusCode::UNAUTHORIZED,
        "an access token is no refresh token"
    );
    let (st, _) = s.call("POST", "/token/refresh", None, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);

    // A node's refresh token dies with the node.
    let admin = &f.admin;
    let body = json!({"organization_id": 2, "collaboration_id": 1, "name": "spare"});
    let (st, spare) = s
        .call(
            "DELETE",
            &format!("/node/{}", f.nodes[0].0),
            Some(admin),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{spare}");
    let node = s.ok("POST", "/node", Some(admin), body).await;
    let login = s
        .ok(
            "POST",
            "/token/node",
            None,
            json!({"api_key": node["api_key"]}),
        )
        .await;
    assert_eq!(
        login["node_url"],
        json!(format!("/api/node/{}", node["id"]))
    );
    let refresh = login["refresh_token"].as_str().expect("refresh token");
    let (st, _) = s.call("POST", "/token/refresh", Some(refresh), None).await;
    assert_eq!(st, StatusCode::OK);
    s.ok(
        "DELETE",
        &format!("/node/{}", node["id"]),
        Some(admin),
        json!(null),
    )
    .await;
    let (st, _) = s.call("POST", "/token/refresh", Some(refresh), None).await;
    assert_eq!(
        st,
        StatusCode::UNAUTHORIZED,
        "a deleted node's refresh token"
    );
}

/// Lists are pages as vantage6's: `page` and `per_page`, links to the others carrying the
/// request's own filters; nonsense paging is a 400, not a panic or an empty 200.
#[tokio::test]
async fn lists_page_as_vantage6s_do() {
    let s = server("paging", "").await;
    let admin = s.admin().await;
    for i in 0..11 {
        s.ok(
            "POST",
            "/organization",
            Some(&admin),
            json!({"name": format!("o{i}")}),
        )
        .await;
    }
    // 12 organizations with the administrator's: pages of 5 are 5, 5 and 2.
    let page = s
        .ok(
            "GET",
            "/organization?per_page=5&page=3",
            Some(&admin),
            json!(null),
        )
        .await;
    let ids: Vec<i64> = page["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|o| o["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(ids, [11, 12]);
    assert_eq!(
        page["links"],
        json!({
            "first": "/api/organization?per_page=5&page=1",
            "previous": "/api/organization?per_page=5&page=2",
            "self": "/api/organization?per_page=5&page=3",
            "last": "/api/organization?per_page=5&page=3",
        })
    );
    let past = s
        .ok("GET", "/organization?page=9", Some(&admin), json!(null))
        .await;
    assert_eq!(past["data"], json!([]));
    for bad in [
        "page=0",
        "per_page=0",
        "page=-1",
        "per_page=abc",
        "page=99999999999",
    ] {
        let (st, v) = s
            .call("GET", &format!("/organization?{bad}"), Some(&admin), None)
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {v}");
        assert!(v["msg"].is_string(), "{bad}: {v}");
    }
}

/// `GET /vpn/peers`: each open run of the node with its task family's node addresses and public
/// ports (the parent's node included, another collaboration's never), and a long-poll that a
/// change wakes.
#[tokio::test]
async fn a_runs_peers_are_its_task_familys_and_a_change_wakes_the_wait() {
    let f = federation("peers").await;
    let s = &f.s;
    let ips = ["10.76.0.11", "10.76.0.12", "10.76.0.13"];
    for ((id, token), ip) in f.nodes.iter().zip(ips) {
        s.ok(
            "PATCH",
            &format!("/node/{id}"),
            Some(token),
            json!({"ip": ip}),
        )
        .await;
    }
    // Another collaboration, with a node and a task of its own, on the same VPN.
    let org = s
        .ok(
            "POST",
            "/organization",
            Some(&f.admin),
            json!({"name": "delta"}),
        )
        .await["id"]
        .clone();
    let col = json!({"name": "d", "organization_ids": [org]});
    let col = s.ok("POST", "/collaboration", Some(&f.admin), col).await["id"].clone();
    let body = json!({"organization_id": org, "collaboration_id": col});
    let node = s.ok("POST", "/node", Some(&f.admin), body).await;
    let login = json!({"api_key": node["api_key"]});
    let other = s.ok("POST", "/token/node", None, login).await["access_token"]
        .as_str()
        .expect("token")
        .to_string();
    let other_id = node["id"].as_i64().expect("id");
    s.ok(
        "PATCH",
        &format!("/node/{other_id}"),
        Some(&other),
        json!({"ip": "10.76.0.99"}),
    )
    .await;
    let node_b = &f.nodes[1].1;
    let (status, _) = s
        .call("GET", "/vpn/peers", Some(&f.child_containers[1]), None)
        .await;
    assert!(
        status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN,
        "a container may not ask: {status}"
    );
    let peers = s.ok("GET", "/vpn/peers", Some(node_b), json!(null)).await;
    let runs = peers["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 1, "{peers}");
    let run = &runs[0];
    assert_eq!(run["run_id"].as_i64(), Some(f.child_runs[1]));
    assert_eq!(run["root_task_id"].as_i64(), Some(f.parent_task));
    assert_eq!(run["addresses"], json!(ips), "{peers}");
    assert_eq!(run["ports"], json!([]));
    assert_eq!(
        peers["collaboration"],
        json!(ips),
        "never the other collaboration's"
    );

    // A port registered by node c for its child run wakes node b's wait.
    let etag = peers["etag"].as_str().expect("etag").to_string();
    let wait = {
        let (base, http, token) = (s.base.clone(), s.http.clone(), node_b.clone());
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let answer: Value = http
                .get(format!("{base}/vpn/peers?known={etag}"))
                .bearer_auth(token)
                .send()
                .await
                .expect("long-poll")
                .json()
                .await
                .expect("json");
            (answer, started.elapsed())
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    s.ok(
        "POST",
        "/port",
        Some(&f.nodes[2].1),
        json!({"port": 49152, "run_id": f.child_runs[2], "label": "echo"}),
    )
    .await;
    let (answer, waited) = wait.await.expect("the wait");
    assert!(
        waited < std::time::Duration::from_secs(10),
        "woken by the change, not by the 20 s wait: {waited:?}"
    );
    eprintln!("the long-poll answered {waited:?} after it started (the change came at 300 ms)");
    assert_eq!(
        answer["runs"][0]["ports"],
        json!([{"ip": "10.76.0.13", "port": 49152}]),
        "{answer}"
    );
    assert_ne!(answer["etag"], peers["etag"]);
    // The same answer known: the wait ends only at its limit; a node that knows nothing gets
    // the answer at once.
    let (status, again) = s.call("GET", "/vpn/peers", Some(&other), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["collaboration"], json!(["10.76.0.99"]));
    assert_eq!(again["runs"], json!([]));
}

/// A task keeps the databases it asks for, as vantage6 does (a label alone or objects with
/// parameters), shows them in `GET /task`, and names them in its algorithms' tokens; a subtask
/// keeps its own. Bad lists are refused.
#[tokio::test]
async fn tasks_keep_their_databases() {
    let f = federation("task-databases").await;
    let s = &f.s;
    let body = json!({"name": "d", "image": "echo", "collaboration_id": 1,
        "organizations": [{"id": 2}],
        "databases": [{"label": "default", "query": "SELECT 1"}, {"label": "extra"}]});
    let t = s.ok("POST", "/task", Some(&f.admin), body).await;
    assert_eq!(
        t["databases"],
        json!([{"label": "default", "parameters": "{\"query\":\"SELECT 1\"}"},
               {"label": "extra", "parameters": "{}"}])
    );
    let got = s
        .ok(
            "GET",
            &format!("/task/{}", t["id"]),
            Some(&f.admin),
            json!(null),
        )
        .await;
    assert_eq!(got["databases"], t["databases"]);
    let one = s
        .ok(
            "POST",
            "/task",
            Some(&f.admin),
            json!({"name": "d", "image": "echo",
            "collaboration_id": 1, "organizations": [{"id": 2}], "databases": "default"}),
        )
        .await;
    assert_eq!(
        one["databases"],
        json!([{"label": "default", "parameters": "{}"}])
    );
    // A subtask made by an algorithm keeps the databases it names.
    let sub = s
        .ok(
            "POST",
            "/task",
            Some(&f.parent_container),
            json!({"name": "s", "image": "echo",
            "organizations": [{"id": 3}], "databases": [{"label": "other"}]}),
        )
        .await;
    assert_eq!(
        sub["databases"],
        json!([{"label": "other", "parameters": "{}"}])
    );
    for bad in [
        json!(5),
        json!([{"query": "no label"}]),
        json!(["default"]),
        json!([{"label": ""}]),
        json!([{"label": "x".repeat(129)}]),
        json!((0..33)
            .map(|i| json!({"label": format!("l{i}")}))
            .collect::<Vec<_>>()),
    ] {
        let (st, v) = s
            .call(
                "POST",
                "/task",
                Some(&f.admin),
                Some(json!({"name": "d", "image": "echo",
                "collaboration_id": 1, "organizations": [{"id": 2}], "databases": bad})),
            )
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
        assert!(
            v["msg"].as_str().is_some_and(|m| m.contains("databases")),
            "{v}"
        );
    }
}

/// `POST /kill/task` ends every unfinished run of the task and of the tasks below it as
/// `killed by user`; a finished task answers 400, an absent one 404; `POST /kill/node/tasks`
/// ends a node's. Only administrators may.
#[tokio::test]
async fn kills_end_runs_as_killed_by_user() {
    let f = federation("kills").await;
    let s = &f.s;
    let (st, _) = s
        .call(
            "POST",
            "/kill/task",
            Some(&f.nodes[0].1),
            Some(json!({"id": f.parent_task})),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "a node may not");
    let (st, v) = s
        .call(
            "POST",
            "/kill/task",
            Some(&f.admin),
            Some(json!({"id": f.parent_task})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    for task in [f.parent_task, f.child_task] {
        for r in s.runs(&f.admin, task).await {
            assert_eq!(r["status"], json!("killed by user"), "{r}");
            assert!(r["finished_at"].is_string(), "{r}");
        }
    }
    let (st, _) = s
        .call(
            "POST",
            "/kill/task",
            Some(&f.admin),
            Some(json!({"id": f.parent_task})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "already finished");
    let (st, _) = s
        .call(
            "POST",
            "/kill/task",
            Some(&f.admin),
            Some(json!({"id": 99999})),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    // A node's runs.
    let t = s
        .ok(
            "POST",
            "/task",
            Some(&f.admin),
            json!({"name": "n", "image": "echo",
            "collaboration_id": 1, "organizations": [{"id": 2}, {"id": 3}]}),
        )
        .await;
    let (st, v) = s
        .call(
            "POST",
            "/kill/node/tasks",
            Some(&f.admin),
            Some(json!({"id": f.nodes[0].0})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let statuses: Vec<Value> = s
        .runs(&f.admin, t["id"].as_i64().expect("id"))
        .await
        .iter()
        .map(|r| r["status"].clone())
        .collect();
    assert_eq!(statuses, [json!("killed by user"), json!("pending")]);
    let (st, _) = s
        .call(
            "POST",
            "/kill/node/tasks",
            Some(&f.admin),
            Some(json!({"id": 99999})),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

/// A node is online while it calls the server (algonet's nodes poll every half second), as
/// vantage6 shows it: `status` and `last_seen` on the node, `?status=online|offline` on the list.
#[tokio::test]
async fn nodes_are_online_while_they_call() {
    let s = server("online", "").await;
    let admin = s.admin().await;
    let nodes = s.nodes(2).await;
    let (id, token) = &nodes[0];
    let before = s
        .ok("GET", &format!("/node/{id}"), Some(&admin), json!(null))
        .await;
    assert_eq!(
        (&before["status"], &before["last_seen"]),
        (&json!("offline"), &json!(null)),
        "{before}"
    );
    s.ok("GET", "/run", Some(token), json!(null)).await;
    let after = s
        .ok("GET", &format!("/node/{id}"), Some(&admin), json!(null))
        .await;
    assert_eq!(after["status"], json!("online"), "{after}");
    assert!(
        after["last_seen"]
            .as_str()
            .is_some_and(|t| t.len() == 19 && t.as_bytes()[10] == b'T'),
        "{after}"
    );
    let ids = |v: Value| -> Vec<i64> {
        v["data"]
            .as_array()
            .expect("list")
            .iter()
            .map(|n| n["id"].as_i64().expect("id"))
            .collect()
    };
    assert_eq!(
        ids(s
            .ok("GET", "/node?status=online", Some(&admin), json!(null))
            .await),
        [*id]
    );
    assert_eq!(
        ids(s
            .ok("GET", "/node?status=offline", Some(&admin), json!(null))
            .await),
        [nodes[1].0]
    );
    let (st, _) = s
        .call("GET", "/node?status=sleeping", Some(&admin), None)
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}

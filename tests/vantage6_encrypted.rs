//! An encrypted collaboration as an algorithm sees it through the node's proxy: vantage6's own
//! `AlgorithmClient` (4.14, from PyPI) creates a subtask for two organizations, and the server
//! gets each input encrypted for its organization; the subtask's results, encrypted for the
//! algorithm's organization, reach the client decrypted. Then what must fail does: a result
//! encrypted for another key, an organization without a public key.

use std::sync::Arc;

use algonet::crypto::{PrivateKey, PublicKey};
use algonet_testkit as common;
use common::server::{server, Server};
use serde_json::{json, Value};

/// Organizations with a node each in one encrypted collaboration: (organization, node token).
async fn encrypted_federation(s: &Server, n: usize) -> Vec<(i64, String)> {
    let admin = s.admin().await;
    let mut orgs = Vec::new();
    for i in 0..n {
        let body = json!({"name": format!("o{i}")});
        orgs.push(
            s.ok("POST", "/organization", Some(&admin), body).await["id"]
                .as_i64()
                .expect("id"),
        );
    }
    let col = json!({"name": "sealed", "organization_ids": orgs, "encrypted": true});
    let col = s.ok("POST", "/collaboration", Some(&admin), col).await;
    assert_eq!(col["encrypted"], json!(true));
    let mut nodes = Vec::new();
    for org in orgs {
        let body = json!({"organization_id": org, "collaboration_id": col["id"]});
        let node = s.ok("POST", "/node", Some(&admin), body).await;
        let login = json!({"api_key": node["api_key"]});
        let token = s.ok("POST", "/token/node", None, login).await["access_token"]
            .as_str()
            .expect("token")
            .to_string();
        nodes.push((org, token));
    }
    nodes
}

fn python_script(
    python: &str,
    name: &str,
    port: u16,
    token: &str,
    extra: &str,
) -> std::process::Command {
    let mut c = std::process::Command::new(python);
    c.arg(format!(
        "{}/tests/python/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .args(["http://127.0.0.1", &port.to_string(), "", token, extra])
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    c
}

fn answer(out: std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vantage6s_algorithm_client_works_through_the_encrypting_proxy() {
    let Some(python) = common::venv_python("ALGONET_V6_PYTHON") else {
        return;
    };
    let s = server("v6-sealed", "").await;
    let admin = s.admin().await;
    // alpha runs the parent; beta and gamma its subtask; delta has no key.
    let nodes = encrypted_federation(&s, 4).await;
    let pems: Vec<Vec<u8>> = (0..3)
        .map(|_| PrivateKey::generate_pem(2048).expect("generate"))
        .collect();
    let key = |pem: &[u8]| PrivateKey::from_pem(pem).expect("key");
    let keys: Vec<PrivateKey> = pems.iter().map(|p| key(p)).collect();
    for ((org, token), key) in nodes.iter().zip(&keys) {
        s.ok(
            "PATCH",
            &format!("/organization/{org}"),
            Some(token),
            json!({"public_key": key.public_key()}),
        )
        .await;
    }
    let [(alpha, alpha_node), (beta, beta_node), (gamma, gamma_node), (delta, _)] = &nodes[..]
    else {
        unreachable!("four nodes")
    };
    let public = |i: usize| PublicKey::from_base64(keys[i].public_key()).expect("public");
    // The researcher's organization (the administrator's, root) needs a key of its own.
    let root = PrivateKey::generate_pem(2048).expect("generate");
    s.ok(
        "PATCH",
        "/organization/1",
        Some(&admin),
        json!({"public_key": key(&root).public_key()}),
    )
    .await;
    let parent_input = public(0).seal(br#"{"method": "central"}"#).expect("seal");
    let parent = s
        .ok(
            "POST",
            "/task",
            Some(&admin),
            json!({"name": "parent", "image": "v6", "collaboration_id": 1,
            "organizations": [{"id": alpha, "input": parent_input}]}),
        )
        .await;
    let token = s
        .ok(
            "POST",
            "/token/container",
            Some(alpha_node),
            json!({"task_id": parent["id"], "image": "v6"}),
        )
        .await["container_token"]
        .as_str()
        .expect("token")
        .to_string();
    // The proxy of alpha's node, with alpha's key.
    let port = common::proxy(s.base.clone(), Some(Arc::new(key(&pems[0])))).port();

    // The subtask, from vantage6's own client through the proxy.
    let sub = answer(
        python_script(
            &python,
            "subtask.py",
            port,
            &token,
            &format!("{beta},{gamma}"),
        )
        .output()
        .expect("run"),
    );
    let runs = s
        .ok(
            "GET",
            &format!("/run?task_id={}", sub["id"]),
            Some(&admin),
            json!(null),
        )
        .await;
    let runs = runs["data"].as_array().expect("runs").clone();
    assert_eq!(runs.len(), 2);
    for run in &runs {
        let org = run["organization"]["id"].as_i64().expect("org");
        let i = if org == *beta { 1 } else { 2 };
        let stored = run["input"].as_str().expect("input");
        // The server holds ciphertext that only the organization's key opens.
        assert!(
            !stored.contains("child") && algonet::crypto::check_form(stored).is_ok(),
            "{stored}"
        );
        let plain: Value =
            serde_json::from_slice(&keys[i].open(stored).expect("its own key opens it"))
                .expect("JSON");
        assert_eq!(plain, json!({"method": "child", "window_secs": 5}));
        assert!(
            keys[3 - i].open(stored).is_err(),
            "another organization's key does not"
        );
    }

    // Results encrypted for alpha (the subtask's creator), read decrypted by the client.
    let waiting = python_script(&python, "results.py", port, &token, &sub["id"].to_string())
        .spawn()
        .expect("run the algorithm client");
    for run in &runs {
        let org = run["organization"]["id"].as_i64().expect("org");
        let node = if org == *beta { beta_node } else { gamma_node };
        let result = public(0)
            .seal(json!({"sum": org * 10}).to_string().as_bytes())
            .expect("seal");
        s.ok(
            "PATCH",
            &format!("/run/{}", run["id"]),
            Some(node),
            json!({"status": "completed", "result": result}),
        )
        .await;
    }
    let results = answer(waiting.wait_with_output().expect("the algorithm client"));
    let mut got: Vec<String> = results
        .as_array()
        .expect("list")
        .iter()
        .map(Value::to_string)
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            json!({"sum": beta * 10}).to_string(),
            json!({"sum": gamma * 10}).to_string()
        ]
    );

    // Refused, with a message: a subtask for an organization without a key, and a result that
    // is not alpha's to read (sealed for beta).
    let http = reqwest::Client::new();
    let via_proxy = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let plain = algonet::api::codec::encode_json(&json!({"method": "child"}));
    let r = http
        .post(via_proxy("/task"))
        .bearer_auth(&token)
        .json(
            &json!({"name": "s", "image": "v6", "organizations": [{"id": delta, "input": plain}]}),
        )
        .send()
        .await
        .expect("proxy");
    assert_eq!(r.status(), reqwest::StatusCode::BAD_REQUEST);
    let msg = r.json::<Value>().await.expect("json")["msg"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        msg.contains(&format!("organization {delta}")) && msg.contains("no public key"),
        "{msg}"
    );
    let r = http
        .post(via_proxy("/task"))
        .bearer_auth(&token)
        .json(&json!({"name": "s", "image": "v6", "organizations": [{"id": beta, "input": plain}]}))
        .send()
        .await
        .expect("proxy");
    let sub2: Value = r.json().await.expect("json");
    let runs2 = s
        .ok(
            "GET",
            &format!("/run?task_id={}", sub2["id"]),
            Some(&admin),
            json!(null),
        )
        .await;
    let run2 = runs2["data"][0]["id"].clone();
    let wrong = public(1).seal(br#"{"sum": 1}"#).expect("seal");
    s.ok(
        "PATCH",
        &format!("/run/{run2}"),
        Some(beta_node),
        json!({"status": "completed", "result": wrong}),
    )
    .await;
    let r = http
        .get(via_proxy(&format!("/result/{run2}")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("proxy");
    assert_eq!(r.status(), reqwest::StatusCode::BAD_GATEWAY);
    let msg = r.json::<Value>().await.expect("json")["msg"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        msg.contains(&format!("run {run2}")) && msg.contains("cannot be read"),
        "{msg}"
    );
}

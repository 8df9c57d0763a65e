//! Encrypted collaborations at the server: organizations' public keys (who may set them, what is
//! taken), encrypted collaborations created and listed, and task inputs refused when they are
//! not what the collaboration keeps — plain text in an encrypted one, a sealed message in
//! another.

use algonet::crypto::{PrivateKey, PublicKey};
use algonet_testkit as common;

use common::server::server;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn new_key() -> PrivateKey {
    PrivateKey::from_pem(&PrivateKey::generate_pem(2048).expect("generate")).expect("key")
}

#[tokio::test]
async fn organization_keys_are_set_by_their_members_only() {
    let s = server("enc-keys", "").await;
    let admin = s.admin().await;
    // Organizations 2 and 3 (1 is the administrator's own, root), a node each.
    let nodes = s.nodes(2).await;
    let (alpha, beta) = (2, 3);
    let key = new_key();
    let patch = |org: i64, body: Value| (format!("/organization/{org}"), body);

    // A node sets its own organization's key; it shows in GET /organization.
    let (path, body) = patch(alpha, json!({"public_key": key.public_key()}));
    let v = s.ok("PATCH", &path, Some(&nodes[0].1), body).await;
    assert_eq!(v["public_key"], json!(key.public_key()));
    let listed = s
        .ok("GET", "/organization", Some(&nodes[1].1), json!(null))
        .await;
    let keys: Vec<&Value> = listed["data"]
        .as_array()
        .expect("list")
        .iter()
        .map(|o| &o["public_key"])
        .collect();
    assert_eq!(keys, [&json!(key.public_key()), &json!("")]);

    // Refused: another organization's key, by its peer's node or by an administrator of
    // another organization (401, in vantage6's words); an algorithm; a key that is no key.
    let other = new_key();
    for (token, org, body, status, says) in [
        (
            &nodes[1].1,
            alpha,
            json!({"public_key": other.public_key()}),
            StatusCode::UNAUTHORIZED,
            "permission",
        ),
        (
            &nodes[1].1,
            alpha,
            json!({"country": "NL"}),
            StatusCode::UNAUTHORIZED,
            "permission",
        ),
        (
            &admin,
            alpha,
            json!({"public_key": other.public_key()}),
            StatusCode::UNAUTHORIZED,
            "Only members",
        ),
        (
            &nodes[0].1,
            alpha,
            json!({"public_key": "bm90IGEga2V5"}),
            StatusCode::BAD_REQUEST,
            "public_key",
        ),
        (
            &nodes[0].1,
            alpha,
            json!({"public_key": "***"}),
            StatusCode::BAD_REQUEST,
            "base64",
        ),
        (
            &admin,
            alpha,
            json!({"name": "o1"}),
            StatusCode::BAD_REQUEST,
            "already exists",
        ),
        (
            &admin,
            99,
            json!({"country": "NL"}),
            StatusCode::NOT_FOUND,
            "99",
        ),
    ] {
        let (path, body) = patch(org, body);
        let (st, v) = s
            .call("PATCH", &path, Some(token), Some(body.clone()))
            .await;
        assert_eq!(st, status, "{body}: {v}");
        assert!(
            v["msg"].as_str().is_some_and(|m| m.contains(says)),
            "{body}: {v}"
        );
    }
    let t = s
        .ok(
            "POST",
            "/task",
            Some(&admin),
            json!({"name": "t", "image": "v6", "collaboration_id": 1,
                   "organizations": [{"id": alpha}]}),
        )
        .await;
    let c = s.container_token(&nodes[0].1, &t["id"]).await;
    let (path, body) = patch(alpha, json!({"public_key": other.public_key()}));
    let (st, _) = s.call("PATCH", &path, Some(&c), Some(body)).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    // Nothing of that changed the key.
    let v = s
        .ok(
            "GET",
            &format!("/organization/{alpha}"),
            Some(&admin),
            json!(null),
        )
        .await;
    assert_eq!(v["public_key"], json!(key.public_key()));

    // An administrator changes another organization's other fields; its own organization's
    // key too. Empty takes a key away.
    let v = s
        .ok(
            "PATCH",
            &format!("/organization/{beta}"),
            Some(&admin),
            json!({"country": "NL", "name": "beta"}),
        )
        .await;
    assert_eq!(
        (&v["country"], &v["name"], &v["public_key"]),
        (&json!("NL"), &json!("beta"), &json!(""))
    );
    let v = s
        .ok(
            "PATCH",
            "/organization/1",
            Some(&admin),
            json!({"public_key": other.public_key()}),
        )
        .await;
    assert_eq!(v["public_key"], json!(other.public_key()));
    let v = s
        .ok(
            "PATCH",
            &format!("/organization/{alpha}"),
            Some(&nodes[0].1),
            json!({"public_key": ""}),
        )
        .await;
    assert_eq!(v["public_key"], json!(""));
}

#[tokio::test]
async fn encrypted_collaborations_take_only_sealed_inputs() {
    let s = server("enc-tasks", "").await;
    let admin = s.admin().await;
    let org = s
        .ok(
            "POST",
            "/organization",
            Some(&admin),
            json!({"name": "alpha"}),
        )
        .await["id"]
        .clone();
    let sealed_col = s
        .ok(
            "POST",
            "/collaboration",
            Some(&admin),
            json!({"name": "sealed", "organization_ids": [1, org], "encrypted": true}),
        )
        .await;
    assert_eq!(sealed_col["encrypted"], json!(true));
    let plain_col = s
        .ok(
            "POST",
            "/collaboration",
            Some(&admin),
            json!({"name": "plain", "organization_ids": [1, org], "encrypted": false}),
        )
        .await;
    assert_eq!(plain_col["encrypted"], json!(false));
    let (sealed_id, plain_id) = (sealed_col["id"].clone(), plain_col["id"].clone());
    for (filter, names) in [
        ("1", vec!["sealed"]),
        ("false", vec!["plain"]),
        ("", vec!["sealed", "plain"]),
    ] {
        let path = if filter.is_empty() {
            "/collaboration".to_string()
        } else {
            format!("/collaboration?encrypted={filter}")
        };
        let v = s.ok("GET", &path, Some(&admin), json!(null)).await;
        let got: Vec<&str> = v["data"]
            .as_array()
            .expect("list")
            .iter()
            .map(|c| c["name"].as_str().expect("name"))
            .collect();
        assert_eq!(got, names, "{path}");
    }
    let (st, _) = s
        .call("GET", "/collaboration?encrypted=maybe", Some(&admin), None)
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);

    let key = new_key();
    let public = PublicKey::from_base64(key.public_key()).expect("public");
    let sealed = public.seal(br#"{"method": "central"}"#).expect("seal");
    let task = |col: &Value, input: &str| json!({"name": "t", "image": "v6", "collaboration_id": col, "organizations": [{"id": org, "input": input}]});
    // The results will be encrypted for the creator's organization: it needs a key first.
    let (st, v) = s
        .call(
            "POST",
            "/task",
            Some(&admin),
            Some(task(&sealed_id, &sealed)),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["msg"]
            .as_str()
            .is_some_and(|m| m.contains("no public key")),
        "{v}"
    );
    let root_key = new_key();
    s.ok(
        "PATCH",
        "/organization/1",
        Some(&admin),
        json!({"public_key": root_key.public_key()}),
    )
    .await;
    let plain = algonet::api::codec::encode_json(&json!({"method": "central"}));
    let task = |col: &Value, input: &str| json!({"name": "t", "image": "v6", "collaboration_id": col, "organizations": [{"id": org, "input": input}]});
    for (col, input, status, says) in [
        (
            &sealed_id,
            plain.as_str(),
            StatusCode::BAD_REQUEST,
            "requires encryption",
        ),
        (
            &sealed_id,
            "",
            StatusCode::BAD_REQUEST,
            "requires encryption",
        ),
        (
            &sealed_id,
            "a$b$c",
            StatusCode::BAD_REQUEST,
            "requires encryption",
        ),
        (
            &plain_id,
            sealed.as_str(),
            StatusCode::BAD_REQUEST,
            "cannot be parsed",
        ),
        (
            &plain_id,
            "//8=",
            StatusCode::BAD_REQUEST,
            "cannot be parsed",
        ),
    ] {
        let (st, v) = s
            .call("POST", "/task", Some(&admin), Some(task(col, input)))
            .await;
        assert_eq!(st, status, "{input}: {v}");
        assert!(
            v["msg"].as_str().is_some_and(|m| m.contains(says)),
            "{input}: {v}"
        );
    }
    let t = s
        .ok("POST", "/task", Some(&admin), task(&sealed_id, &sealed))
        .await;
    s.ok("POST", "/task", Some(&admin), task(&plain_id, &plain))
        .await;
    s.ok("POST", "/task", Some(&admin), task(&plain_id, ""))
        .await;
    // The input is kept as sent: the organization's node opens it.
    let runs = s
        .ok(
            "GET",
            &format!("/run?task_id={}", t["id"]),
            Some(&admin),
            json!(null),
        )
        .await;
    let stored = runs["data"][0]["input"].as_str().expect("input");
    assert_eq!(
        key.open(stored).expect("opens"),
        br#"{"method": "central"}"#
    );
}

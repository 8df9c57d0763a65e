//! The node's part in encryption against a real server: its setting must match the
//! collaboration's (an error says which way), its organization's public key is uploaded when the
//! server's differs and left alone when it matches, and a run's input and result fail with a
//! message when they cannot be carried.

use std::os::unix::fs::PermissionsExt;

use algonet::crypto::PrivateKey;
use algonet::node::client::ServerClient;
use algonet::node::encryption::{self, CarryError, Encryption, EncryptionError};
use algonet_testkit as common;
use common::server::{server, Server};
use serde_json::json;

/// A node of a new organization in a new collaboration (`encrypted` or not), logged in.
async fn node(s: &Server, name: &str, encrypted: bool) -> (ServerClient, i64) {
    let admin = s.admin().await;
    let org = s
        .ok("POST", "/organization", Some(&admin), json!({"name": name}))
        .await["id"]
        .as_i64()
        .expect("id");
    let col = json!({"name": name, "organization_ids": [org], "encrypted": encrypted});
    let col = s.ok("POST", "/collaboration", Some(&admin), col).await["id"].clone();
    let body = json!({"organization_id": org, "collaboration_id": col});
    let key = s.ok("POST", "/node", Some(&admin), body).await["api_key"]
        .as_str()
        .expect("key")
        .to_string();
    let url = s.base.trim_end_matches("/api");
    let client = ServerClient::login(url, "/api", &key, None)
        .await
        .expect("login");
    (client, org)
}

fn key_file(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, PrivateKey::generate_pem(2048).expect("generate")).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

#[tokio::test]
async fn the_node_checks_its_setting_and_keeps_its_key_at_the_server() {
    let s = server("node-encryption", "").await;
    let dir = s.dir.join("keys");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let (first, second) = (key_file(&dir, "first.pem"), key_file(&dir, "second.pem"));
    let on = |path: &std::path::Path| Encryption {
        enabled: true,
        private_key: Some(path.to_path_buf()),
    };
    let (sealed, org) = node(&s, "sealed", true).await;
    let (plain, _) = node(&s, "plain", false).await;

    let e = encryption::set_up(&Encryption::default(), &sealed)
        .await
        .expect_err("encryption off in an encrypted collaboration");
    assert!(matches!(e, EncryptionError::NeedsKey(_)), "{e}");
    assert!(e.to_string().contains("encryption.enabled: true"), "{e}");
    let e = encryption::set_up(&on(&first), &plain)
        .await
        .expect_err("encryption on in an unencrypted collaboration");
    assert!(matches!(e, EncryptionError::NotEncrypted(_)), "{e}");
    assert!(encryption::set_up(&Encryption::default(), &plain)
        .await
        .expect("off, unencrypted")
        .is_none());

    let at_server = &s;
    let public_at_server = || async move {
        let admin = at_server.admin().await;
        at_server
            .ok(
                "GET",
                &format!("/organization/{org}"),
                Some(&admin),
                json!(null),
            )
            .await["public_key"]
            .as_str()
            .expect("key")
            .to_string()
    };
    let key = encryption::set_up(&on(&first), &sealed)
        .await
        .expect("uploaded")
        .expect("a key");
    assert_eq!(public_at_server().await, key.public_key());
    // Again with the same key: nothing to change. With another: replaced.
    encryption::set_up(&on(&first), &sealed)
        .await
        .expect("matches");
    let replaced = encryption::set_up(&on(&second), &sealed)
        .await
        .expect("replaced")
        .expect("a key");
    assert_eq!(public_at_server().await, replaced.public_key());
    assert_ne!(replaced.public_key(), key.public_key());

    // A run's input that is not for this key, and results that cannot be encrypted.
    let e = encryption::input(Some(&replaced), "not$sealed$at all").expect_err("garbage");
    assert!(matches!(e, CarryError::Unreadable(_)), "{e}");
    let e = encryption::result(Some(&replaced), &sealed, None, Some(b"{}"))
        .await
        .expect_err("no creator");
    assert!(matches!(e, CarryError::NoInitiator), "{e}");
    let admin = s.admin().await;
    s.ok(
        "PATCH",
        &format!("/organization/{org}"),
        Some(&admin),
        json!({"country": "NL"}),
    )
    .await;
    let (st, _) = s
        .call(
            "PATCH",
            &format!("/organization/{org}"),
            Some(&admin),
            Some(json!({"public_key": ""})),
        )
        .await;
    // Only a member may clear it: the administrator is not one.
    assert_eq!(st, reqwest::StatusCode::UNAUTHORIZED);
    // The administrator's organization is none of the collaboration's: the node cannot even see
    // it, and sends nothing.
    let e = encryption::result(
        Some(&replaced),
        &sealed,
        Some(algonet::api::OrganizationId(1)),
        Some(b"{}"),
    )
    .await
    .expect_err("not in the collaboration");
    assert!(e.to_string().contains("organization 1"), "{e}");
    // And the key file itself: others may not read it.
    std::fs::set_permissions(&first, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let e = encryption::set_up(&on(&first), &sealed)
        .await
        .expect_err("0644");
    assert!(e.to_string().contains("chmod 600"), "{e}");
}

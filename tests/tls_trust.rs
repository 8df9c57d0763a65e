//! TLS trust as a hospital's operators expect it: a server behind a TLS terminator whose
//! certificate a private CA signed is refused with a message that says it is a TLS refusal and
//! why, and trusted when the CA is named (`ca_file` of the node, `--ca-file` of `algonet test`)
//! or is in the system's store (`SSL_CERT_FILE` here); a closed port says so. Behind the
//! terminator runs a real server: the node's login and the `algonet test` binary go all the way
//! through it. Everything listens on 127.0.0.1.

use algonet_testkit as common;

use algonet::api::client::{Api, ClientError};
use algonet::node::client::ServerClient;
use reqwest::Method;
use serde_json::json;

async fn version(api: &Api) -> Result<serde_json::Value, ClientError> {
    api.send(Method::GET, "/version", None, algonet::api::client::NO_BODY)
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_private_ca_is_trusted_when_named_and_refused_saying_why_when_not() {
    let server = algonet_testkit::server::server("tls-trust", "").await;
    let admin = server.admin().await;
    let org = server.ok("POST", "/organization", Some(&admin), json!({"name": "o"}));
    let org = org.await["id"].clone();
    let col = json!({"name": "c", "organization_ids": [org]});
    let col = server.ok("POST", "/collaboration", Some(&admin), col).await["id"].clone();
    let node = json!({"organization_id": org, "collaboration_id": col});
    let node = server.ok("POST", "/node", Some(&admin), node).await;
    let (node_id, api_key) = (node["id"].as_i64(), node["api_key"].as_str());
    let (node_id, api_key) = (node_id.expect("id"), api_key.expect("key").to_string());
    let backend = server
        .base
        .trim_start_matches("http://")
        .trim_end_matches("/api")
        .parse()
        .expect("the server's address");
    let (ca_pem, url) = common::tls::terminator(backend).await;
    let base = format!("{url}/api");
    let dir = std::env::temp_dir().join(format!("algonet-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let ca_file = dir.join("hospital-ca.pem");
    std::fs::write(&ca_file, &ca_pem).expect("CA file");

    let refused = version(&Api::new(&base).expect("api"))
        .await
        .expect_err("an unknown CA");
    let said = refused.to_string();
    assert!(
        said.contains("TLS") && said.contains("UnknownIssuer"),
        "{said}"
    );
    let trusting = Api::trusting(&base, Some(&ca_file)).expect("api");
    let through = version(&trusting).await.expect("the named CA");
    assert!(through["version"].is_string(), "{through}");

    // The node logs in through the terminator with its ca_file, and is refused without.
    let login = |ca: Option<std::path::PathBuf>| {
        let (url, key) = (url.clone(), api_key.clone());
        async move { ServerClient::login(&url, "/api", &key, ca.as_deref()).await }
    };
    let e = login(None).await.expect_err("no CA");
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");
    let client = login(Some(ca_file.clone()))
        .await
        .expect("the node's login");
    assert_eq!(client.node_id.0, node_id);

    // `algonet test` too: refused without its --ca-file; with it, it logs in, sends the task and
    // fails only because no node runs to take it.
    let feature_test = |ca: Option<&std::path::Path>| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_algonet"));
        c.args(["test", "--server", &url, "--collaboration", "1"])
            .args(["--username", "root", "--timeout-secs", "1"])
            .env("ALGONET_PASSWORD", "correct-horse-battery")
            .env_remove("SSL_CERT_FILE");
        if let Some(ca) = ca {
            c.arg("--ca-file").arg(ca);
        }
        tokio::task::spawn_blocking(move || c.output().expect("algonet test"))
    };
    let out = feature_test(None).await.expect("join");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("UnknownIssuer"),
        "{said}"
    );
    let out = feature_test(Some(&ca_file)).await.expect("join");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("echo task 1 sent"), "{said}");
    assert!(said.contains("did not take the parent run"), "{said}");

    // The system's store: SSL_CERT_FILE names it here (set for this test binary alone).
    set_env("SSL_CERT_FILE", &ca_file);
    let through = version(&Api::new(&base).expect("api"))
        .await
        .expect("the system's store");
    assert!(through["version"].is_string(), "{through}");

    // A file that holds no certificate is refused where it is named.
    std::fs::write(dir.join("empty.pem"), "nothing").expect("write");
    assert!(Api::trusting(&base, Some(&dir.join("empty.pem"))).is_err());

    // A closed port says so.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let e = version(&Api::new(&format!("http://127.0.0.1:{port}/api")).expect("api"))
        .await
        .expect_err("closed");
    assert!(e.to_string().contains("connection refused"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sets an environment variable of this test binary, which runs this file's one test.
fn set_env(key: &str, value: &std::path::Path) {
    // SAFETY: this binary runs a single test; no other thread reads or writes the environment
    // while it is set.
    unsafe { std::env::set_var(key, value) };
}

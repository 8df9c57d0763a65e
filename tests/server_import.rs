//! `algonet server import`: the binary imports a federation from one file into the server's
//! database (SQLite, and PostgreSQL when the test cluster is there); the imported users log in,
//! the nodes log in with the keys from the 0600 file; importing again changes nothing; a bad file
//! changes nothing. The file imported is the example shipped in `deploy/`. vantage6's own
//! example file (from the vantage6-server package) imports once its repeated node keys are left
//! out.

use algonet_testkit as common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::server::TempDir;
use serde_json::{json, Value};

/// The example the README and docs/operations.md point operators to.
const ENTITIES: &str = include_str!("../deploy/entities.example.yaml");

struct Setup {
    dir: PathBuf,
    config: PathBuf,
    _dir: TempDir,
}

fn setup(tag: &str, database: Option<&str>) -> Setup {
    let dir = std::env::temp_dir().join(format!("algonet-import-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("server.yaml");
    let database = database
        .map(|d| format!("database: {d}\n"))
        .unwrap_or_default();
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\ndata_dir: {}\nmetrics_listen: null\n{database}\
             admin: {{username: root, password: correct-horse-battery}}\n",
            dir.join("data").display()
        ),
    )
    .expect("config");
    Setup {
        dir: dir.clone(),
        config,
        _dir: TempDir(dir),
    }
}

/// Runs `algonet server import`; (exit code, stdout, stderr).
fn import(s: &Setup, file: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_algonet"))
        .args(["server", "import", "--config"])
        .arg(&s.config)
        .arg(file)
        .output()
        .expect("run");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn key_files(s: &Setup) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(s.dir.join("data"))
        .expect("data dir")
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("api-keys-"))
        })
        .collect();
    files.sort();
    files
}

async fn call(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Value,
) -> (u16, Value) {
    let http = reqwest::Client::new();
    let mut req = http.request(method.parse().expect("method"), format!("{base}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if !body.is_null() {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn the_federation_imports_once_and_its_people_and_nodes_log_in(
    tag: &str,
    database: Option<&str>,
) {
    let s = setup(tag, database);
    let entities = s.dir.join("entities.yaml");
    std::fs::write(&entities, ENTITIES).expect("entities");

    let (code, out, err) = import(&s, &entities);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("imported 3 organizations, 3 users, 2 collaborations, 4 memberships, 4 nodes"),
        "{out}"
    );
    let files = key_files(&s);
    assert_eq!(files.len(), 1, "{files:?}");
    let mode = std::fs::metadata(&files[0])
        .expect("keys")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    assert!(out.contains(&files[0].display().to_string()), "{out}");
    let keys: Vec<Value> =
        yaml_serde::from_str(&std::fs::read_to_string(&files[0]).expect("read")).expect("yaml");
    assert_eq!(keys.len(), 4);
    let given = keys
        .iter()
        .find(|k| k["organization"] == "Leiden" && k["collaboration"] == "cardio")
        .expect("Leiden in cardio");
    assert_eq!(given["api_key"], "9f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f");

    // Again: nothing changes, no new key file.
    let (code, out, err) = import(&s, &entities);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("nothing to import"), "{out}");
    assert_eq!(key_files(&s).len(), 1);

    // A bad file changes nothing: a new organization beside a participant that exists nowhere.
    let bad = s.dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "organizations: [{name: Groningen}]\ncollaborations: [{name: cardio, participants: [{name: Nowhere}]}]\n",
    )
    .expect("bad");
    let (code, out, err) = import(&s, &bad);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("Nowhere") && err.contains("bad.yaml"), "{err}");
    std::fs::write(
        &bad,
        "organizations: [{name: Groningen, public_key: bm90IGEga2V5}]\n",
    )
    .expect("bad");
    let (code, _, err) = import(&s, &bad);
    assert_eq!(code, 1);
    assert!(err.contains("organizations[0].public_key"), "{err}");
    // An encrypted collaboration, its organization's public key with it, as vantage6 exports them.
    let key = algonet::crypto::PrivateKey::from_pem(
        &algonet::crypto::PrivateKey::generate_pem(2048).expect("generate"),
    )
    .expect("key");
    let sealed = s.dir.join("sealed.yaml");
    std::fs::write(
        &sealed,
        format!(
            "organizations: [{{name: Maastricht, public_key: {}}}]\n\
             collaborations: [{{name: sealed, encrypted: true, participants: [{{name: Maastricht}}]}}]\n",
            key.public_key()
        ),
    )
    .expect("sealed");
    let (code, out, err) = import(&s, &sealed);
    assert_eq!(code, 0, "{out}{err}");
    // Its node's key in a file of its own, also when the first import was in the same second.
    assert_eq!(key_files(&s).len(), 2);

    // The server on that database: users and nodes log in.
    let config = algonet::server::config::ServerConfig::load(&s.config).expect("config");
    let state = algonet::server::open(config).await.expect("open");
    let (addr, serve) = algonet::server::bind(state).await.expect("bind");
    let server = tokio::spawn(serve);
    let base = format!("http://{addr}/api");
    let (st, login) = call(
        &base,
        "POST",
        "/token/user",
        None,
        json!({"username": "lex@leiden.example", "password": "lex-long-password"}),
    )
    .await;
    assert_eq!(st, 200, "{login}");
    let token = login["access_token"].as_str().expect("token");
    let (st, orgs) = call(&base, "GET", "/organization", Some(token), Value::Null).await;
    assert_eq!(st, 200, "{orgs}");
    let names: Vec<&str> = orgs["data"]
        .as_array()
        .expect("orgs")
        .iter()
        .filter_map(|o| o["name"].as_str())
        .collect();
    assert!(
        !names.contains(&"Groningen") && names.contains(&"Amsterdam UMC"),
        "{names:?}"
    );
    let maastricht = orgs["data"]
        .as_array()
        .expect("orgs")
        .iter()
        .find(|o| o["name"] == "Maastricht")
        .expect("Maastricht");
    assert_eq!(maastricht["public_key"], json!(key.public_key()));
    let (_, cols) = call(
        &base,
        "GET",
        "/collaboration?encrypted=1",
        Some(token),
        Value::Null,
    )
    .await;
    let names: Vec<&str> = cols["data"]
        .as_array()
        .expect("collaborations")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["sealed"]);
    let me = login["user_url"]
        .as_str()
        .expect("user url")
        .trim_start_matches("/api")
        .to_string();
    let (st, user) = call(&base, "GET", &me, Some(token), Value::Null).await;
    assert_eq!(
        (st, user["username"].as_str()),
        (200, Some("lex@leiden.example")),
        "{user}"
    );
    let (st, _) = call(
        &base,
        "POST",
        "/token/user",
        None,
        json!({"username": "lex@leiden.example", "password": "wrong-password"}),
    )
    .await;
    assert_eq!(st, 401);
    for k in &keys {
        let (st, v) = call(
            &base,
            "POST",
            "/token/node",
            None,
            json!({"api_key": k["api_key"]}),
        )
        .await;
        assert_eq!(st, 200, "{k:?}: {v}");
        assert_eq!(v["node_id"], k["node_id"]);
    }
    server.abort();
}

#[tokio::test]
async fn the_federation_imports_once_on_sqlite() {
    the_federation_imports_once_and_its_people_and_nodes_log_in("sqlite", None).await;
}

#[tokio::test]
async fn the_federation_imports_once_on_postgres() {
    let Some(base) = common::postgres::shared("the_federation_imports_once_on_postgres") else {
        return;
    };
    let url = common::postgres::database(&base, "import").await;
    the_federation_imports_once_and_its_people_and_nodes_log_in("pg", Some(&url)).await;
}

/// vantage6's own example file, as its server package ships it, with its node keys left out
/// (it gives every node the same one, which would make one key log in as several nodes).
#[test]
fn vantage6s_example_file_imports() {
    let Some(python) = common::venv_python("ALGONET_V6_SERVER_PYTHON") else {
        return;
    };
    let out = Command::new(&python)
        .args([
            "-c",
            "import sys, yaml, importlib.resources as r\n\
             f = yaml.safe_load((r.files('vantage6.server') / '_data' / 'example_fixtures.yaml').read_text())\n\
             for c in f['collaborations']:\n    for p in c['participants']:\n        p.pop('api_key', None)\n\
             print(yaml.safe_dump(f))",
        ])
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = setup("v6-example", None);
    let file = s.dir.join("example_fixtures.yaml");
    std::fs::write(&file, &out.stdout).expect("write");
    let (code, out, err) = import(&s, &file);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("imported 3 organizations, 6 users, 3 collaborations, 7 memberships, 7 nodes"),
        "{out}"
    );
    assert!(out.contains("not imported: ZEPPELIN: tasks"), "{out}");
}

//! Docker tier: an encrypted collaboration end to end. Three organizations, each node with its
//! organization's RSA key; a researcher of the administrator's organization runs vpn-average
//! (`algorithms/vpn-average`, vantage6's own tools) with vantage6's own `UserClient` and
//! `setup_encryption`: the input is encrypted for the central's organization, the central's
//! proxy encrypts each partial's input for its organization, every node decrypts its input,
//! reads its data, talks over the VPN and encrypts its result for the task's creator; the
//! researcher's client decrypts the answer. Another organization's key does not read it, and
//! the server's database holds ciphertext only.

use algonet_testkit as common;

use algonet::crypto::PrivateKey;
use algonet::demo::key_file;
use serde_json::json;
use sqlx::{ConnectOptions, Row};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_collaboration_computes_and_the_server_sees_ciphertext_only() {
    let Some(docker) = common::docker("an_encrypted_collaboration_computes").await else {
        return;
    };
    let Some(python) = common::venv_python("ALGONET_V6_PYTHON") else {
        return;
    };
    let mut fed = common::vpn_average_federation(
        &docker,
        &python,
        env!("CARGO_BIN_EXE_algonet"),
        "tenc",
        true,
        algonet::server::pki::TunnelKind::OpenVpn,
        None,
    )
    .await;
    let o = fed.options.clone();
    let (root_key, berlin_key) = (key_file(&o, "root"), key_file(&o, "berlin"));
    let path = |p: &std::path::Path| p.to_str().expect("path").to_string();
    let answer = common::vpn_average_answer(&python, &fed, &[&path(&root_key)]);
    let logs: Vec<String> = fed
        .nodes
        .iter()
        .map(|n| std::fs::read_to_string(&n.log).unwrap_or_default())
        .collect();
    // The database as the server left it: every input and result of every run.
    let db_path = o.dir.join("server").join("algonet.sqlite");
    let stored = stored_runs(&db_path).await;
    let leftovers = fed.down().await;
    assert!(leftovers.is_empty(), "teardown left {leftovers:?}");
    let answer = answer.unwrap_or_else(|e| panic!("{e}"));
    eprintln!("vpn-average answered: {answer}");
    assert_eq!(answer["status"], json!("completed"), "{answer}");
    let result = &answer["results"][0];
    let ages: Vec<i64> = (0..3).flat_map(algonet::demo::demo_ages).collect();
    let average = ages.iter().sum::<i64>() as f64 / ages.len() as f64;
    assert_eq!(result["average"], json!(average), "{answer}");
    assert_eq!(
        result["over_vpn"].as_object().map(|o| o.len()),
        Some(3),
        "{answer}"
    );

    // The server holds ciphertext only: 4 runs (the central, three partials), each input and
    // result in vantage6's sealed form, nothing of the JSON inside, in the tables or the file.
    assert_eq!(stored.len(), 4, "{stored:?}");
    for (input, result) in &stored {
        for text in [input, result] {
            algonet::crypto::check_form(text).unwrap_or_else(|e| panic!("{e}: {text:.80}"));
        }
    }
    let root = PrivateKey::load(&root_key).expect("root's key");
    let berlin = PrivateKey::load(&berlin_key).expect("berlin's key");
    let central = stored
        .iter()
        .find_map(|(_, r)| root.open(r).ok())
        .expect("the central's result opens with the researcher's key");
    assert!(String::from_utf8_lossy(&central).contains("\"average\""));
    assert!(stored.iter().all(|(_, r)| berlin.open(r).is_err()));
    // The same in vantage6's own cryptor: the researcher's key reads the central's result,
    // berlin's does not.
    let sealed = stored
        .iter()
        .find(|(_, r)| root.open(r).is_ok())
        .map(|(_, r)| r.clone())
        .expect("the central's result");
    let input = json!([{ "sealed": sealed }]).to_string();
    let read = |key: &std::path::Path| common::cipher_vectors(&python, "open", key, &input);
    assert!(read(&root_key).is_ok_and(|t| t.contains("average")));
    assert!(
        read(&berlin_key).is_err_and(|e| e.contains("Error")),
        "{:?}",
        read(&berlin_key)
    );
    let mut file = std::fs::read(&db_path).expect("the database");
    file.extend(std::fs::read(db_path.with_extension("sqlite-wal")).unwrap_or_default());
    for marker in [
        "\"method\"",
        "eyJtZXRob2Qi",
        "central",
        "\"average\"",
        "eyJhdmVyYWdl",
    ] {
        assert!(
            !file.windows(marker.len()).any(|w| w == marker.as_bytes()),
            "the server's database holds {marker:?}"
        );
    }
    // No node wrote its key into its log.
    for log in &logs {
        assert!(!log.contains("PRIVATE KEY"));
        assert!(log.contains("encryption on"), "{log}");
    }
    let _ = std::fs::remove_dir_all(&o.dir);
}

/// (input, result) of every run in the server's SQLite file.
async fn stored_runs(path: &std::path::Path) -> Vec<(String, String)> {
    let mut db = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .connect()
        .await
        .expect("open the server's database");
    sqlx::query("SELECT input, result FROM run ORDER BY id")
        .fetch_all(&mut db)
        .await
        .expect("runs")
        .iter()
        .map(|r| {
            (
                r.get::<Option<String>, _>(0).unwrap_or_default(),
                r.get::<Option<String>, _>(1).unwrap_or_default(),
            )
        })
        .collect()
}

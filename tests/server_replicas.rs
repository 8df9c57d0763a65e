//! The server on PostgreSQL, against the test command's private cluster (and clusters of the
//! tests' own): both backends build the same schema; several server processes on one database
//! serve one federation (each its own state, pool and data directory; nothing shared but the
//! database); a database that goes away turns requests into 503 and loses no committed write; an
//! unreachable one fails the start naming it, password hidden.

use algonet_testkit as common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::postgres::{self, Cluster};
use common::server::{server, Server};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Two servers on one new database of the test cluster.
async fn replicas(tag: &str, extra: &str) -> Option<(Server, Server)> {
    let base = postgres::shared(tag)?;
    let url = postgres::database(&base, tag).await;
    let extra = format!("database: {url}\n{extra}");
    let a = server(&format!("{tag}-a"), &extra).await;
    let b = server(&format!("{tag}-b"), &extra).await;
    Some((a, b))
}

/// `n` organizations in one collaboration with a node each, made through both replicas in turn;
/// each node's token from the replica that did not make it.
async fn federation(r: [&Server; 2], n: usize) -> (String, i64, Vec<(i64, i64, String)>) {
    let admin = r[0].admin().await;
    let mut orgs = Vec::new();
    for i in 0..n {
        let body = json!({"name": format!("org{i}")});
        orgs.push(
            r[i % 2]
                .ok("POST", "/organization", Some(&admin), body)
                .await["id"]
                .clone(),
        );
    }
    let collab = json!({"name": "c", "organization_ids": orgs});
    let collab = r[1]
        .ok("POST", "/collaboration", Some(&admin), collab)
        .await["id"]
        .as_i64()
        .expect("id");
    let mut nodes = Vec::new();
    for (i, org) in orgs.iter().enumerate() {
        let body = json!({"organization_id": org, "collaboration_id": collab});
        let node = r[i % 2].ok("POST", "/node", Some(&admin), body).await;
        let login = json!({"api_key": node["api_key"]});
        let token = r[(i + 1) % 2].ok("POST", "/token/node", None, login).await["access_token"]
            .as_str()
            .expect("token")
            .to_string();
        nodes.push((
            node["id"].as_i64().expect("id"),
            org.as_i64().expect("org"),
            token,
        ));
    }
    (admin, collab, nodes)
}

fn task(collab: i64, orgs: &[i64]) -> Value {
    json!({"name": "t", "image": "echo", "collaboration_id": collab,
           "organizations": orgs.iter().map(|o| json!({"id": o})).collect::<Vec<_>>()})
}

/// Both migrations build the same tables with the same columns, types (as each names them)
/// and nullability, and the same indexes' columns.
#[tokio::test]
async fn both_backends_build_the_same_schema() {
    let Some(base) = postgres::shared("both_backends_build_the_same_schema") else {
        return;
    };
    let url = postgres::database(&base, "schema").await;
    let pg = server("schema-pg", &format!("database: {url}\n")).await;
    let lite = server("schema-sqlite", "").await;
    assert_eq!(
        pg.state.store.backend(),
        algonet::server::store::Backend::Postgres
    );
    if postgres::servers_on_postgres() {
        return;
    }
    assert_eq!(
        lite.state.store.backend(),
        algonet::server::store::Backend::Sqlite
    );
    // table -> [(column, type, nullable)], in one vocabulary.
    let same_type = |t: &str| match t.to_ascii_lowercase().as_str() {
        "integer" | "bigint" => "integer".to_string(),
        other => other.to_string(),
    };
    let pg_columns: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text, data_type::text, is_nullable::text \
         FROM information_schema.columns WHERE table_schema = 'public' \
         AND table_name <> '_sqlx_migrations' ORDER BY table_name, column_name",
    )
    .fetch_all(&mut *pg.state.store.connection().await.expect("pg"))
    .await
    .expect("pg columns");
    let lite_columns: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT m.name, p.name, p.type, CASE WHEN p.\"notnull\" = 1 OR p.pk = 1 THEN 'NO' ELSE 'YES' END \
         FROM sqlite_master m JOIN pragma_table_info(m.name) p \
         WHERE m.type = 'table' AND m.name NOT IN ('_sqlx_migrations', 'sqlite_sequence') \
         ORDER BY m.name, p.name",
    )
    .fetch_all(&mut *lite.state.store.connection().await.expect("sqlite"))
    .await
    .expect("sqlite columns");
    let normal =
        |rows: Vec<(String, String, String, String)>| -> Vec<(String, String, String, String)> {
            rows.into_iter()
                .map(|(t, c, ty, n)| (t, c, same_type(&ty), n))
                .collect()
        };
    assert_eq!(normal(lite_columns), normal(pg_columns));
    // Unique keys and indexes, by the columns they cover.
    let pg_indexes: Vec<(String, String)> = sqlx::query_as(
        "SELECT t.relname::text, string_agg(a.attname::text, ',' ORDER BY a.attname) \
         FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid \
         JOIN pg_namespace n ON n.oid = t.relnamespace AND n.nspname = 'public' \
         JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = ANY(i.indkey) \
         WHERE t.relname <> '_sqlx_migrations' GROUP BY t.relname, i.indexrelid ORDER BY 1, 2",
    )
    .fetch_all(&mut *pg.state.store.connection().await.expect("pg"))
    .await
    .expect("pg indexes");
    let lite_indexes: Vec<(String, String)> = sqlx::query_as(
        "SELECT m.name, (SELECT group_concat(name, ',') FROM \
           (SELECT ii.name FROM pragma_index_info(l.name) ii ORDER BY ii.name)) \
         FROM sqlite_master m JOIN pragma_index_list(m.name) l \
         WHERE m.type = 'table' AND m.name <> '_sqlx_migrations' \
         UNION ALL SELECT m.name, p.name FROM sqlite_master m JOIN pragma_table_info(m.name) p \
         WHERE m.type = 'table' AND p.pk = 1 AND m.name <> '_sqlx_migrations' \
           AND (SELECT count(*) FROM pragma_table_info(m.name) WHERE pk > 0) = 1 \
           AND p.type = 'INTEGER' \
         ORDER BY 1, 2",
    )
    .fetch_all(&mut *lite.state.store.connection().await.expect("sqlite"))
    .await
    .expect("sqlite indexes");
    assert_eq!(lite_indexes, pg_indexes);
}

/// Eight clients, two per node (one on each replica, as a node restarted behind a load
/// balancer would be), race for the same hundred runs: each is claimed exactly once. Tokens
/// made by one replica serve at the other; a node deleted through one is refused by both.
#[tokio::test]
async fn runs_are_claimed_once_whichever_replica_a_node_asks() {
    let Some((a, b)) = replicas("claims", "").await else {
        return;
    };
    let (admin, collab, nodes) = federation([&a, &b], 4).await;
    let orgs: Vec<i64> = nodes.iter().map(|n| n.1).collect();
    for i in 0..25 {
        let r = [&a, &b][i % 2];
        let (st, v) = r
            .call("POST", "/task", Some(&admin), Some(task(collab, &orgs)))
            .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
    }
    let mut clients = Vec::new();
    for (_, _, token) in &nodes {
        for r in [&a, &b] {
            let (base, token) = (r.base.clone(), token.clone());
            clients.push(tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut won = Vec::new();
                let mut refused = 0;
                loop {
                    let page: Value = http
                        .get(format!("{base}/run?per_page=1000"))
                        .bearer_auth(&token)
                        .send()
                        .await
                        .expect("list")
                        .json()
                        .await
                        .expect("json");
                    let pending: Vec<i64> = page["data"]
                        .as_array()
                        .expect("runs")
                        .iter()
                        .filter_map(|r| r["id"].as_i64())
                        .collect();
                    if pending.is_empty() {
                        return (won, refused);
                    }
                    for id in pending {
                        let st = http
                            .post(format!("{base}/run/{id}/claim"))
                            .bearer_auth(&token)
                            .send()
                            .await
                            .expect("claim")
                            .status();
                        match st {
                            StatusCode::OK => won.push(id),
                            StatusCode::CONFLICT => refused += 1,
                            other => panic!("claim {id}: {other}"),
                        }
                    }
                }
            }));
        }
    }
    let mut claimed: BTreeMap<i64, usize> = BTreeMap::new();
    let mut refusals = 0;
    for c in clients {
        let (won, refused) = c.await.expect("client");
        refusals += refused;
        for id in won {
            *claimed.entry(id).or_default() += 1;
        }
    }
    assert_eq!(claimed.len(), 100, "every run claimed");
    assert!(
        claimed.values().all(|&n| n == 1),
        "a run claimed twice: {claimed:?}"
    );
    eprintln!("100 runs claimed once each; {refusals} concurrent claims refused with 409");

    // A refresh token from one replica buys tokens at the other; a node deleted through one is
    // refused by both, with its access and its refresh token.
    let login = json!({"username": "root", "password": "correct-horse-battery"});
    let pair = a.ok("POST", "/token/user", None, login).await;
    let refresh = pair["refresh_token"].as_str().expect("refresh");
    let st = b
        .http
        .post(format!("{}/token/refresh", b.base))
        .bearer_auth(refresh)
        .send()
        .await
        .expect("refresh")
        .status();
    assert_eq!(st, StatusCode::OK);
    let (node, _, token) = &nodes[0];
    b.ok(
        "DELETE",
        &format!("/node/{node}"),
        Some(&admin),
        json!(null),
    )
    .await;
    for r in [&a, &b] {
        let (st, _) = r.call("GET", "/run", Some(token), None).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
    }
}

/// Both replicas hand out profiles of one CA, and a node deleted through one is listed in the
/// other's CRL within seconds (what that other's OpenVPN server reads: shown with a real
/// OpenVPN server in `netns_vpn_pki.rs`).
#[tokio::test]
async fn replicas_share_one_vpn_pki_and_one_crl() {
    let vpn = "vpn: {subnet: 10.76.0.0/16, remote: 10.99.0.1, port: 1194}\n";
    let Some((a, b)) = replicas("pki", vpn).await else {
        return;
    };
    let (admin, _, nodes) = federation([&a, &b], 2).await;
    let ca = |s: &Server| std::fs::read_to_string(s.dir.join("vpn/ca.crt")).expect("ca.crt");
    assert_eq!(ca(&a), ca(&b), "one CA");
    for (i, (_, _, token)) in nodes.iter().enumerate() {
        let r = [&a, &b][i % 2];
        let p = r.ok("GET", "/vpn", Some(token), json!(null)).await;
        let p = p["ovpn_config"].as_str().expect("profile");
        assert!(
            p.contains(ca(&a).trim()),
            "the profile carries the shared CA"
        );
    }
    let crl = |s: &Server| std::fs::read(s.dir.join("vpn/crl.pem")).expect("crl");
    let before = crl(&b);
    a.ok(
        "DELETE",
        &format!("/node/{}", nodes[1].0),
        Some(&admin),
        json!(null),
    )
    .await;
    let start = Instant::now();
    while crl(&b) == before && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_ne!(crl(&b), before, "the other replica rewrote its CRL");
    eprintln!(
        "revocation through one replica in the other's CRL after {} ms",
        start.elapsed().as_millis()
    );
}

/// The server on a cluster that stops for 10 s while nodes work: requests meanwhile are 503
/// (never 500, never a hang beyond the pool's wait), the server recovers by itself when the
/// database is back, and every write it acknowledged is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_database_answers_503_and_loses_no_committed_write() {
    if postgres::shared("a_lost_database_answers_503_and_loses_no_committed_write").is_none() {
        return;
    }
    let cluster = Cluster::start("outage");
    let url = postgres::database(&cluster.url(), "outage").await;
    let s = std::sync::Arc::new(server("outage", &format!("database: {url}\n")).await);
    let nodes = s.nodes(3).await;
    let admin = s.admin().await;
    let collab = s
        .ok("GET", "/collaboration", Some(&admin), json!(null))
        .await["data"][0]["id"]
        .as_i64()
        .expect("collaboration");
    let orgs: Vec<i64> = s.ok("GET", "/node", Some(&admin), json!(null)).await["data"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["organization"]["id"].as_i64().expect("org"))
        .collect();

    // The administrator makes tasks; each node claims its runs and completes them with a
    // result. Every 2xx is a committed write to find afterwards.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let statuses = std::sync::Arc::new(std::sync::Mutex::new(BTreeMap::<u16, usize>::new()));
    let count = {
        let statuses = statuses.clone();
        move |st: StatusCode| {
            *statuses
                .lock()
                .expect("lock")
                .entry(st.as_u16())
                .or_default() += 1
        }
    };
    let maker = {
        let (s, stop, count, admin) = (s.clone(), stop.clone(), count.clone(), admin.clone());
        let orgs = orgs.clone();
        tokio::spawn(async move {
            let mut made = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (st, v) = s
                    .call("POST", "/task", Some(&admin), Some(task(collab, &orgs)))
                    .await;
                count(st);
                if st == StatusCode::CREATED {
                    made.push(v["id"].as_i64().expect("id"));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            made
        })
    };
    let mut workers = Vec::new();
    for (_, token) in nodes.clone() {
        let (s, stop, count) = (s.clone(), stop.clone(), count.clone());
        workers.push(tokio::spawn(async move {
            let mut done = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (st, page) = s.call("GET", "/run", Some(&token), None).await;
                count(st);
                let ids: Vec<i64> = page["data"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|r| r["id"].as_i64()).collect())
                    .unwrap_or_default();
                for id in ids {
                    let (st, _) = s
                        .call("POST", &format!("/run/{id}/claim"), Some(&token), None)
                        .await;
                    count(st);
                    if st != StatusCode::OK {
                        continue;
                    }
                    let body = json!({"status": "completed", "result": format!("r{id}")});
                    let (st, _) = s
                        .call("PATCH", &format!("/run/{id}"), Some(&token), Some(body))
                        .await;
                    count(st);
                    if st == StatusCode::OK {
                        done.push(id);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            done
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before_outage = statuses.lock().expect("lock").clone();
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.down();
        std::thread::sleep(Duration::from_secs(10));
        cluster.up();
        cluster
    })
    .await
    .expect("outage");
    // Back: the next requests succeed without restarting the server.
    let back = Instant::now();
    loop {
        let (st, _) = s.call("GET", "/run", Some(&nodes[0].1), None).await;
        if st == StatusCode::OK {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(30),
            "no recovery: {st}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "answering again {} ms after the database came back",
        back.elapsed().as_millis()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let made = maker.await.expect("maker");
    let mut done = Vec::new();
    for w in workers {
        done.extend(w.await.expect("worker"));
    }
    let statuses = statuses.lock().expect("lock").clone();
    eprintln!("before the outage {before_outage:?}; in all {statuses:?}");
    assert!(
        statuses.get(&503).is_some_and(|&n| n > 0),
        "503 while down: {statuses:?}"
    );
    assert!(
        statuses.keys().all(|&k| matches!(k, 200 | 201 | 409 | 503)),
        "only successes, lost claim races and 503: {statuses:?}"
    );
    // Everything acknowledged is there.
    let known: BTreeSet<i64> = s
        .ok("GET", "/task?per_page=1000", Some(&admin), json!(null))
        .await["data"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter_map(|t| t["id"].as_i64())
        .collect();
    assert!(
        made.iter().all(|t| known.contains(t)),
        "a created task is gone"
    );
    for id in &done {
        let run = s
            .ok("GET", &format!("/run/{id}"), Some(&admin), json!(null))
            .await;
        assert_eq!(run["status"], "completed", "{run}");
        let result = s
            .ok("GET", &format!("/result/{id}"), Some(&admin), json!(null))
            .await;
        assert_eq!(result["result"], format!("r{id}"), "{result}");
    }
    assert!(!made.is_empty() && !done.is_empty());
    drop(cluster);
    eprintln!(
        "{} tasks and {} completed runs acknowledged; all found after the outage",
        made.len(),
        done.len()
    );
}

/// A database that cannot be reached fails the start at once, naming it (password hidden)
/// and saying why.
#[test]
fn an_unreachable_database_fails_the_start_naming_it() {
    let dir = std::env::temp_dir().join(format!("algonet-dbfail-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    // A port nothing listens on: bound, then let go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let config = dir.join("server.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\ndata_dir: {}\nmetrics_listen: null\n\
             database: postgres://algonet:hunter2-secret@127.0.0.1:{port}/fed\n\
             admin: {{username: root, password: correct-horse-battery}}\n",
            dir.join("data").display()
        ),
    )
    .expect("config");
    let start = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_algonet"))
        .args(["server", "--config"])
        .arg(&config)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("postgres://algonet:***@127.0.0.1:{port}/fed"))
            && err.contains("refused")
            && !err.contains("hunter2"),
        "{err}"
    );
    assert!(start.elapsed() < Duration::from_secs(5), "at once");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A node waiting on one replica for its peers to change is answered within a couple of
/// seconds of a change made through the other (each replica reads the database's change counter
/// once a second); a refresh token used at one replica is retired at the other.
#[tokio::test]
async fn a_change_at_one_replica_wakes_a_wait_at_the_other() {
    let Some((a, b)) = replicas("replica-waits", "").await else {
        return;
    };
    let (admin, collab, nodes) = federation([&a, &b], 2).await;
    let (_, org0, token0) = nodes[0].clone();
    a.ok("POST", "/task", Some(&admin), task(collab, &[org0]))
        .await;
    let (_, first) = b.call("GET", "/vpn/peers", Some(&token0), None).await;
    let etag = first["etag"].as_str().expect("etag").to_string();
    let wait = {
        let url = format!("{}/vpn/peers?known={etag}", b.base);
        let (http, token) = (b.http.clone(), token0.clone());
        tokio::spawn(async move {
            let r = http
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("answer");
            (Instant::now(), r.json::<Value>().await.expect("json"))
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (node0_id, _, _) = nodes[0];
    let changed = Instant::now();
    a.ok(
        "PATCH",
        &format!("/node/{node0_id}"),
        Some(&token0),
        json!({"ip": "10.76.0.9"}),
    )
    .await;
    let (answered, peers) = wait.await.expect("join");
    assert_ne!(peers["etag"].as_str(), Some(etag.as_str()), "{peers}");
    let took = answered.duration_since(changed);
    assert!(
        took < Duration::from_secs(3),
        "{took:?} for node {node0_id}"
    );

    let login = a.login().await;
    let refresh = login["refresh_token"].as_str().expect("refresh");
    let (st, _) = a.call("POST", "/token/refresh", Some(refresh), None).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = b.call("POST", "/token/refresh", Some(refresh), None).await;
    assert_eq!(
        st,
        StatusCode::UNAUTHORIZED,
        "retired at the other replica too"
    );
}

//! The command line: every subcommand explains itself, usage errors exit 2, failures exit 1 and
//! name what failed, configuration paths and secrets come from the environment too. (How the
//! server stops on SIGTERM: `tests/observability.rs`.)

use std::process::{Command, Output};

fn algonet(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_algonet"));
    c.args(args);
    for var in [
        "ALGONET_SERVER_CONFIG",
        "ALGONET_NODE_CONFIG",
        "ALGONET_SERVER",
        "ALGONET_USERNAME",
        "ALGONET_PASSWORD",
    ] {
        c.env_remove(var);
    }
    c.envs(env.iter().copied());
    c.output().expect("run algonet")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn every_subcommand_has_help() {
    for args in [
        &["--help"][..],
        &["server", "--help"],
        &["node", "--help"],
        &["images", "--help"],
        &["images", "build", "--help"],
        &["test", "--help"],
        &["demo", "--help"],
        &["demo", "stop", "--help"],
        &["node", "status", "--help"],
        &["echo", "--help"],
        &["version", "--help"],
        &["--version"],
    ] {
        let o = algonet(args, &[]);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o));
        assert!(!o.stdout.is_empty(), "{args:?} printed nothing");
    }
    let help = text(&algonet(&["test", "--help"], &[]));
    assert!(help.contains("ALGONET_PASSWORD"), "{help}");
}

#[test]
fn usage_errors_exit_2_and_say_what_is_wrong() {
    for (args, says) in [
        (&["bogus"][..], "bogus"),
        (&["server"], "--config"),
        (
            &[
                "test",
                "--server",
                "http://127.0.0.1:1",
                "--collaboration",
                "1",
            ],
            "--password",
        ),
        (
            &[
                "test",
                "--server=http://127.0.0.1:1",
                "--collaboration=one",
                "--password=x",
            ],
            "one",
        ),
        (&["demo", "--kep"], "--kep"),
        (&["node", "status"], "--socket"),
        (&["node"], "--config"),
    ] {
        let o = algonet(args, &[]);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(says), "{args:?}: {}", text(&o));
    }
}

#[test]
fn failures_exit_1_naming_the_file_and_configs_come_from_the_environment() {
    let missing = "/nonexistent/algonet-server.yaml";
    let o = algonet(&["server", &format!("--config={missing}")], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains(missing), "{}", text(&o));
    let o = algonet(&["server"], &[("ALGONET_SERVER_CONFIG", missing)]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains(missing), "{}", text(&o));
    let o = algonet(&["node"], &[("ALGONET_NODE_CONFIG", missing)]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains(missing), "{}", text(&o));
}

/// `--check` tries what a start needs without starting anything: a good server configuration
/// says so and exits 0; a broken one, or a listen address taken, exits 1 naming it; a node whose
/// server does not answer exits 1 saying how it failed.
#[test]
fn check_validates_without_starting() {
    let dir = std::env::temp_dir().join(format!("algonet-check-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let server = |listen: &str, password: &str| {
        let file = dir.join(format!("server-{listen}-{password}.yaml").replace(':', "_"));
        std::fs::write(
            &file,
            format!(
                "listen: {listen}\nmetrics_listen: null\ndata_dir: {}\n\
                 admin: {{username: root, password: {password}}}\n",
                dir.join("data").display()
            ),
        )
        .expect("server.yaml");
        file
    };
    let good = server("127.0.0.1:0", "correct-horse-battery");
    let o = algonet(
        &["server", "--config", &good.to_string_lossy(), "--check"],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("ok"), "{}", text(&o));
    assert!(!dir.join("data").exists(), "a check makes nothing");
    let bad = server("127.0.0.1:0", "short");
    let o = algonet(
        &["server", "--config", &bad.to_string_lossy(), "--check"],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("admin.password"), "{}", text(&o));
    let busy = server(&format!("127.0.0.1:{port}"), "correct-horse-battery");
    let o = algonet(
        &["server", "--config", &busy.to_string_lossy(), "--check"],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("listen 127.0.0.1:{port}")),
        "{}",
        text(&o)
    );
    drop(taken);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed_port = closed.local_addr().expect("addr").port();
    drop(closed);
    let node = dir.join("node.yaml");
    std::fs::write(
        &node,
        format!(
            "server_url: http://127.0.0.1:{closed_port}\napi_key: k\ntask_dir: {}\n",
            dir.join("tasks").display()
        ),
    )
    .expect("node.yaml");
    let o = algonet(
        &["node", "--config", &node.to_string_lossy(), "--check"],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("connection refused"), "{}", text(&o));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `algonet test` against a collaboration whose nodes are down: it says so before it sends the
/// task, and fails naming the parent's node once its timeout has passed, not after minutes of
/// silence.
#[tokio::test(flavor = "multi_thread")]
async fn the_feature_test_names_a_node_that_is_down() {
    let server = algonet_testkit::server::server("cli-feature-down", "").await;
    let _nodes = server.nodes(2).await;
    let base = server.base.trim_end_matches("/api").to_string();
    let out = tokio::task::spawn_blocking(move || {
        let args = [
            "test",
            "--server",
            &base,
            "--collaboration",
            "1",
            "--username",
            "root",
        ];
        let args = [&args[..], &["--timeout-secs", "2", "--stream-secs", "0"]].concat();
        algonet(&args, &[("ALGONET_PASSWORD", "correct-horse-battery")])
    })
    .await
    .expect("algonet test");
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    for org in ["o0", "o1"] {
        assert!(
            t.contains(&format!(
                "note: the node of {org} has no VPN address registered"
            )),
            "{t}"
        );
    }
    assert!(
        t.contains("the node of o0 did not take the parent run within 2s"),
        "{t}"
    );
}

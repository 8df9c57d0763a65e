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

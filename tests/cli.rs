//! The command line: every subcommand explains itself, usage errors exit 2, failures exit 1 and
//! name what failed, configuration paths and secrets come from the environment too.

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

/// systemd and `docker stop` send TERM: the server stops as on Ctrl-C, exit 0.
#[test]
fn the_server_stops_cleanly_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("algonet-cli-term-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("server.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\nmetrics_listen: null\ndata_dir: {}\nadmin: {{username: root, password: correct-horse-battery}}\n",
            dir.join("data").display()
        ),
    )
    .expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_algonet"))
        .args(["server", "--config"])
        .arg(&config)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the server");
    let mut stderr = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    while !line.contains("listening") {
        line.clear();
        let n = std::io::BufRead::read_line(&mut stderr, &mut line).expect("a line");
        assert!(n > 0, "the server ended before it listened");
    }
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let status = child.wait().expect("wait");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).expect("the rest");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(status.success(), "{status}: {rest}");
    assert!(rest.contains("stopping"), "{rest}");
}

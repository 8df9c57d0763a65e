//! vantage6's own algorithm client (`vantage6-algorithm-tools` 4.14.0 from PyPI, in the venv the
//! test command makes) against the server: every flag combination of the address lookup and its
//! helper methods, a subtask created with `task.create`, and its results collected with
//! `wait_for_results`, as an algorithm does them, with the answers vantage6 4.14 gives.

use algonet_testkit as common;

use std::collections::BTreeSet;

use common::server::{server, Server};
use serde_json::{json, Value};

/// The venv with vantage6's client packages, or `None` (skip) outside CI.
fn python() -> Option<String> {
    common::venv_python("ALGONET_V6_PYTHON")
}

/// The server's host and port, as vantage6's clients take them apart.
fn host_port(s: &Server) -> (String, String) {
    s.base
        .trim_end_matches("/api")
        .rsplit_once(':')
        .map(|(h, p)| (h.to_string(), p.to_string()))
        .expect("host:port")
}

/// One registered port: (task, organization, port, label).
type Port = (i64, i64, i64, Option<&'static str>);

fn run_of(runs: &[Value], org: i64) -> i64 {
    runs.iter()
        .find(|r| r["organization"]["id"] == json!(org))
        .and_then(|r| r["id"].as_i64())
        .expect("run")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_address_lookup_answers_vantage6s_algorithm_client() {
    let Some(python) = python() else {
        return;
    };
    let s = server("v6-tools", "").await;
    let nodes = s.nodes(3).await;
    // Organization 1 is the administrator's own (`root`); the nodes' are 2, 3 and 4.
    let orgs = [2i64, 3, 4];
    for (i, (id, token)) in nodes.iter().enumerate() {
        s.ok(
            "PATCH",
            &format!("/node/{id}"),
            Some(token),
            json!({"ip": format!("10.76.0.{}", 12 + i)}),
        )
        .await;
    }
    let admin = s.admin().await;
    let task = |orgs: &[i64]| {
        json!({"name": "t", "image": "v6", "collaboration_id": 1,
               "organizations": orgs.iter().map(|o| json!({"id": o})).collect::<Vec<_>>()})
    };
    // A parent on organization 2, its child on all three, a grandchild (made by organization 3's
    // child) on 2 and 4.
    let t1 = s.ok("POST", "/task", Some(&admin), task(&[2])).await;
    let t1_id = t1["id"].as_i64().expect("id");
    let parent = s.container_token(&nodes[0].1, &json!(t1_id)).await;
    let t2 = s.ok("POST", "/task", Some(&parent), task(&orgs)).await;
    let t2_id = t2["id"].as_i64().expect("id");
    let child2 = s.container_token(&nodes[1].1, &json!(t2_id)).await;
    let t3 = s.ok("POST", "/task", Some(&child2), task(&[2, 4])).await;
    let t3_id = t3["id"].as_i64().expect("id");
    let mut ports: Vec<Port> = Vec::new();
    let mut register = |task_id: i64, org: i64, port: i64, label: Option<&'static str>| {
        ports.push((task_id, org, port, label));
        (task_id, org, port, label)
    };
    let mut to_register = vec![register(t1_id, 2, 49200, Some("a"))];
    for org in orgs {
        to_register.push(register(t2_id, org, 49150 + org, Some("a")));
        to_register.push(register(t2_id, org, 49160 + org, None));
    }
    for org in [2, 4] {
        to_register.push(register(t3_id, org, 49170 + org, Some("a")));
    }
    for (task_id, org, port, label) in to_register {
        let node = &nodes[usize::try_from(org - 2).expect("org")].1;
        s.ok(
            "POST",
            "/port",
            Some(node),
            json!({"port": port, "run_id": run_of(&s.runs(&admin, task_id).await, org), "label": label}),
        )
        .await;
    }

    let (host, port) = host_port(&s);
    // One of the scripts in tests/python, run as an algorithm with `token`.
    let script = |name: &str, token: &str, extra: &[&str]| {
        let mut c = std::process::Command::new(&python);
        c.arg(format!(
            "{}/tests/python/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .args([host.as_str(), port.as_str(), "/api", token])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
        c
    };
    let answer = |out: std::process::Output| -> Value {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("json")
    };
    let ask = |token: &str| answer(script("vpn_lookup.py", token, &[]).output().expect("run"));
    // What vantage6 4.14 answers: the ports of these tasks, of these organizations.
    let expect =
        |tasks: &[i64], keep: &dyn Fn(i64) -> bool, label: Option<&str>| -> BTreeSet<String> {
            ports
                .iter()
                .filter(|(t, o, _, l)| {
                    tasks.contains(t) && keep(*o) && label.is_none_or(|x| *l == Some(x))
                })
                .map(|(t, o, p, l)| {
                    let parent = if *t == t1_id {
                        None
                    } else if *t == t2_id {
                        Some(t1_id)
                    } else {
                        Some(t2_id)
                    };
                    json!({"port": p, "label": l, "ip": format!("10.76.0.{}", 10 + o),
                       "organization_id": o, "task_id": t, "parent_id": parent})
                    .to_string()
                })
                .collect()
        };
    let got = |v: &Value| -> BTreeSet<String> {
        v.as_array()
            .unwrap_or_else(|| panic!("a list of addresses, not {v}"))
            .iter()
            .map(Value::to_string)
            .collect()
    };
    let all = |_: i64| true;

    // From organization 3's child: parent t1, children t3, siblings on 2 and 4.
    let r = ask(&child2);
    let (own, par, kids) = (t2_id, t1_id, t3_id);
    let cases: Vec<(&str, BTreeSet<String>)> = vec![
        ("none", expect(&[own], &all, None)),
        ("include_children", expect(&[own, kids], &all, None)),
        ("include_parent", expect(&[own, par], &all, None)),
        (
            "include_children+include_parent",
            expect(&[own, kids, par], &all, None),
        ),
        ("only_children", expect(&[kids], &all, None)),
        (
            "include_children+only_children",
            expect(&[kids], &all, None),
        ),
        (
            "include_parent+only_children",
            expect(&[kids, par], &all, None),
        ),
        (
            "include_children+include_parent+only_children",
            expect(&[kids, par], &all, None),
        ),
        ("only_parent", expect(&[par], &all, None)),
        ("include_children+only_parent", expect(&[par], &all, None)),
        ("include_parent+only_parent", expect(&[par], &all, None)),
        (
            "include_children+include_parent+only_parent",
            expect(&[par], &all, None),
        ),
        ("only_siblings", expect(&[own], &|o| o != 3, None)),
        (
            "include_children+include_parent+only_siblings",
            expect(&[own], &|o| o != 3, None),
        ),
        ("only_self", expect(&[own], &|o| o == 3, None)),
        (
            "include_children+include_parent+only_self",
            expect(&[own], &|o| o == 3, None),
        ),
        ("label=a", expect(&[own], &all, Some("a"))),
        ("parent_address", expect(&[par], &all, None)),
        ("child_addresses", expect(&[kids], &all, None)),
        ("sibling_addresses", expect(&[own], &|o| o != 3, None)),
        ("own_address", expect(&[own], &|o| o == 3, None)),
    ];
    for (name, want) in cases {
        assert_eq!(got(&r[name]), want, "child of organization 3, {name}");
    }

    // From the parent, which has no parent of its own: only_parent keeps its own task.
    let r = ask(&parent);
    assert_eq!(got(&r["only_parent"]), expect(&[t1_id], &all, None));
    assert_eq!(got(&r["parent_address"]), expect(&[t1_id], &all, None));
    assert_eq!(
        got(&r["include_children+only_parent"]),
        expect(&[t1_id, t2_id], &all, None),
        "no parent: only_parent leaves the task and its children"
    );
    assert_eq!(got(&r["child_addresses"]), expect(&[t2_id], &all, None));

    // A subtask from the algorithm client: its input arrives as vantage6 encodes it, so the node
    // hands the algorithm exactly the JSON its wrapper reads.
    let sub = answer(
        script("subtask.py", &child2, &["2,4"])
            .output()
            .expect("run"),
    );
    assert_eq!(sub["parent"]["id"], json!(t2_id), "{sub}");
    assert_eq!(sub["image"], json!("v6"), "{sub}");
    let runs: Value = s
        .ok(
            "GET",
            &format!("/run?task_id={}", sub["id"]),
            Some(&admin),
            json!(null),
        )
        .await;
    let runs = runs["data"].as_array().expect("runs");
    assert_eq!(runs.len(), 2);
    for run in runs {
        let input = algonet::api::codec::decode(run["input"].as_str().expect("input"))
            .expect("base64, as vantage6 sends it");
        let input: Value = serde_json::from_slice(&input).expect("JSON inside");
        assert_eq!(input, json!({"method": "child", "window_secs": 5}));
    }

    // The subtask's runs end with results as nodes send them; the algorithm client waits for
    // the task and reads them decoded.
    let waiting = script("results.py", &child2, &[&sub["id"].to_string()])
        .spawn()
        .expect("run the algorithm client");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    for run in runs {
        let org = run["organization"]["id"].as_i64().expect("org");
        let node = &nodes[usize::try_from(org - 2).expect("org")].1;
        let result = algonet::api::codec::encode_json(&json!({"sum": org * 10}));
        s.ok(
            "PATCH",
            &format!("/run/{}", run["id"]),
            Some(node),
            json!({"status": "completed", "result": result}),
        )
        .await;
    }
    let results = answer(waiting.wait_with_output().expect("the algorithm client"));
    let results: BTreeSet<String> = results
        .as_array()
        .expect("a list of results")
        .iter()
        .map(Value::to_string)
        .collect();
    let want: BTreeSet<String> = [20, 40].map(|n| json!({"sum": n}).to_string()).into();
    assert_eq!(results, want);

    // The algorithm client's other calls, on the finished subtask.
    let sub_id = sub["id"].as_i64().expect("id");
    let calls = answer(
        script("algorithm_calls.py", &child2, &[&sub_id.to_string()])
            .output()
            .expect("run"),
    );
    let task = &calls["task.get"];
    assert_eq!(
        (&task["id"], &task["parent"]["id"], &task["status"]),
        (&json!(sub_id), &json!(t2_id), &json!("completed")),
        "{task}"
    );
    assert_eq!(
        task["job_id"],
        json!(t1_id),
        "a subtask is of its root's job"
    );
    assert_eq!(
        task["init_org"]["id"],
        json!(3),
        "made by organization 3's run"
    );
    assert_eq!(
        task["init_user"]["id"],
        json!(1),
        "of the administrator's job"
    );
    let runs = calls["run.from_task"].as_array().expect("runs");
    let run_orgs: BTreeSet<i64> = runs
        .iter()
        .map(|r| r["organization"]["id"].as_i64().expect("org"))
        .collect();
    assert_eq!(run_orgs, [2, 4].into());
    assert_eq!(calls["run.get"], runs[0]);
    assert_eq!(
        runs[0]["task"]["link"],
        json!(format!("/api/task/{sub_id}"))
    );
    let decoded: BTreeSet<String> = calls["result.from_task"]
        .as_array()
        .expect("results")
        .iter()
        .map(Value::to_string)
        .collect();
    assert_eq!(decoded, want);
    assert!(want.contains(&calls["result.get"].to_string()), "{calls}");
    assert_eq!(calls["organization.get"]["id"], json!(3));
    let listed: Vec<i64> = calls["organization.list"]
        .as_array()
        .expect("organizations")
        .iter()
        .map(|o| o["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(listed, orgs, "the collaboration's organizations");
    assert_eq!(calls["collaboration.get"]["encrypted"], json!(false));
    assert_eq!(
        calls["collaboration.get"]["organizations"],
        json!("/api/organization?collaboration_id=1")
    );
}

/// A researcher with vantage6's own UserClient (`vantage6-client` 4.14.0): logs in (numeric
/// subject, refresh token), sees who they are, lists the federation, creates a task for two
/// organizations and reads its results once the nodes have reported them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vantage6s_user_client_runs_a_task() {
    let Some(python) = python() else {
        return;
    };
    use std::io::BufRead;
    let s = server("v6-user", "").await;
    let nodes = s.nodes(2).await;
    let (host, port) = host_port(&s);
    let mut child = std::process::Command::new(&python)
        .arg(format!(
            "{}/tests/python/user_client.py",
            env!("CARGO_MANIFEST_DIR")
        ))
        .args([
            &host,
            &port,
            "/api",
            "root",
            "correct-horse-battery",
            "1",
            "2,3",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the user client");
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("the created task");
    let task: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
        let mut err = String::new();
        let _ = std::io::Read::read_to_string(child.stderr.as_mut().expect("stderr"), &mut err);
        panic!("no task from the user client ({e}): {line}\n{err}")
    });
    let task_id = task["id"].as_i64().expect("task id");
    assert_eq!(task["init_user"]["id"], json!(1));
    assert_eq!(task["description"], json!("a researcher's task"));
    // Each node claims its run, finds the input as the client encoded it, and reports.
    for (i, (_, token)) in nodes.iter().enumerate() {
        let pending = s
            .ok(
                "GET",
                &format!("/run?task_id={task_id}"),
                Some(token),
                json!(null),
            )
            .await;
        let run = &pending["data"][0];
        let input =
            algonet::api::codec::decode(run["input"].as_str().expect("input")).expect("base64");
        let input: Value = serde_json::from_slice(&input).expect("JSON");
        assert_eq!(input, json!({"method": "average", "column": "age"}));
        let id = run["id"].as_i64().expect("id");
        s.ok(
            "POST",
            &format!("/run/{id}/claim"),
            Some(token),
            json!(null),
        )
        .await;
        let result = algonet::api::codec::encode_json(&json!({"average": 40 + i}));
        s.ok(
            "PATCH",
            &format!("/run/{id}"),
            Some(token),
            json!({"status": "completed", "result": result}),
        )
        .await;
    }
    let status = child.wait().expect("the user client");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).expect("its answer");
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(child.stderr.as_mut().expect("stderr"), &mut err);
    assert!(status.success(), "{err}");
    // The client's waiting animation goes to stdout too; its answer is the last line.
    let last = rest.lines().last().unwrap_or_default();
    let seen: Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {rest}\n{err}"));
    assert_eq!(
        seen["whoami"],
        json!({"id": 1, "organization_id": 1, "organization_name": "root"})
    );
    let ids = |v: &Value| -> Vec<i64> {
        v.as_array()
            .unwrap_or_else(|| panic!("a list, not {v}"))
            .iter()
            .map(|o| o["id"].as_i64().expect("id"))
            .collect()
    };
    assert_eq!(ids(&seen["organization.list"]), [1, 2, 3]);
    assert_eq!(seen["organization.get"]["name"], json!("root"));
    assert_eq!(ids(&seen["collaboration.list"]), [1]);
    assert_eq!(seen["collaboration.get"]["encrypted"], json!(false));
    assert_eq!(ids(&seen["node.list"]), [1, 2]);
    // `node.list(is_online=...)`: the nodes called the server for their runs.
    assert_eq!(ids(&seen["node.list online"]), [1, 2]);
    assert!(ids(&seen["node.list offline"]).is_empty());
    assert_eq!(seen["task.get"]["id"], json!(task_id));
    let results: BTreeSet<String> = seen["results"]["data"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["result"].to_string())
        .collect();
    assert_eq!(
        results,
        [40, 41]
            .map(|n| json!(json!({"average": n}).to_string()).to_string())
            .into(),
        "the results as the user client decodes them: {seen}"
    );
    assert_eq!(ids(&seen["run.from_task"]["data"]).len(), 2);
}

/// vantage6's own server (`vantage6-server` 4.15.2 from PyPI, whose VPN code is 4.14.0's) and
/// algonet's, given the same federation by the same requests: organizations, a collaboration,
/// nodes with VPN addresses, a task with a subtask and a grandchild, ports with and without
/// labels. Every call compared (tests/python/differential.py says how): every flag combination
/// of the address lookup from each algorithm, the reads of tasks, runs, results, organizations,
/// collaborations and nodes, pages, refusals, and a run's report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn algonet_answers_as_vantage6s_own_server() {
    let (Some(python), Some(server_python)) =
        (python(), common::venv_python("ALGONET_V6_SERVER_PYTHON"))
    else {
        return;
    };
    let v6 = common::vantage6::start(&server_python, "reference").await;
    let reference = v6.base.clone();
    let s = server("v6-differential", "").await;
    let out = std::process::Command::new(&python)
        .arg(format!(
            "{}/tests/python/differential.py",
            env!("CARGO_MANIFEST_DIR")
        ))
        // vantage6's first start makes user root with password root.
        .args([&reference, "root", &s.base, "correct-horse-battery"])
        .output()
        .expect("run the comparison");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    let compared = report["compared"].as_u64().expect("compared");
    eprintln!("{compared} calls compared with vantage6's server");
    assert!(compared >= 150, "only {compared} calls compared: {report}");
    let differences = report["differences"].as_array().expect("differences");
    assert!(
        differences.is_empty(),
        "{} of {compared} calls differ:\n{}",
        differences.len(),
        differences
            .iter()
            .map(|d| d.as_str().unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

"""Tasks on a node's data through vantage6's own UserClient: each asks for databases as a
vantage6 user does, and one is killed with `task.kill`. Prints one JSON line per task:
{"name", "id", "status", "result", "log"}.

usage: data_tasks.py HOST PORT API_PATH USER PASSWORD COLLABORATION ORGANIZATION IMAGE
"""

import json
import sys
import time

from vantage6.client import UserClient

host, port, api_path, user, password, collab, org, image = sys.argv[1:9]
client = UserClient(host, int(port), api_path, log_level="error")
client.authenticate(user, password)
client.setup_encryption(None)


def create(name, method, kwargs, databases, task_image=image):
    return client.task.create(
        collaboration=int(collab),
        organizations=[int(org)],
        name=name,
        image=task_image,
        description=name,
        input_={"method": method, "kwargs": kwargs},
        databases=databases,
    )


def finish(task, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        runs = client.run.from_task(task["id"])["data"]
        if runs and all(
            r["status"] not in ("pending", "initializing", "active") for r in runs
        ):
            return runs[0]
        time.sleep(0.5)
    return client.run.from_task(task["id"])["data"][0]


def report(name, task, run):
    result = None
    if run["status"] == "completed":
        results = client.wait_for_results(task["id"], interval=0.5)
        result = results["data"][0]["result"] if isinstance(results, dict) else results[0]
        if isinstance(result, str):
            result = json.loads(result)
    print(json.dumps({"name": name, "id": task["id"], "status": run["status"],
                      "result": result, "log": run.get("log")}), flush=True)


tasks = [
    ("csv", "summary", {"column": "age"}, [{"label": "default"}]),
    ("parquet", "summary", {"column": "age"}, [{"label": "parq"}]),
    ("sqlite", "summary", {"column": "age"},
     [{"label": "lite", "query": "SELECT * FROM people WHERE age > 30"}]),
    ("probe", "probe", {}, [{"label": "default"}]),
    ("absent", "summary", {}, [{"label": "nowhere"}]),
]
for name, method, kwargs, databases in tasks:
    task = create(name, method, kwargs, databases)
    report(name, task, finish(task))

# An image the node's policies do not admit.
task = create("forbidden", "summary", {}, [{"label": "default"}],
              task_image="forbidden/algorithm:1.0")
report("forbidden", task, finish(task))

# A run killed by its user while it runs.
task = create("kill", "wait", {"seconds": 300}, [{"label": "default"}])
deadline = time.time() + 120
while time.time() < deadline:
    if client.run.from_task(task["id"])["data"][0]["status"] == "active":
        break
    time.sleep(0.25)
asked = time.time()
client.task.kill(task["id"])
run = finish(task, timeout=30)
print(json.dumps({"name": "kill", "id": task["id"], "status": run["status"],
                  "seconds": round(time.time() - asked, 2)}), flush=True)

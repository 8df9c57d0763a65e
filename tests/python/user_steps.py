"""A user's steps with vantage6's own UserClient, on data-summary: prints one JSON line per step.

usage: user_steps.py API_URL USER PASSWORD COLLABORATION IMAGE STEP [ARGS]

    summary ORG...   data-summary's `summary` of column `age` on each organization's node;
                     prints {"results": {org: result}, "statuses": {org: status}}
    online           prints {"online": [node names], "offline": [node names]}
    wait ORG         starts data-summary's `wait` at ORG, returns once its run is active;
                     prints {"task": id}
    kill TASK        kills the task, then waits until its runs are killed;
                     prints {"statuses": [...]}
"""

import json
import sys
import time
from urllib.parse import urlsplit

from vantage6.client import UserClient

api, user, password, collab, image, step = sys.argv[1:7]
args = sys.argv[7:]
url = urlsplit(api)
client = UserClient(f"{url.scheme}://{url.hostname}", url.port, url.path, log_level="error")
client.authenticate(user, password)
client.setup_encryption(None)


def task(method, orgs, kwargs):
    return client.task.create(
        collaboration=int(collab),
        organizations=[int(o) for o in orgs],
        name=method,
        image=image,
        description=method,
        input_={"method": method, "kwargs": kwargs},
        databases=[{"label": "default"}],
    )


def runs(task_id):
    return client.run.from_task(task_id)["data"]


if step == "summary":
    t = task("summary", args, {"column": "age"})
    results = client.wait_for_results(t["id"], interval=0.5)["data"]
    org_of = {r["id"]: str(r["organization"]["id"]) for r in runs(t["id"])}
    print(json.dumps({
        "results": {org_of[r["run"]["id"]]: json.loads(r["result"]) if r["result"] else None
                    for r in results},
        "statuses": {org_of[r["id"]]: r["status"] for r in runs(t["id"])},
        "logs": {org_of[r["id"]]: r["log"] for r in runs(t["id"])},
    }))
elif step == "online":
    print(json.dumps({
        "online": sorted(n["name"] for n in client.node.list(is_online=True)["data"]),
        "offline": sorted(n["name"] for n in client.node.list(is_online=False)["data"]),
    }))
elif step == "wait":
    t = task("wait", args, {"seconds": 600})
    end = time.time() + 120
    while runs(t["id"])[0]["status"] != "active":
        if time.time() > end:
            sys.exit(f"the run did not start: {runs(t['id'])}")
        time.sleep(0.5)
    print(json.dumps({"task": t["id"]}))
elif step == "kill":
    client.task.kill(int(args[0]))
    end = time.time() + 60
    while any(r["status"] != "killed by user" for r in runs(int(args[0]))):
        if time.time() > end:
            break
        time.sleep(0.5)
    print(json.dumps({"statuses": [r["status"] for r in runs(int(args[0]))]}))
else:
    sys.exit(f"unknown step {step}")

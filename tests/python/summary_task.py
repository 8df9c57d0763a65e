"""One task on a node's data through vantage6's own UserClient: data-summary's `summary` of
column `age` of database `default`. Prints {"status", "result", "log"} as JSON.

usage: summary_task.py HOST PORT API_PATH USER PASSWORD COLLABORATION ORGANIZATION IMAGE
"""

import json
import sys

from vantage6.client import UserClient

host, port, api_path, user, password, collab, org, image = sys.argv[1:9]
client = UserClient(host, int(port), api_path, log_level="error")
client.authenticate(user, password)
client.setup_encryption(None)
task = client.task.create(
    collaboration=int(collab),
    organizations=[int(org)],
    name="summary",
    image=image,
    description="summary",
    input_={"method": "summary", "kwargs": {"column": "age"}},
    databases=[{"label": "default"}],
)
results = client.wait_for_results(task["id"], interval=0.5)
result = results["data"][0]["result"]
run = client.run.from_task(task["id"])["data"][0]
print(json.dumps({"status": run["status"], "result": json.loads(result) if result else None,
                  "log": run["log"]}))

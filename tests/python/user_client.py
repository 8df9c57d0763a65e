"""A researcher's session with vantage6's own UserClient (vantage6-client): log in, see who one
is, list and get organizations, collaborations and nodes, create a task and follow it to its
results. The node's part (claiming the runs and reporting results) is the caller's: this script
prints the created task as one JSON line, then waits for its results and prints a final JSON
object with everything it read."""

import json
import sys

from vantage6.client import UserClient

host, port, path, username, password, collaboration, organizations = sys.argv[1:8]
client = UserClient(host, int(port), path, log_level="warn")
client.authenticate(username, password)
client.setup_encryption(None)
seen = {
    "whoami": {
        "id": client.whoami.id_,
        "organization_id": client.whoami.organization_id,
        "organization_name": client.whoami.organization_name,
    },
    "organization.list": client.organization.list()["data"],
    "organization.get": client.organization.get(client.whoami.organization_id),
    "collaboration.list": client.collaboration.list(scope="global")["data"],
    "collaboration.get": client.collaboration.get(int(collaboration)),
    "node.list": client.node.list(collaboration=int(collaboration))["data"],
}
task = client.task.create(
    collaboration=int(collaboration),
    organizations=[int(o) for o in organizations.split(",")],
    name="from the user client",
    image="v6",
    description="a researcher's task",
    input_={"method": "average", "column": "age"},
)
print(json.dumps(task), flush=True)
seen["task.get"] = client.task.get(task["id"])
seen["results"] = client.wait_for_results(task["id"], interval=0.2)
seen["result.from_task"] = client.result.from_task(task["id"])
seen["run.from_task"] = client.run.from_task(task["id"])
# The nodes have called the server since (their runs): online now.
seen["node.list online"] = client.node.list(collaboration=int(collaboration), is_online=True)["data"]
seen["node.list offline"] = client.node.list(collaboration=int(collaboration), is_online=False)["data"]
print(json.dumps(seen))

"""A researcher runs vpn-average (algorithms/vpn-average) with vantage6's own UserClient: the
central function on one organization, which sends partials to every organization and talks to
them over the VPN. Prints the central run's result, decoded, as JSON.

usage: vpn_average.py HOST PORT API_PATH USERNAME PASSWORD COLLABORATION ORGANIZATION IMAGE
"""

import json
import sys

from vantage6.client import UserClient

host, port, path, username, password, collaboration, organization, image = sys.argv[1:9]
client = UserClient(host, int(port), path, log_level="warn")
client.authenticate(username, password)
client.setup_encryption(None)
task = client.task.create(
    collaboration=int(collaboration),
    organizations=[int(organization)],
    name="vpn-average",
    image=image,
    description="a federated average over the VPN",
    input_={"method": "central", "kwargs": {"column": "age", "window_secs": 120}},
    databases=[{"label": "default"}],
)
results = client.wait_for_results(task["id"], interval=0.5)
runs = client.run.from_task(task["id"])["data"]
print(
    json.dumps(
        {
            "task": task["id"],
            "status": client.task.get(task["id"])["status"],
            "results": [json.loads(r["result"]) if r["result"] else None for r in results["data"]],
            "logs": [r["log"] for r in runs],
        }
    )
)

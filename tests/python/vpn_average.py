"""A researcher runs vpn-average (algorithms/vpn-average) with vantage6's own UserClient: the
central function on one organization, which sends partials to every organization and talks to
them over the VPN. Prints the central run's result, decoded, as JSON.

In an encrypted collaboration KEY is the private key of the researcher's organization
(`setup_encryption` uploads its public key; inputs are encrypted for each organization and the
results decrypted with it).

usage: vpn_average.py HOST PORT API_PATH USERNAME PASSWORD COLLABORATION ORGANIZATION IMAGE [KEY]
"""

import json
import sys

from vantage6.client import UserClient

host, port, path, username, password, collaboration, organization, image = sys.argv[1:9]
key = sys.argv[9] if len(sys.argv) > 9 else None
client = UserClient(host, int(port), path, log_level="warn")
client.authenticate(username, password)
client.setup_encryption(key)
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
answer = {
    "task": task["id"],
    "status": client.task.get(task["id"])["status"],
    "results": [json.loads(r["result"]) if r["result"] else None for r in results["data"]],
    "logs": [r["log"] for r in runs],
}
print(json.dumps(answer))

"""vpn-average: a federated average whose partial results travel directly between the
algorithm containers over the VPN, written as vantage6's documentation shows algorithms.

`central` (run on one organization) creates a `partial` subtask on every organization of the
collaboration, finds the partials' public ports with `client.vpn.get_child_addresses()`, asks
each over TCP for its count and sum, and collects the subtasks' results with
`client.wait_for_results`. Each `partial` serves on port 8888 (`EXPOSE 8888`, `LABEL
p8888="average"`) until the central side says it is done, or its window ends.

Each partial reads its organization's data with vantage6's `@data(1)` (the task's first
database, as the node gives it) and serves the count and sum of one column.
"""

import json
import socket
import time

from vantage6.algorithm.tools.decorators import algorithm_client, data
from vantage6.algorithm.tools.util import info

PORT = 8888
LABEL = "average"


def _connect(ip, port, deadline):
    """A connection to a partial. Its port is public before its code listens (the node maps it
    before the algorithm starts), so a refusal means "not yet": try again until the deadline."""
    while True:
        try:
            return socket.create_connection((ip, port), timeout=30)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@algorithm_client
def central(client, column="age", window_secs=120):
    organizations = [o["id"] for o in client.organization.list()]
    info(f"sending partial to organizations {organizations}")
    task = client.task.create(
        input_={
            "method": "partial",
            "kwargs": {"column": column, "window_secs": window_secs},
        },
        organizations=organizations,
        name="vpn-average partial",
        description="serves its partial sum on port 8888 over the VPN",
    )
    deadline = time.monotonic() + window_secs
    while True:
        addresses = [
            a
            for a in client.vpn.get_child_addresses()
            if a["label"] == LABEL and a["ip"]
        ]
        if {a["organization_id"] for a in addresses} >= set(organizations):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"partials not reachable in time: {addresses}")
        time.sleep(0.5)
    exchanged = {}
    for a in addresses:
        with _connect(a["ip"], a["port"], deadline) as s:
            stream = s.makefile("rw")
            stream.write("PARTIAL\n")
            stream.flush()
            exchanged[str(a["organization_id"])] = json.loads(stream.readline())
            stream.write("DONE\n")
            stream.flush()
        info(f"organization {a['organization_id']} at {a['ip']}:{a['port']} answered")
    results = client.wait_for_results(task["id"])
    total = sum(p["sum"] for p in exchanged.values())
    count = sum(p["count"] for p in exchanged.values())
    return {
        "average": total / count,
        "over_vpn": exchanged,
        "subtask_results": results,
    }


@data(1)
@algorithm_client
def partial(client, df, column="age", window_secs=120):
    answer = {
        "organization_id": client.organization_id,
        "count": int(df[column].count()),
        "sum": float(df[column].sum()),
    }
    served = 0
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("0.0.0.0", PORT))
        listener.listen()
        listener.settimeout(window_secs)
        while True:
            try:
                conn, peer = listener.accept()
            except socket.timeout:
                break
            with conn:
                conn.settimeout(30)
                stream = conn.makefile("rw")
                done = False
                for line in stream:
                    if line.strip() == "PARTIAL":
                        stream.write(json.dumps(answer) + "\n")
                        stream.flush()
                        served += 1
                    elif line.strip() == "DONE":
                        done = True
                        break
                info(f"served {peer[0]}")
            if done:
                break
    return {"organization_id": client.organization_id, "served": served}

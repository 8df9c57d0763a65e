"""The other calls an algorithm makes: vantage6's own AlgorithmClient with a container token
reads a task, its runs and results, its organizations and collaboration. Prints one JSON object:
each call's name and what the client returned."""

import json
import sys

from vantage6.algorithm.client import AlgorithmClient

host, port, path, token, task_id = sys.argv[1:6]
task_id = int(task_id)
client = AlgorithmClient(token, host=host, port=int(port), path=path)
runs = client.run.from_task(task_id)
print(
    json.dumps(
        {
            "task.get": client.task.get(task_id),
            "run.from_task": runs,
            "run.get": client.run.get(runs[0]["id"]),
            "result.from_task": client.result.from_task(task_id),
            "result.get": client.result.get(runs[0]["id"]),
            "organization.get": client.organization.get(client.organization_id),
            "organization.list": client.organization.list(),
            "collaboration.get": client.collaboration.get(),
        }
    )
)

"""A subtask as an algorithm creates one: vantage6's own AlgorithmClient with a container token
(it reads each organization's public key first, then sends the input as vantage6 encodes it).
Prints the answer to `task.create` as JSON."""

import json
import sys

from vantage6.algorithm.client import AlgorithmClient

host, port, path, token, organizations = sys.argv[1:6]
client = AlgorithmClient(token, host=host, port=int(port), path=path)
task = client.task.create(
    input_={"method": "child", "window_secs": 5},
    organizations=[int(o) for o in organizations.split(",")],
    name="from the algorithm client",
)
print(json.dumps(task))

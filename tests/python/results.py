"""Waits for a task and collects its results as an algorithm does: vantage6's own
AlgorithmClient (`wait_for_results` polls the task's status, then reads and decodes the results).
Prints the results as JSON."""

import json
import sys

from vantage6.algorithm.client import AlgorithmClient

host, port, path, token, task_id = sys.argv[1:6]
client = AlgorithmClient(token, host=host, port=int(port), path=path)
print(json.dumps(client.wait_for_results(int(task_id), interval=0.2)))

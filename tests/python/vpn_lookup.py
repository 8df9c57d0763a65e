"""The address lookup as an algorithm makes it: vantage6's own AlgorithmClient (from
vantage6-algorithm-tools) with a container token, every combination of its flags, and the
helper methods. Prints one JSON object: each call's name and what the client returned."""

import itertools
import json
import sys

from vantage6.algorithm.client import AlgorithmClient

host, port, path, token = sys.argv[1:5]
client = AlgorithmClient(token, host=host, port=int(port), path=path)

results = {}
onlies = [None, "only_children", "only_parent", "only_siblings", "only_self"]
includes = ["include_children", "include_parent"]
for only in onlies:
    for n in range(len(includes) + 1):
        for chosen in itertools.combinations(includes, n):
            flags = {f: True for f in chosen}
            if only:
                flags[only] = True
            name = "+".join(sorted(flags)) or "none"
            results[name] = client.vpn.get_addresses(**flags)
results["label=a"] = client.vpn.get_addresses(label="a")
results["parent_address"] = client.vpn.get_parent_address()
results["child_addresses"] = client.vpn.get_child_addresses()
results["sibling_addresses"] = client.vpn.get_sibling_addresses()
results["own_address"] = client.vpn.get_own_address()
print(json.dumps(results))

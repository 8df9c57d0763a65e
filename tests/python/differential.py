"""The same federation built on two servers, every call compared: the reference (vantage6-server)
and algonet. Both are driven over HTTP with the same requests, in the same order, so ids agree
except for nodes (vantage6 numbers users and nodes in one sequence). Prints one JSON object:
the number of calls compared and the differences found (none when the servers agree).

A call agrees when both answer the same status and every field of vantage6's answer is in
algonet's with the same value. Before comparing, times become "<time>", node ids become the
node's place in the scenario, and `methods` (what each server serves at a link) are left out;
lists vantage6 gives in no promised order are compared sorted. A refusal must have vantage6's
status and a `msg`, in algonet's own words. Fields algonet adds are its extensions
(docs/vantage6-api.md). KNOWN lists the fields that differ on purpose, with why.

usage: differential.py REFERENCE_URL REFERENCE_PASSWORD ALGONET_URL ALGONET_PASSWORD
"""

import base64
import itertools
import json
import re
import sys

import requests

# Fields that differ on purpose: (resource kind, field) -> why.
KNOWN = {
    ("node", "status"): "vantage6 tracks nodes by their socket; algonet by their calls",
    ("node", "last_seen"): "likewise: vantage6 by the socket's pings, algonet by the calls",
}

TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?$")


class Server:
    def __init__(self, name, base, password):
        self.name, self.base, self.password = name, base.rstrip("/"), password
        self.node_ids = {}  # this server's node id -> the node's place in the scenario

    def call(self, method, path, token=None, body=None, params=None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        r = requests.request(
            method, self.base + path, headers=headers, json=body, params=params, timeout=30
        )
        try:
            answer = r.json()
        except ValueError:
            answer = r.text
        return r.status_code, answer

    def ok(self, method, path, token=None, body=None, params=None):
        status, answer = self.call(method, path, token, body, params)
        if status >= 300:
            raise SystemExit(f"{self.name}: {method} {path}: {status} {answer}")
        return answer


def b64(value):
    return base64.b64encode(json.dumps(value).encode()).decode()


def normalize(server, value, kind=None):
    """Times, node ids and `methods` made comparable; `kind` is the resource the value is."""
    if isinstance(value, dict):
        if value.get("type") == "node" or kind == "node":
            kind = "node"
        out = {}
        for k, v in value.items():
            if k == "methods":
                continue
            if k in ("id", "node_id") and kind == "node" or k == "node_id":
                out[k] = f"node#{server.node_ids.get(v, v)}"
                continue
            out[k] = normalize(server, v, "node" if k == "node" else None)
        return out
    if isinstance(value, list):
        return [normalize(server, v, kind) for v in value]
    if isinstance(value, str) and TIME.match(value):
        return "<time>"
    return value


def differences(ref, ours, where, kind=None):
    """Where algonet's answer lacks or changes what vantage6's holds."""
    if isinstance(ref, dict) and isinstance(ours, dict):
        kind = "node" if ref.get("type") == "node" else kind
        found = []
        for k, v in ref.items():
            if (kind, k) in KNOWN:
                continue
            if k not in ours:
                found.append(f"{where}.{k}: missing (vantage6: {json.dumps(v)})")
            else:
                found += differences(v, ours[k], f"{where}.{k}", "node" if k == "node" else None)
        return found
    if isinstance(ref, list) and isinstance(ours, list):
        if len(ref) != len(ours):
            return [f"{where}: {len(ours)} items, vantage6 {len(ref)}: {json.dumps(ours)} vs {json.dumps(ref)}"]
        return list(
            itertools.chain.from_iterable(
                differences(r, o, f"{where}[{i}]", kind) for i, (r, o) in enumerate(zip(ref, ours))
            )
        )
    if ref != ours:
        return [f"{where}: {json.dumps(ours)}, vantage6 {json.dumps(ref)}"]
    return []


def sort_key(v):
    return json.dumps(v, sort_keys=True)


class Both:
    """The scenario's steps, each done on both servers and compared."""

    def __init__(self, ref, ours):
        self.servers = (ref, ours)
        self.compared = 0
        self.found = []

    def call(self, name, method, path, tokens=(None, None), body=None, params=None,
             unordered=False, compare=True):
        answers = []
        for server, token in zip(self.servers, tokens):
            b = body(server) if callable(body) else body
            answers.append(server.call(method, path(server) if callable(path) else path, token, b, params))
        if compare:
            self.compare(name, answers, unordered)
        return answers

    def compare(self, name, answers, unordered=False):
        (rs, ra), (os_, oa) = answers
        ra, oa = normalize(self.servers[0], ra), normalize(self.servers[1], oa)
        if unordered:
            for a in (ra, oa):
                items = a.get("addresses") if isinstance(a, dict) and "addresses" in a else (
                    a.get("data") if isinstance(a, dict) else a)
                if isinstance(items, list):
                    items.sort(key=sort_key)
        self.compared += 1
        if rs != os_:
            self.found.append(f"{name}: status {os_}, vantage6 {rs} ({json.dumps(oa)} vs {json.dumps(ra)})")
            return
        if rs >= 400 and isinstance(ra, dict) and isinstance(oa, dict):
            # A refusal's wording is algonet's own (it says what was wrong); its status and
            # its form ({"msg": ...}) are vantage6's.
            ra, oa = {k: v for k, v in ra.items() if k != "msg"}, {k: v for k, v in oa.items() if k != "msg"}
            if "msg" not in answers[1][1]:
                self.found.append(f"{name}: no msg in {json.dumps(answers[1][1])}")
        self.found += differences(ra, oa, name)


def main():
    ref = Server("vantage6", sys.argv[1], sys.argv[2])
    ours = Server("algonet", sys.argv[3], sys.argv[4])
    both = Both(ref, ours)
    admin = tuple(
        s.ok("POST", "/token/user", body={"username": "root", "password": s.password})["access_token"]
        for s in (ref, ours)
    )
    both.call("user", "GET", "/user/1", admin, compare=False)
    organizations = []
    for name in ("alpha", "beta", "gamma"):
        org = {"name": name, "domain": f"{name}.example", "address1": "Main 1",
               "address2": "", "zipcode": "1234", "country": "NL"}
        answers = both.call(f"POST /organization {name}", "POST", "/organization", admin, org)
        organizations.append(answers[1][1]["id"])
    # vantage6 lets a user create tasks only in a collaboration of their own organization.
    both.call("POST /collaboration", "POST", "/collaboration", admin,
              {"name": "study", "organization_ids": [1] + organizations, "encrypted": False})
    node_tokens = ([], [])
    for place, org in enumerate(organizations):
        answers = both.call(f"POST /node {org}", "POST", "/node", admin,
                            {"organization_id": org, "collaboration_id": 1}, compare=False)
        for i, (server, (_, node)) in enumerate(zip(both.servers, answers)):
            server.node_ids[node["id"]] = place
            login = server.ok("POST", "/token/node", body={"api_key": node["api_key"]})
            node_tokens[i].append((node["id"], login["access_token"]))
        both.compare(f"POST /node {org}", [(s, {k: v for k, v in a.items() if k != "api_key"})
                                           for s, a in answers])
    node = lambda place: (node_tokens[0][place][1], node_tokens[1][place][1])
    for place in range(len(organizations)):
        both.call(f"PATCH /node ip {place}", "PATCH",
                  lambda s, p=place: f"/node/{node_tokens[both.servers.index(s)][p][0]}",
                  node(place), {"ip": f"10.76.0.{20 + place}"})

    def task(name, orgs):
        return {"name": name, "image": "harbor2.vantage6.ai/demo/average", "description": name,
                "collaboration_id": 1, "databases": [],
                "organizations": [{"id": o, "input": b64({"method": name})} for o in orgs]}

    def container(place, task_id):
        tokens = []
        for i, server in enumerate(both.servers):
            t = server.ok("POST", "/token/container", node_tokens[i][place][1],
                          {"task_id": task_id, "image": "harbor2.vantage6.ai/demo/average"})
            tokens.append(t["container_token"])
        return tuple(tokens)

    alpha, beta, gamma = organizations
    t1 = both.call("POST /task (user)", "POST", "/task", admin, task("central", [alpha]))[1][1]["id"]
    c1 = container(0, t1)
    t2 = both.call("POST /task (subtask)", "POST", "/task", c1,
                   task("partial", organizations))[1][1]["id"]
    c2 = container(1, t2)
    t3 = both.call("POST /task (grandchild)", "POST", "/task", c2,
                   task("deeper", [alpha, gamma]))[1][1]["id"]
    c3 = container(2, t3)
    both.call("POST /task other image", "POST", "/task", c1,
              dict(task("other", [alpha]), image="another/image"))

    # Ports: the runs of each task on each node, with and without labels.
    def runs_of(task_id):
        runs = ours.ok("GET", "/run", admin[1], params={"task_id": task_id, "per_page": 100})
        return sorted(r["id"] for r in runs["data"])
    port = 49152
    for task_id, orgs in ((t1, [alpha]), (t2, organizations), (t3, [alpha, gamma])):
        for run_id, org in zip(runs_of(task_id), orgs):
            place = organizations.index(org)
            for label in ("compute", None):
                both.call(f"POST /port {port}", "POST", "/port", node(place),
                          {"port": port, "run_id": run_id, "label": label})
                port += 1

    # Every flag combination of the address lookup, from each container.
    onlies = [None, "only_children", "only_parent", "only_siblings", "only_self"]
    includes = ["include_children", "include_parent"]
    for who, token in (("central", c1), ("partial", c2), ("deeper", c3)):
        for only in onlies:
            for n in range(len(includes) + 1):
                for chosen in itertools.combinations(includes, n):
                    params = {f: 1 for f in chosen}
                    if only:
                        params[only] = 1
                    for label in (None, "compute"):
                        if label:
                            params["label"] = label
                        both.call(f"vpn {who} {sorted(params)}", "GET", "/vpn/algorithm/addresses",
                                  token, params=dict(params), unordered=True)
        both.call(f"vpn {who} two onlies", "GET", "/vpn/algorithm/addresses", token,
                  params={"only_children": 1, "only_parent": 1})

    # The reads an algorithm and a researcher make.
    for who, tokens in (("user", admin), ("container", c2)):
        for path, params in (
            (f"/task/{t2}", None),
            (f"/task/{t2}/status", None),
            ("/task", {"collaboration_id": 1}),
            ("/task", {"parent_id": t1}),
            ("/run", {"task_id": t2}),
            ("/run", {"task_id": t2, "per_page": 2}),
            ("/run", {"task_id": t2, "per_page": 2, "page": 2}),
            (f"/run/{runs_of(t2)[0]}", None),
            (f"/result/{runs_of(t2)[0]}", None),
            ("/result", {"task_id": t2}),
            ("/organization", {"collaboration_id": 1}),
            (f"/organization/{beta}", None),
            ("/collaboration/1", None),
            ("/task/9999", None),
        ):
            both.call(f"{who} GET {path} {params or ''}", "GET", path, tokens, params=params)
    for path in ("/organization", "/collaboration", "/node", "/node?collaboration_id=1"):
        both.call(f"user GET {path}", "GET", path, admin)
    both.call("user GET /node/<beta's>", "GET",
              lambda s: f"/node/{node_tokens[both.servers.index(s)][1][0]}", admin)

    # A run reports as a vantage6 node does; its result and its task's status follow.
    run_id = runs_of(t2)[1]
    both.call("PATCH /run active", "PATCH", f"/run/{run_id}", node(1),
              {"status": "active", "started_at": "2026-01-01T00:00:00.000000"})
    both.call("status after active", "GET", f"/task/{t2}/status", admin)
    both.call("PATCH /run completed", "PATCH", f"/run/{run_id}", node(1),
              {"status": "completed", "result": b64({"sum": 3}), "log": "done",
               "finished_at": "2026-01-01T00:00:05.000000"})
    # Read by the parent's algorithm: algonet ends a container token with its run (c2's run has
    # just finished), where vantage6 keeps accepting it.
    both.call("result after completed", "GET", f"/result/{run_id}", c1)
    both.call("results after completed", "GET", "/result", c1, params={"task_id": t2})
    both.call("DELETE /port", "DELETE", "/port", node(1), params={"run_id": run_id}, compare=False)
    both.call("vpn after the ports went", "GET", "/vpn/algorithm/addresses", c1,
              params={"only_children": 1}, unordered=True)

    encryption(both, admin, node, organizations, c1)
    print(json.dumps({"compared": both.compared, "differences": both.found}))


def new_public_key():
    """A fresh RSA key's public half in vantage6's form (base64 of the PEM), and the key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(pem).decode(), key


def seal(public_key_b64, plain):
    """vantage6's RSACryptor.encrypt_bytes_to_str, without its singleton."""
    import os

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    public = serialization.load_pem_public_key(base64.b64decode(public_key_b64))
    shared, iv = os.urandom(32), os.urandom(16)
    enc = Cipher(algorithms.AES(shared), modes.CTR(iv)).encryptor()
    body = enc.update(plain) + enc.finalize()
    wrapped = public.encrypt(shared, padding.PKCS1v15())
    return "$".join(base64.b64encode(p).decode() for p in (wrapped, iv, body))


def encryption(both, admin, node, organizations, container):
    """Organization keys and an encrypted collaboration: who may set a key, what is shown, which
    inputs a task in an encrypted collaboration takes."""
    alpha, beta, _ = organizations
    alpha_key, _ = new_public_key()
    root_key, _ = new_public_key()
    both.call("PATCH /organization own key (node)", "PATCH", f"/organization/{alpha}", node(0),
              {"public_key": alpha_key})
    both.call("PATCH /organization another's key (node)", "PATCH", f"/organization/{alpha}",
              node(1), {"public_key": root_key})
    both.call("PATCH /organization another's field (node)", "PATCH", f"/organization/{alpha}",
              node(1), {"country": "BE"})
    both.call("PATCH /organization another's key (admin)", "PATCH", f"/organization/{beta}",
              admin, {"public_key": root_key})
    both.call("PATCH /organization fields (admin)", "PATCH", f"/organization/{beta}", admin,
              {"country": "DE", "zipcode": "10115"})
    both.call("PATCH /organization own key (admin)", "PATCH", "/organization/1", admin,
              {"public_key": root_key})
    # vantage6 fails here with a 500 of its own (an algorithm is no user or node); algonet
    # refuses it as the permission it is.
    (_, _), (status, answer) = both.call("PATCH /organization (container)", "PATCH",
                                         f"/organization/{alpha}", container, {"country": "FR"},
                                         compare=False)
    if status != 401:
        both.found.append(f"PATCH /organization (container): {status} {answer}, not 401")
    both.call("PATCH /organization absent", "PATCH", "/organization/9999", admin,
              {"country": "FR"})
    both.call("GET /organization keys", "GET", "/organization", admin)
    both.call("GET /organization/<alpha> (node)", "GET", f"/organization/{alpha}", node(1))
    sealed = both.call("POST /collaboration encrypted", "POST", "/collaboration", admin,
                       {"name": "sealed", "organization_ids": [1, alpha, beta],
                        "encrypted": True})[1][1]["id"]
    both.call("GET /collaboration encrypted", "GET", f"/collaboration/{sealed}", admin)
    # vantage6 takes a task only for organizations with a node in the collaboration.
    answers = both.call("POST /node sealed", "POST", "/node", admin,
                        {"organization_id": alpha, "collaboration_id": sealed}, compare=False)
    for server, (_, n) in zip(both.servers, answers):
        server.node_ids[n["id"]] = len(organizations)
    both.compare("POST /node sealed", [(st, {k: v for k, v in a.items() if k != "api_key"})
                                       for st, a in answers])

    def task(input_):
        return {"name": "sealed", "image": "harbor2.vantage6.ai/demo/average",
                "description": "sealed", "collaboration_id": sealed, "databases": [],
                "organizations": [{"id": alpha, "input": input_}]}

    both.call("POST /task plain input, encrypted collaboration", "POST", "/task", admin,
              task(b64({"method": "central"})))
    both.call("POST /task sealed input, unencrypted collaboration", "POST", "/task", admin,
              dict(task(seal(alpha_key, b'{"method": "central"}')), collaboration_id=1))
    t = both.call("POST /task sealed input", "POST", "/task", admin,
                  task(seal(alpha_key, b'{"method": "central"}')))
    if all(status < 300 for status, _ in t):
        # The run as each server keeps it, its input (the ciphertext sent) included.
        both.call("GET /run sealed", "GET", "/run", admin, params={"task_id": t[1][1]["id"]})


main()

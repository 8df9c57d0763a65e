"""A socket.io client as vantage6's node makes one (python-socketio, the version vantage6-node
pins; the token in the handshake's headers; namespace /tasks), for the tests.

    socket_client.py URL TOKEN TRANSPORT

TRANSPORT is `polling` (long polling only) or `websocket` (polling, then the upgrade).

Prints one JSON line per thing that happens: {"event": "connect"}, {"event": "disconnect"},
{"event": NAME, "args": [...]} for every event of /tasks, each with the transport in use. Reads JSON lines from stdin:
{"emit": NAME, "args": [...]} sends an event; {"close": true} disconnects and ends.
"""

import json
import sys
import threading

import socketio

url, token, transport = sys.argv[1], sys.argv[2], sys.argv[3]
lock = threading.Lock()


def say(**what):
    what["transport"] = sio.transport()
    with lock:
        print(json.dumps(what), flush=True)


sio = socketio.Client(request_timeout=60)


@sio.on("connect", namespace="/tasks")
def connect():
    say(event="connect")


@sio.on("disconnect", namespace="/tasks")
def disconnect(*reason):
    say(event="disconnect")


@sio.on("*", namespace="/tasks")
def any_event(event, *args):
    say(event=event, args=list(args))


sio.connect(
    url,
    headers={"Authorization": f"Bearer {token}"},
    namespaces=["/tasks"],
    transports=["polling"] if transport == "polling" else ["polling", "websocket"],
    wait=False,
)
for line in sys.stdin:
    order = json.loads(line)
    if order.get("close"):
        break
    sio.emit(order["emit"], *order.get("args", []), namespace="/tasks")
sio.disconnect()
say(event="closed")

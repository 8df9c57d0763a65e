#!/usr/bin/env bash
# The demo command of the README: a whole federation on this host, the VPN feature test across
# it, then everything torn down.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "algonet demo: not built yet." >&2
echo "What exists today is the netstack router (see README: Status); the node agent, the server and" >&2
echo "the demo that ties them together are the next milestones." >&2
exit 2

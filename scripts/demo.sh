#!/usr/bin/env bash
# The demo command of the README: a whole federation on this host (a server with the built-in
# VPN, an OpenVPN server container, three nodes, each with its data), the VPN feature test and
# an average over the nodes' data across it, then everything torn down. Extra arguments go to `algonet demo` (--keep leaves it running).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

# openvpn, coreutils and the algonet binary itself become the images (built offline).
apt_need build-essential pkg-config libssl-dev iproute2 openvpn docker.io
docker_need
echo "==> building algonet (release; the first build compiles every dependency and takes a while)"
cargo build --release
# Every later instruction says `algonet ...`: put this build on the PATH.
if [ "$(readlink -f /usr/local/bin/algonet 2>/dev/null)" != "$PWD/target/release/algonet" ]; then
    echo "==> linking /usr/local/bin/algonet to $PWD/target/release/algonet"
    as_root ln -sf "$PWD/target/release/algonet" /usr/local/bin/algonet
fi
# vantage6's algorithm tools from PyPI: the demo's analysis is a vantage6 algorithm.
v6_venv_need
as_root ./target/release/algonet demo --vantage6-python "$PWD/$V6_VENV/bin/python" "$@"

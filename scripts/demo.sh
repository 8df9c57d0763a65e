#!/usr/bin/env bash
# The demo command of the README: a whole federation on this host (a server with the built-in
# VPN, an OpenVPN server container, three nodes), the VPN feature test across it, then
# everything torn down. Extra arguments go to `algonet demo` (--keep leaves it running).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

# openvpn, coreutils and the algonet binary itself become the images (built offline).
apt_need build-essential pkg-config iproute2 openvpn docker.io
docker_need
echo "==> building algonet (release)"
cargo build --release --quiet
as_root ./target/release/algonet demo "$@"

#!/usr/bin/env bash
# What an algorithm gets across the VPN (a benchmark, not a test): iperf3 between algorithm
# containers on two nodes of a federation on this host, against two plain OpenVPN clients of the
# same OpenVPN server with the same settings, and on WireGuard beside plain wireguard-go (a hub
# and two clients, and two clients peered directly), interleaved in one run (benches/tunnel.rs).
#   ./scripts/bench-tunnel.sh                    3 rounds of 5 s per case and path
#   ROUNDS=5 SECONDS_PER_RUN=10 ./scripts/bench-tunnel.sh
#   ./scripts/bench-tunnel.sh --node "busy_poll_us: 0"     more lines for each node.yaml
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ROUNDS=${ROUNDS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-5}
apt_need build-essential pkg-config libssl-dev iproute2 openvpn docker.io iperf3 util-linux wireguard-go wireguard-tools
docker_need
cargo build --release --quiet --bin algonet
bench=$(bench_binary --bench tunnel)
as_root "$bench" ./target/release/algonet \
    --rounds "$ROUNDS" --seconds "$SECONDS_PER_RUN" "$@"

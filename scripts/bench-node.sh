#!/usr/bin/env bash
# Node speed (a benchmark, not a test): the time from a run claimed to its algorithm container
# started, over ROUNDS demo runs (read from the nodes' logs: every run of the feature test), and
# the data plane's time from a mapping installed to the first packet through it (criterion).
#   ./scripts/bench-node.sh            ROUNDS=5
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ROUNDS=${ROUNDS:-5}
apt_need build-essential pkg-config libssl-dev iproute2 openvpn docker.io
docker_need
cargo build --release --quiet
samples=$(mktemp)
trap 'rm -f "$samples"' EXIT
for i in $(seq 1 "$ROUNDS"); do
    if ! as_root ./target/release/algonet demo >/dev/null 2>&1; then
        echo "demo round $i failed; run ./scripts/demo.sh to see why" >&2
        exit 1
    fi
    grep -ho 'algorithm started [0-9]* ms after the claim' /tmp/algonet-demo/node-*.log \
        | awk '{print $3}' >>"$samples"
done
sort -n "$samples" | awk '{a[NR] = $1} END {
    printf "run claimed -> algorithm container started: %d runs, p50 %d ms, p90 %d ms, max %d ms\n",
        NR, a[int((NR + 1) / 2)], a[int(NR * 0.9 + 0.5)], a[NR] }'
as_root cargo bench --bench tun_path -- mapping_installed_to_first_packet

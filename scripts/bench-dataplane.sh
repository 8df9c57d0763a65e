#!/usr/bin/env bash
# The side-by-side data-plane benchmark (root): kernel + vantage6's iptables rules against
# algonet with and without offload, on the same namespaces and traffic.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
apt_need build-essential pkg-config libssl-dev iproute2 iperf3 iptables ethtool
cargo bench --bench dataplane

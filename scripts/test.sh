#!/usr/bin/env bash
# The test command of the README: installs what the tests need, then runs every tier.
#   ./scripts/test.sh              all tests, lints, and each fuzz target for FUZZ_SECONDS (30)
# Privileged tiers skip with a message when not run as root, and fail when CI is set.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

FUZZ_SECONDS=${FUZZ_SECONDS:-30}
# A clean clone builds once: incremental caches would only take disk (several GB).
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL=0; fi

apt_need build-essential pkg-config libssl-dev iproute2 iputils-ping iptables nftables openvpn tcpdump ethtool docker.io
# The Docker tier needs a daemon; one is started (without firewall rules) if none answers.
docker_need
# The server's PostgreSQL tests use a private cluster, made here and removed at the end.
pg_dir=$(mktemp -d /tmp/algonet-test-pg.XXXXXX)
scratch=$(mktemp -d)
trap 'postgres_stop "$pg_dir"; rm -rf "$scratch"' EXIT
postgres_start "$pg_dir"
export ALGONET_TEST_POSTGRES="$PG_URL"
echo "==> PostgreSQL for the tests at $PG_URL"
rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt clippy
# vantage6's own Python packages from PyPI judge compatibility (tests/vantage6_tools.rs).
v6_venv_need
export ALGONET_V6_PYTHON="$PWD/$V6_VENV/bin/python"
# The reference the differential test compares algonet with: vantage6's own server (its VPN
# code is 4.14.0's; 4.15.2 installs on this Python, and needs vantage6-backend-common named).
v6_server_venv=target/py/vantage6-server
if ! "$v6_server_venv/bin/python" -c 'import vantage6.server.resource' >/dev/null 2>&1; then
    echo "==> installing vantage6-server 4.15.2 into $v6_server_venv"
    python3 -m venv "$v6_server_venv"
    "$v6_server_venv/bin/pip" install -q vantage6-server==4.15.2 vantage6-backend-common==4.15.2
fi
export ALGONET_V6_SERVER_PYTHON="$PWD/$v6_server_venv/bin/python"
# vantage6's own node and the socket.io client it pins, for mixed federations on an algonet
# server (the node runs through `v6 node start`, in an image built offline from this venv).
# vantage6-node 4.14.0 imports flask without declaring it; websocket-client lets the socket.io
# client take the websocket transport besides long polling.
v6_node_venv=target/py/vantage6-node
if ! "$v6_node_venv/bin/python" -c 'import vantage6.node, flask, socketio, websocket' >/dev/null 2>&1; then
    echo "==> installing vantage6-node 4.14.0 into $v6_node_venv"
    python3 -m venv "$v6_node_venv"
    "$v6_node_venv/bin/pip" install -q vantage6-node==4.14.0 flask==3.1.1 websocket-client
fi
export ALGONET_V6_NODE_PYTHON="$PWD/$v6_node_venv/bin/python"

echo "==> format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "==> tests"
results=$(mktemp)
cargo test --workspace --no-fail-fast 2>&1 | tee "$results"
echo "==> the server API and hardening tests again, on PostgreSQL"
ALGONET_TEST_BACKEND=postgres cargo test --no-fail-fast -p algonet --test server_api --test server_hardening --test server_encryption 2>&1 | tee -a "$results"
passed=$(awk '/^test result:/ {s += $4} END {print s + 0}' "$results")
failed=$(awk '/^test result:/ {s += $6} END {print s + 0}' "$results")
rm -f "$results"

echo "==> fuzzing (${FUZZ_SECONDS}s per target)"
cargo_need cargo-fuzz cargo-fuzz
# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP lets the stable toolchain take them.
export RUSTC_BOOTSTRAP=1
(

    cd fuzz
    cargo fuzz build -O
    for target in $(cargo fuzz list); do
        # New inputs go to a scratch directory; the committed seed corpus is only read.
        mkdir -p "$scratch/$target"
        echo "--> $target"
        if ! cargo fuzz run -O "$target" "$scratch/$target" "corpus/$target" -- \
            -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048 -print_final_stats=1 \
            >"$scratch/$target.log" 2>&1; then
            tail -n 60 "$scratch/$target.log"
            echo "fuzz target $target failed (crash input under fuzz/artifacts/$target)" >&2
            exit 1
        fi
        grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|Done)' "$scratch/$target.log" || true
    done
)
echo "==> every fuzz target ran clean"
echo "tests: $passed passed, $failed failed"

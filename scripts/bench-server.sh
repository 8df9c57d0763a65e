#!/usr/bin/env bash
# The server under load (a benchmark, not a test): simulated nodes poll for runs, claim them,
# register ports and report them, against the SQLite file, PostgreSQL with one server process
# and PostgreSQL with two, side by side in one run (benches/server_load.rs). A private
# PostgreSQL cluster is made for it and removed after.
#   ./scripts/bench-server.sh                 100 and 1000 nodes, 10 s each
#   NODES="100" SECONDS_PER_RUN=5 ./scripts/bench-server.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

NODES=${NODES:-"100 1000"}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
apt_need build-essential pkg-config libssl-dev iproute2
# A thousand nodes hold a thousand connections each way.
ulimit -n 65536 2>/dev/null || ulimit -n 8192
cargo build --release --quiet --bin algonet
bench=$(bench_binary --bench server_load)
pg_dir=$(mktemp -d /tmp/algonet-bench-pg.XXXXXX)
trap 'postgres_stop "$pg_dir"' EXIT
postgres_start "$pg_dir"
# shellcheck disable=SC2086
"$bench" ./target/release/algonet "$PG_URL" $NODES --seconds "$SECONDS_PER_RUN"

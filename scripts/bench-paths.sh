#!/usr/bin/env bash
# Instructions per packet on the router's two paths, exact and repeatable (callgrind counts the
# same for one binary where times move with the machine): each path at N and 2N packets, the
# difference divided by N, so that setting up counts for nothing.
#   ./scripts/bench-paths.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
apt_need valgrind
bin=$(bench_binary -p netstack --bench paths)
count() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$1" "$2" 2>&1 |
        sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
for spec in "established 100000" "new 20000"; do
    set -- $spec
    once=$(count "$1" "$2")
    twice=$(count "$1" $(($2 * 2)))
    echo "$1: $(python3 -c "print(round(($twice - $once) / $2, 1))") instructions per packet"
done

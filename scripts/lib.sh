# Shared by the set-up scripts: install what is missing, as root or through sudo.

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# apt_need PACKAGE... — installs the Debian packages that are not installed yet.
apt_need() {
    local missing=()
    for p in "$@"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "==> installing ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# cargo_need BINARY CRATE — installs a cargo tool that is not on PATH yet.
cargo_need() {
    command -v "$1" >/dev/null 2>&1 && return 0
    echo "==> installing $2"
    cargo install --locked --quiet "$2"
}

# docker_need — a Docker daemon that answers: Debian's docker.io, started here if none runs.
docker_need() {
    apt_need docker.io
    docker info >/dev/null 2>&1 && return 0
    echo "==> starting dockerd (log: /var/log/algonet-dockerd.log)"
    # --iptables=false: the tests check that nothing writes firewall rules on the host, and
    # algonet needs none of Docker's (its networks here are internal).
    as_root sh -c 'nohup dockerd --iptables=false --ip6tables=false >/var/log/algonet-dockerd.log 2>&1 &'
    for _ in $(seq 1 120); do
        docker info >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    echo "dockerd did not answer; see /var/log/algonet-dockerd.log" >&2
    return 1
}

# postgres_start DIR — a private PostgreSQL cluster of Debian's postgresql in DIR, as the
# postgres user, listening on 127.0.0.1 only (on the first free port from 54329) and trusting
# its local connections; sets PG_URL (postgres://postgres@127.0.0.1:PORT). The system's own
# cluster, if any, is left alone. postgres_stop DIR stops it.
postgres_start() {
    apt_need postgresql
    local bin port
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    port=54329
    while ss -Htln "sport = :$port" | grep -q .; do port=$((port + 1)); done
    as_root install -d -o postgres -g postgres -m 0700 "$1"
    as_root runuser -u postgres -- "$bin/initdb" -D "$1/data" -A trust -U postgres >/dev/null
    as_root runuser -u postgres -- "$bin/pg_ctl" -D "$1/data" -l "$1/log" -w \
        -o "-p $port -k $1 -c listen_addresses=127.0.0.1" start >/dev/null
    PG_URL="postgres://postgres@127.0.0.1:$port"
}

postgres_stop() {
    local bin
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    as_root runuser -u postgres -- "$bin/pg_ctl" -D "$1/data" -m fast -w stop >/dev/null || true
    as_root rm -rf "$1"
}

# A venv with vantage6's algorithm tools and client from PyPI (target/py/vantage6): the tests
# judge compatibility with them, and the demo builds its vantage6 algorithm from it.
V6_VENV=target/py/vantage6
v6_venv_need() {
    if ! "$V6_VENV/bin/python" -c 'import vantage6.algorithm.client, vantage6.client' >/dev/null 2>&1; then
        command -v python3 >/dev/null 2>&1 || apt_need python3
        python3 -m venv --help >/dev/null 2>&1 || apt_need python3-venv
        echo "==> installing vantage6-algorithm-tools and vantage6-client 4.14.0 into $V6_VENV"
        python3 -m venv "$V6_VENV"
        "$V6_VENV/bin/pip" install -q vantage6-algorithm-tools==4.14.0 vantage6-client==4.14.0
    fi
}

# bench_binary CARGO-BENCH-ARGS... — builds one bench (bench profile) and prints its executable,
# for benches that take arguments or run as root.
bench_binary() {
    cargo bench --no-run --message-format=json "$@" |
        python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and "bench" in m["target"]["kind"]:
        print(m["executable"])'
}

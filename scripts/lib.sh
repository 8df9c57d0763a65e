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

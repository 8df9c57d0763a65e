# The OpenVPN image: the node's OpenVPN client (started by the node with --ifconfig-noexec
# --route-noexec and a management socket), and the demo's OpenVPN server. `algonet images
# build` makes the same image offline from the host's /usr/sbin/openvpn and its libraries.
#   docker build -f docker/openvpn.Dockerfile -t algonet/openvpn:latest .
FROM debian:12-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends openvpn \
 && rm -rf /var/lib/apt/lists/*
ENTRYPOINT ["/usr/sbin/openvpn"]

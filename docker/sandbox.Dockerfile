# The sandbox image: a container that only holds a network namespace open (the node's router
# namespace, and one per run). `algonet images build` makes the same image offline from the
# host's /usr/bin/sleep; this file is for people who have a registry.
#   docker build -f docker/sandbox.Dockerfile -t algonet/sandbox:latest .
FROM debian:12-slim
CMD ["/bin/sleep", "infinity"]

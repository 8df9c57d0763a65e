# The echo algorithm (the VPN feature test): `algonet echo` in a container that exposes a TCP
# line echo on 8888 and a datagram echo on 9000, named by labels as vantage6 algorithms name
# their ports. `algonet images build` makes the same image offline from the host's binary.
#   docker build -f docker/echo.Dockerfile -t algonet/echo:latest .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bin algonet

FROM debian:12-slim
COPY --from=build /src/target/release/algonet /usr/bin/algonet
EXPOSE 8888/tcp
EXPOSE 9000/udp
LABEL p8888="echo"
LABEL p9000="echo-udp"
ENTRYPOINT ["/usr/bin/algonet", "echo"]

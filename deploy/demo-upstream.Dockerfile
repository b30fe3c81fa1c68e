# The demo upstream (e2e/src/bin/upstream.rs), demo token server (e2e/src/bin/token_server.rs)
# and demo JWKS server (e2e/src/bin/jwks_server.rs) for docker-compose.yml. Build context: the
# repository root (compose sets it). Not a production image: it echoes requests back.
#
#   docker build -f deploy/demo-upstream.Dockerfile -t envoy-wasm-filters/demo-upstream:local .

# Official images, pinned by version; keep the two Debian releases equal (glibc of the binary).
ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
# The whole workspace (every member's manifest and sources are needed to resolve it), nothing
# else: target/, dist/ and tools/ never enter the image. (BuildKit transfers only these paths
# from the context; the legacy builder sends the whole context first.)
COPY Cargo.toml Cargo.lock ./
COPY shared shared
COPY crates crates
COPY filters filters
COPY e2e e2e
RUN cargo build --release --locked -p e2e --bin upstream --bin token_server --bin jwks_server \
 && install -D -m 0755 target/release/upstream /out/upstream \
 && install -D -m 0755 target/release/token_server /out/token_server \
 && install -D -m 0755 target/release/jwks_server /out/jwks_server

FROM debian:${DEBIAN_RELEASE}-slim
COPY --from=build /out/upstream /usr/local/bin/upstream
# token-fetch's demo token server (docker-compose.yml service `token-server`).
COPY --from=build /out/token_server /usr/local/bin/token_server
# jwt-auth's demo JWKS server (docker-compose.yml service `jwks-server`).
COPY --from=build /out/jwks_server /usr/local/bin/jwks_server
# Unprivileged; 18080 is above 1024.
USER 65532:65532
# Listens on 127.0.0.1 only: Envoy reaches it by sharing this container's network namespace
# (see docker-compose.yml), which is also why Envoy's ports are published on this service.
ENTRYPOINT ["/usr/local/bin/upstream"]
CMD ["--port", "18080"]

# syntax=docker/dockerfile:1
# Build: `docker compose build` (or `docker build -t tandem .`). The context
# is filtered by .dockerignore (no target/, .env, node_modules, data, .git).
# tests/it/docker_build.rs replays this build stage on the host (no Docker
# engine needed): it copies exactly what the COPY lines copy into a scratch
# directory and runs these RUN commands there, so a file the build needs
# but the Dockerfile forgets fails CI.

# Build stage. Dependencies are compiled in their own layer from the
# manifests alone (stub sources at every target path the manifests name),
# so a source change rebuilds only the workspace's own crates.
FROM rust:1.95.0-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates/tandem-core/Cargo.toml crates/tandem-core/
COPY crates/tandem-testkit/Cargo.toml crates/tandem-testkit/
COPY crates/tandem-bench/Cargo.toml crates/tandem-bench/
COPY crates/tandem-sim/Cargo.toml crates/tandem-sim/
RUN mkdir -p src crates/tandem-core/src crates/tandem-testkit/src \
        crates/tandem-bench/src crates/tandem-bench/benches crates/tandem-sim/src \
    && echo 'fn main() {}' > src/main.rs \
    && echo 'fn main() {}' > crates/tandem-bench/src/main.rs \
    && echo 'fn main() {}' > crates/tandem-bench/benches/ot.rs \
    && touch src/lib.rs crates/tandem-core/src/lib.rs crates/tandem-testkit/src/lib.rs \
        crates/tandem-sim/src/lib.rs \
    && cargo build --release --locked -p tandem \
    && rm -rf src crates
# The sources: the core crate, the workspace's other manifests (and the
# bench target cargo checks exists), SQL migrations and the browser client
# (both embedded at compile time), the server.
COPY crates crates
COPY migrations migrations
COPY web/static web/static
COPY web/client/tandem-client.js web/client/tandem-client.js
COPY web/client/ot.js web/client/ot.js
COPY web/client/ot-state.js web/client/ot-state.js
COPY web/client/session-internals.js web/client/session-internals.js
COPY docs/protocol.md docs/protocol.md
COPY src src
# COPY keeps the files' own (older) times: touch the crate roots the stub
# build compiled, or cargo would take the stubs' output as up to date.
RUN touch src/main.rs src/lib.rs crates/tandem-core/src/lib.rs \
    && cargo build --release --locked -p tandem --bin tandem

# Runtime stage: a small Debian with just the binary, as a non-root user.
FROM debian:12.12-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /var/lib/tandem --create-home tandem
COPY --from=build /src/target/release/tandem /usr/local/bin/tandem
USER tandem
WORKDIR /var/lib/tandem
ENV HOST=0.0.0.0 PORT=8080 DATA_DIR=/var/lib/tandem/data LOG_FORMAT=json
EXPOSE 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/readyz || exit 1
ENTRYPOINT ["/usr/local/bin/tandem"]

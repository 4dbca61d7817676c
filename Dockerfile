# syntax=docker/dockerfile:1
# Build stage: dependencies are compiled in their own cached layer, so a
# source change rebuilds only the tandem crate.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# The workspace's other crates (test kit, bench): their manifests must be
# there for cargo to read the workspace; only the server is built.
COPY crates crates
RUN mkdir -p src && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs && cargo build --release --locked -p tandem && rm -rf src
COPY src src
COPY migrations migrations
RUN touch src/main.rs src/lib.rs && cargo build --release --locked -p tandem --bin tandem

# Runtime stage: a small Debian with just the binary, as a non-root user.
FROM debian:bookworm-slim
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

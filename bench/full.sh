#!/usr/bin/env bash
# The full benchmark set, one command: the criterion micro-benchmarks (W1,
# W2) and `tandem-bench suite --profile full` (W3-W9 with the echo floor and
# ShareDB), writing bench/results/{results.json,*.svg} and criterion's
# report. Needs Redis on 127.0.0.1:6379, PostgreSQL on 127.0.0.1:5432 (a
# database `tandem_bench` is created if missing), Node.js and npm. About
# 25 minutes on a 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."
REDIS_URL=${BENCH_REDIS_URL:-redis://127.0.0.1:6379}
PG_URL=${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/tandem_bench}
psql "${PG_URL%/*}/postgres" -qAtc "SELECT 1 FROM pg_database WHERE datname = 'tandem_bench'" | grep -q 1 \
  || psql "${PG_URL%/*}/postgres" -qc "CREATE DATABASE tandem_bench"
mkdir -p bench/results
cargo build --release -p tandem -p tandem-bench --bins
cargo bench -p tandem-bench --features criterion --bench ot -- --noplot 2>&1 | tee bench/results/criterion.txt
target/release/tandem-bench suite --profile full --redis "$REDIS_URL" \
  --database-url "$PG_URL" --out bench/results

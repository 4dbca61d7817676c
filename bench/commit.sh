#!/usr/bin/env bash
# The commit pipeline's figures (issue 16), side by side in one run: this
# build against a baseline build of another commit, workload by workload,
# alternating, on one machine. Usage:
#   bench/commit.sh BASE_TARGET_DIR [OUT_DIR]
# BASE_TARGET_DIR holds a release build of the baseline (`cargo build
# --release -p tandem -p tandem-bench` in a worktree of it); this checkout's
# release build is in target/ (or CARGO_TARGET_DIR). Needs Redis on
# REDIS_URL (default redis://127.0.0.1:6379). Results: OUT_DIR/*.json.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${1:?usage: bench/commit.sh BASE_TARGET_DIR [OUT_DIR]}
OUT=${2:-bench/results/commit}
NEW=${CARGO_TARGET_DIR:-target}
REDIS=${REDIS_URL:-redis://127.0.0.1:6379}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-20}
mkdir -p "$OUT"
for b in "$BASE" "$NEW"; do
  [ -x "$b/release/tandem" ] && [ -x "$b/release/tandem-bench" ] || { echo "no release build in $b"; exit 1; }
done
BENCH="$NEW/release/tandem-bench"

run() { # name, server binary dir, args...
  local name=$1 dir=$2; shift 2
  echo "== $name"
  TANDEM_BIN="$dir/release/tandem" "$BENCH" --json "$OUT/$name.json" "$@" | tail -n 4
}

for who in base new; do
  dir=$BASE; [ $who = new ] && dir=$NEW
  run "hot-embedded-$who" "$dir" load --instances 1 --docs 1 --clients 200 --rate 5 --seconds "$SECONDS_PER_RUN"
done
for who in base new; do
  dir=$BASE; [ $who = new ] && dir=$NEW
  run "hot-redis2-$who" "$dir" load --instances 2 --docs 1 --clients 200 --rate 5 --seconds "$SECONDS_PER_RUN" --redis "$REDIS"
done
for who in base new; do
  dir=$BASE; [ $who = new ] && dir=$NEW
  run "hot-redis1-$who" "$dir" load --instances 1 --docs 1 --clients 200 --rate 5 --seconds "$SECONDS_PER_RUN" --redis "$REDIS"
done
for who in base new; do
  dir=$BASE; [ $who = new ] && dir=$NEW
  run "w4-redis2-$who" "$dir" load --instances 2 --docs 1000 --clients 3 --rate 2 --seconds "$SECONDS_PER_RUN" --redis "$REDIS"
done
# W6 runs the server in the generator's process: each build's own bench.
for who in base new; do
  dir=$BASE; [ $who = new ] && dir=$NEW
  for backend in embedded redis; do
    echo "== w6-$backend-$who"
    args=(commits --seconds 5)
    [ $backend = redis ] && args+=(--redis "$REDIS")
    "$dir/release/tandem-bench" --json "$OUT/w6-$backend-$who.json" "${args[@]}" | tail -n 2
  done
done
for who in base new; do
  dir=$BASE; [ $who = new ] && dir=$NEW
  run "sigkill-$who" "$dir" sigkill --kills 5
done

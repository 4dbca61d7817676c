#!/usr/bin/env bash
# The commit leader (COMMIT_LEADER, issue 32) against instances racing, in
# one run: the hot document (1 doc x 200 clients x 5 edits/s) on 2
# instances with clients split between them (--balancer none: the
# generator alternates clients; no sticky routing), each way; the same on 2
# instances behind nginx's per-document hash (sticky: every client on one
# instance), each way; and the floor, one embedded instance. Each
# configuration runs ROUNDS times (default 3), the order rotating between
# rounds. Raw --json results go to OUT (first argument, default
# bench/results/leader), a table to OUT/table.md.
#
# The servers inherit COMMIT_LEADER from the generator's environment. Needs Redis (BENCH_REDIS_URL, default redis://127.0.0.1:6379),
# nginx and jq. About 8 minutes after the release build.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench/results/leader}
REDIS_URL=${BENCH_REDIS_URL:-redis://127.0.0.1:6379}
ROUNDS=${ROUNDS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-15}
TARGET=${CARGO_TARGET_DIR:-target}
mkdir -p "$OUT"
nice -n 10 cargo build --release -p tandem -p tandem-bench --bins
BENCH="$TARGET/release/tandem-bench"
HOT=(--docs 1 --clients 200 --rate 5)

run() { # name mode balancer instances
  local name=$1 mode=$2 balancer=$3 instances=$4 leader=false redis=(--redis "$REDIS_URL")
  [ "$mode" = leader ] && leader=true
  [ "$mode" = embedded ] && redis=()
  echo "== $name (round $round; load average $(cut -d" " -f1-3 /proc/loadavg))"
  COMMIT_LEADER=$leader "$BENCH" --json "$OUT/$name-$round.json" load --system tandem \
    --seconds "$SECONDS_PER_RUN" "${redis[@]}" --balancer "$balancer" \
    --instances "$instances" "${HOT[@]}"
}

configs=("split-race race none 2" "split-leader leader none 2" "hash-race race hash 2"
  "hash-leader leader hash 2" "embedded embedded none 1")
for round in $(seq 1 "$ROUNDS"); do
  n=${#configs[@]}
  for i in $(seq 0 $((n - 1))); do
    # shellcheck disable=SC2086
    run ${configs[$(((i + round - 1) % n))]}
  done
done

{
  echo "| configuration | round | committed / offered edits/s | p50 / p99 delivery (ms) | ack p99 (ms) | commit retries | resends | Tandem CPU |"
  echo "|---|---|---|---|---|---|---|---|"
  for c in split-race split-leader hash-race hash-leader embedded; do
    for f in "$OUT"/$c-*.json; do
      [ -e "$f" ] || continue
      jq -r --arg f "$(basename "$f" .json)" '.results[0] as $r
        | ($r.clients * $r.rate_per_client) as $offered
        | "| \($f | sub("-[0-9]+$"; "")) | \($f | split("-")[-1])"
          + " | \($r.ops_per_second | round) / \($offered | round) (\(100 * $r.ops_per_second / $offered | round) %)"
          + " | \($r.latency_us.p50 / 1000 * 10 | round / 10) / \($r.latency_us.p99 / 1000 * 10 | round / 10)"
          + " | \($r.ack_latency_us.p99 / 1000 * 10 | round / 10)"
          + " | \($r.commit_retries // "?")"
          + " | \($r.resends // "?")"
          + " | \($r.server_cpu_percent | round) %"
          + (if $r.converged then " |" else " | NOT CONVERGED |" end)' "$f"
    done
  done
} >"$OUT/table.md"
cat "$OUT/table.md"

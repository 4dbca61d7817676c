#!/usr/bin/env bash
# nginx's balancing policies compared in one run, on Redis with 2 instances,
# every client through nginx running nginx.conf (the bench swaps its
# balancing line):
#   hot document: 1 doc x 200 clients x 5 edits/s, with --balancer none (no
#                 proxy, the generator alternates clients between instances;
#                 reference), least-conn and hash; and, as a second
#                 reference, the same room on 1 instance (no proxy), which is
#                 what the hash makes of it;
#   W4-like:      1,000 docs x 3 clients x 2 edits/s, least-conn and hash.
# Each configuration runs ROUNDS times (default 4), the order alternating
# between rounds. Raw --json results go to OUT (first argument, default
# bench/results/balancers), one file per run, and a table to OUT/table.md.
#
# "other CPU" in the table is the machine's busy CPU in the measured window
# minus Tandem's, nginx's and the generator's: Redis and the kernel's
# loopback work (about 30-60 % of a core here), more if anything else ran.
#
# Needs Redis (BENCH_REDIS_URL, default redis://127.0.0.1:6379), nginx
# (apt-get install nginx) and jq. Honours CARGO_TARGET_DIR. About 12 minutes
# on a quiet 2-core machine with the default ROUNDS, after the release build.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench/results/balancers}
REDIS_URL=${BENCH_REDIS_URL:-redis://127.0.0.1:6379}
ROUNDS=${ROUNDS:-4}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-20}
TARGET=${CARGO_TARGET_DIR:-target}
mkdir -p "$OUT"
nice -n 10 cargo build --release -p tandem -p tandem-bench --bins
BENCH="$TARGET/release/tandem-bench"

# Busy CPU of the whole machine over 3 s, in % of one core.
busy() {
  local a b
  read -r -a a < <(head -1 /proc/stat)
  sleep 3
  read -r -a b < <(head -1 /proc/stat)
  local busy=$(((b[1] + b[2] + b[3] + b[6] + b[7] + b[8]) - (a[1] + a[2] + a[3] + a[6] + a[7] + a[8])))
  local idle=$(((b[4] + b[5]) - (a[4] + a[5])))
  echo $((100 * $(nproc) * busy / (busy + idle)))
}

# The machine is shared (builds, other suites): start each run only once it
# is quiet (at most QUIET_PCT % of one core busy, default 15), waiting up to
# QUIET_WAIT seconds (default 900). The table's "other CPU" column still
# shows what ran beside the measured processes during the run.
wait_quiet() {
  local waited=0 now
  while now=$(busy) && ((now > ${QUIET_PCT:-15})); do
    if ((waited >= ${QUIET_WAIT:-900})); then
      echo "   machine still busy ($now % of a core); measuring anyway"
      return
    fi
    waited=$((waited + 3))
  done
}

run() { # name balancer load-args...
  local name=$1 balancer=$2
  shift 2
  wait_quiet
  echo "== $name --balancer $balancer (round $round; load average $(cut -d" " -f1-3 /proc/loadavg))"
  "$BENCH" --json "$OUT/$name-$balancer-$round.json" load --system tandem \
    --seconds "$SECONDS_PER_RUN" --redis "$REDIS_URL" \
    --balancer "$balancer" "$@"
}

for round in $(seq 1 "$ROUNDS"); do
  hot=(none least-conn hash)
  w4=(least-conn hash)
  if ((round % 2 == 0)); then
    hot=(hash least-conn none)
    w4=(hash least-conn)
  fi
  for b in "${hot[@]}"; do
    run hot "$b" --instances 2 --docs 1 --clients 200 --rate 5
  done
  run hot1 none --instances 1 --docs 1 --clients 200 --rate 5
  for b in "${w4[@]}"; do
    run w4 "$b" --instances 2 --docs 1000 --clients 3 --rate 2
  done
done

{
  echo "| workload | instances | balancer | run | committed / offered edits/s | p50 / p99 delivery (ms) | ack p99 (ms) | Tandem CPU | nginx CPU | commit retries | resends | sessions per instance | other CPU |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  for f in "$OUT"/hot-none-*.json "$OUT"/hot-least-conn-*.json "$OUT"/hot-hash-*.json \
    "$OUT"/hot1-none-*.json "$OUT"/w4-least-conn-*.json "$OUT"/w4-hash-*.json; do
    [ -e "$f" ] || continue
    jq -r --arg f "$(basename "$f" .json)" '.results[0] as $r
      | ($r.clients * $r.rate_per_client) as $offered
      | "| \($f | split("-")[0] | rtrimstr("1")) | \($r.instances) | \($r.balancer) | \($f | split("-")[-1])"
        + " | \($r.ops_per_second | round) / \($offered | round) (\(100 * $r.ops_per_second / $offered | round) %)"
        + " | \($r.latency_us.p50 / 1000 * 10 | round / 10) / \($r.latency_us.p99 / 1000 * 10 | round / 10)"
        + " | \($r.ack_latency_us.p99 / 1000 * 10 | round / 10)"
        + " | \($r.server_cpu_percent | round) %"
        + " | \(if $r.balancer_cpu_percent == null then "—" else "\($r.balancer_cpu_percent | round) %" end)"
        + " | \($r.commit_retries // "?")"
        + " | \($r.resends // "?")"
        + " | \($r.instance_sessions | map(tostring) | join(" / "))"
        + " | \(($r.machine_cpu_percent // 0) - $r.server_cpu_percent - ($r.balancer_cpu_percent // 0) - $r.client_cpu_percent | round) %"
        + (if $r.converged then " |" else " | NOT CONVERGED |" end)' "$f"
  done
} >"$OUT/table.md"
cat "$OUT/table.md"

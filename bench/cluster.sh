#!/usr/bin/env bash
# One Redis against a three-master Redis Cluster (issue 21), side by side in
# one run, with this checkout's release build: W6 (commits as fast as acks
# allow, server in the bench's process) on one Redis, on the cluster, and on
# the cluster with REDIS_WAIT_REPLICAS=1; W4 (1000 documents x 3 clients x 2
# edits/s across 2 instances, and the same at 300 documents) on one Redis
# and on the cluster; and the
# replication window of one master measured while W6 loads the cluster.
# Starts its own servers from local redis-server/redis-cli on free ports and
# stops them at the end. Usage: bench/cluster.sh [OUT_DIR]
# (ONLY=w6 runs the W6 rows alone; BASE_BIN=<dir of another build's
# release binaries> adds a W6 row for its WAIT mode, alternating with this
# build's, in the same run.)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench/results/cluster}
BIN=${CARGO_TARGET_DIR:-target}/release
SECONDS_PER_RUN=${SECONDS_PER_RUN:-20}
ROUNDS=${ROUNDS:-2}
mkdir -p "$OUT"
[ -x "$BIN/tandem" ] && [ -x "$BIN/tandem-bench" ] || { echo "build first: cargo build --release -p tandem -p tandem-bench"; exit 1; }
command -v redis-server >/dev/null && command -v redis-cli >/dev/null || { echo "needs redis-server and redis-cli (apt-get install redis-server)"; exit 1; }

WORK=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
free_pair() { # a port whose bus port (+10000) is free too
  while :; do
    p=$((20000 + RANDOM % 2700)) # both below the ephemeral range (32768+)
    ! (echo >/dev/tcp/127.0.0.1/$p) 2>/dev/null && ! (echo >/dev/tcp/127.0.0.1/$((p + 10000))) 2>/dev/null && { echo $p; return; }
  done
}
node() { # port, extra args...
  local port=$1; shift
  mkdir -p "$WORK/$port"
  redis-server --port "$port" --bind 127.0.0.1 --dir "$WORK/$port" --save "" --appendonly no \
    --daemonize no --loglevel warning "$@" >/dev/null 2>&1 &
  pids+=($!)
  until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.05; done
}

single=$(free_pair); node "$single"
SINGLE=redis://127.0.0.1:$single
ports=(); for _ in 1 2 3 4 5 6; do ports+=("$(free_pair)"); done
for p in "${ports[@]}"; do
  node "$p" --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 1000 --repl-diskless-sync-delay 0
done
redis-cli --cluster create $(printf '127.0.0.1:%s ' "${ports[@]}") --cluster-replicas 1 --cluster-yes >/dev/null
healthy() { local p; for p in "${ports[@]}"; do redis-cli -p "$p" cluster info | grep -q 'cluster_state:ok' || return 1; done; }
until healthy; do sleep 0.2; done
sleep 2
CLUSTER=$(printf 'redis://127.0.0.1:%s,' "${ports[@]}"); CLUSTER=${CLUSTER%,}
echo "one Redis: $SINGLE; cluster: $CLUSTER"

for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round: W6"
  "$BIN/tandem-bench" --json "$OUT/w6-single-$round.json" commits --seconds 5 --redis "$SINGLE" | tail -n 2
  REDIS_CLUSTER=true "$BIN/tandem-bench" --json "$OUT/w6-cluster-$round.json" commits --seconds 5 --redis "$CLUSTER" | tail -n 2
  REDIS_CLUSTER=true REDIS_WAIT_REPLICAS=1 "$BIN/tandem-bench" --json "$OUT/w6-cluster-wait1-$round.json" commits --seconds 5 --redis "$CLUSTER" | tail -n 2
  if [ -n "${BASE_BIN:-}" ]; then
    REDIS_CLUSTER=true REDIS_WAIT_REPLICAS=1 "$BASE_BIN/tandem-bench" --json "$OUT/w6-cluster-wait1-base-$round.json" commits --seconds 5 --redis "$CLUSTER" | tail -n 2
  fi
  [ "${ONLY:-}" = w6 ] && continue
  echo "== round $round: W4"
  TANDEM_BIN="$BIN/tandem" "$BIN/tandem-bench" --json "$OUT/w4-single-$round.json" load --instances 2 --docs 1000 --clients 3 --rate 2 --seconds "$SECONDS_PER_RUN" --redis "$SINGLE" | tail -n 4
  REDIS_CLUSTER=true TANDEM_BIN="$BIN/tandem" "$BIN/tandem-bench" --json "$OUT/w4-cluster-$round.json" load --instances 2 --docs 1000 --clients 3 --rate 2 --seconds "$SECONDS_PER_RUN" --redis "$CLUSTER" | tail -n 4
  echo "== round $round: W4 at 300 documents (below saturation on a 2-core machine)"
  TANDEM_BIN="$BIN/tandem" "$BIN/tandem-bench" --json "$OUT/w4-300-single-$round.json" load --instances 2 --docs 300 --clients 3 --rate 2 --seconds "$SECONDS_PER_RUN" --redis "$SINGLE" | tail -n 4
  REDIS_CLUSTER=true TANDEM_BIN="$BIN/tandem" "$BIN/tandem-bench" --json "$OUT/w4-300-cluster-$round.json" load --instances 2 --docs 300 --clients 3 --rate 2 --seconds "$SECONDS_PER_RUN" --redis "$CLUSTER" | tail -n 4
done

[ "${ONLY:-}" = w6 ] && exit 0
echo "== replication window under W6 load"
master=${ports[0]}
replica=""
for p in "${ports[@]}"; do
  if redis-cli -p "$p" info replication | grep -q "master_port:$master"; then replica=$p; fi
done
[ -n "$replica" ] || { master=$(redis-cli -p "${ports[0]}" info replication | sed -n 's/^master_port:\([0-9]*\).*/\1/p' | tr -d '\r'); replica=${ports[0]}; }
REDIS_CLUSTER=true "$BIN/tandem-bench" commits --seconds 15 --redis "$CLUSTER" >/dev/null &
load=$!
sleep 1
"$BIN/tandem-bench" --json "$OUT/replication-window.json" replication-window --master "redis://127.0.0.1:$master" --replica "redis://127.0.0.1:$replica" --samples 5000 | tail -n 2
wait $load

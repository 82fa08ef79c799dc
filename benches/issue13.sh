#!/usr/bin/env bash
# The durable write path in the shapes users live with (issue 13), every figure beside
# its peers in the same run: the store's ceiling (--ceiling) and NATS JetStream
# (--peer nats, the server on 127.0.0.1:4222). Prints the load tool's tables.
#
#   cargo build --release -p activity-hub -p activity-hub-bench
#   benches/issue13.sh [all|publish|prefill|pg|fanout|latency|memory]
#
# PG runs use a scratch database, recreated for each run:
#   PG_ADMIN_URL (default postgres://postgres@127.0.0.1:5432/postgres).
set -euo pipefail
cd "$(dirname "$0")/.."
B=target/release/activity-hub-bench
WHAT=${1:-all}
PG_ADMIN_URL=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PG_URL=${PG_ADMIN_URL%/*}/activity_hub_bench
fresh_pg() {
  psql "$PG_ADMIN_URL" -qc 'DROP DATABASE IF EXISTS activity_hub_bench' -c 'CREATE DATABASE activity_hub_bench' >/dev/null
}
run() { echo; echo "\$ activity-hub-bench $*"; "$B" "$@" -q || true; }
want() { [ "$WHAT" = all ] || [ "$WHAT" = "$1" ]; }

if want publish; then
  run publish --events 300000 --ceiling --peer nats
  run publish --events 300000 --ceiling --peer nats --durability process-crash
  run publish --events 200000 --recipients 1000 --ceiling --peer nats
fi
if want prefill; then
  run publish --events 300000 --prefill 10000000 --ceiling --peer nats
fi
if want pg; then
  fresh_pg; run publish --events 200000 --database-url "$PG_URL" --ceiling --peer nats
  fresh_pg; run publish --events 200000 --database-url "$PG_URL" --ceiling --peer nats --durability process-crash
  fresh_pg; run latency --subscribers 1000 --rate 10000 --duration 10s --database-url "$PG_URL"
fi
if want fanout; then
  run fanout --subscribers 1000 --events 200 --peer nats
  run fanout --subscribers 10000 --events 20
fi
if want latency; then
  run latency --subscribers 1000 --rate 10000 --duration 10s --peer nats
  run latency --subscribers 1000 --rate 10000 --duration 10s --durability process-crash
  run latency --subscribers 1000 --rate 30000 --duration 10s
fi
if want memory; then
  run publish --events 300000 --memory-settle 30s
  run fanout --subscribers 1000 --events 200 --memory-settle 30s
  run idle --subscribers 10000 --duration 2s --baseline
fi

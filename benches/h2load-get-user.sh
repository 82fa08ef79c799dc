#!/usr/bin/env bash
# GetUser (with bearer auth) on the release binary vs Health/Check on the same server vs
# Health/Check and an in-memory GetUser on a bare tonic server
# (`activity-hub-bench serve-baseline`), under h2load (an independent HTTP/2 client),
# alternating, so the three are measured side by side in one run.
#
# usage: benches/h2load-get-user.sh [ROUNDS] [SECS]     (needs h2load: nghttp2-client)
#        BASE_BIN=/path/to/older/activity-hub benches/h2load-get-user.sh ...
#   also measures GetUser on another build (e.g. `git worktree add /tmp/base REV` and a
#   release build there), alternating with the others: an A/B in one run.
# The hub runs as shipped (metrics recorder on, info logging, the RPC layer and the rate
# limiter on the path) except that the per-user limit is raised out of the way: a single
# user makes every call here.
set -euo pipefail
rounds=${1:-3}
secs=${2:-8}
here=$(cd "$(dirname "$0")/.." && pwd)
h2=$here/../shared/tools/h2load-unary.sh
cargo build -q --release -p activity-hub -p activity-hub-bench
work=$(mktemp -d)
secret=bench-secret-bench-secret-bench-secret
"$here/target/release/activity-hub" serve --listen 127.0.0.1:50777 --metrics-listen 127.0.0.1:59464 \
  --database-url "sqlite://$work/hub.db" --auth-secret "$secret" \
  --bootstrap-admin-email admin@bench.test --bootstrap-admin-password admin-password \
  --user-rate-limit 100000000 --user-rate-burst 100000000 2>"$work/hub.log" &
hub=$!
"$here/target/release/activity-hub-bench" serve-baseline --listen 127.0.0.1:50778 >/dev/null 2>&1 &
baresrv=$!
base=""
if [ -n "${BASE_BIN:-}" ]; then
  "$BASE_BIN" serve --listen 127.0.0.1:50779 --metrics-listen 127.0.0.1:59465 \
    --database-url "sqlite://$work/base.db" --auth-secret "$secret" \
    --bootstrap-admin-email admin@bench.test --bootstrap-admin-password admin-password \
    --user-rate-limit 100000000 --user-rate-burst 100000000 2>"$work/base.log" &
  base=$!
fi
trap 'kill $hub $baresrv $base 2>/dev/null; rm -rf "$work"' EXIT
sleep 2
token=$("$here/benches/login-token.sh" "$here/target/release/activity-hub" 127.0.0.1:50777)
printf '0801' > "$work/get.hex"   # GetUserRequest{user_id: 1}
: > "$work/empty.hex"
rate() { grep -oE 'finished in [0-9.]+s, [0-9.]+ req/s' | grep -oE '[0-9.]+ req/s' | head -1; }
for r in $(seq "$rounds"); do
  g=$("$h2" -x -D "$secs" -c 4 -m 64 -H "authorization: Bearer $token" 127.0.0.1:50777 /user.v1.UserService/GetUser "$work/get.hex" | rate)
  e=$("$h2" -x -D "$secs" -c 4 -m 64 127.0.0.1:50777 /grpc.health.v1.Health/Check "$work/empty.hex" | rate)
  t=$("$h2" -x -D "$secs" -c 4 -m 64 127.0.0.1:50778 /grpc.health.v1.Health/Check "$work/empty.hex" | rate)
  u=$("$h2" -x -D "$secs" -c 4 -m 64 127.0.0.1:50778 /user.v1.UserService/GetUser "$work/get.hex" | rate)
  line="round $r: GetUser(auth) $g | same-server Health $e | bare tonic Health $t | bare tonic GetUser (memory, no auth) $u"
  if [ -n "$base" ]; then
    b=$("$h2" -x -D "$secs" -c 4 -m 64 -H "authorization: Bearer $token" 127.0.0.1:50779 /user.v1.UserService/GetUser "$work/get.hex" | rate)
    line="$line | GetUser on BASE_BIN $b"
  fi
  echo "$line"
done

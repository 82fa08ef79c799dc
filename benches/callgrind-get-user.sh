#!/usr/bin/env bash
# Instructions per GetUser (with bearer auth) on one or more builds, counted by callgrind:
# a count, not a time, so it repeats whatever else the machine is doing, and small
# differences between builds show up that h2load's noise hides. Each build serves N
# calls from h2load and, separately, 200; the difference divided by N - 200 is the cost
# of one call (start-up, shutdown and the first calls cancel out).
#
# usage: benches/callgrind-get-user.sh [N] [BIN...]   (default: 10200 calls, this
#        checkout's release binary; pass an older build's binary too for an A/B)
# needs valgrind and h2load (Debian nghttp2-client).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
n=${1:-10200}
shift || true
if [ $# = 0 ]; then
  cargo build -q --release -p activity-hub
  set -- "$here/target/release/activity-hub"
fi
secret=bench-secret-bench-secret-bench-secret
port=50790
count() { # BIN CALLS -> total instructions of the server process
  local work
  work=$(mktemp -d)
  valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" "$1" serve --listen "127.0.0.1:$port" \
    --metrics-listen off --log-level warn --database-url "sqlite://$work/db" --auth-secret "$secret" \
    --bootstrap-admin-email admin@bench.test --bootstrap-admin-password admin-password \
    --password-hash-memory-kib 64 --password-hash-iterations 1 \
    --user-rate-limit 100000000 --user-rate-burst 100000000 2>"$work/log" &
  local pid=$!
  for _ in $(seq 120); do (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 1; done
  printf '0801' >"$work/get.hex" # GetUserRequest{user_id: 1}
  local token
  token=$("$here/benches/login-token.sh" "$1" "127.0.0.1:$port")
  "$here/../shared/tools/h2load-unary.sh" -x -n "$2" -c 4 -m 16 \
    -H "authorization: Bearer $token" \
    "127.0.0.1:$port" /user.v1.UserService/GetUser "$work/get.hex" >/dev/null
  kill -INT "$pid"
  wait "$pid" || true
  grep -m1 '^summary\|^totals' "$work/cg.out" | awk '{print $2}'
  rm -rf "$work"
}
for bin in "$@"; do
  base=$(count "$bin" 200)
  full=$(count "$bin" "$n")
  echo "$bin: $(((full - base) / (n - 200))) instructions per GetUser ($n calls: $full; 200 calls: $base)"
done

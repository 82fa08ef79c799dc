#!/usr/bin/env bash
# Server RSS (and its peak, VmHWM) before, right after, and 12 s after 50 users are
# created with the real (OWASP) Argon2id costs, through the load tool's set-up:
#   benches/password-hash-memory.sh target/release/activity-hub [port]
# Run it on two builds to compare them (issue 11: ~550 MiB stayed resident).
set -euo pipefail
BIN=${1:?usage: $0 path/to/activity-hub [port]}; PORT=${2:-51001}
DIR=$(mktemp -d)
$BIN serve --listen 127.0.0.1:$PORT --metrics-listen off --database-url sqlite://$DIR/hub.db \
  --bootstrap-admin-email a@x.test --bootstrap-admin-password admin-password-1 --log-level warn \
  --login-rate-limit 0 --user-rate-limit 0 &
PID=$!
sleep 2
rss() { grep -E "^(VmRSS|VmHWM)" /proc/$PID/status | awk '{printf "%s %d MiB  ", $1, $2/1024}'; echo; }
echo -n "start:        "; rss
TOKEN=$(HUB_PASSWORD=admin-password-1 $BIN login a@x.test --server http://127.0.0.1:$PORT --json | python3 -c 'import json,sys; print(json.load(sys.stdin).get("access_token",""))' 2>/dev/null || true)
[ -n "$TOKEN" ] || TOKEN=$(cat ~/.config/activity-hub/token 2>/dev/null || true)
$BIN bench idle --server http://127.0.0.1:$PORT --token "$TOKEN" --subscribers 50 --duration 1s --quiet >/dev/null 2>&1 || echo "(bench idle exit $?)"
echo -n "after 50 users: "; rss
sleep 12
echo -n "12 s later:   "; rss
kill $PID; wait $PID 2>/dev/null || true
rm -rf $DIR

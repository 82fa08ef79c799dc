#!/usr/bin/env bash
# Prints an access token of the load scripts' admin (admin@bench.test, admin-password),
# from a real Login on the hub at ADDR: access tokens name a session (`sid`), so a token
# cannot be minted offline any more. Older builds on the same --auth-secret accept it
# too (they ignore the extra claim).
#
# usage: benches/login-token.sh BIN ADDR      e.g. target/release/activity-hub 127.0.0.1:50777
set -euo pipefail
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
for _ in $(seq 50); do
  if XDG_CONFIG_HOME=$dir HUB_PASSWORD=admin-password "$1" login admin@bench.test --server "$2" >/dev/null 2>&1; then
    head -1 "$dir/activity-hub/token"
    exit 0
  fi
  sleep 0.2
done
echo "login on $2 failed" >&2
exit 1

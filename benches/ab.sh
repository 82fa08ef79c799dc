#!/usr/bin/env bash
# A/B of two builds of the hub in one run, alternating which goes first each round so
# neither always meets a warmer or a busier machine:
#   - GetUser (with bearer auth) under h2load -c4 -m64, both hubs running side by side;
#   - the load tool's `publish` (200,000 events) and `fanout` (1,000 subscribers x 200
#     events), each run starting the build under test (`--hub-bin`).
# Prints one line per round and the geometric mean of new/old per measure.
#
# usage: BASE_BIN=/path/to/older/activity-hub benches/ab.sh [ROUNDS] [SECS]
#   e.g. git worktree add /tmp/base REV && (cd /tmp/base && cargo build --release)
#        BASE_BIN=/tmp/base/target/release/activity-hub benches/ab.sh 6 8
# needs h2load (Debian nghttp2-client); builds this checkout's release binaries.
set -euo pipefail
rounds=${1:-6}
secs=${2:-8}
: "${BASE_BIN:?set BASE_BIN to the activity-hub binary of the other build}"
here=$(cd "$(dirname "$0")/.." && pwd)
h2=$here/../shared/tools/h2load-unary.sh
cargo build -q --release -p activity-hub -p activity-hub-bench
new=$here/target/release/activity-hub
bench=$here/target/release/activity-hub-bench
work=$(mktemp -d)
secret=bench-secret-bench-secret-bench-secret
serve() { # BIN PORT METRICS_PORT
  "$1" serve --listen "127.0.0.1:$2" --metrics-listen "127.0.0.1:$3" --database-url "sqlite://$work/$2.db" \
    --auth-secret "$secret" --bootstrap-admin-email admin@bench.test --bootstrap-admin-password admin-password \
    --user-rate-limit 100000000 --user-rate-burst 100000000 2>"$work/$2.log" &
}
serve "$new" 50777 59464
a=$!
serve "$BASE_BIN" 50779 59465
b=$!
trap 'kill $a $b 2>/dev/null; rm -rf "$work"' EXIT
sleep 2
token=$("$here/benches/login-token.sh" "$new" 127.0.0.1:50777)
printf '0801' >"$work/get.hex" # GetUserRequest{user_id: 1}
get_user() {
  "$h2" -x -D "$secs" -c 4 -m 64 -H "authorization: Bearer $token" "127.0.0.1:$1" /user.v1.UserService/GetUser "$work/get.hex" |
    grep -oE 'finished in [0-9.]+s, [0-9.]+ req/s' | grep -oE '[0-9.]+ req/s' | cut -d' ' -f1
}
tool() { # BIN SCENARIO FIGURE ARGS...
  local bin=$1 scenario=$2 figure=$3
  shift 3
  "$bench" "$scenario" --hub-bin "$bin" --json --quiet "$@" |
    python3 -c "import json, sys; d = json.load(sys.stdin); assert d['clean'], d; print(d['runs']['hub']['figures']['$figure'])"
}
measure() { # NAME then the command for one build, with BIN where the build goes
  local name=$1
  shift
  for r in $(seq "$rounds"); do
    # One assignment per line: `set -e` sees each substitution fail.
    if [ $((r % 2)) = 1 ]; then
      n=$("$@" "$new")
      o=$("$@" "$BASE_BIN")
    else
      o=$("$@" "$BASE_BIN")
      n=$("$@" "$new")
    fi
    echo "$name round $r: new $n old $o" | tee -a "$work/rounds"
  done
}
port_of() { [ "$1" = "$new" ] && echo 50777 || echo 50779; }
get_user_of() { get_user "$(port_of "$1")"; }
publish_of() { tool "$1" publish events_per_sec --events 200000; }
fanout_of() { tool "$1" fanout deliveries_per_sec --subscribers 1000 --events 200; }
measure get-user get_user_of
measure publish publish_of
measure fanout fanout_of
python3 - "$work/rounds" <<'PY'
import collections, math, sys
ratios = collections.defaultdict(list)
for line in open(sys.argv[1]):
    name, rest = line.split(" round ")
    parts = rest.split()
    ratios[name].append(float(parts[2]) / float(parts[4]))
for name, r in ratios.items():
    g = math.exp(sum(map(math.log, r)) / len(r))
    print(f"{name}: new/old geometric mean {g:.3f} over {len(r)} rounds (min {min(r):.3f}, max {max(r):.3f})")
PY

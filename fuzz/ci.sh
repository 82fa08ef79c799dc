#!/usr/bin/env bash
# The CI fuzz step: builds every fuzz target and runs each for a short time, starting
# from the committed seeds (fuzz/seeds/<target>) plus whatever fuzz/corpus/<target> holds
# from earlier runs on this machine. Fails on the first crash, with its input saved under
# fuzz/artifacts/<target>/.
#
# Needs only the stable toolchain: cargo-fuzz's nightly flags are enabled with
# RUSTC_BOOTSTRAP=1. Installs cargo-fuzz when it is missing.
#
#   FUZZ_SECONDS       seconds per target (default 25)
#   FUZZ_TARGET_DIR    build directory (default: outside the checkout, in the user's cache,
#                      so a fresh clone reuses the instrumented dependencies; a cold build
#                      takes several minutes on two cores)
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTC_BOOTSTRAP=1 CARGO_TERM_COLOR=never
seconds=${FUZZ_SECONDS:-25}
target_dir=${FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/activity-hub/fuzz-target}

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
cargo fuzz --version

start=$(date +%s)
cargo fuzz build --target-dir "$target_dir"
echo "built in $(($(date +%s) - start)) s"

for t in $(cargo fuzz list); do
  echo
  echo "==> fuzz $t for ${seconds}s"
  mkdir -p "fuzz/corpus/$t"
  seeds=()
  [ -d "fuzz/seeds/$t" ] && seeds=("fuzz/seeds/$t")
  if ! cargo fuzz run --target-dir "$target_dir" "$t" "fuzz/corpus/$t" "${seeds[@]}" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1 2>"fuzz/$t.log"; then
    grep -m1 -A12 'panicked at' "fuzz/$t.log" >&2 || true
    tail -n 40 "fuzz/$t.log" >&2
    echo "fuzz target $t failed; the input is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
  grep -E '^(#[0-9]+ +DONE|Done [0-9]+ runs|stat::number_of_executed_units|stat::peak_rss_mb)' "fuzz/$t.log" || true
  rm -f "fuzz/$t.log"
done
echo
echo "fuzzing passed in $(($(date +%s) - start)) s"

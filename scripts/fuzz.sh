#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets) for SECONDS each (default
# 600), JOBS at a time (default 1), on the corpora kept in fuzz/corpus, then
# minimises each corpus in place. Prints, per target, the executions and any
# crash. Needs the nightly toolchain and cargo-fuzz (installed when missing).
# The corpora are replayed by `cargo test` (tests/it/bad_input.rs).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
SECONDS_EACH=${1:-600}
JOBS=${JOBS:-1}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
cargo +nightly fuzz build -O
targets=$(cargo +nightly fuzz list)
mkdir -p logs
run_one() {
  t=$1
  mkdir -p "corpus/$t"
  if cargo +nightly fuzz run -O "$t" "corpus/$t" -- -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -print_final_stats=1 \
      >"logs/$t.log" 2>&1; then status=ok; else status=CRASH; fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$' || echo "?")
  echo "$t: $status, $execs executions in ${SECONDS_EACH}s"
}
export -f run_one
export SECONDS_EACH
printf '%s\n' $targets | xargs -P "$JOBS" -I{} bash -c 'run_one {}'
for t in $targets; do
  cargo +nightly fuzz cmin -O "$t" "corpus/$t" >/dev/null 2>&1 || echo "$t: cmin failed"
done

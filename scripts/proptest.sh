#!/usr/bin/env bash
# Runs the reference-model property tests (src/reference/) with random seeds
# and SCALE times their cases, ROUNDS times; prints each round's time.
# Usage: scripts/proptest.sh [SCALE] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
scale=${1:-100}
rounds=${2:-1}
cargo test --release --lib --no-run -q
for round in $(seq 1 "$rounds"); do
    start=$(date +%s.%N)
    OCIMUX_PROPTEST_SCALE=$scale OCIMUX_PROPTEST_RANDOM=1 \
        cargo test --release --lib -q reference:: -- --test-threads 2 2>&1 | grep -E "test result|FAILED|panicked|minimal failing" -A12
    echo "round $round: scale $scale, $(echo "$(date +%s.%N) - $start" | bc) s"
done

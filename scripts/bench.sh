#!/usr/bin/env bash
# The benchmark (not a test): builds the release binary, installs bindfs and
# fio when missing, and runs scripts/bench.py, which prints machine facts and
# tables of ratios measured side by side in one run. Needs root.
# Usage: scripts/bench.sh   (REPS, BENCH_DIR, BIG_MIB, MANY: see bench.py)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh bindfs fio
cargo build --release --quiet
exec python3 scripts/bench.py

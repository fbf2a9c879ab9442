#!/usr/bin/env bash
# The serve benchmark (not a test): builds the release binary, installs ab
# (apache2-utils) when missing, and runs scripts/serve_bench.py (ocimux serve side by side
# with docker-registry 2.8 on loopback). Needs root.
# Usage: scripts/serve_bench.sh   (REPS, BENCH_DIR, BIG_MIB: see serve_bench.py)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh ab
cargo build --release --quiet
exec python3 scripts/serve_bench.py

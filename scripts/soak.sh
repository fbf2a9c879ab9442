#!/usr/bin/env bash
# The soak (not a test): builds the release binary and runs scripts/soak.py
# for DURATION seconds (default 300, at most 600): rebuilds every 0.5 s,
# 8 readers re-hashing every blob, a SIGKILL and remount half-way; prints RSS,
# fds, watches and wrong bytes. Needs root. Figures go in BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo build --release --quiet
exec python3 scripts/soak.py

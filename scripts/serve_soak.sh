#!/usr/bin/env bash
# The serve soak (not a test): builds the release binary and runs
# scripts/serve_soak.py (readers re-hash every blob they pull while the
# source is rebuilt in place). Usage: scripts/serve_soak.sh  (SOAK_SECS, READERS)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
exec python3 scripts/serve_soak.py

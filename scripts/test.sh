#!/usr/bin/env bash
# The whole test suite: installs the tools the tests use (scripts/deps.sh),
# checks formatting and lints, then runs every unit and integration test
# (real FUSE mounts, skopeo, umoci and a local docker-registry), and the
# Shuttle model checks of the shared tables (--features shuttle).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --all-targets
cargo test --features shuttle --lib -- under_any_interleaving

#!/usr/bin/env bash
# The whole test suite: installs the tools the tests use (scripts/deps.sh),
# checks formatting and lints, then runs every unit and integration test
# (real FUSE mounts, skopeo, umoci and a local docker-registry), and the
# Shuttle model checks of the shared tables (--features shuttle). Tests run
# under cargo-nextest, one process each, killed and named if one hangs
# (bounds in .config/nextest.toml); it is installed from crates.io when
# missing.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "test: installing cargo-nextest (the test runner) from crates.io" >&2
  cargo install --locked --quiet cargo-nextest
fi
cargo nextest run --all-targets --no-fail-fast
cargo test --features shuttle --lib -- under_any_interleaving

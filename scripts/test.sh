#!/usr/bin/env bash
# Runs every check and test: formatting, clippy, unit, oracle and end-to-end tests (which use
# real FFmpeg, installed here if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test "$@"

#!/usr/bin/env bash
# Runs every check and test: formatting, clippy, unit, oracle and end-to-end tests. The
# end-to-end tests use real FFmpeg (installed here if missing), play in hls.js in headless
# Chromium (scripts/install-player.sh), and run twice: on the embedded
# backends and on real Kafka, S3 (MinIO) and MongoDB (FerretDB) servers, which
# scripts/services.sh installs once (cached outside the clone) and starts on loopback. The
# real-services feature turns on the tests that need those servers: nothing is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
# The player's install (mostly a download) runs beside the checks and the build.
player_log="$(mktemp)"
scripts/install-player.sh >"$player_log" 2>&1 &
player=$!
cargo fmt --check
cargo fmt --check --manifest-path fuzz/Cargo.toml
cargo clippy --all-targets --features real-services --quiet -- -D warnings
wait "$player" || { cat "$player_log" >&2; echo "scripts/install-player.sh failed" >&2; exit 1; }
scripts/services.sh start
trap 'scripts/services.sh clean' EXIT
eval "$(scripts/services.sh env)"
cargo test --features real-services "$@"
scripts/fuzz.sh "${FUZZ_SECONDS:-30}"

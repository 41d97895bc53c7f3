#!/usr/bin/env bash
# Starts segflow on this machine: installs FFmpeg if it is missing, builds, runs `segflow run`.
# Extra arguments go to `segflow run` (e.g. --listen 127.0.0.1:0 --workers 2 --data-dir DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
exec cargo run --release --quiet -- run "$@"

#!/usr/bin/env bash
# Installs what the end-to-end tests play segflow's HLS with, as a web viewer would: Debian's
# Chromium and, in tests/player, hls.js with playwright-core to drive it (versions pinned in
# tests/player/package-lock.json). Idempotent: does nothing when both are in place.
set -euo pipefail
cd "$(dirname "$0")/../tests/player"
if ! command -v chromium >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "segflow: installing Chromium with apt-get (one time)..." >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
# node_modules/.installed-lock: the lock file it was installed from.
if ! cmp -s package-lock.json node_modules/.installed-lock 2>/dev/null; then
  npm ci --no-audit --no-fund --loglevel=error
  cp package-lock.json node_modules/.installed-lock
fi
command -v chromium >/dev/null && test -f node_modules/hls.js/dist/hls.min.js

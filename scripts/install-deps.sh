#!/usr/bin/env bash
# Installs what segflow needs at run time on a Debian machine: FFmpeg (ffmpeg + ffprobe).
# Idempotent: does nothing when both are already on PATH.
set -euo pipefail
if command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "segflow: installing FFmpeg with apt-get (one time)..." >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null
command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null

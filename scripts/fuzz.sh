#!/usr/bin/env bash
# Runs each coverage-guided fuzz target in fuzz/ (libFuzzer through cargo-fuzz) for a bounded
# time: scripts/fuzz.sh [seconds per target, default 60] [target ...].
# cargo-fuzz is installed once into a cache outside the clone. Its instrumentation flags need
# nightly rustc; RUSTC_BOOTSTRAP lets the stable toolchain take them. No sanitizer: segflow has
# no unsafe code, so libFuzzer's own crash and timeout detection is what the run checks. The
# corpus grows in the cache across runs; fuzz/seeds/ holds the inputs it starts from. A crash
# fails the run and leaves its input under fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET="${1:-60}"
shift || true
CACHE="${SERVICES_CACHE_DIR:-$HOME/.cache/segflow}"
CARGO_FUZZ_VERSION=0.13.2
TOOLS="$CACHE/tools"
if ! "$TOOLS/bin/cargo-fuzz" --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  echo "segflow: installing cargo-fuzz $CARGO_FUZZ_VERSION (one time)..." >&2
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --root "$TOOLS" --quiet
fi
export RUSTC_BOOTSTRAP=1
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <("$TOOLS/bin/cargo-fuzz" list)
for target in "${targets[@]}"; do
  corpus="$CACHE/fuzz-corpus/$target"
  mkdir -p "$corpus"
  echo "segflow: fuzzing $target for ${SECONDS_PER_TARGET}s" >&2
  "$TOOLS/bin/cargo-fuzz" run --sanitizer none "$target" "$corpus" "fuzz/seeds/$target" -- \
    -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
done

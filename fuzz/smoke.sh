#!/usr/bin/env bash
# Builds every fuzz target and runs each for a bounded time from the seed
# corpus in fuzz/corpus (new inputs go to a scratch copy, so the repository's
# corpus only changes when someone adds to it on purpose).
#
#   fuzz/smoke.sh            # 20 s per target
#   SECONDS_PER_TARGET=600 fuzz/smoke.sh
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). Runs on the stable toolchain:
# RUSTC_BOOTSTRAP lets cargo-fuzz pass its coverage flags, and no sanitizer is
# used (`--sanitizer none`): the targets are safe Rust, where a panic is the
# finding.
set -euo pipefail
cd "$(dirname "$0")"
secs="${SECONDS_PER_TARGET:-20}"
export RUSTC_BOOTSTRAP=1
targets=(config request_head chunked header_rules admin_body peer_frame)
cargo fuzz build --sanitizer none
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t"
  cp corpus/"$t"/* "$scratch/$t/"
  echo "== $t (${secs}s)"
  if ! cargo fuzz run --sanitizer none "$t" "$scratch/$t" -- \
      -max_total_time="$secs" -max_len=65536 -print_final_stats=1 >"$scratch/$t.log" 2>&1; then
    tail -40 "$scratch/$t.log" >&2
    echo "fuzz target $t failed: the input is in fuzz/artifacts/$t" >&2
    exit 1
  fi
  grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "$scratch/$t.log" || true
done

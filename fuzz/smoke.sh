#!/usr/bin/env bash
# Builds every fuzz target and runs each for a bounded time from the seed
# corpus in fuzz/corpus (new inputs go to a scratch copy, so the repository's
# corpus only changes when someone adds to it on purpose). Exits non-zero when
# a target crashes (or an input runs longer than TIMEOUT seconds): the input
# is then in fuzz/artifacts/TARGET.
#
#   fuzz/smoke.sh                            # optimized build, 20 s per target (CI)
#   SECONDS_PER_TARGET=600 fuzz/smoke.sh     # longer
#   FUZZ_PROFILE=dev fuzz/smoke.sh           # unoptimized build
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). Runs on the stable
# toolchain: RUSTC_BOOTSTRAP lets cargo-fuzz pass its coverage flags, and no
# sanitizer is used (`--sanitizer none`): the targets are safe Rust, where a
# panic is the finding. Both profiles keep debug assertions and overflow
# checks on, so an arithmetic overflow is a finding too. The build goes to
# fuzz/target, apart from the main crate's target directory.
set -euo pipefail
cd "$(dirname "$0")"
secs="${SECONDS_PER_TARGET:-20}"
timeout_secs="${TIMEOUT:-30}"
case "${FUZZ_PROFILE:-release}" in
  release) profile=() ;; # cargo-fuzz's default: optimized, with debug assertions
  dev) profile=(--dev) ;;
  *) echo "FUZZ_PROFILE must be release or dev" >&2; exit 2 ;;
esac
export RUSTC_BOOTSTRAP=1
# Every target the crate declares, so a new one is never left out.
mapfile -t targets < <(cargo fuzz list)
if [ "${#targets[@]}" -eq 0 ]; then
  echo "cargo fuzz list found no targets" >&2
  exit 1
fi

# Inputs longer than a realistic one only slow the search down: a config file
# or an engine answer is a few KiB here; the request head targets go past the
# guard's 8 KiB head limit (and the answer heads past a few KiB).
max_len() {
  case "$1" in
    request_head | chunked | h1_request | h1_response) echo 16384 ;;
    *) echo 4096 ;;
  esac
}

cargo fuzz build --sanitizer none "${profile[@]}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t"
  cp corpus/"$t"/* "$scratch/$t/"
  echo "== $t (${secs}s)"
  if ! cargo fuzz run --sanitizer none "${profile[@]}" "$t" "$scratch/$t" -- \
      -max_total_time="$secs" -max_len="$(max_len "$t")" -timeout="$timeout_secs" \
      -print_final_stats=1 >"$scratch/$t.log" 2>&1; then
    # The panic message, then libFuzzer's summary (the input and how to rerun it).
    grep -m 3 -A 2 'panicked at' "$scratch/$t.log" >&2 || true
    tail -30 "$scratch/$t.log" >&2
    echo "fuzz target $t failed: the input is in fuzz/artifacts/$t" >&2
    exit 1
  fi
  grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$scratch/$t.log" || true
done

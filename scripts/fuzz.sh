#!/usr/bin/env bash
# Builds the libFuzzer harnesses of fuzz/ (clang, ASan + UBSan) into build-fuzz/ and runs each
# for a bounded time, one after the other.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 60 s, every target)
#
# Targets: fuzz_safetensors fuzz_pth fuzz_pickle fuzz_image fuzz_metrics. The seed corpora are
# made from the test fixtures into build-fuzz/seeds/<target>/ on every run; what the fuzzer finds
# is added to build-fuzz/corpus/<target>/, kept between runs so that fuzzing accumulates. A crash,
# sanitizer report, leak, timeout (-timeout=10 s per input) or out-of-memory (2 GiB) stops that
# target, saves the input as build-fuzz/artifacts/<target>-crash-... (or leak-, timeout-, oom-)
# and makes the script exit with 1 after the others have run. Reproduce one with
#   build-fuzz/fuzz/<target> build-fuzz/artifacts/<target>-crash-...
# $JOBS limits the build's parallel jobs (default: every core).
set -euo pipefail
cd "$(dirname "$0")/.."

ALL_TARGETS=(fuzz_safetensors fuzz_pth fuzz_pickle fuzz_image fuzz_metrics)
SECONDS_PER_TARGET=${1:-60}
[[ "$SECONDS_PER_TARGET" =~ ^[1-9][0-9]*$ ]] || {
  echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]" >&2
  exit 2
}
shift $(($# > 0 ? 1 : 0))
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${ALL_TARGETS[@]}")
for t in "${TARGETS[@]}"; do
  [[ " ${ALL_TARGETS[*]} " == *" $t "* ]] || {
    echo "fuzz.sh: unknown target '$t' (known: ${ALL_TARGETS[*]})" >&2
    exit 2
  }
done

OUT=build-fuzz
JOBS=${JOBS:-$(nproc)}
# The longest input each target is given: a few times its largest seed, so mutations can grow
# the input without making each run slow (fuzz_metrics: 5 header bytes, two 64x64 images).
declare -A MAX_LEN=([fuzz_safetensors]=4096 [fuzz_pth]=16384 [fuzz_pickle]=4096
                    [fuzz_image]=32768 [fuzz_metrics]=8197)
declare -A DICT=([fuzz_safetensors]=safetensors [fuzz_pth]=pth [fuzz_pickle]=pickle
                 [fuzz_image]=image)

if [ ! -f "$OUT/build.ninja" ]; then
  CC=clang CXX=clang++ cmake -S . -B "$OUT" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBIREF_FUZZ=ON \
    -DBIREF_BUILD_TESTS=OFF -DBIREF_BUILD_BENCH=OFF >/dev/null
fi
mkdir -p "$OUT/artifacts" "$OUT/logs"

make_seeds() {
  local target=$1 dir="$OUT/seeds/$1"
  rm -rf "$dir"
  mkdir -p "$dir"
  if [ "$target" = fuzz_image ]; then
    cmake --build "$OUT" --target fuzz_image_seeds -j "$JOBS" >/dev/null
    "$OUT/fuzz/fuzz_image_seeds" "$dir" tests/golden/pipeline/astronaut.jpg \
      tests/golden/pipeline/camera-gray.png tests/golden/pipeline/chelsea.png \
      "$(find tests/golden/metrics -path '*/gt/*.png' | sort | head -n 1)"
  else
    python3 fuzz/make_seeds.py . "$dir" "$target"
  fi
}

# One line from libFuzzer's log: runs, speed, coverage, corpus, and how it ended.
summarize() {
  local target=$1 log=$2 rc=$3
  local runs speed cov ft corpus peak result artifact
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  peak=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -n 1)
  # The last status line: "#N  DONE  cov: C ft: F corp: I/SIZE ..."
  local status
  status=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$status")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$status")
  corpus=$(sed -n 's/.* corp: \([^ ]*\).*/\1/p' <<<"$status")
  artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
  if [ "$rc" -eq 0 ]; then
    result=ok
  elif grep -q 'ERROR: libFuzzer: timeout' "$log"; then
    result="TIMEOUT"
  elif grep -q 'ERROR: libFuzzer: out-of-memory' "$log"; then
    result="OUT OF MEMORY"
  elif grep -q 'ERROR: LeakSanitizer' "$log"; then
    result="LEAK"
  else
    result="CRASH (exit $rc)"
  fi
  [ -z "$artifact" ] || result="$result, input saved to $artifact"
  [ "$rc" -eq 0 ] || result="$result; log: $log"
  printf '%-17s %s runs (%s/s), cov %s, ft %s, corpus %s, peak RSS %s MB: %s\n' "$target" \
    "${runs:-?}" "${speed:-?}" "${cov:-?}" "${ft:-?}" "${corpus:-?}" "${peak:-?}" "$result"
}

failed=0
summaries=()
for target in "${TARGETS[@]}"; do
  echo "== $target: building"
  if ! cmake --build "$OUT" --target "$target" -j "$JOBS"; then
    summaries+=("$(printf '%-17s BUILD FAILED' "$target")")
    failed=1
    continue
  fi
  make_seeds "$target"
  mkdir -p "$OUT/corpus/$target"
  args=("$OUT/corpus/$target" "$OUT/seeds/$target"
        -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -timeout=10
        -max_len="${MAX_LEN[$target]}" -artifact_prefix="$OUT/artifacts/$target-"
        -print_final_stats=1)
  [ -z "${DICT[$target]:-}" ] || args+=(-dict="fuzz/dict/${DICT[$target]}.dict")
  log="$OUT/logs/$target.log"
  echo "== $target: fuzzing for ${SECONDS_PER_TARGET} s (log: $log)"
  # libFuzzer stops itself after -max_total_time; the outer timeout only bounds a run that
  # hangs outside an input (e.g. while reading a large corpus), and counts as a failure.
  rc=0
  timeout -k 30 $((SECONDS_PER_TARGET + 300)) "$OUT/fuzz/$target" "${args[@]}" >"$log" 2>&1 ||
    rc=$?
  summaries+=("$(summarize "$target" "$log" "$rc")")
  [ "$rc" -eq 0 ] || failed=1
done

echo "== summary"
printf '%s\n' "${summaries[@]}"
exit "$failed"

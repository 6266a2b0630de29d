#!/usr/bin/env bash
# Builds the library, the `biref` command and the tests with AddressSanitizer and UBSan
# (-DBIREF_SANITIZE=ON) into build-asan/ and runs the test suite there, less its slowest tests,
# two tests at a time, so that the run takes about 10 minutes on 2 cores. The CLI tests run
# build-asan/biref, the sanitized command. Any sanitizer report fails the test that triggered it.
#
#   scripts/test-sanitizers.sh [CTEST_ARGS...]     e.g. -R Pth to run a subset (the tests that
#                                                  bound peak RSS, below, always run)
#
# $JOBS limits the build's parallel jobs (default: every core); $TEST_JOBS the tests run at once
# (default 2: a sanitized test keeps about one core busy on average, many wait on child
# processes and sockets; on 2 cores the suite took 759 s one at a time, 499 s two at a time).
# The tests that measure peak RSS run one at a time after the rest.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=build-asan

# Tests left out: the slowest (each 1.5 to 4 minutes without sanitizers on a busy 2-core
# machine), none of which reaches code that the rest do not: the double-precision reference
# backend on a whole model (its kernels are checked op by op in test_ops), the swin_v1_l model
# (the swin_v1_t code with more and wider layers) and its conversion to half precision.
EXCLUDE=(
  'Deploy\.'  # node checks of deploy/: no C++ of biref's runs beyond --help
  'Golden\.ReferenceBackend'
  'Golden\.SwinL'
  'ConvertTest\.SwinL'
  # 12-35 s each under ASan, whole models through code the rest covers (the bench command, the
  # f16/bf16 widening, sharding the inputs, the bench's cache report): kept out so CI stays
  # near 45 minutes.
  'Claims\.BenchGflopIsTheAnalyticCount'
  'Claims\.ForwardOnF16AndBf16WeightsEqualsTheWidenedF32Model'
  'ConvertTest\.Bf16AndBackToF32'
  'SegmentFolders\.ShardsSplitTheInputsDisjointlyAndCoverThemAll'
  'WeightCache\.BenchSaysWhereTheWeightsCameFrom'
  # six whole-model benchmark processes (the idle copies, the copies beside busy loops)
  'Threads\.BenchBusyAndProcs'
  # whole models again at the lower instruction sets and in BF16 (the kernels of every level,
  # and the BF16 GEMM and convolutions, are tested op by op), and the binary under QEMU's CPU
  # emulation (minutes with ASan)
  'GoldenIsa\.'
  'GoldenBf16\.'
  'Pipeline\.Bf16'
  'Isa\.RunsOnEmulatedCpus'
  # exported graphs run in ONNX Runtime (uninstrumented node): the export code itself runs
  # under the sanitizers in OnnxExportCli (build-asan/biref at 96x64: odd grids, padding, shift
  # masks) and OnnxExport.BadOptions*
  'OnnxDynamic\.'
  'OnnxExport\.FixedSize'
  'OnnxExport\.Float16'
  'OnnxExport\.NativeDeformConv'
  'OnnxExport\.PipelineGolden'
  'OnnxExport\.Opset21'
)

# Tests that bound the process's peak RSS: they run on their own, with ASan's quarantine of
# freed memory (256 MiB by default, added to the peak) cut to 32 MiB so that the bound still
# measures the code's allocations rather than the sanitizer's.
RSS_TESTS=(
  'PthReject\.ObjectBombPickle'
  'Tiling\.PeakMemoryGrowsOnlyWithTheImage'
  'ServeProcess\.FourWorkersShareOneCopyOfTheWeights'
)

# Leaks: on; a sanitizer error aborts the process (so ctest reports it), UB too.
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

start=$(date +%s)
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBIREF_SANITIZE=ON \
  -DBIREF_BUILD_BENCH=OFF >/dev/null
# The build runs the test binary too (gtest_discover_tests lists the tests), under the options
# above.
cmake --build "$BUILD_DIR" -j "${JOBS:-$(nproc)}"
built=$(date +%s)

exclude=$(IFS='|'; echo "${EXCLUDE[*]}|${RSS_TESTS[*]}")
rss_tests=$(IFS='|'; echo "${RSS_TESTS[*]}")
status=0
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "${TEST_JOBS:-2}" -E "$exclude" "$@" ||
  status=$?
ASAN_OPTIONS=$ASAN_OPTIONS:quarantine_size_mb=32 \
  ctest --test-dir "$BUILD_DIR" --output-on-failure -R "$rss_tests" || status=$?
echo "test-sanitizers: build $((built - start)) s, tests $(($(date +%s) - built)) s"
exit "$status"

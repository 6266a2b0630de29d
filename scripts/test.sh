#!/usr/bin/env bash
# Builds biref and runs the whole test suite (unit, op-vs-reference, golden, pipeline, CLI).
# Tests run one at a time: each one already uses every core through OpenMP.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure

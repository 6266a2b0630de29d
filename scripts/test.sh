#!/usr/bin/env bash
# Builds biref and runs the whole test suite (unit, op-vs-reference, golden, pipeline, CLI).
# Tests run one at a time: each one already uses every core through OpenMP.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
# The npm packages of the browser and deployment tests (pinned by their lock files; skipped
# when already installed).
scripts/install-test-npm-deps.sh
ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure

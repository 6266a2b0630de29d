#!/usr/bin/env bash
# Installs the npm packages of the tests that run on Node.js, exactly as their lock files pin
# them: tests/web (puppeteer-core, driving Debian's chromium; never a downloaded browser),
# tests/deploy (kubernetes-models, @kubernetes/client-node, js-yaml: the offline manifest
# validation) and tests/onnx (onnxruntime-node: ONNX Runtime, whose CPU library ships in the
# package, runs the graphs of `biref export-onnx`). A folder whose node_modules already matches
# its lock file is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in node npm; do
  command -v "$tool" >/dev/null || {
    echo "install-test-npm-deps: $tool is missing: run scripts/install-deps.sh (Debian packages nodejs npm)" >&2
    exit 1
  }
done

for dir in tests/web tests/deploy tests/onnx; do
  stamp=$dir/node_modules/.biref-lock.sha256
  want=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "install-test-npm-deps: $dir/node_modules matches package-lock.json"
    continue
  fi
  echo "install-test-npm-deps: npm ci in $dir"
  # --ignore-scripts: no install scripts run; the packages are plain JavaScript and data.
  (cd "$dir" && timeout 600 npm ci --ignore-scripts --no-audit --no-fund)
  echo "$want" >"$stamp"
done

#!/usr/bin/env bash
# Installs everything biref needs to build and test on Debian 12 (bookworm), from Debian's
# packages only. Safe to run again; skips apt when everything is already installed.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  libdnnl-dev            # oneDNN: convolutions and matmuls
  libomp-dev             # OpenMP runtime (threads for our own kernels)
  libopencv-dev          # image decode / encode / resize
  nlohmann-json3-dev     # JSON (bench output, golden case files)
  libcli11-dev           # command-line parsing
  libgtest-dev libgmock-dev  # tests
  libbenchmark-dev       # micro-benchmarks
  libzip-dev             # PyTorch .pth checkpoints (zip format)
  libcurl4-openssl-dev   # model zoo downloads from Hugging Face
  libboost-dev           # biref serve: HTTP on Boost.Beast (header-only)
  libhiredis-dev         # biref serve: the shared result cache in Redis
  libonnx-dev libprotobuf-dev  # biref export-onnx: ONNX's protobuf messages, checker, shape inference
  redis-server           # tests: a real Redis for the shared cache
  prometheus             # tests: promtool checks the /metrics text
  nginx-light            # tests: the load balancer of deploy/nginx in front of two instances
  wrk                    # tests: a bounded load run against the service
  chromium               # tests: the web page in a headless browser (puppeteer-core)
  clang libclang-rt-14-dev  # libFuzzer and clang's sanitizer runtimes (scripts/fuzz.sh)
  llvm                   # llvm-symbolizer: file:line in sanitizer reports
  python3                # fuzz seed corpora (fuzz/make_seeds.py)
  qemu-user              # tests: the binaries on emulated CPUs without AVX-512 or AVX
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
# Node.js and npm for the browser and deployment tests (tests/web, tests/deploy): Debian's, unless
# a Node.js with npm is already installed (a newer one from another repository is kept).
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"

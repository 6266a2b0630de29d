#!/usr/bin/env bash
# Measures `biref export-onnx` and ONNX Runtime on its graphs against biref on the same machine
# (the numbers of docs/onnx.md):
#   - export time and peak RSS of each backbone at the size;
#   - ONNX Runtime (npm onnxruntime-node, CPU, --threads) on the decomposed and the native
#     (DeformConv) graph: session load, then the median of --runs after one warm-up run;
#   - `biref bench` at the same size, threads and runs, in the same session.
#
#   scripts/bench-onnx.sh [SIZE] [RUNS] [BACKBONES...]      default: 1024 3 swin_v1_t
#
# Needs build/ (scripts/build.sh) and tests/onnx/node_modules (scripts/install-test-npm-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-1024}
RUNS=${2:-3}
shift $(($# > 2 ? 2 : $#))
BACKBONES=("${@:-swin_v1_t}")
THREADS=${THREADS:-2}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# a normalised-image-like input, the same for every run
node -e "
const n = 3 * $SIZE * $SIZE, a = new Float32Array(n);
let s = 1;
for (let i = 0; i < n; i++) { s = (s * 1103515245 + 12345) % 2147483648; a[i] = s / 2147483648 * 4.5 - 2; }
require('fs').writeFileSync('$work/in.bin', Buffer.from(a.buffer));"

median() { node -e "const a = JSON.parse(process.argv[1]).sort((x, y) => x - y); console.log(a[a.length >> 1].toFixed(0))" "$1"; }

for bb in "${BACKBONES[@]}"; do
  echo "== $bb at ${SIZE}x${SIZE}, $THREADS threads, median of $RUNS runs"
  for deform in decomposed native; do
    out=$work/$bb.$deform.onnx
    /usr/bin/time -f "%e %M" -o "$work/time" build/biref export-onnx --model "synthetic:$bb" \
      --size "${SIZE}x${SIZE}" --deform "$deform" -o "$out" >/dev/null
    read -r secs kb <"$work/time"
    echo "export ($deform): ${secs} s, peak RSS $((kb / 1024)) MiB, $(($(stat -c %s "$out") >> 20)) MiB file"
    /usr/bin/time -f "%M" -o "$work/time" node tests/onnx/run.mjs "$out" --threads "$THREADS" \
      --warmup 1 --runs "$RUNS" "$work/in.bin:1,3,$SIZE,$SIZE:$work/out.bin" >"$work/ort.json"
    ms=$(node -e "console.log(JSON.stringify(JSON.parse(require('fs').readFileSync('$work/ort.json','utf8')).ms))")
    load=$(node -e "console.log(JSON.parse(require('fs').readFileSync('$work/ort.json','utf8')).load_ms.toFixed(0))")
    echo "ONNX Runtime ($deform): median $(median "$ms") ms of $ms, session load $load ms, peak RSS $(($(cat "$work/time") / 1024)) MiB"
    rm -f "$out"
  done
  build/biref bench --model "synthetic:$bb" --size "${SIZE}x${SIZE}" --runs "$RUNS" \
    --threads "$THREADS" --json >"$work/bench.json"
  node -e "
const b = JSON.parse(require('fs').readFileSync('$work/bench.json', 'utf8'));
const pick = (...ks) => { for (const k of ks) if (b[k] !== undefined) return b[k]; return '?'; };
console.log('biref: median', pick('median_ms'), 'ms, first run', pick('first_run_ms'), 'ms, peak RSS', pick('peak_rss_mb'), 'MiB');"
done

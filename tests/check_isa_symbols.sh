#!/usr/bin/env bash
# A binary built by default must run on any x86-64: AVX (VEX or EVEX encoded) instructions may
# appear only in the kernels compiled per instruction set, which run after the CPUID check
# (src/ops/cpu/isa_begin.h, dispatch.cpp). Lists every function that breaks the rule:
#   - any v-prefixed instruction outside namespaces biref::cpu::{avx2,avx512,avx512_bf16};
#   - AVX-512 registers (zmm, k masks) or EVEX-only forms in biref::cpu::avx2.
# Usage: check_isa_symbols.sh BINARY...
set -euo pipefail
status=0
for bin in "$@"; do
  report=$(objdump -d --no-show-raw-insn -C "$bin" | awk '
    /^[0-9a-f]+ <.*>:$/ { fn = substr($0, index($0, "<") + 1); sub(/>:$/, "", fn); next }
    /^ *[0-9a-f]+:\t/ {
      split($0, part, "\t"); insn = part[2]; sub(/ *#.*/, "", insn)
      if (insn !~ /^v/) next
      if (fn ~ /biref::cpu::(avx512|avx512_bf16)::/) next
      if (fn ~ /biref::cpu::avx2::/ && insn !~ /%zmm|%k[0-7]|\{/) next
      if (!(fn in seen)) { seen[fn] = 1; print fn "\t" insn }
    }')
  if [[ -n "$report" ]]; then
    echo "$bin: AVX instructions outside the per-ISA kernels (function, first instruction):"
    echo "$report" | head -40
    status=1
  else
    echo "$bin: AVX instructions only in biref::cpu::{avx2,avx512,avx512_bf16}"
  fi
done
exit $status

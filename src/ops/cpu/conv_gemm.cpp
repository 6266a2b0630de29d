// Convolutions as a GEMM over tap-major columns (the BF16 path of conv2d): the weight layout
// and the tile size; the columns are gathered in bfloat16 (gemm_bf16.cpp: conv_columns_bf16).
#include <omp.h>

#include <algorithm>

#include "ops/cpu/isa_begin.h"
#include "ops/cpu/kernels.h"

namespace biref::cpu::BIREF_ISA {

void conv_gemm_weights(const Conv2d& c, const float* w, float* out) {
  const int kk = c.k * c.k;
  const size_t in = size_t(kk) * c.in;
  for (int o = 0; o < c.out; ++o)
    for (int ci = 0; ci < c.in; ++ci)
      for (int n = 0; n < kk; ++n)
        out[size_t(o) * in + size_t(n) * c.in + ci] = w[(size_t(o) * c.in + ci) * kk + n];
}

int64_t conv_tile(const Conv2d& c) {
  const int64_t K = int64_t(c.k) * c.k * c.in;
  return std::max<int64_t>(64, (int64_t(8) << 20) / (K * 4));
}

}  // namespace biref::cpu::BIREF_ISA

#include "ops/cpu/isa_end.h"

// Convolutions as a GEMM over tap-major columns (the BF16 path of conv2d): the weight layout
// and the columns (im2col) of a tile of output positions.
#include <omp.h>

#include <algorithm>
#include <cstring>

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

void conv_columns(const Conv2d& c, const Tensor& x, int64_t Ho, int64_t Wo, int64_t p0, int64_t np,
                  float* cols) {
  const int64_t H = x.dim(1), W = x.dim(2), Ci = x.dim(3);
  const int k = c.k;
  const int64_t K = int64_t(k) * k * Ci;
  const size_t row_bytes = size_t(Ci) * sizeof(float);
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < np; ++t) {
    const int64_t p = p0 + t, b = p / (Ho * Wo), yo = (p / Wo) % Ho, xo = p % Wo;
    float* col = cols + t * K;
    for (int ky = 0; ky < k; ++ky) {
      const int64_t yi = yo * c.stride - c.pad + ky;
      for (int kx = 0; kx < k; ++kx, col += Ci) {
        const int64_t xi = xo * c.stride - c.pad + kx;
        if (yi < 0 || yi >= H || xi < 0 || xi >= W)
          std::memset(col, 0, row_bytes);
        else
          std::memcpy(col, x.data + ((b * H + yi) * W + xi) * Ci, row_bytes);
      }
    }
  }
}

}  // namespace biref::cpu::BIREF_ISA

#include "ops/cpu/isa_end.h"

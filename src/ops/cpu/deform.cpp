// The modulated deformable convolution's own part on the CPU: bilinear sampling with the
// modulation applied, into tap-major columns that one GEMM (oneDNN) consumes; the GEMM's weight
// layout.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "ops/cpu/deform_tap.h"
#include "ops/cpu/isa_begin.h"
#include "ops/cpu/kernels.h"

namespace biref::cpu::BIREF_ISA {

// Positions per tile: about 8 MB of sampled columns.
int64_t deform_tile(const DeformConv& d, int64_t Ci) {
  const int64_t K = int64_t(d.k) * d.k * Ci;
  return std::max<int64_t>(64, (int64_t(8) << 20) / (K * 4));
}

// The regular_conv weight [out, in, k, k] as a linear [out, k²·in] over columns ordered
// (tap, channel): the layout of a convolution as a GEMM (conv_gemm.cpp).
void deform_gemm_weights(const DeformConv& d, const float* w, float* out) {
  conv_gemm_weights(d.regular, w, out);
}

// Rows [p0, p0 + np) of the flattened [B·H·W] output positions: bilinear samples of x with the
// modulation applied, into cols [np, k²·Ci] (tap-major: column n·Ci + c is tap n, channel c).
void deform_sample(const DeformConv& d, const Tensor& x, const Tensor& om, int64_t p0, int64_t np,
                   float* cols) {
  const int64_t Ci = x.dim(3), K = int64_t(d.k) * d.k * Ci;
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < np; ++t) {
    for_each_deform_tap(d, x, om, p0 + t, [&](int n, const DeformTap* tp) {
      float* col = cols + t * K + int64_t(n) * Ci;
      if (!tp) {
        std::memset(col, 0, size_t(Ci) * sizeof(float));
        return;
      }
      const float *c00 = tp->corner[0], *c01 = tp->corner[1], *c10 = tp->corner[2],
                  *c11 = tp->corner[3];
      const float w00 = tp->weight[0], w01 = tp->weight[1], w10 = tp->weight[2],
                  w11 = tp->weight[3];
      if (tp->all_inside) {
#pragma omp simd
        for (int64_t c = 0; c < Ci; ++c)
          col[c] = w00 * c00[c] + w01 * c01[c] + w10 * c10[c] + w11 * c11[c];
        return;
      }
      // a corner outside the image contributes 0
      for (int64_t c = 0; c < Ci; ++c) {
        float v = 0.f;
        if (c00) v += w00 * c00[c];
        if (c01) v += w01 * c01[c];
        if (c10) v += w10 * c10[c];
        if (c11) v += w11 * c11[c];
        col[c] = v;
      }
    });
  }
}

}  // namespace biref::cpu::BIREF_ISA

#include "ops/cpu/isa_end.h"

// The modulated deformable convolution's own part on the CPU: bilinear sampling with the
// modulation applied, into tap-major columns that one GEMM (oneDNN) consumes; the GEMM's weight
// layout.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "ops/cpu/isa_begin.h"
#include "ops/cpu/kernels.h"
#include "ops/cpu/vec_math.h"

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
  const int64_t H = x.dim(1), W = x.dim(2), Ci = x.dim(3);
  const int k = d.k, kk = k * k;
  const int64_t K = int64_t(kk) * Ci;
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < np; ++t) {
    const int64_t pos = p0 + t;
    const int64_t b = pos / (H * W), p = (pos / W) % H, q = pos % W;
    const float* o = om.data + pos * 3 * kk;
    const float* xb = x.data + b * H * W * Ci;
    for (int n = 0; n < kk; ++n) {
      float* col = cols + t * K + int64_t(n) * Ci;
      const float sy = float(p - d.pad + n / k) + o[2 * n];
      const float sx = float(q - d.pad + n % k) + o[2 * n + 1];
      const float mask = 2.f / (1.f + fast_exp(-o[2 * kk + n]));
      if (!(sy > -1.f && sy < float(H) && sx > -1.f && sx < float(W))) {
        std::memset(col, 0, size_t(Ci) * sizeof(float));
        continue;
      }
      const int y0 = int(std::floor(sy)), x0 = int(std::floor(sx));
      const float ly = sy - float(y0), lx = sx - float(x0);
      const float hy = 1.f - ly, hx = 1.f - lx;
      // the four corners with their weights; a corner outside the image contributes 0
      const float* c00 = (y0 >= 0 && x0 >= 0) ? xb + (int64_t(y0) * W + x0) * Ci : nullptr;
      const float* c01 = (y0 >= 0 && x0 + 1 < W) ? xb + (int64_t(y0) * W + x0 + 1) * Ci : nullptr;
      const float* c10 = (y0 + 1 < H && x0 >= 0) ? xb + (int64_t(y0 + 1) * W + x0) * Ci : nullptr;
      const float* c11 =
          (y0 + 1 < H && x0 + 1 < W) ? xb + (int64_t(y0 + 1) * W + x0 + 1) * Ci : nullptr;
      const float w00 = hy * hx * mask, w01 = hy * lx * mask, w10 = ly * hx * mask,
                  w11 = ly * lx * mask;
      if (c00 && c01 && c10 && c11) {
#pragma omp simd
        for (int64_t c = 0; c < Ci; ++c)
          col[c] = w00 * c00[c] + w01 * c01[c] + w10 * c10[c] + w11 * c11[c];
      } else {
        for (int64_t c = 0; c < Ci; ++c) {
          float v = 0.f;
          if (c00) v += w00 * c00[c];
          if (c01) v += w01 * c01[c];
          if (c10) v += w10 * c10[c];
          if (c11) v += w11 * c11[c];
          col[c] = v;
        }
      }
    }
  }
}

}  // namespace biref::cpu::BIREF_ISA

#include "ops/cpu/isa_end.h"

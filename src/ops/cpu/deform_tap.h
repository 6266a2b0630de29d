// One tap of the modulated deformable convolution's bilinear sampling (torchvision's rule, as
// the reference's deform_sample): the corners of the sample point that lie in the image and
// their weights with the modulation applied. Shared by the float32 columns (deform.cpp) and the
// bfloat16 ones (columns_bf16.cpp); scalar and always inlined, so each level compiles its own.
#pragma once
#include <cmath>
#include <cstdint>

#include "core/tensor.h"
#include "ops/cpu/vec_math.h"
#include "ops/layers.h"

namespace biref::cpu {

struct DeformTap {
  const float* corner[4];  // (y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1); null outside
  float weight[4];         // bilinear weight × modulation
  bool all_inside;         // all four corners in the image
};

// The sample at (sy, sx) of image xb [H, W, Ci] with modulation `mask`. False when the point is
// outside (-1, H) × (-1, W): the tap's column is zeros.
[[gnu::always_inline]] inline bool deform_tap(const float* xb, int64_t H, int64_t W, int64_t Ci,
                                              float sy, float sx, float mask, DeformTap& t) {
  if (!(sy > -1.f && sy < float(H) && sx > -1.f && sx < float(W))) return false;
  const int64_t y0 = int64_t(std::floor(sy)), x0 = int64_t(std::floor(sx));
  const float ly = sy - float(y0), lx = sx - float(x0);
  const float hy = 1.f - ly, hx = 1.f - lx;
  const bool top = y0 >= 0, bottom = y0 + 1 < H, left = x0 >= 0, right = x0 + 1 < W;
  t.corner[0] = top && left ? xb + (y0 * W + x0) * Ci : nullptr;
  t.corner[1] = top && right ? xb + (y0 * W + x0 + 1) * Ci : nullptr;
  t.corner[2] = bottom && left ? xb + ((y0 + 1) * W + x0) * Ci : nullptr;
  t.corner[3] = bottom && right ? xb + ((y0 + 1) * W + x0 + 1) * Ci : nullptr;
  t.weight[0] = hy * hx * mask;
  t.weight[1] = hy * lx * mask;
  t.weight[2] = ly * hx * mask;
  t.weight[3] = ly * lx * mask;
  t.all_inside = top && bottom && left && right;
  return true;
}

// f(n, tap) for the k² taps of output position `pos` of the flattened [B·H·W] output of `d` on
// x [B, H, W, Ci], with the offsets and modulator logits `om` [B·H·W, 3k²] (dy, dx per tap,
// then the logits); tap is null where the sample is outside the image.
template <typename F>
[[gnu::always_inline]] inline void for_each_deform_tap(const DeformConv& d, const Tensor& x,
                                                       const Tensor& om, int64_t pos, F&& f) {
  const int64_t H = x.dim(1), W = x.dim(2), Ci = x.dim(3);
  const int k = d.k, kk = k * k;
  const int64_t b = pos / (H * W), p = (pos / W) % H, q = pos % W;
  const float* o = om.data + pos * 3 * kk;
  const float* xb = x.data + b * H * W * Ci;
  for (int n = 0; n < kk; ++n) {
    const float sy = float(p - d.pad + n / k) + o[2 * n];
    const float sx = float(q - d.pad + n % k) + o[2 * n + 1];
    const float mask = 2.f / (1.f + fast_exp(-o[2 * kk + n]));
    DeformTap t;
    f(n, deform_tap(xb, H, W, Ci, sy, sx, mask, t) ? &t : nullptr);
  }
}

}  // namespace biref::cpu

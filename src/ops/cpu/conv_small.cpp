// Convolutions that oneDNN runs slowly, with their weight layouts: a same-size convolution to
// one channel (the output head at full resolution) and the image-side pair in front of it,
// computed in bands of rows.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "ops/cpu/isa_begin.h"
#include "ops/cpu/kernels.h"
#include "ops/cpu/vec_level.h"
#include "ops/cpu/vec_math.h"

namespace biref::cpu::BIREF_ISA {

// conv_pair's first convolution: [out, in, ky, kx] -> [ky, kx, in, out].
std::vector<float> input_conv_weights(const Conv2d& c, const float* cw) {
  std::vector<float> w(size_t(c.out) * c.in * c.k * c.k);
  for (int o = 0; o < c.out; ++o)
    for (int i = 0; i < c.in; ++i)
      for (int t = 0; t < c.k * c.k; ++t)
        w[(size_t(t) * c.in + i) * c.out + o] = cw[(size_t(o) * c.in + i) * c.k * c.k + t];
  return w;
}

// conv_single_output's weights: [in, ky, kx] -> [ky, kx, in].
std::vector<float> single_output_weights(const Conv2d& c, const float* cw) {
  std::vector<float> w(size_t(c.in) * c.k * c.k);
  for (int i = 0; i < c.in; ++i)
    for (int t = 0; t < c.k * c.k; ++t) w[size_t(t) * c.in + i] = cw[size_t(i) * c.k * c.k + t];
  return w;
}

namespace {

// One output row of a same-size k×k convolution to one channel; rows[ky] is input row
// (oy − pad + ky), or null where that row is outside the image (zero padding).
void single_output_row(const Conv2d& c, const float* wt, const float* const* rows, int64_t W,
                       int64_t Ci, float* out) {
  const float bias = c.bias.empty() ? 0.f : c.bias[0];
  for (int64_t ox = 0; ox < W; ++ox) {
    vec acc = {};
    for (int ky = 0; ky < c.k; ++ky) {
      if (!rows[ky]) continue;
      for (int kx = 0; kx < c.k; ++kx) {
        const int64_t ix = ox - c.pad + kx;
        if (ix < 0 || ix >= W) continue;
        const float* xp = rows[ky] + ix * Ci;
        const float* wp = wt + size_t(ky * c.k + kx) * Ci;
        for (int64_t i = 0; i < Ci; i += kLanes) acc += *at(xp + i) * *at(wp + i);
      }
    }
    float v = bias;
    for (int j = 0; j < kLanes; ++j) v += acc[j];
    if (c.act == Act::Relu) v = std::max(v, 0.f);
    if (c.act == Act::Sigmoid) v = 1.f / (1.f + std::exp(-v));
    if (c.act == Act::Gelu) v = 0.5f * v * (1.f + std::erf(v * 0.70710678f));
    out[ox] = v;
  }
}

}  // namespace

// A "same" convolution to one channel (the composed output head at full resolution): one dot
// product of k²·in values per pixel, accumulated in a vector register, one horizontal sum.
void conv_single_output(const Conv2d& c, const float* wt, const Tensor& x, Tensor& y) {
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), Ci = x.dim(3);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < B * H; ++r) {
    const int64_t b = r / H, oy = r % H;
    const float* rows[16];
    for (int ky = 0; ky < c.k; ++ky) {
      const int64_t iy = oy - c.pad + ky;
      rows[ky] = (iy < 0 || iy >= H) ? nullptr : x.data + (b * H + iy) * W * Ci;
    }
    single_output_row(c, wt, rows, W, Ci, y.data + r * W);
  }
}

// b(a(x)) for a same-size convolution `a` from few channels (the image) to a multiple of 16,
// followed by a same-size convolution `b` to one channel: the input branch of the output head
// at full resolution. Computed in bands of rows, so a's 64-channel output (1 GB at 2048²)
// only ever exists a few rows at a time.
void conv_pair(const Conv2d& a, const float* wa, const Conv2d& b, const float* wb, const Tensor& x,
               Tensor& y, Scratch& scratch) {
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), Ci = x.dim(3), Cm = a.out;
  const int pb = b.pad;
  constexpr int64_t kBand = 8;
  const int64_t bands = (H + kBand - 1) / kBand;
  const int threads = omp_get_max_threads();
  scratch.reserve(threads, size_t((kBand + 2 * pb) * W * Cm), 0);
#pragma omp parallel num_threads(threads)
  {
    float* mid = scratch.f[size_t(omp_get_thread_num())].data();  // sized above
#pragma omp for schedule(static)
    for (int64_t job = 0; job < B * bands; ++job) {
      const int64_t bi = job / bands, r0 = (job % bands) * kBand, r1 = std::min(H, r0 + kBand);
      // a's output for rows [r0 − pb, r1 + pb) ∩ [0, H)
      const int64_t m0 = std::max<int64_t>(0, r0 - pb), m1 = std::min(H, r1 + pb);
      for (int64_t my = m0; my < m1; ++my) {
        float* mrow = mid + (my - (r0 - pb)) * W * Cm;
        for (int64_t mx = 0; mx < W; ++mx) {
          float* o = mrow + mx * Cm;
          // 64 output channels at a time in four registers; the taps stream past them
          for (int64_t c0 = 0; c0 < Cm; c0 += 64) {
            constexpr int kMaxV = 64 / kLanes;
            const int nv = int(std::min<int64_t>(64, Cm - c0) / kLanes);
            vec acc[kMaxV];
            for (int j = 0; j < nv; ++j) acc[j] = *at(a.bias.data() + c0 + kLanes * j);
            for (int ky = 0; ky < a.k; ++ky) {
              const int64_t iy = my - a.pad + ky;
              if (iy < 0 || iy >= H) continue;
              for (int kx = 0; kx < a.k; ++kx) {
                const int64_t ix = mx - a.pad + kx;
                if (ix < 0 || ix >= W) continue;
                const float* xp = x.data + ((bi * H + iy) * W + ix) * Ci;
                const float* wp = wa + size_t((ky * a.k + kx) * Ci) * Cm + c0;
                for (int64_t ci = 0; ci < Ci; ++ci) {
                  const float v = xp[ci];
                  const float* wr = wp + ci * Cm;
                  for (int j = 0; j < nv; ++j) acc[j] += v * *at(wr + kLanes * j);
                }
              }
            }
            for (int j = 0; j < nv; ++j) {
              if (a.act == Act::Relu) acc[j] = acc[j] > 0.f ? acc[j] : 0.f;
              *at(o + c0 + kLanes * j) = acc[j];
            }
          }
        }
      }
      for (int64_t oy = r0; oy < r1; ++oy) {
        const float* rows[16];
        for (int ky = 0; ky < b.k; ++ky) {
          const int64_t my = oy - pb + ky;
          rows[ky] = (my < 0 || my >= H) ? nullptr : mid + (my - (r0 - pb)) * W * Cm;
        }
        single_output_row(b, wb, rows, W, Cm, y.data + (bi * H + oy) * W);
      }
    }
  }
}

}  // namespace biref::cpu::BIREF_ISA

#include "ops/cpu/isa_end.h"

// Row-wise and elementwise kernels of the CPU backend: LayerNorm, the bilinear resize, the
// global average pool, the residual sum and the gradient gate.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "ops/cpu/isa_begin.h"
#include "ops/cpu/kernels.h"
#include "ops/cpu/vec_math.h"

namespace biref::cpu::BIREF_ISA {

void layer_norm(const LayerNorm& ln, const float* x, int64_t rows, float* y) {
  const int D = ln.dim;
  const float* w = ln.weight.data();
  const float* b = ln.bias.data();
#pragma omp parallel for schedule(static)
  for (int64_t m = 0; m < rows; ++m) {
    const float* xr = x + m * D;
    float* yr = y + m * D;
    float s = 0.f;
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < D; ++i) s += xr[i];
    const float mean = s / float(D);
    float v = 0.f;
#pragma omp simd reduction(+ : v)
    for (int i = 0; i < D; ++i) v += (xr[i] - mean) * (xr[i] - mean);
    const float inv = 1.f / std::sqrt(v / float(D) + ln.eps);
#pragma omp simd
    for (int i = 0; i < D; ++i) yr[i] = (xr[i] - mean) * inv * w[i] + b[i];
  }
}

void global_avg_pool(const Tensor& x, Tensor& y) {
  const int64_t B = x.dim(0), P = x.dim(1) * x.dim(2), C = x.dim(3);
  for (int64_t b = 0; b < B; ++b) {
    std::vector<double> acc(size_t(C), 0.0);
    for (int64_t p = 0; p < P; ++p) {
      const float* xr = x.data + (b * P + p) * C;
      for (int64_t c = 0; c < C; ++c) acc[c] += xr[c];
    }
    for (int64_t c = 0; c < C; ++c) y.data[b * C + c] = float(acc[c] / double(P));
  }
}

void add(const Tensor& x, Tensor& y) {
  const int64_t n = y.numel();
  float* yd = y.data;
  const float* xd = x.data;
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) yd[i] += xd[i];
}

void mul_gate(const Tensor& g, Tensor& p) {
  const int64_t P = p.numel() / p.dim(3), C = p.dim(3);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < P; ++i) {
    const float gv = g.data[i];
    float* pr = p.data + i * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) pr[c] *= gv;
  }
}

void resize_bilinear_ac(const Tensor& x, Tensor& y) {
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), C = x.dim(3);
  const int64_t Ho = y.dim(1), Wo = y.dim(2);
  const double sy = Ho > 1 ? double(H - 1) / double(Ho - 1) : 0.0;
  const double sx = Wo > 1 ? double(W - 1) / double(Wo - 1) : 0.0;
  // Column taps once per call.
  std::vector<int64_t> x0(Wo), x1(Wo);
  std::vector<float> lx(Wo);
  for (int64_t j = 0; j < Wo; ++j) {
    const double f = double(j) * sx;
    x0[j] = std::min<int64_t>(int64_t(f), W - 1);
    x1[j] = std::min<int64_t>(x0[j] + 1, W - 1);
    lx[j] = float(f - double(x0[j]));
  }
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < B * Ho; ++r) {
    const int64_t b = r / Ho, i = r % Ho;
    const double f = double(i) * sy;
    const int64_t y0 = std::min<int64_t>(int64_t(f), H - 1), y1 = std::min<int64_t>(y0 + 1, H - 1);
    const float ly = float(f - double(y0));
    const float* r0 = x.data + (b * H + y0) * W * C;
    const float* r1 = x.data + (b * H + y1) * W * C;
    for (int64_t j = 0; j < Wo; ++j) {
      const float* a = r0 + x0[j] * C;
      const float* bb = r0 + x1[j] * C;
      const float* c = r1 + x0[j] * C;
      const float* d = r1 + x1[j] * C;
      const float wx = lx[j];
      float* o = y.data + ((b * Ho + i) * Wo + j) * C;
#pragma omp simd
      for (int64_t k = 0; k < C; ++k) {
        const float top = a[k] + (bb[k] - a[k]) * wx;
        const float bot = c[k] + (d[k] - c[k]) * wx;
        o[k] = top + (bot - top) * ly;
      }
    }
  }
}

}  // namespace biref::cpu::BIREF_ISA

#include "ops/cpu/isa_end.h"

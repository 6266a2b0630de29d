// The GEMM columns of Precision::bf16's convolutions, gathered straight into bfloat16 rows for
// gemm_bf16_rows (gemm_bf16.h), AVX512_BF16 only: the im2col columns of a k×k convolution, and
// the deformable convolution's bilinear samples with the modulation applied, computed in float32
// and rounded once as they are stored (half the bytes written, and no conversion pass in the
// GEMM).
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstring>

#include "ops/cpu/deform_tap.h"
#include "ops/cpu/gemm_bf16.h"
#include "ops/cpu/isa_begin.h"

namespace biref::cpu::BIREF_ISA {

namespace {

// (Functions of their own: clang does not give OpenMP's outlined loop bodies the region's
// target, and intrinsics need it.)

// Ci floats at src to bfloat16 at dst.
void to_bf16_run(const float* src, int64_t Ci, uint16_t* dst) {
  int64_t i = 0;
  for (; i + 16 <= Ci; i += 16)
    _mm256_storeu_si256((__m256i*)(dst + i), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(src + i)));
  if (i < Ci) {
    const __mmask16 m = __mmask16((1u << (Ci - i)) - 1u);
    _mm256_mask_storeu_epi16(dst + i, m,
                             (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, src + i)));
  }
}

// One deformable tap's Ci channels: Σ weight·corner over the corners inside the image, in
// float32 in the order deform_sample sums them, rounded to bfloat16; zeros when tp is null.
void deform_tap_bf16(const DeformTap* tp, int64_t Ci, uint16_t* col) {
  if (!tp) {
    std::memset(col, 0, size_t(Ci) * sizeof(uint16_t));
    return;
  }
  const float* c[4];
  __m512 w[4];
  int n = 0;
  for (int j = 0; j < 4; ++j) {
    if (!tp->corner[j]) continue;
    c[n] = tp->corner[j];
    w[n++] = _mm512_set1_ps(tp->weight[j]);
  }
  int64_t i = 0;
  if (n == 4) {
    for (; i + 32 <= Ci; i += 32) {
      __m512 lo = _mm512_mul_ps(w[0], _mm512_loadu_ps(c[0] + i));
      __m512 hi = _mm512_mul_ps(w[0], _mm512_loadu_ps(c[0] + i + 16));
      for (int j = 1; j < 4; ++j) {
        lo = _mm512_fmadd_ps(w[j], _mm512_loadu_ps(c[j] + i), lo);
        hi = _mm512_fmadd_ps(w[j], _mm512_loadu_ps(c[j] + i + 16), hi);
      }
      _mm512_storeu_si512(col + i, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
    }
  }
  for (; i < Ci; i += 16) {
    const int left = int(std::min<int64_t>(16, Ci - i));
    const __mmask16 m = __mmask16((1u << left) - 1u);
    __m512 v = _mm512_mul_ps(w[0], _mm512_maskz_loadu_ps(m, c[0] + i));
    for (int j = 1; j < n; ++j) v = _mm512_fmadd_ps(w[j], _mm512_maskz_loadu_ps(m, c[j] + i), v);
    _mm256_mask_storeu_epi16(col + i, m, (__m256i)_mm512_cvtneps_pbh(v));
  }
}

}  // namespace

void conv_columns_bf16(const Conv2d& c, const Tensor& x, int64_t Ho, int64_t Wo, int64_t p0,
                       int64_t np, int64_t kp, uint16_t* cols) {
  const int64_t H = x.dim(1), W = x.dim(2), Ci = x.dim(3);
  const int k = c.k;
  const int64_t K = int64_t(k) * k * Ci;
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < np; ++t) {
    const int64_t p = p0 + t, b = p / (Ho * Wo), yo = (p / Wo) % Ho, xo = p % Wo;
    uint16_t* col = cols + t * kp;
    for (int ky = 0; ky < k; ++ky) {
      const int64_t yi = yo * c.stride - c.pad + ky;
      for (int kx = 0; kx < k; ++kx, col += Ci) {
        const int64_t xi = xo * c.stride - c.pad + kx;
        if (yi < 0 || yi >= H || xi < 0 || xi >= W)
          std::memset(col, 0, size_t(Ci) * sizeof(uint16_t));
        else
          to_bf16_run(x.data + ((b * H + yi) * W + xi) * Ci, Ci, col);
      }
    }
    if (kp > K) cols[t * kp + K] = 0;
  }
}

void deform_columns_bf16(const DeformConv& d, const Tensor& x, const Tensor& om, int64_t p0,
                         int64_t np, int64_t kp, uint16_t* cols) {
  const int64_t Ci = x.dim(3), K = int64_t(d.k) * d.k * Ci;
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < np; ++t) {
    uint16_t* row = cols + t * kp;
    for_each_deform_tap(d, x, om, p0 + t, [&](int n, const DeformTap* tp) {
      deform_tap_bf16(tp, Ci, row + int64_t(n) * Ci);
    });
    if (kp > K) row[K] = 0;
  }
}

}  // namespace biref::cpu::BIREF_ISA

#include "ops/cpu/isa_end.h"

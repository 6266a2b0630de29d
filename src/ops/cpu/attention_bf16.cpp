// Swin window attention in bfloat16 (Precision::bf16), AVX512_BF16 only: the two products of
// attention.cpp's kernel on vdpbf16ps, with float32 sums. Per (window, head) job:
//   q·scale -> bfloat16 rows (16 pairs of channels each);
//   k -> bfloat16, transposed as pairs: kp[p][m] = channels 2p, 2p+1 of key m;
//   scores [N][NP] = q·kᵀ in 6-row × 64-key register tiles (16 vdpbf16ps steps, not 32 FMAs);
//   scale is already in q; bias, shift mask and softmax in float32 (exactly zero weight for a
//   masked key), e^(s − max) rounded to bfloat16 rows (pairs of keys);
//   v -> pairs of keys: vp[j][d] = (v[2j][d], v[2j+1][d]);
//   out = (P·V) / Σ in 12-row register tiles, stored in float32.
// q, k and v are rounded once each, P once, as the BF16 GEMM rounds its operands.
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "ops/cpu/gemm_bf16.h"
#include "ops/cpu/isa_begin.h"
#include "ops/cpu/kernels.h"

#if !defined(__clang__)
// GCC 12 warns inside its own AVX-512 headers (_mm512_undefined_ps) when these are inlined.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include "ops/cpu/exp16.h"
#include "ops/cpu/vec_level.h"
#include "ops/cpu/window_jobs.h"

namespace biref::cpu::BIREF_ISA {

namespace {

constexpr int kHd = 32;          // channels per head (every Swin v1 model)
constexpr int kPairs = kHd / 2;  // bfloat16 pairs per q or k row: one 16-lane vector
constexpr int kScoreRows = 6, kScoreVecs = 4, kPvRows = 12;
static_assert(kLanes == kPairs);  // one transpose per 16 keys

// 32 floats (a, a + 16) to 32 bfloat16 in order: 16 pairs in one vector.
inline __m512i to_pairs(const float* a, __m512 scale) {
  return (__m512i)_mm512_cvtne2ps_pbh(_mm512_mul_ps(_mm512_loadu_ps(a + 16), scale),
                                      _mm512_mul_ps(_mm512_loadu_ps(a), scale));
}

// s[R][16·C] (row stride lds) = Σ_p qb[r][p] · kp[p][16·C] (kp's rows ldk apart).
template <int R, int C>
inline void score_tile(const uint32_t* qb, const uint32_t* kp, int ldk, float* s, int lds) {
  __m512 acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();
  for (int p = 0; p < kPairs; ++p) {
    __m512bh k[C];
    for (int c = 0; c < C; ++c) k[c] = (__m512bh)_mm512_loadu_si512(kp + size_t(p) * ldk + 16 * c);
    for (int r = 0; r < R; ++r) {
      const __m512bh a = (__m512bh)_mm512_set1_epi32(int(qb[r * kPairs + p]));
      for (int c = 0; c < C; ++c) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], a, k[c]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) _mm512_storeu_ps(s + size_t(r) * lds + 16 * c, acc[r][c]);
}

template <int R>
inline void score_rows(const uint32_t* qb, const uint32_t* kp, int NP, float* s) {
  int m0 = 0;
  for (; m0 + 16 * kScoreVecs <= NP; m0 += 16 * kScoreVecs)
    score_tile<R, kScoreVecs>(qb, kp + m0, NP, s + m0, NP);
  switch ((NP - m0) / 16) {
    case 3:
      score_tile<R, 3>(qb, kp + m0, NP, s + m0, NP);
      break;
    case 2:
      score_tile<R, 2>(qb, kp + m0, NP, s + m0, NP);
      break;
    case 1:
      score_tile<R, 1>(qb, kp + m0, NP, s + m0, NP);
      break;
    default:
      break;
  }
}

template <int R = kScoreRows>
inline void scores(const uint32_t* qb, int rows, const uint32_t* kp, int NP, float* s) {
  if constexpr (R > 0) {
    if (rows == R) return score_rows<R>(qb, kp, NP, s);
    if (rows < R) return scores<R - 1>(qb, rows, kp, NP, s);
  }
}

// out[r][0:32] (row stride ldo) = inv[r] · Σ_j pb[r][j] · vp[j] (pairs of keys j < J; pb's rows
// ldp 32-bit words apart).
template <int R>
inline void pv_tile(const uint32_t* pb, int ldp, int J, const uint32_t* vp, const float* inv,
                    float* out, int64_t ldo) {
  __m512 acc[R][2];
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  for (int j = 0; j < J; ++j) {
    const __m512bh v0 = (__m512bh)_mm512_loadu_si512(vp + size_t(j) * kHd),
                   v1 = (__m512bh)_mm512_loadu_si512(vp + size_t(j) * kHd + 16);
    for (int r = 0; r < R; ++r) {
      const __m512bh a = (__m512bh)_mm512_set1_epi32(int(pb[size_t(r) * ldp + j]));
      acc[r][0] = _mm512_dpbf16_ps(acc[r][0], a, v0);
      acc[r][1] = _mm512_dpbf16_ps(acc[r][1], a, v1);
    }
  }
  for (int r = 0; r < R; ++r) {
    const __m512 f = _mm512_set1_ps(inv[r]);
    _mm512_storeu_ps(out + r * ldo, _mm512_mul_ps(acc[r][0], f));
    _mm512_storeu_ps(out + r * ldo + 16, _mm512_mul_ps(acc[r][1], f));
  }
}

template <int R = kPvRows>
inline void pv(const uint32_t* pb, int ldp, int rows, int J, const uint32_t* vp, const float* inv,
               float* out, int64_t ldo) {
  if constexpr (R > 0) {
    if (rows == R) return pv_tile<R>(pb, ldp, J, vp, inv, out, ldo);
    if (rows < R) return pv<R - 1>(pb, ldp, rows, J, vp, inv, out, ldo);
  }
}

// Sizes of one job's buffers, in 32-bit words.
struct Layout {
  int N, NP, J, ldp;  // tokens; keys rounded up to 16; pairs of keys; P row stride (words)
  explicit Layout(int n) : N(n), NP((n + 15) / 16 * 16), J((n + 1) / 2), ldp((n + 31) / 32 * 16) {}
  size_t qb() const { return size_t(N) * kPairs; }
  size_t kp() const { return size_t(kPairs) * NP; }
  size_t s() const { return size_t(N) * NP; }
  size_t pb() const { return size_t(N) * ldp; }
  size_t vp() const { return size_t(J) * kHd; }
  size_t total() const { return qb() + kp() + s() + pb() + vp() + size_t(N); }
};

// One (window, head): q, k, v rows `ld` floats apart in qkv; bias [N][NP] (-inf past N); label:
// the shift-mask region of each key (null: no mask); out rows `ldo` apart. buf: Layout::total()
// words.
void attend(const float* q, int64_t ld, int C, const Layout& L, float scale, const float* bias,
            const int* label, float* out, int64_t ldo, float* buf) {
  const int N = L.N, NP = L.NP;
  uint32_t* qb = reinterpret_cast<uint32_t*>(buf);
  uint32_t* kp = qb + L.qb();
  float* s = reinterpret_cast<float*>(kp + L.kp());
  uint32_t* pb = reinterpret_cast<uint32_t*>(s + L.s());
  uint32_t* vp = pb + L.pb();
  float* inv = reinterpret_cast<float*>(vp + L.vp());
  const __m512 one = _mm512_set1_ps(1.f), qscale = _mm512_set1_ps(scale);

  for (int n = 0; n < N; ++n) _mm512_storeu_si512(qb + n * kPairs, to_pairs(q + n * ld, qscale));
  const float* k = q + C;
  for (int m0 = 0; m0 < NP; m0 += 16) {
    vec r[kLanes];  // 16 keys' pairs of channels, as 32-bit lanes
    for (int i = 0; i < kLanes; ++i)
      r[i] = m0 + i < N ? vec(to_pairs(k + (m0 + i) * ld, one)) : vec{};
    transpose(r);
    for (int p = 0; p < kPairs; ++p) _mm512_storeu_si512(kp + size_t(p) * NP + m0, __m512i(r[p]));
  }
  const float* v = q + 2 * C;
  const __m512i interleave =
      _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6,
                       21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  for (int j = 0; j < L.J; ++j) {
    const float* a = v + 2 * j * ld;
    const bool second = 2 * j + 1 < N;  // the last pair of an odd N pairs its key with zeros
    for (int h = 0; h < kHd; h += 16) {
      const __m512 lo = _mm512_loadu_ps(a + h),
                   hi = second ? _mm512_loadu_ps(a + ld + h) : _mm512_setzero_ps();
      _mm512_storeu_si512(
          vp + size_t(j) * kHd + h,
          _mm512_permutexvar_epi16(interleave, (__m512i)_mm512_cvtne2ps_pbh(hi, lo)));
    }
  }

  for (int n0 = 0; n0 < N; n0 += kScoreRows)
    scores(qb + n0 * kPairs, std::min(kScoreRows, N - n0), kp, NP, s + size_t(n0) * NP);

  // bias and mask, then the row maxima (inv[n] holds the max until the second pass)
  const __m512 ninf = _mm512_set1_ps(-INFINITY);
  for (int n = 0; n < N; ++n) {
    float* sr = s + size_t(n) * NP;
    const float* br = bias + size_t(n) * NP;
    __m512 mx = ninf;
    for (int m = 0; m < NP; m += 16) {
      __m512 x = _mm512_add_ps(_mm512_loadu_ps(sr + m), _mm512_loadu_ps(br + m));
      if (label) {
        const __mmask16 other =
            _mm512_cmpneq_epi32_mask(_mm512_loadu_si512(label + m), _mm512_set1_epi32(label[n]));
        x = _mm512_mask_blend_ps(other, x, ninf);
      }
      _mm512_storeu_ps(sr + m, x);
      mx = _mm512_max_ps(mx, x);
    }
    inv[n] = _mm512_reduce_max_ps(mx);
  }
  // e^(s − max) (exactly 0 for -inf) rounded to bfloat16 pairs of keys; 1/Σ of the rounded
  // values, so that the weights P·V applies sum to one
  for (int n = 0; n < N; ++n) {
    float* sr = s + size_t(n) * NP;
    uint32_t* pr = pb + size_t(n) * L.ldp;
    const __m512 top = _mm512_set1_ps(inv[n]);
    __m512 sum = _mm512_setzero_ps();
    for (int m = 0; m < NP; m += 32) {
      __m512 e[2];
      for (int i = 0; i < 2; ++i) {
        if (m + 16 * i >= NP) {
          e[i] = _mm512_setzero_ps();
          continue;
        }
        const __m512 x = _mm512_loadu_ps(sr + m + 16 * i);
        e[i] = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, ninf, _CMP_NEQ_UQ),
                                   exp16(_mm512_sub_ps(x, top)));
      }
      const __m512i b = (__m512i)_mm512_cvtne2ps_pbh(e[1], e[0]);
      _mm512_storeu_si512(pr + m / 2, b);
      // the rounded values back to float32: bfloat16 is the top half of a float
      sum = _mm512_add_ps(sum, _mm512_castsi512_ps(_mm512_slli_epi32(b, 16)));
      sum = _mm512_add_ps(
          sum, _mm512_castsi512_ps(_mm512_and_si512(b, _mm512_set1_epi32(int32_t(0xffff0000u)))));
    }
    inv[n] = 1.f / _mm512_reduce_add_ps(sum);
  }

  for (int n0 = 0; n0 < N; n0 += kPvRows)
    pv(pb + size_t(n0) * L.ldp, L.ldp, std::min(kPvRows, N - n0), L.J, vp, inv + n0, out + n0 * ldo,
       ldo);
}

}  // namespace

bool window_attention_bf16(const float* qkv, int64_t batch, const WindowGeometry& g, int heads,
                           int hd, const float* rel_bias, float* out, Scratch& scratch) {
  if (hd != kHd) return false;
  const int N = g.tokens(), C = heads * kHd;
  const Layout L(N);
  const int64_t ld = 3 * int64_t(C);
  const float scale = 1.f / std::sqrt(float(kHd));
  const int threads = omp_get_max_threads();
  scratch.reserve(threads, L.total(), size_t(L.NP));
  const float* bias = padded_bias(rel_bias, heads, N, L.NP, scratch);
  for_each_window_head(
      qkv, batch, g, heads, kHd, L.NP, bias, out, scratch, threads,
      [=, &L](const float* q, const float* bias_h, const int* label, float* o, float* buf) {
        attend(q, ld, C, L, scale, bias_h, label, o, C, buf);
      });
  return true;
}

}  // namespace biref::cpu::BIREF_ISA

#include "ops/cpu/isa_end.h"

// The BF16 GEMM (gemm_bf16.h), AVX512_BF16 only.
//
// Register tile: MR ≤ 6 rows × one panel (NV ≤ 4 vectors of 16 columns), 24 float32
// accumulators. Per k pair: NV loads of the panel, MR broadcasts of x's bf16 pair, MR·NV
// vdpbf16ps. The whole k range is summed in registers (a panel of 64 columns is 128·k bytes,
// in L2 for every k of these models), so the epilogue writes each output once.
// Work: blocks of kRowBlock rows (x converted to bf16 once per block) × groups of panels, spread
// over the OpenMP threads.
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "ops/cpu/gemm_bf16.h"
#include "ops/cpu/isa_begin.h"

#if !defined(__clang__)
// GCC 12 warns inside its own AVX-512 headers (_mm512_undefined_ps) when these are inlined.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include "ops/cpu/vec_math.h"

namespace biref::cpu::BIREF_ISA {

namespace {

constexpr int kPanel = 64;         // columns per panel (4 vectors)
constexpr int64_t kRowBlock = 48;  // rows per block: 8 tiles of 6

// e^x as fast_exp (vec_math.h) on 16 lanes: Cody-Waite reduction, the same degree-6
// polynomial, 2^n by vscalefps.
inline __m512 exp16(__m512 x) {
  x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.f)), _mm512_set1_ps(-87.f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.f)));
  return _mm512_scalef_ps(p, n);
}

// gelu_erf on 16 lanes; 1/(1 + p·|z|) by vrcp14ps and one Newton step (relative error ~1e-8).
inline __m512 gelu16(__m512 x) {
  const __m512 one = _mm512_set1_ps(1.f);
  const __m512 z = _mm512_mul_ps(x, _mm512_set1_ps(0.70710678118654752f));
  const __m512 az = _mm512_abs_ps(z);
  const __m512 d = _mm512_fmadd_ps(_mm512_set1_ps(0.3275911f), az, one);
  __m512 t = _mm512_rcp14_ps(d);
  t = _mm512_mul_ps(t, _mm512_fnmadd_ps(d, t, _mm512_set1_ps(2.f)));
  __m512 poly = _mm512_set1_ps(1.061405429f);
  poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(-1.453152027f));
  poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(1.421413741f));
  poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(-0.284496736f));
  poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(0.254829592f));
  poly = _mm512_mul_ps(poly, t);
  const __m512 e =
      _mm512_fnmadd_ps(poly, exp16(_mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), az), az)), one);
  // erf(z) = sign(z)·e
  const __m512 erf = _mm512_castsi512_ps(_mm512_or_si512(
      _mm512_castps_si512(e),
      _mm512_and_si512(_mm512_castps_si512(z), _mm512_set1_epi32(int32_t(0x80000000u)))));
  return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), x), _mm512_add_ps(one, erf));
}

inline __m512 activate(__m512 v, Act act) {
  switch (act) {
    case Act::None:
      return v;
    case Act::Relu:
      return _mm512_max_ps(v, _mm512_setzero_ps());
    case Act::Gelu:
      return gelu16(v);
    case Act::Sigmoid:
      return _mm512_div_ps(
          _mm512_set1_ps(1.f),
          _mm512_add_ps(_mm512_set1_ps(1.f), exp16(_mm512_sub_ps(_mm512_setzero_ps(), v))));
  }
  return v;
}

// x rows [m0, m0 + mr) to bf16 rows of kp (zero padded).
void convert_rows(const float* x, int64_t ldx, int64_t mr, int64_t k, int64_t kp, uint16_t* a) {
  for (int64_t r = 0; r < mr; ++r) {
    const float* xr = x + r * ldx;
    uint16_t* ar = a + r * kp;
    int64_t i = 0;
    for (; i + 32 <= k; i += 32) {
      const __m512 lo = _mm512_loadu_ps(xr + i), hi = _mm512_loadu_ps(xr + i + 16);
      _mm512_storeu_si512(ar + i, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
    }
    for (; i < k; i += 16) {
      const int n = int(std::min<int64_t>(16, k - i));
      const __mmask16 m = __mmask16((1u << n) - 1u);
      const __m256bh h = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, xr + i));
      _mm256_mask_storeu_epi16(ar + i, m, (__m256i)h);
    }
    if (kp > k) ar[k] = 0;
  }
}

// acc[r][v] = Σ over k pairs of a[r] · panel, then the epilogue into y.
template <int MR, int NV>
void tile(const uint16_t* a, int64_t kp, const uint16_t* panel, int64_t n0, int64_t n,
          const float* bias, float* y, int64_t ldy, Act act, bool accumulate) {
  __m512 acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  const int64_t pairs = kp / 2;
  for (int64_t i = 0; i < pairs; ++i) {
    const uint16_t* b = panel + i * (NV * 32);
    __m512bh bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = (__m512bh)_mm512_loadu_si512(b + v * 32);
    for (int r = 0; r < MR; ++r) {
      int32_t pair;
      std::memcpy(&pair, a + r * kp + 2 * i, sizeof(pair));
      const __m512bh av = (__m512bh)_mm512_set1_epi32(pair);
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], av, bv[v]);
    }
  }
  // Epilogue in float32, in registers: bias, activation, residual sum; columns past n are not
  // written (masked).
  __mmask16 mask[NV];
  __m512 bv[NV];
  for (int v = 0; v < NV; ++v) {
    const int64_t left = n - n0 - 16 * v;
    mask[v] = left >= 16  ? __mmask16(0xffff)
              : left <= 0 ? __mmask16(0)
                          : __mmask16((1u << left) - 1u);
    bv[v] = bias ? _mm512_maskz_loadu_ps(mask[v], bias + n0 + 16 * v) : _mm512_setzero_ps();
  }
  for (int r = 0; r < MR; ++r) {
    float* yr = y + r * ldy + n0;
    for (int v = 0; v < NV; ++v) {
      __m512 t = activate(_mm512_add_ps(acc[r][v], bv[v]), act);
      if (accumulate) t = _mm512_add_ps(t, _mm512_maskz_loadu_ps(mask[v], yr + 16 * v));
      _mm512_mask_storeu_ps(yr + 16 * v, mask[v], t);
    }
  }
}

template <int NV>
void tile_rows(int64_t mr, const uint16_t* a, int64_t kp, const uint16_t* panel, int64_t n0,
               int64_t n, const float* bias, float* y, int64_t ldy, Act act, bool accumulate) {
  switch (mr) {
    case 6:
      return tile<6, NV>(a, kp, panel, n0, n, bias, y, ldy, act, accumulate);
    case 5:
      return tile<5, NV>(a, kp, panel, n0, n, bias, y, ldy, act, accumulate);
    case 4:
      return tile<4, NV>(a, kp, panel, n0, n, bias, y, ldy, act, accumulate);
    case 3:
      return tile<3, NV>(a, kp, panel, n0, n, bias, y, ldy, act, accumulate);
    case 2:
      return tile<2, NV>(a, kp, panel, n0, n, bias, y, ldy, act, accumulate);
    default:
      return tile<1, NV>(a, kp, panel, n0, n, bias, y, ldy, act, accumulate);
  }
}

}  // namespace

PackedBf16 pack_bf16(const float* w, int64_t n, int64_t k, const std::vector<float>& bias) {
  PackedBf16 p;
  p.n = n;
  p.k = k;
  p.kp = (k + 1) / 2 * 2;
  const int64_t n16 = (n + 15) / 16 * 16;
  p.w.assign(size_t(n16 * p.kp), 0);
  p.bias = bias;
#pragma omp parallel for schedule(dynamic)
  for (int64_t n0 = 0; n0 < n16; n0 += kPanel) {
    const int64_t wp = std::min<int64_t>(kPanel, n16 - n0);
    uint16_t* panel = p.w.data() + n0 * p.kp;
    const int64_t cols = std::min<int64_t>(wp, n - n0);
    // written in order (one k pair of the panel after the other), read from `cols` rows at once
    for (int64_t i = 0; i < k; i += 2) {
      uint16_t* out = panel + (i / 2) * wp * 2;
      for (int64_t c = 0; c < cols; ++c) {
        const float* wr = w + (n0 + c) * k + i;
        out[2 * c] = to_bf16(wr[0]);
        out[2 * c + 1] = i + 1 < k ? to_bf16(wr[1]) : 0;
      }
    }
  }
  return p;
}

namespace {

// The driver: `rows_at(m0, mc, buffer)` gives the bf16 rows [m0, m0 + mc) (kp apart), either
// converted into `buffer` or already there.
template <typename RowsAt>
void run_gemm(const PackedBf16& w, int64_t rows, float* y, int64_t ldy, Act act, bool accumulate,
              Bf16Scratch& scratch, bool needs_buffer, RowsAt rows_at) {
  if (rows <= 0) return;
  const int64_t kp = w.kp, n16 = (w.n + 15) / 16 * 16;
  const int64_t panels = (n16 + kPanel - 1) / kPanel;
  const int64_t blocks = (rows + kRowBlock - 1) / kRowBlock;
  const int threads = omp_get_max_threads();
  // Few row blocks (a small input): split the panels too, so every thread has work.
  const int64_t groups = std::min<int64_t>(panels, std::max<int64_t>(1, (4 * threads) / blocks));
  const int64_t per_group = (panels + groups - 1) / groups;
  const size_t per_thread = needs_buffer ? size_t(kRowBlock * kp) : 0;
  if (scratch.a.size() < per_thread * size_t(threads))
    scratch.a.resize(per_thread * size_t(threads));
  const float* bias = w.bias.empty() ? nullptr : w.bias.data();
#pragma omp parallel for schedule(static)
  for (int64_t task = 0; task < blocks * groups; ++task) {
    const int64_t blk = task / groups, grp = task % groups;
    const int64_t m0 = blk * kRowBlock, mc = std::min(kRowBlock, rows - m0);
    const uint16_t* a =
        rows_at(m0, mc, scratch.a.data() + per_thread * size_t(omp_get_thread_num()));
    const int64_t p_end = std::min(panels, (grp + 1) * per_group);
    for (int64_t pnl = grp * per_group; pnl < p_end; ++pnl) {
      const int64_t n0 = pnl * kPanel;
      const int nv = int(std::min<int64_t>(kPanel, n16 - n0) / 16);
      const uint16_t* panel = w.w.data() + n0 * kp;
      for (int64_t r = 0; r < mc; r += 6) {
        const int64_t mr = std::min<int64_t>(6, mc - r);
        const uint16_t* ar = a + r * kp;
        float* yr = y + (m0 + r) * ldy;
        switch (nv) {
          case 4:
            tile_rows<4>(mr, ar, kp, panel, n0, w.n, bias, yr, ldy, act, accumulate);
            break;
          case 3:
            tile_rows<3>(mr, ar, kp, panel, n0, w.n, bias, yr, ldy, act, accumulate);
            break;
          case 2:
            tile_rows<2>(mr, ar, kp, panel, n0, w.n, bias, yr, ldy, act, accumulate);
            break;
          default:
            tile_rows<1>(mr, ar, kp, panel, n0, w.n, bias, yr, ldy, act, accumulate);
            break;
        }
      }
    }
  }
}

}  // namespace

void gemm_bf16(const PackedBf16& w, const float* x, int64_t rows, int64_t ldx, float* y,
               int64_t ldy, Act act, bool accumulate, Bf16Scratch& scratch) {
  run_gemm(w, rows, y, ldy, act, accumulate, scratch, true,
           [&](int64_t m0, int64_t mc, uint16_t* buf) -> const uint16_t* {
             convert_rows(x + m0 * ldx, ldx, mc, w.k, w.kp, buf);
             return buf;
           });
}

void gemm_bf16_rows(const PackedBf16& w, const uint16_t* a, int64_t rows, float* y, int64_t ldy,
                    Act act, bool accumulate, Bf16Scratch& scratch) {
  run_gemm(w, rows, y, ldy, act, accumulate, scratch, false,
           [&](int64_t m0, int64_t, uint16_t*) { return a + m0 * w.kp; });
}

}  // namespace biref::cpu::BIREF_ISA

#include "ops/cpu/isa_end.h"

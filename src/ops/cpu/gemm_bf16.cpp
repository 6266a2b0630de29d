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
#include "ops/cpu/vec_math.h"

namespace biref::cpu::BIREF_ISA {

namespace {

constexpr int kPanel = 64;         // columns per panel (4 vectors)
constexpr int64_t kRowBlock = 48;  // rows per block: 8 tiles of 6

// 0.5·x·(1 + erf(x/√2)); erf by Abramowitz & Stegun 7.1.26 (|error| ≤ 1.5e-7).
inline float gelu_erf(float x) {
  const float z = x * 0.70710678118654752f;
  const float az = std::fabs(z);
  const float t = 1.f / (1.f + 0.3275911f * az);
  const float poly =
      t * (0.254829592f +
           t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
  const float e = 1.f - poly * fast_exp(-az * az);
  return 0.5f * x * (1.f + (z < 0 ? -e : e));
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
  // Epilogue in float32: bias, activation, residual sum; columns past n are not written.
  alignas(64) float row[NV * 16];
  const int cols = int(std::min<int64_t>(NV * 16, n - n0));
  for (int r = 0; r < MR; ++r) {
    for (int v = 0; v < NV; ++v) _mm512_store_ps(row + v * 16, acc[r][v]);
    float* yr = y + r * ldy + n0;
    const float* br = bias ? bias + n0 : nullptr;
    switch (act) {
      case Act::None:
#pragma omp simd
        for (int c = 0; c < cols; ++c) row[c] += br ? br[c] : 0.f;
        break;
      case Act::Relu:
#pragma omp simd
        for (int c = 0; c < cols; ++c) row[c] = std::max(row[c] + (br ? br[c] : 0.f), 0.f);
        break;
      case Act::Gelu:
#pragma omp simd
        for (int c = 0; c < cols; ++c) row[c] = gelu_erf(row[c] + (br ? br[c] : 0.f));
        break;
      case Act::Sigmoid:
#pragma omp simd
        for (int c = 0; c < cols; ++c)
          row[c] = 1.f / (1.f + fast_exp(-(row[c] + (br ? br[c] : 0.f))));
        break;
    }
    if (accumulate) {
#pragma omp simd
      for (int c = 0; c < cols; ++c) yr[c] += row[c];
    } else {
      std::memcpy(yr, row, size_t(cols) * sizeof(float));
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
  for (int64_t n0 = 0; n0 < n16; n0 += kPanel) {
    const int64_t wp = std::min<int64_t>(kPanel, n16 - n0);
    uint16_t* panel = p.w.data() + n0 * p.kp;
    for (int64_t c = 0; c < wp && n0 + c < n; ++c) {
      const float* wr = w + (n0 + c) * k;
      for (int64_t i = 0; i < k; ++i) panel[((i / 2) * wp + c) * 2 + (i & 1)] = to_bf16(wr[i]);
    }
  }
  return p;
}

void gemm_bf16(const PackedBf16& w, const float* x, int64_t rows, int64_t ldx, float* y,
               int64_t ldy, Act act, bool accumulate, Bf16Scratch& scratch) {
  if (rows <= 0) return;
  const int64_t kp = w.kp, n16 = (w.n + 15) / 16 * 16;
  const int64_t panels = (n16 + kPanel - 1) / kPanel;
  const int64_t blocks = (rows + kRowBlock - 1) / kRowBlock;
  const int threads = omp_get_max_threads();
  // Few row blocks (a small input): split the panels too, so every thread has work.
  const int64_t groups = std::min<int64_t>(panels, std::max<int64_t>(1, (4 * threads) / blocks));
  const int64_t per_group = (panels + groups - 1) / groups;
  const size_t per_thread = size_t(kRowBlock * kp);
  if (scratch.a.size() < per_thread * size_t(threads))
    scratch.a.resize(per_thread * size_t(threads));
  const float* bias = w.bias.empty() ? nullptr : w.bias.data();
#pragma omp parallel for schedule(static)
  for (int64_t task = 0; task < blocks * groups; ++task) {
    const int64_t blk = task / groups, grp = task % groups;
    const int64_t m0 = blk * kRowBlock, mc = std::min(kRowBlock, rows - m0);
    uint16_t* a = scratch.a.data() + per_thread * size_t(omp_get_thread_num());
    convert_rows(x + m0 * ldx, ldx, mc, w.k, kp, a);
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

}  // namespace biref::cpu::BIREF_ISA

#include "ops/cpu/isa_end.h"

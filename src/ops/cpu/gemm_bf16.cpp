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
#include "ops/cpu/exp16.h"
#include "ops/cpu/vec_math.h"

namespace biref::cpu::BIREF_ISA {

namespace {

constexpr int kPanel = 64;         // columns per panel (4 vectors)
constexpr int64_t kRowBlock = 48;  // rows per block: 8 tiles of 6

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

// Where a register tile's rows of x (A, in bfloat16) are. Row r starts at rows[r]; its k pairs
// run over `taps` segments of `pairs` pairs, segment t starting tap_off[t] elements past the
// row's start: one segment of kp/2 pairs for a plain GEMM, the k² taps of in/2 pairs each for a
// convolution read in place from its zero-padded input (implicit GEMM). The panel's k order is
// the same: segment after segment.
struct ATile {
  const uint16_t* rows[6];
  const int64_t* tap_off;
  int taps;
  int64_t pairs;
};

// acc[r][v] = Σ over k pairs of a's row r · panel, then the epilogue into y.
// yb non-null: the results (bias and activation applied) are written to yb in bfloat16 instead,
// row stride ldy, for another GEMM to read as its x.
template <int MR, int NV>
void tile(const ATile& a, const uint16_t* panel, int64_t n0, int64_t n, const float* bias,
          float* y, uint16_t* yb, int64_t ldy, Act act, bool accumulate) {
  __m512 acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  const uint16_t* b = panel;
  for (int t = 0; t < a.taps; ++t) {
    const uint16_t* rp[MR];
    for (int r = 0; r < MR; ++r) rp[r] = a.rows[r] + a.tap_off[t];
    for (int64_t i = 0; i < a.pairs; ++i, b += NV * 32) {
      __m512bh bv[NV];
      for (int v = 0; v < NV; ++v) bv[v] = (__m512bh)_mm512_loadu_si512(b + v * 32);
      for (int r = 0; r < MR; ++r) {
        int32_t pair;
        std::memcpy(&pair, rp[r] + 2 * i, sizeof(pair));
        const __m512bh av = (__m512bh)_mm512_set1_epi32(pair);
        for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], av, bv[v]);
      }
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
  if (yb) {
    for (int r = 0; r < MR; ++r)
      for (int v = 0; v < NV; ++v)
        _mm256_mask_storeu_epi16(
            yb + r * ldy + n0 + 16 * v, mask[v],
            (__m256i)_mm512_cvtneps_pbh(activate(_mm512_add_ps(acc[r][v], bv[v]), act)));
    return;
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
void tile_rows(int64_t mr, const ATile& a, const uint16_t* panel, int64_t n0, int64_t n,
               const float* bias, float* y, uint16_t* yb, int64_t ldy, Act act,
               bool accumulate) {
  switch (mr) {
    case 6:
      return tile<6, NV>(a, panel, n0, n, bias, y, yb, ldy, act, accumulate);
    case 5:
      return tile<5, NV>(a, panel, n0, n, bias, y, yb, ldy, act, accumulate);
    case 4:
      return tile<4, NV>(a, panel, n0, n, bias, y, yb, ldy, act, accumulate);
    case 3:
      return tile<3, NV>(a, panel, n0, n, bias, y, yb, ldy, act, accumulate);
    case 2:
      return tile<2, NV>(a, panel, n0, n, bias, y, yb, ldy, act, accumulate);
    default:
      return tile<1, NV>(a, panel, n0, n, bias, y, yb, ldy, act, accumulate);
  }
}

// Rows [0, mc) of a block, A given per tile by block.tile(), times panels [p0, p1) of w into y
// (float32) or yb (bfloat16), rows ldy apart, both starting at the block's first row.
template <typename Block>
void block_panels(const PackedBf16& w, const Block& block, int64_t mc, int64_t p0, int64_t p1,
                  float* y, uint16_t* yb, int64_t ldy, Act act, bool accumulate) {
  const int64_t n16 = (w.n + 15) / 16 * 16;
  const float* bias = w.bias.empty() ? nullptr : w.bias.data();
  for (int64_t pnl = p0; pnl < p1; ++pnl) {
    const int64_t n0 = pnl * kPanel;
    const int nv = int(std::min<int64_t>(kPanel, n16 - n0) / 16);
    const uint16_t* panel = w.w.data() + n0 * w.kp;
    for (int64_t r = 0; r < mc; r += 6) {
      const int64_t mr = std::min<int64_t>(6, mc - r);
      ATile a;
      block.tile(r, mr, a);
      float* yr = y ? y + r * ldy : nullptr;
      uint16_t* ybr = yb ? yb + r * ldy : nullptr;
      switch (nv) {
        case 4:
          tile_rows<4>(mr, a, panel, n0, w.n, bias, yr, ybr, ldy, act, accumulate);
          break;
        case 3:
          tile_rows<3>(mr, a, panel, n0, w.n, bias, yr, ybr, ldy, act, accumulate);
          break;
        case 2:
          tile_rows<2>(mr, a, panel, n0, w.n, bias, yr, ybr, ldy, act, accumulate);
          break;
        default:
          tile_rows<1>(mr, a, panel, n0, w.n, bias, yr, ybr, ldy, act, accumulate);
          break;
      }
    }
  }
}

int64_t panels_of(const PackedBf16& w) {
  return ((w.n + 15) / 16 * 16 + kPanel - 1) / kPanel;
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

// The driver. `source(m0, mc, buffer)` gives the block of rows [m0, m0 + mc) of x in bfloat16
// (converted into `buffer` when needs_buffer, or read in place): an object whose
// tile(r, mr, a) points a's rows at the block's rows r .. r + mr. The results go to y, or in
// bfloat16 to yb when that is not null.
template <typename Source>
void run_gemm(const PackedBf16& w, int64_t rows, float* y, uint16_t* yb, int64_t ldy, Act act,
              bool accumulate, Bf16Scratch& scratch, bool needs_buffer, Source source) {
  if (rows <= 0) return;
  const int64_t panels = panels_of(w);
  const int64_t blocks = (rows + kRowBlock - 1) / kRowBlock;
  const int threads = omp_get_max_threads();
  // Few row blocks (a small input): split the panels too, so every thread has work.
  const int64_t groups = std::min<int64_t>(panels, std::max<int64_t>(1, (4 * threads) / blocks));
  const int64_t per_group = (panels + groups - 1) / groups;
  const size_t per_thread = needs_buffer ? size_t(kRowBlock * w.kp) : 0;
  if (scratch.a.size() < per_thread * size_t(threads))
    scratch.a.resize(per_thread * size_t(threads));
#pragma omp parallel for schedule(static)
  for (int64_t task = 0; task < blocks * groups; ++task) {
    const int64_t blk = task / groups, grp = task % groups;
    const int64_t m0 = blk * kRowBlock, mc = std::min(kRowBlock, rows - m0);
    const auto block =
        source(m0, mc, scratch.a.data() + per_thread * size_t(omp_get_thread_num()));
    block_panels(w, block, mc, grp * per_group, std::min(panels, (grp + 1) * per_group),
                 y ? y + m0 * ldy : nullptr, yb ? yb + m0 * ldy : nullptr, ldy, act, accumulate);
  }
}

// Rows of kp bfloat16 one after the other: one segment per row.
struct DenseBlock {
  const uint16_t* a;
  int64_t kp;
  void tile(int64_t r, int64_t mr, ATile& t) const {
    static constexpr int64_t kNoOffset[1] = {0};
    for (int64_t j = 0; j < mr; ++j) t.rows[j] = a + (r + j) * kp;
    t.tap_off = kNoOffset;
    t.taps = 1;
    t.pairs = kp / 2;
  }
};

}  // namespace

void gemm_bf16(const PackedBf16& w, const float* x, int64_t rows, int64_t ldx, float* y,
               int64_t ldy, Act act, bool accumulate, Bf16Scratch& scratch) {
  run_gemm(w, rows, y, nullptr, ldy, act, accumulate, scratch, true,
           [&](int64_t m0, int64_t mc, uint16_t* buf) {
             convert_rows(x + m0 * ldx, ldx, mc, w.k, w.kp, buf);
             return DenseBlock{buf, w.kp};
           });
}

void gemm_bf16_rows(const PackedBf16& w, const uint16_t* a, int64_t rows, float* y, int64_t ldy,
                    Act act, bool accumulate, Bf16Scratch& scratch) {
  run_gemm(w, rows, y, nullptr, ldy, act, accumulate, scratch, false,
           [&](int64_t m0, int64_t, uint16_t*) { return DenseBlock{a + m0 * w.kp, w.kp}; });
}

void gemm_bf16_rows_to_bf16(const PackedBf16& w, const uint16_t* a, int64_t rows, uint16_t* yb,
                            int64_t ldy, Act act, Bf16Scratch& scratch) {
  run_gemm(w, rows, nullptr, yb, ldy, act, false, scratch, false,
           [&](int64_t m0, int64_t, uint16_t*) { return DenseBlock{a + m0 * w.kp, w.kp}; });
}

void to_bf16_rows(const float* x, int64_t ldx, int64_t rows, int64_t n, uint16_t* y,
                  int64_t ldy) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) convert_rows(x + r * ldx, ldx, 1, n, n, y + r * ldy);
}

void mlp_bf16(const PackedBf16& fc1, const PackedBf16& fc2, const float* h, int64_t rows,
              float* x, Bf16Scratch& scratch) {
  if (rows <= 0) return;
  const int64_t C = fc1.k, hidden = fc2.kp;
  const int threads = omp_get_max_threads();
  const size_t per_thread = size_t(kRowBlock * (fc1.kp + hidden));
  if (scratch.a.size() < per_thread * size_t(threads))
    scratch.a.resize(per_thread * size_t(threads));
  const int64_t blocks = (rows + kRowBlock - 1) / kRowBlock;
#pragma omp parallel for schedule(static)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t m0 = blk * kRowBlock, mc = std::min(kRowBlock, rows - m0);
    uint16_t* a = scratch.a.data() + per_thread * size_t(omp_get_thread_num());
    uint16_t* hid = a + kRowBlock * fc1.kp;
    convert_rows(h + m0 * C, C, mc, C, fc1.kp, a);
    // GELU(fc1) in bfloat16 (the values fc2 would round its x to), its padding column zero
    block_panels(fc1, DenseBlock{a, fc1.kp}, mc, 0, panels_of(fc1), nullptr, hid, hidden,
                 Act::Gelu, false);
    if (hidden > fc1.n)
      for (int64_t r = 0; r < mc; ++r) hid[r * hidden + fc1.n] = 0;
    block_panels(fc2, DenseBlock{hid, hidden}, mc, 0, panels_of(fc2), x + m0 * fc2.n, nullptr,
                 fc2.n, Act::None, true);
  }
}

namespace {

// Output positions of a band of image rows, read in place from the band's zero-padded bfloat16
// copy: position m (output row m / W, column m % W) starts at band + (m / W · Wp + m % W) · in,
// tap (ky, kx) tap_off = (ky · Wp + kx) · in further.
struct BandBlock {
  const uint16_t* band;
  int64_t m0, W, Wp, in;
  const int64_t* tap_off;
  int taps;
  void tile(int64_t r, int64_t mr, ATile& t) const {
    for (int64_t j = 0; j < mr; ++j) {
      const int64_t m = m0 + r + j;
      t.rows[j] = band + (m / W * Wp + m % W) * in;
    }
    t.tap_off = tap_off;
    t.taps = taps;
    t.pairs = in / 2;
  }
};

// Padded band rows [0, rows) (image rows y0 − pad + i) of image b into `band`, bfloat16, zero
// outside the image. (A function of its own: clang does not give OpenMP's outlined loop bodies
// the region's target.)
void pad_row_bf16(const Tensor& x, int64_t b, int64_t iy, int64_t pad, int64_t Wp, uint16_t* row) {
  const int64_t H = x.dim(1), W = x.dim(2), Ci = x.dim(3);
  if (iy < 0 || iy >= H) {
    std::memset(row, 0, size_t(Wp * Ci) * sizeof(uint16_t));
    return;
  }
  std::memset(row, 0, size_t(pad * Ci) * sizeof(uint16_t));
  convert_rows(x.data + (b * H + iy) * W * Ci, 0, 1, W * Ci, W * Ci, row + pad * Ci);
  std::memset(row + (pad + W) * Ci, 0, size_t(pad * Ci) * sizeof(uint16_t));
}

}  // namespace

void conv_bf16(const PackedBf16& w, const Conv2d& c, const Tensor& x, Tensor& y,
               Bf16Scratch& scratch) {
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), Ci = x.dim(3), pad = c.pad;
  const int64_t Wp = W + 2 * pad;
  const int taps = c.k * c.k;
  int64_t tap_off[15 * 15];  // is_same_size: k ≤ 15
  for (int t = 0; t < taps; ++t) tap_off[t] = (t / c.k * Wp + t % c.k) * Ci;
  // bands of about 4096 positions: the padded copy stays a few MB (in L2 for a narrow input)
  const int64_t band_rows = std::clamp<int64_t>(4096 / W, 1, H);
  const size_t band_elems = size_t((band_rows + 2 * pad) * Wp * Ci);
  if (scratch.band.size() < band_elems) scratch.band.resize(band_elems);
  uint16_t* band = scratch.band.data();
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t y0 = 0; y0 < H; y0 += band_rows) {
      const int64_t rows = std::min(band_rows, H - y0), padded = rows + 2 * pad;
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < padded; ++i)
        pad_row_bf16(x, b, y0 - pad + i, pad, Wp, band + i * Wp * Ci);
      run_gemm(w, rows * W, y.data + (b * H + y0) * W * c.out, nullptr, c.out, c.act, false,
               scratch, false,
               [&](int64_t m0, int64_t, uint16_t*) {
                 return BandBlock{band, m0, W, Wp, Ci, tap_off, taps};
               });
    }
  }
}

}  // namespace biref::cpu::BIREF_ISA

#include "ops/cpu/isa_end.h"

// The BF16 GEMM of the CPU backend's --precision bf16 (gemm_bf16.cpp): y (+)= act(x · Wᵀ + b)
// with W packed to bfloat16 once at load, x converted to bfloat16 per block of rows as it is
// packed, products summed in float32 by AVX512_BF16's vdpbf16ps (two multiply-adds per lane and
// instruction: twice an FP32 FMA's). Bias, activation and the residual sum in float32.
#pragma once
#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "ops/cpu/kernels.h"
#include "ops/layers.h"

namespace biref::cpu {

// W [n, k] in bfloat16 (round to nearest even), in panels of up to 64 output columns (a
// multiple of 16; the last one narrower) so that one k pair of a panel is one contiguous run:
// element (k, col) of the panel starting at column n0, width wp, is at
// n0·kp + ((k/2)·wp + col)·2 + k%2. k is padded with zeros to kp (even), n to a multiple of 16.
struct PackedBf16 {
  int64_t n = 0, k = 0, kp = 0;
  std::vector<uint16_t> w;
  std::vector<float> bias;  // n, or empty
  size_t bytes() const { return w.size() * sizeof(uint16_t) + bias.size() * sizeof(float); }
};

// Per-thread blocks of x in bfloat16, and conv_bf16's padded band of its input: grown outside
// the parallel regions and reused.
struct Bf16Scratch {
  std::vector<uint16_t> a;
  std::vector<uint16_t> band;
};

// What conv_bf16 reads in place: a same-size stride-1 convolution (k ≤ 15) over an even number
// of channels (whole bfloat16 pairs per tap).
inline bool conv_reads_in_place(const Conv2d& c) {
  return c.stride == 1 && 2 * c.pad == c.k - 1 && c.k <= 15 && c.in % 2 == 0;
}

// Whether mlp_bf16 pays for an MLP of these widths: while both weights together (bfloat16) stay
// within 4 MB (swin C ≤ 512). Each block of rows reads both weights whole; the two separate GEMMs
// read one at a time, which wins once the pair no longer stays in cache (measured with
// BM_MlpBf16: C 96 and 384 fused 24% and 11% faster, C 768 19% slower).
inline bool mlp_fuses(int64_t in, int64_t hidden) {
  return 2 * in * hidden * int64_t(sizeof(uint16_t)) <= (int64_t(4) << 20);
}
namespace avx512_bf16 {
// `w` [n, k] float32 row-major (PyTorch's Linear layout).
PackedBf16 pack_bf16(const float* w, int64_t n, int64_t k, const std::vector<float>& bias);
// y[m, :] (+)= act(x[m, :] · Wᵀ + b) for m < rows, strided rows, as Backend::linear.
void gemm_bf16(const PackedBf16& w, const float* x, int64_t rows, int64_t ldx, float* y,
               int64_t ldy, Act act, bool accumulate, Bf16Scratch& scratch);
// The same from rows already in bfloat16, `a` [rows, w.kp].
void gemm_bf16_rows(const PackedBf16& w, const uint16_t* a, int64_t rows, float* y, int64_t ldy,
                    Act act, bool accumulate, Bf16Scratch& scratch);
// The same into bfloat16 rows yb (ldy apart, columns past w.n untouched): act(x · Wᵀ + b)
// rounded to nearest even, for another GEMM to read as its x.
void gemm_bf16_rows_to_bf16(const PackedBf16& w, const uint16_t* a, int64_t rows, uint16_t* yb,
                            int64_t ldy, Act act, Bf16Scratch& scratch);
// Rows of n floats (ldx apart) to bfloat16 rows (ldy apart), round to nearest even.
void to_bf16_rows(const float* x, int64_t ldx, int64_t rows, int64_t n, uint16_t* y, int64_t ldy);
// x[m, :] += fc2(GELU(fc1(h[m, :]))) for m < rows (h, x: [rows, fc1.k], contiguous): a Swin
// MLP, a block of rows at a time, its hidden layer (fc1.n wide) only ever in a per-thread
// bfloat16 block in cache. fc2.k == fc1.n. The same values as the two GEMMs through a float32
// hidden layer, which fc2 would round to bfloat16 as it reads it.
void mlp_bf16(const PackedBf16& fc1, const PackedBf16& fc2, const float* h, int64_t rows,
              float* x, Bf16Scratch& scratch);
// y = c(x) for conv_reads_in_place(c), `w` the GEMM form of c's weight (conv_gemm_weights, k =
// k²·in): an implicit GEMM. x is converted to bfloat16 a band of rows at a time into a
// zero-padded copy, and the GEMM's rows (output positions) read their k² taps from it in place,
// without the k²-times larger im2col columns.
void conv_bf16(const PackedBf16& w, const Conv2d& c, const Tensor& x, Tensor& y,
               Bf16Scratch& scratch);
// The im2col columns of output positions [p0, p0 + np) of the flattened [B·Ho·Wo] output of
// `c`, tap-major (column n·in + ci: tap n, channel ci) as conv_gemm_weights orders the weight,
// converted to bfloat16 as they are gathered: rows of kp (k²·in, padded to even with a zero).
// (columns_bf16.cpp)
void conv_columns_bf16(const Conv2d& c, const Tensor& x, int64_t Ho, int64_t Wo, int64_t p0,
                       int64_t np, int64_t kp, uint16_t* cols);
// The deformable convolution's columns of output positions [p0, p0 + np), as deform_sample
// (kernels.h) computes them in float32, rounded to bfloat16: rows of kp (k²·Ci, padded to even
// with a zero), tap-major.
void deform_columns_bf16(const DeformConv& d, const Tensor& x, const Tensor& offset_mask,
                         int64_t p0, int64_t np, int64_t kp, uint16_t* cols);
// Backend::window_attention with q·kᵀ and P·V on vdpbf16ps (q, k, v and the softmax weights
// rounded to bfloat16, sums, bias, mask and softmax in float32), for 32 channels per head (every
// Swin v1 model); false, doing nothing, for another head width. (attention_bf16.cpp)
bool window_attention_bf16(const float* qkv, int64_t batch, const WindowGeometry& g, int heads,
                           int hd, const float* rel_bias, float* out, Scratch& scratch);
}  // namespace avx512_bf16

// float32 -> bfloat16 bits, round to nearest even (NaN stays NaN), and back: the arithmetic the
// kernels' conversions do, for the packing and the tests.
inline uint16_t to_bf16(float f) {
  uint32_t u = __builtin_bit_cast(uint32_t, f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
inline float from_bf16(uint16_t h) {
  return __builtin_bit_cast(float, uint32_t(h) << 16);
}

}  // namespace biref::cpu

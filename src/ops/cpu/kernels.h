// The CPU backend's own kernels (the ones oneDNN does not run), one file per op family:
//   attention.cpp   Swin window attention
//   conv_small.cpp  the same-size convolution to one channel and the image-side pair before it
//   deform.cpp      the deformable convolution's sampling and its GEMM's weight layout
//   layout.cpp      window partition / reverse, patch merging, concat, broadcast, image patches
//   pointwise.cpp   LayerNorm, resize, global average pool, residual sum, gradient gate
// Each is tested against its reference in tests/test_ops.cpp through CpuBackend
// (cpu_backend.cpp), which holds the weights and buffers and calls oneDNN for the rest.
// Activations are channels-last, as in ops.h.
#pragma once
#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "ops/layers.h"
#include "ops/ops.h"

namespace biref::cpu {

// Per-thread work buffers of the kernels, grown outside parallel regions only (an exception
// inside one would terminate the process) and reused, so steady-state runs allocate nothing.
struct Scratch {
  std::vector<std::vector<float>> f;
  std::vector<std::vector<int>> i;
  void reserve(int threads, size_t floats, size_t ints) {
    if (f.size() < size_t(threads)) {
      f.resize(size_t(threads));
      i.resize(size_t(threads));
    }
    for (int t = 0; t < threads; ++t) {
      if (f[t].size() < floats) f[t].assign(floats, 0.f);
      if (i[t].size() < ints) i[t].assign(ints, 0);
    }
  }
};

// attention.cpp — Backend::window_attention.
void window_attention(const float* qkv, int64_t batch, const WindowGeometry& g, int heads, int hd,
                      const float* rel_bias, float* out, Scratch& scratch);

// conv_small.cpp
inline bool is_same_size(const Conv2d& c) {
  return c.stride == 1 && 2 * c.pad == c.k - 1 && c.k <= 15;
}
// What conv_single_output runs: a same-size convolution to one channel.
inline bool is_single_output(const Conv2d& c) {
  return c.out == 1 && c.in % 16 == 0 && is_same_size(c);
}
// What conv_pair's banded kernel handles as its first convolution: from the image's few
// channels, to at most 256, with no activation or ReLU.
inline bool is_input_conv(const Conv2d& c) {
  return is_same_size(c) && c.in <= 4 && c.out % 16 == 0 && c.out <= 256 &&
         (c.act == Act::None || c.act == Act::Relu);
}
// The weight layouts of the two, from the folded weight [out, in, k, k].
std::vector<float> single_output_weights(const Conv2d& c, const float* folded);
std::vector<float> input_conv_weights(const Conv2d& c, const float* folded);
// y = c(x) with `wt` from single_output_weights(c).
void conv_single_output(const Conv2d& c, const float* wt, const Tensor& x, Tensor& y);
// y = b(a(x)), is_input_conv(a) and is_single_output(b), in bands of rows; `wa`, `wb` their
// layouts above.
void conv_pair(const Conv2d& a, const float* wa, const Conv2d& b, const float* wb, const Tensor& x,
               Tensor& y, Scratch& scratch);

// deform.cpp
// Positions per tile: about 8 MB of sampled columns.
int64_t deform_tile(const DeformConv& d, int64_t Ci);
// The regular_conv weight as the GEMM's [out, k²·in]: `out` holds out·k²·in floats.
void deform_gemm_weights(const DeformConv& d, const float* w, float* out);
// Sampled, modulated columns [np, k²·Ci] of output positions [p0, p0 + np).
void deform_sample(const DeformConv& d, const Tensor& x, const Tensor& offset_mask, int64_t p0,
                   int64_t np, float* cols);

// layout.cpp — the Backend ops of the same names.
void window_partition(const Tensor& x, const WindowGeometry& g, Tensor& windows);
void window_reverse_add(const Tensor& windows, const WindowGeometry& g, Tensor& x);
void patch_merge(const Tensor& x, Tensor& y);
void concat_channels(const std::vector<const Tensor*>& parts, Tensor& y);
void image_patches(const Tensor& x, int grid, Tensor& y);
void broadcast_channels(const Tensor& v, Tensor& y, int c_offset);

// pointwise.cpp — the Backend ops of the same names (the resize is biref::cpu_resize_bilinear_ac).
void layer_norm(const LayerNorm& ln, const float* x, int64_t rows, float* y);
void global_avg_pool(const Tensor& x, Tensor& y);
void add(const Tensor& x, Tensor& y);
void mul_gate(const Tensor& g, Tensor& p);

}  // namespace biref::cpu

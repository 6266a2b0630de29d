// The operations BiRefNet needs, behind one interface with two implementations:
//   RefBackend (src/ops/ref/): naive loops, obviously correct, the oracle for every other backend;
//   CpuBackend (src/ops/cpu/): oneDNN for convolutions and matmuls, our own vectorised,
//   OpenMP-threaded kernels for the rest.
// All activations are channels-last: images and feature maps [B, H, W, C], token grids of a
// Swin stage the same [B, h, w, C]. Output tensors are allocated by the caller.
#pragma once
#include <array>
#include <map>
#include <memory>
#include <string>

#include "biref/biref.h"
#include "biref/isa.h"
#include "core/tensor.h"
#include "ops/layers.h"

namespace biref {

struct WindowGeometry {
  int window = 7;      // w: tokens per window side
  int shift = 0;       // s: cyclic shift (0 or w/2)
  int h = 0, w = 0;    // token grid before padding
  int hp = 0, wp = 0;  // padded to multiples of the window
  // The window rows [row0, row0 + rows) the window ops work on (all of them by default): a
  // block's attention can run a band of window rows at a time to bound its memory.
  int row0 = 0, rows = 0;
  int nwh() const { return hp / window; }
  int nww() const { return wp / window; }
  int windows() const { return rows * nww(); }  // windows per image in the band
  int tokens() const { return window * window; }
  WindowGeometry band(int first_row, int count) const {
    WindowGeometry g = *this;
    g.row0 = first_row;
    g.rows = count;
    return g;
  }
};
WindowGeometry window_geometry(int h, int w, int window, int shift);

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;

  // Called once per layer at load. A backend that keeps its own packed copy of every weight
  // says so with owns_weights(); the model then releases the plain weights it read.
  virtual void prepare(const Linear&) {}
  virtual void prepare(const Conv2d&) {}
  virtual void prepare(const DeformConv&) {}
  virtual bool owns_weights() const { return false; }
  // Called once before the first prepare(): a backend that packs may keep its packed copies in
  // a file for the next load of the same weights (a path beginning `stem`, for `key`: the
  // checkpoint and the code that loads it) and read them from there instead of packing.
  struct PackCache {
    std::string stem;  // "" for none
    std::string key;
  };
  virtual void begin_prepare(const PackCache&) {}
  // Called once after the last prepare(): buffers used only while packing can go. Says what
  // became of the cache ("" without one).
  virtual std::string end_prepare() { return ""; }
  // Another backend on the same prepared weights (shared, read-only) with its own execution
  // state (primitives, stream, scratch), for another thread: a backend is used by one thread at
  // a time, its forks concurrently.
  virtual std::unique_ptr<Backend> fork() const = 0;
  // Bytes of weights the backend keeps (its packed copies); 0 when it uses the model's own.
  virtual size_t weight_bytes() const { return 0; }

  // y[m, :] (+)= act(x[m, :] · Wᵀ + b) for m < rows; rows of x are `ldx` floats apart, rows of
  // y `ldy` apart. accumulate: add to y (the residual connections) instead of overwriting.
  virtual void linear(const Linear& l, const float* x, int64_t rows, int64_t ldx, float* y,
                      int64_t ldy, Act act, bool accumulate) = 0;
  // x: [B, H, W, in] -> y: [B, Ho, Wo, out], Ho = (H + 2·pad − k)/stride + 1.
  virtual void conv2d(const Conv2d& c, const Tensor& x, Tensor& y) = 0;
  // Per row of `dim` floats.
  virtual void layer_norm(const LayerNorm& ln, const float* x, int64_t rows, float* y) = 0;

  // Swin: x [B, h, w, C] -> windows [B, nW, w·w, C]: zero-pad to hp×wp, roll by (−s, −s),
  // partition into windows (row-major windows, row-major tokens); nW = the band's windows.
  virtual void window_partition(const Tensor& x, const WindowGeometry& g, Tensor& windows) = 0;
  // The inverse, added into x: x[b, y, x] += windows[...] for the unpadded positions.
  virtual void window_reverse_add(const Tensor& windows, const WindowGeometry& g, Tensor& x) = 0;
  // qkv: [B·nW, N, 3, heads, hd] -> out: [B·nW, N, heads·hd]. softmax(q·hd^−½·kᵀ + bias (+ mask))·v
  // with rel_bias [heads, N, N]; the shift mask (g.shift > 0) is computed from the geometry.
  virtual void window_attention(const float* qkv, int64_t batch, const WindowGeometry& g, int heads,
                                int head_dim, const float* rel_bias, float* out) = 0;
  // Swin patch merging: x [B, h, w, C] -> [B, ⌈h/2⌉, ⌈w/2⌉, 4C], sub-grids in the order
  // (even row, even col), (odd, even), (even, odd), (odd, odd), zero padding.
  virtual void patch_merge(const Tensor& x, Tensor& y) = 0;

  // Bilinear resize with align_corners=True: x [B, H, W, C] -> y [B, Ho, Wo, C].
  virtual void resize_bilinear_ac(const Tensor& x, Tensor& y) = 0;
  // Concatenation over channels: y[..., c0 : c0 + C_i] = parts[i].
  virtual void concat_channels(const std::vector<const Tensor*>& parts, Tensor& y) = 0;
  // Decoder input patches: image x [B, H, W, C] -> y [B, H/g, W/g, C·g·g], channel index
  // c·g·g + row·g + col (einops `b c (hg h) (wg w) -> b (c hg wg) h w`).
  virtual void image_patches(const Tensor& x, int grid, Tensor& y) = 0;

  // Modulated deformable convolution given offset_mask = d.offset_mask(x) [B, H, W, 3k²];
  // writes act(BN(conv)) into channels [c_offset, c_offset + out) of y [B, H, W, C_y].
  virtual void deform_conv(const DeformConv& d, const Tensor& x, const Tensor& offset_mask,
                           Tensor& y, int c_offset) = 0;
  // The ASPPDeformable after its offset convolutions: y = conv1(cat(branch_0..3(x), pooled
  // broadcast)) with branch_i the deformable conv `branches[i]` given `offset_masks[i]`;
  // pooled: [B, 1, 1, planes] (the pooled branch, already through its conv); conv1 is 1×1.
  // The default composes deform_conv, broadcast_channels and conv2d through a full-size concat;
  // a backend may fuse it.
  virtual void aspp_deformable(const std::array<const DeformConv*, 4>& branches,
                               const std::array<const Tensor*, 4>& offset_masks, const Tensor& x,
                               const Tensor& pooled, const Conv2d& conv1, Tensor& y);
  // x += fc2(GELU(fc1(h))) for `rows` tokens (h, x: [rows, fc1.in], contiguous): a Swin block's
  // MLP in one pass, without its fc1.out-wide hidden layer in memory. Returns false, doing
  // nothing, where the backend does not fuse it (the default): the caller then runs the two
  // linears through a hidden tensor of its own.
  virtual bool fused_mlp(const Linear& fc1, const Linear& fc2, const float* h, int64_t rows,
                         float* x);
  // y = b(a(x)) for two convolutions in a row (no activation in between beyond a's own).
  // The default runs them one after the other; a backend may fuse them.
  virtual void conv_pair(const Conv2d& a, const Conv2d& b, const Tensor& x, Tensor& y);
  // Mean over H and W: x [B, H, W, C] -> y [B, 1, 1, C].
  virtual void global_avg_pool(const Tensor& x, Tensor& y) = 0;
  // y[b, :, :, c_offset + c] = v[b, 0, 0, c] for every pixel (the ASPP's pooled branch).
  virtual void broadcast_channels(const Tensor& v, Tensor& y, int c_offset) = 0;
  // Elementwise: y += x (same shape).
  virtual void add(const Tensor& x, Tensor& y) = 0;
  // Gradient gate: p[b, y, x, :] *= g[b, y, x, 0].
  virtual void mul_gate(const Tensor& g, Tensor& p) = 0;
};

std::unique_ptr<Backend> make_ref_backend();
// The CPU backend with the kernels of cpu_isa(), or of `isa` (at most cpu_isa_supported()).
// Precision::bf16 (isa avx512_bf16 only) packs the linears, 1×1 convolutions and deformable
// GEMMs it prepares to bfloat16 and runs them on the BF16 GEMM (cpu/gemm_bf16.h); a layer it
// did not prepare runs in float32.
std::unique_ptr<Backend> make_cpu_backend();
std::unique_ptr<Backend> make_cpu_backend(CpuIsa isa, Precision precision = Precision::fp32);

// The CPU backend's resize kernel, for callers outside a model (the pipeline's postprocessing).
void cpu_resize_bilinear_ac(const Tensor& x, Tensor& y);

// Wall time per op kind ("linear", "conv3x3", "deform_conv7x7", ...) of the calls made through
// a profiled backend; `inner` does the work.
struct OpStat {
  int64_t calls = 0;
  double ms = 0;
};
using OpProfile = std::map<std::string, OpStat>;
std::unique_ptr<Backend> make_profiled_backend(Backend& inner, OpProfile& profile);

}  // namespace biref

// The CPU backend's own kernels, declared once per instruction set: kernels.h includes this file
// inside namespaces biref::cpu::generic, ::avx2 and ::avx512 (no include guard, declarations
// only). Activations are channels-last, as in ops.h.

// attention.cpp — Backend::window_attention.
void window_attention(const float* qkv, int64_t batch, const WindowGeometry& g, int heads, int hd,
                      const float* rel_bias, float* out, Scratch& scratch);

// conv_small.cpp
// The weight layouts of conv_single_output and conv_pair's first convolution, from the folded
// weight [out, in, k, k].
std::vector<float> single_output_weights(const Conv2d& c, const float* folded);
std::vector<float> input_conv_weights(const Conv2d& c, const float* folded);
// y = c(x) with `wt` from single_output_weights(c) (is_single_output(c)).
void conv_single_output(const Conv2d& c, const float* wt, const Tensor& x, Tensor& y);
// y = b(a(x)), is_input_conv(a) and is_single_output(b), in bands of rows; `wa`, `wb` their
// layouts above.
void conv_pair(const Conv2d& a, const float* wa, const Conv2d& b, const float* wb, const Tensor& x,
               Tensor& y, Scratch& scratch);

// conv_gemm.cpp — a convolution as a GEMM over tap-major columns (column n·in + c: tap n,
// channel c), for Precision::bf16.
// The weight [out, in, k, k] as the GEMM's [out, k²·in]: `out` holds out·k²·in floats.
void conv_gemm_weights(const Conv2d& c, const float* w, float* out);
// Output positions per tile of columns: about 8 MB of them in float32 (4 MB in bfloat16).
int64_t conv_tile(const Conv2d& c);

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

// pointwise.cpp — the Backend ops of the same names.
void layer_norm(const LayerNorm& ln, const float* x, int64_t rows, float* y);
void resize_bilinear_ac(const Tensor& x, Tensor& y);
void global_avg_pool(const Tensor& x, Tensor& y);
void add(const Tensor& x, Tensor& y);
void mul_gate(const Tensor& g, Tensor& p);

// The optimised CPU backend: oneDNN for convolutions and matmuls, biref's own OpenMP kernels
// (kernels.h: window attention, the deformable convolution's sampling, the small convolutions,
// LayerNorm, resize and the glue ops) for the rest. This file holds the weights in the layouts
// the kernels use (packed at load, shared by every fork) and each executor's buffers.
// Each kernel is tested against its reference in tests/test_ops.cpp.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>

#include "core/check.h"
#include "ops/cpu/gemm_bf16.h"
#include "ops/cpu/kernels.h"
#include "ops/cpu/onednn.h"
#include "ops/ops.h"

namespace biref {

namespace {

// What the CPU backend derives from the weights at load: oneDNN's packed copies and the
// re-ordered weights of biref's own kernels. Filled by prepare() while the model loads, read-only
// afterwards, and shared by every fork() of the backend.
struct CpuWeights {
  std::shared_ptr<cpu::PackedWeights> dnn = std::make_shared<cpu::PackedWeights>();
  std::map<uint64_t, Linear> deform_gemms;
  std::map<uint64_t, std::vector<float>> tap_major;   // conv_single_output weights
  std::map<uint64_t, std::vector<float>> input_conv;  // conv_pair's first convolution
  std::map<uint64_t, Linear> conv_linears;
  // Precision::bf16: the bfloat16 copies of the linears (by Linear id), instead of oneDNN's.
  std::map<uint64_t, cpu::PackedBf16> bf16;
  // Precision::bf16: the k×k convolutions' GEMM form [out, k²·in] in bfloat16 (by conv id).
  std::map<uint64_t, cpu::PackedBf16> conv_bf16;
};

class CpuBackend final : public Backend {
 public:
  CpuBackend(const cpu::Kernels& k, Precision precision,
             std::shared_ptr<CpuWeights> w = std::make_shared<CpuWeights>())
      : k_(k), precision_(precision), w_(std::move(w)), dnn_(w_->dnn) {}
  const char* name() const override { return "cpu (oneDNN + OpenMP)"; }
  std::unique_ptr<Backend> fork() const override {
    return std::make_unique<CpuBackend>(k_, precision_, w_);
  }
  size_t weight_bytes() const override {
    size_t n = w_->dnn->bytes();
    for (const auto& [id, v] : w_->tap_major) n += v.size() * sizeof(float);
    for (const auto& [id, v] : w_->input_conv) n += v.size() * sizeof(float);
    for (const auto& [id, p] : w_->bf16) n += p.bytes();
    for (const auto& [id, p] : w_->conv_bf16) n += p.bytes();
    return n;
  }

  void linear(const Linear& l, const float* x, int64_t rows, int64_t ldx, float* y, int64_t ldy,
              Act act, bool accumulate) override {
    run_linear(l, x, rows, ldx, y, ldy, act, accumulate);
  }

  void conv2d(const Conv2d& c, const Tensor& x, Tensor& y) override {
    BIREF_CHECK(x.dim(3) == c.in && y.dim(3) == c.out, "conv2d '", c.name, "': input has ",
                x.dim(3), " channels, expected ", c.in);
    if (is_pointwise(c)) {
      // a 1×1 convolution over NHWC pixels is a matmul over rows
      run_linear(as_linear(c), x.data, x.numel() / c.in, c.in, y.data, c.out, c.act, false);
    } else if (cpu::is_single_output(c)) {
      k_.conv_single_output(c, tap_major(c).data(), x, y);  // oneDNN: ~3 GFLOP/s on these
    } else if (auto it = conv_bf16_.find(c.id.value); it != conv_bf16_.end()) {
      conv_as_gemm(c, it->second, x, y);
    } else {
      dnn_.conv2d(c, x, y);
    }
  }

  // Precision::bf16: the MLP on the BF16 GEMM with its hidden layer kept in bfloat16 blocks in
  // cache (gemm_bf16.h, mlp_bf16), where its widths make that pay (mlp_fuses).
  bool fused_mlp(const Linear& fc1, const Linear& fc2, const float* h, int64_t rows,
                 float* x) override {
    if (precision_ != Precision::bf16 || !cpu::mlp_fuses(fc1.in, fc1.out)) return false;
    const auto p1 = bf16_.find(fc1.id.value), p2 = bf16_.find(fc2.id.value);
    if (p1 == bf16_.end() || p2 == bf16_.end()) return false;
    cpu::avx512_bf16::mlp_bf16(p1->second, p2->second, h, rows, x, bf16_scratch_);
    return true;
  }

  // Weights are packed at load into the layouts the kernels use; the plain copies can go.
  bool owns_weights() const override { return true; }
  void prepare(const Linear& l) override {
    if (precision_ == Precision::bf16) {
      bf16_.insert_or_assign(l.id.value,
                             cpu::avx512_bf16::pack_bf16(l.weight_data(), l.out, l.in, l.bias));
    } else {
      dnn_.prepare(l, [&l] { return l.weight_data(); });
    }
  }
  // The plain weights are read from the layer (or its file mapping) through one staging buffer
  // reused by every layer, not copied into fresh memory per layer: on a virtual machine each
  // fresh page costs a fault of microseconds, and the convolutions are 67 MB for swin_v1_t.
  void prepare(const Conv2d& c) override {
    if (cpu::is_input_conv(c)) input_conv_weights(c);  // a possible first half of conv_pair
    if (is_pointwise(c)) {
      Linear& l = conv_linears_.emplace(c.id.value, linear_shape(c)).first->second;
      pack_from(l, [&] { return c.folded_weight(stage_); });
    } else if (cpu::is_single_output(c)) {
      tap_major(c);
    } else if (precision_ == Precision::bf16) {
      const int64_t in = int64_t(c.k) * c.k * c.in;
      float* permuted = gemm_stage_.get(size_t(in) * c.out);
      k_.conv_gemm_weights(c, c.folded_weight(stage_), permuted);
      conv_bf16_.insert_or_assign(c.id.value,
                                  cpu::avx512_bf16::pack_bf16(permuted, c.out, in, c.bias));
    } else {
      dnn_.prepare(c, [&] { return c.folded_weight(stage_); });
    }
  }
  void prepare(const DeformConv& d) override {
    prepare(d.offset_mask);
    Linear& l = deform_gemms_.emplace(d.id.value, deform_gemm_shape(d)).first->second;
    pack_from(l, [&] {
      float* permuted = gemm_stage_.get(size_t(l.in) * l.out);
      k_.deform_gemm_weights(d, d.regular.folded_weight(stage_), permuted);
      return permuted;
    });
  }
  // FP32 only: the cache holds oneDNN's packed copies, and at BF16 the linears and
  // convolutions are biref's own bfloat16 copies, made at every load.
  void begin_prepare(const PackCache& cache) override {
    cache_path_.clear();
    cache_off_.clear();
    std::unique_ptr<BlobFile> file;
    if (!cache.stem.empty() && precision_ == Precision::bf16) {
      cache_off_ = "off (bf16: the bfloat16 copies are made at every load)";
    } else if (!cache.stem.empty()) {
      const dnnl_version_t* v = dnnl_version();
      cache_key_ = str_cat(cache.key, "; backend cpu fp32, kernels ", cpu_isa_name(k_.isa),
                           ", oneDNN ", v->major, ".", v->minor, ".", v->patch, " ", v->hash,
                           " isa ", int(dnnl::get_effective_cpu_isa()));
      cache_path_ = str_cat(cache.stem, ".", cpu_isa_name(k_.isa), ".fp32.pack");
      file = BlobFile::open(cache_path_, cache_key_, cache_why_);
    }
    w_->dnn->begin_load(std::move(file));
  }
  std::string end_prepare() override {
    stage_.release();
    gemm_stage_.release();
    cpu::PackedWeights::LoadReport r;
    const std::vector<Blob> blobs = w_->dnn->end_load(r);
    if (cache_path_.empty()) return cache_off_;
    size_t bytes = 0;
    for (const Blob& b : blobs) bytes += b.bytes;
    const std::string size = str_cat(blobs.size(), " packed weights, ", (bytes + (1 << 19)) >> 20,
                                     " MiB");
    if (r.packed == 0 && r.from_cache > 0 && r.from_cache == r.cache_blobs)
      return str_cat("read from ", cache_path_, " (", size,
                     r.copied ? ", copied: the mapping has no huge pages)" : ", mapped)");
    const std::string why = r.from_cache > 0 ? "out of step with this model" : cache_why_;
    try {
      write_blob_file(cache_path_, cache_key_, blobs);
      return str_cat("written to ", cache_path_, " (", size, "; the cache was ", why, ")");
    } catch (const std::exception& e) {
      return str_cat("not written (", e.what(), "; the cache was ", why, ")");
    }
  }

  // b(a(x)) for the image-side pair of the output head at full resolution, in bands of rows
  // (conv_small.cpp); any other pair one after the other.
  void conv_pair(const Conv2d& a, const Conv2d& b, const Tensor& x, Tensor& y) override {
    if (!(cpu::is_input_conv(a) && cpu::is_single_output(b) && a.out == b.in)) {
      Backend::conv_pair(a, b, x, y);
      return;
    }
    k_.conv_pair(a, input_conv_weights(a).data(), b, tap_major(b).data(), x, y, scratch_);
  }

  void layer_norm(const LayerNorm& ln, const float* x, int64_t rows, float* y) override {
    k_.layer_norm(ln, x, rows, y);
  }

  void window_partition(const Tensor& x, const WindowGeometry& g, Tensor& win) override {
    k_.window_partition(x, g, win);
  }

  void window_reverse_add(const Tensor& win, const WindowGeometry& g, Tensor& x) override {
    k_.window_reverse_add(win, g, x);
  }

  void window_attention(const float* qkv, int64_t batch, const WindowGeometry& g, int heads, int hd,
                        const float* rel_bias, float* out) override {
    if (precision_ == Precision::bf16 &&
        cpu::avx512_bf16::window_attention_bf16(qkv, batch, g, heads, hd, rel_bias, out, scratch_))
      return;
    k_.window_attention(qkv, batch, g, heads, hd, rel_bias, out, scratch_);
  }

  void patch_merge(const Tensor& x, Tensor& y) override { k_.patch_merge(x, y); }

  void resize_bilinear_ac(const Tensor& x, Tensor& y) override { k_.resize_bilinear_ac(x, y); }

  void concat_channels(const std::vector<const Tensor*>& parts, Tensor& y) override {
    k_.concat_channels(parts, y);
  }

  void image_patches(const Tensor& x, int g, Tensor& y) override { k_.image_patches(x, g, y); }

  void deform_conv(const DeformConv& d, const Tensor& x, const Tensor& om, Tensor& y,
                   int c_offset) override {
    const int64_t P = x.dim(0) * x.dim(1) * x.dim(2), Cy = y.dim(3);
    const int64_t tile = k_.deform_tile(d, x.dim(3));
    for (int64_t p0 = 0; p0 < P; p0 += tile) {
      const int64_t np = std::min(tile, P - p0);
      deform_rows(d, x, om, p0, np, y.data + p0 * Cy + c_offset, Cy);
    }
  }

  // The whole ASPPDeformable after its offset convolutions, one tile of positions at a time:
  // the four deformable branches and the pooled branch fill a [tile, 5·planes] buffer that
  // conv1 consumes at once, so the full-size concatenation never exists.
  void aspp_deformable(const std::array<const DeformConv*, 4>& branches,
                       const std::array<const Tensor*, 4>& offset_masks, const Tensor& x,
                       const Tensor& pooled, const Conv2d& conv1, Tensor& y) override {
    const int64_t B = x.dim(0), HW = x.dim(1) * x.dim(2), P = B * HW;
    const int64_t planes = branches[0]->regular.out, Ccat = 5 * planes;
    BIREF_CHECK(conv1.in == Ccat && conv1.k == 1, "aspp: conv1 '", conv1.name, "' does not fit");
    int64_t tile = 1024;
    for (const DeformConv* d : branches) tile = std::min(tile, k_.deform_tile(*d, x.dim(3)));
    const Linear& head = as_linear(conv1);
    if (aspp_bf16(branches, offset_masks, x, pooled, head, conv1.act, tile, y)) return;
    cat_tile_.resize(size_t(tile * Ccat));
    for (int64_t p0 = 0; p0 < P; p0 += tile) {
      const int64_t np = std::min(tile, P - p0);
      for (int i = 0; i < 4; ++i)
        deform_rows(*branches[i], x, *offset_masks[i], p0, np, cat_tile_.data() + i * planes, Ccat);
      float* cat = cat_tile_.data();
#pragma omp parallel for schedule(static)
      for (int64_t t = 0; t < np; ++t) {
        const int64_t b = (p0 + t) / HW;
        std::memcpy(cat + t * Ccat + 4 * planes, pooled.data + b * planes,
                    size_t(planes) * sizeof(float));
      }
      run_linear(head, cat, np, Ccat, y.data + p0 * conv1.out, conv1.out, conv1.act, false);
    }
  }

  void global_avg_pool(const Tensor& x, Tensor& y) override {
    k_.global_avg_pool(x, y);
  }

  void broadcast_channels(const Tensor& v, Tensor& y, int c_offset) override {
    k_.broadcast_channels(v, y, c_offset);
  }

  void add(const Tensor& x, Tensor& y) override {
    k_.add(x, y);
  }

  void mul_gate(const Tensor& g, Tensor& p) override {
    k_.mul_gate(g, p);
  }

 private:
  // A linear on its bfloat16 copy when there is one (Precision::bf16, prepared), else oneDNN's.
  void run_linear(const Linear& l, const float* x, int64_t rows, int64_t ldx, float* y, int64_t ldy,
                  Act act, bool accumulate) {
    if (precision_ == Precision::bf16) {
      auto it = bf16_.find(l.id.value);
      if (it != bf16_.end()) {
        cpu::avx512_bf16::gemm_bf16(it->second, x, rows, ldx, y, ldy, act, accumulate,
                                    bf16_scratch_);
        return;
      }
    }
    dnn_.linear(l, x, rows, ldx, y, ldy, act, accumulate);
  }

  // The fused ASPP at Precision::bf16, its concat tile in bfloat16: the branch GEMMs round their
  // outputs into it (the values the head's GEMM would round them to) and the head reads it as
  // is. False where a GEMM of it is not in bfloat16.
  bool aspp_bf16(const std::array<const DeformConv*, 4>& branches,
                 const std::array<const Tensor*, 4>& offset_masks, const Tensor& x,
                 const Tensor& pooled, const Linear& head, Act act, int64_t tile, Tensor& y) {
    if (precision_ != Precision::bf16) return false;
    std::array<const cpu::PackedBf16*, 4> gemm;
    for (int i = 0; i < 4; ++i) {
      auto it = bf16_.find(deform_gemm(*branches[i]).id.value);
      if (it == bf16_.end()) return false;
      gemm[size_t(i)] = &it->second;
    }
    const auto h = bf16_.find(head.id.value);
    if (h == bf16_.end()) return false;
    const cpu::PackedBf16& hw = h->second;
    const int64_t B = x.dim(0), HW = x.dim(1) * x.dim(2), P = B * HW;
    const int64_t planes = branches[0]->regular.out, ld = hw.kp;  // 5·planes rounded up to even
    cat_bf16_.resize(size_t(tile * ld));
    pooled_bf16_.resize(size_t(B * planes));
    cpu::avx512_bf16::to_bf16_rows(pooled.data, planes, B, planes, pooled_bf16_.data(), planes);
    uint16_t* cat = cat_bf16_.data();
    for (int64_t p0 = 0; p0 < P; p0 += tile) {
      const int64_t np = std::min(tile, P - p0);
      for (int i = 0; i < 4; ++i) {
        const DeformConv& d = *branches[size_t(i)];
        const cpu::PackedBf16& w = *gemm[size_t(i)];
        cpu::avx512_bf16::gemm_bf16_rows_to_bf16(
            w, deform_columns_bf16(d, x, *offset_masks[size_t(i)], p0, np, w), np,
            cat + i * planes, ld, d.regular.act, bf16_scratch_);
      }
      const uint16_t* pb = pooled_bf16_.data();
#pragma omp parallel for schedule(static)
      for (int64_t t = 0; t < np; ++t) {
        std::memcpy(cat + t * ld + 4 * planes, pb + (p0 + t) / HW * planes,
                    size_t(planes) * sizeof(uint16_t));
        if (ld > 5 * planes) cat[t * ld + 5 * planes] = 0;  // the odd width's zero pair half
      }
      cpu::avx512_bf16::gemm_bf16_rows(hw, cat, np, y.data + p0 * head.out, head.out, act, false,
                                       bf16_scratch_);
    }
    return true;
  }

  // y = c(x) as the GEMM form of the weight `w` times bfloat16 columns, written straight into
  // y's rows (Precision::bf16): read in place from a padded copy of x for same-size convolutions
  // (implicit GEMM), else as tiles of im2col columns [tile, k²·in].
  void conv_as_gemm(const Conv2d& c, const cpu::PackedBf16& w, const Tensor& x, Tensor& y) {
    if (cpu::conv_reads_in_place(c)) {
      cpu::avx512_bf16::conv_bf16(w, c, x, y, bf16_scratch_);
      return;
    }
    const int64_t Ho = y.dim(1), Wo = y.dim(2), P = y.dim(0) * Ho * Wo;
    const int64_t tile = k_.conv_tile(c);
    if (cols_bf16_.size() < size_t(std::min(tile, P) * w.kp))
      cols_bf16_.resize(size_t(std::min(tile, P) * w.kp));
    for (int64_t p0 = 0; p0 < P; p0 += tile) {
      const int64_t np = std::min(tile, P - p0);
      cpu::avx512_bf16::conv_columns_bf16(c, x, Ho, Wo, p0, np, w.kp, cols_bf16_.data());
      cpu::avx512_bf16::gemm_bf16_rows(w, cols_bf16_.data(), np, y.data + p0 * c.out, c.out, c.act,
                                       false, bf16_scratch_);
    }
  }

  static bool is_pointwise(const Conv2d& c) {
    return c.k == 1 && c.stride == 1 && c.pad == 0;
  }

  // conv_pair's first convolution and conv_single_output, in their own weight layouts.
  const std::vector<float>& input_conv_weights(const Conv2d& c) {
    auto it = input_conv_.find(c.id.value);
    if (it != input_conv_.end()) return it->second;
    return input_conv_.emplace(c.id.value, k_.input_conv_weights(c, c.folded_weight(stage_)))
        .first->second;
  }

  const std::vector<float>& tap_major(const Conv2d& c) {
    auto it = tap_major_.find(c.id.value);
    if (it != tap_major_.end()) return it->second;
    return tap_major_.emplace(c.id.value, k_.single_output_weights(c, c.folded_weight(stage_)))
        .first->second;
  }

  // The bfloat16 columns of positions [p0, p0 + np) of `d` for its BF16 GEMM `w`, in cols_bf16_.
  const uint16_t* deform_columns_bf16(const DeformConv& d, const Tensor& x, const Tensor& om,
                                      int64_t p0, int64_t np, const cpu::PackedBf16& w) {
    if (cols_bf16_.size() < size_t(np * w.kp)) cols_bf16_.resize(size_t(np * w.kp));
    cpu::avx512_bf16::deform_columns_bf16(d, x, om, p0, np, w.kp, cols_bf16_.data());
    return cols_bf16_.data();
  }

  // Rows [p0, p0 + np) of the flattened [B·H·W] output: bilinear samples with the modulation
  // applied into columns [np, k²·Ci] (tap-major), then one GEMM with the folded BatchNorm bias
  // and ReLU into a dense tile, copied to dst (row stride ldd). At Precision::bf16 the columns
  // are bfloat16 and the GEMM writes dst's rows directly.
  void deform_rows(const DeformConv& d, const Tensor& x, const Tensor& om, int64_t p0, int64_t np,
                   float* dst, int64_t ldd) {
    const Linear& gemm = deform_gemm(d);
    if (precision_ == Precision::bf16) {
      if (auto it = bf16_.find(gemm.id.value); it != bf16_.end()) {
        // sampled straight into bfloat16 columns; the BF16 GEMM writes strided rows as fast as
        // dense ones: straight into dst
        const cpu::PackedBf16& w = it->second;
        cpu::avx512_bf16::gemm_bf16_rows(w, deform_columns_bf16(d, x, om, p0, np, w), np, dst,
                                         ldd, d.regular.act, false, bf16_scratch_);
        return;
      }
    }
    const int64_t K = int64_t(d.k) * d.k * x.dim(3);
    if (cols_.size() < size_t(np * K)) cols_.resize(size_t(np * K));
    float* cols = cols_.data();
    k_.deform_sample(d, x, om, p0, np, cols);
    // oneDNN's fast (brgemm) matmul wants a dense destination: GEMM into a tile, then copy.
    const int64_t Co = gemm.out;
    if (tile_out_.size() < size_t(np * Co)) tile_out_.resize(size_t(np * Co));
    run_linear(gemm, cols, np, K, tile_out_.data(), Co, d.regular.act, false);
    const float* src = tile_out_.data();
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < np; ++t)
      std::memcpy(dst + t * ldd, src + t * Co, size_t(Co) * sizeof(float));
  }

  // Packs `l` from the [out, in] `weights` gives (valid for this call only), when needed.
  void pack_from(Linear& l, const std::function<const float*()>& weights) {
    if (precision_ == Precision::bf16) {
      bf16_.insert_or_assign(l.id.value,
                             cpu::avx512_bf16::pack_bf16(weights(), l.out, l.in, l.bias));
    } else {
      dnn_.prepare(l, weights);
    }
  }

  // A 1×1 convolution's weight [out, in, 1, 1] is a linear's [out, in].
  static Linear linear_shape(const Conv2d& c) {
    Linear l;
    l.name = c.name;
    l.in = c.in;
    l.out = c.out;
    l.bias = c.bias;
    return l;
  }
  const Linear& as_linear(const Conv2d& c) {
    auto it = conv_linears_.find(c.id.value);
    if (it != conv_linears_.end()) return it->second;
    // not prepared: a copy of the layer's weights, packed on first use
    Linear l = linear_shape(c);
    const float* w = c.folded_weight(stage_);
    l.weight.assign(w, w + size_t(c.in) * c.out);
    return conv_linears_.emplace(c.id.value, std::move(l)).first->second;
  }

  // The regular_conv weight [out, in, k, k] as a linear over columns ordered (tap, channel).
  static Linear deform_gemm_shape(const DeformConv& d) {
    Linear l;
    l.name = d.regular.name;
    l.in = d.k * d.k * d.regular.in;
    l.out = d.regular.out;
    l.bias = d.regular.bias;
    return l;
  }
  const Linear& deform_gemm(const DeformConv& d) {
    auto it = deform_gemms_.find(d.id.value);
    if (it != deform_gemms_.end()) return it->second;
    // not prepared: a copy of the layer's weights, packed on first use
    Linear l = deform_gemm_shape(d);
    l.weight.resize(size_t(l.in) * l.out);
    k_.deform_gemm_weights(d, d.regular.folded_weight(stage_), l.weight.data());
    return deform_gemms_.emplace(d.id.value, std::move(l)).first->second;
  }

  const cpu::Kernels& k_;  // this CPU's kernels (or the level asked for)
  const Precision precision_;
  std::shared_ptr<CpuWeights> w_;  // shared with the forks
  std::map<uint64_t, Linear>& deform_gemms_ = w_->deform_gemms;
  std::map<uint64_t, std::vector<float>>& tap_major_ = w_->tap_major;
  std::map<uint64_t, std::vector<float>>& input_conv_ = w_->input_conv;
  std::map<uint64_t, Linear>& conv_linears_ = w_->conv_linears;
  std::map<uint64_t, cpu::PackedBf16>& bf16_ = w_->bf16;
  std::map<uint64_t, cpu::PackedBf16>& conv_bf16_ = w_->conv_bf16;
  cpu::OneDnn dnn_;  // this executor's stream and primitives
  std::vector<float> cols_, tile_out_, cat_tile_;
  HugeBuffer stage_, gemm_stage_;  // plain weights while packing
  // the packed-weight cache of this load
  std::string cache_path_, cache_key_, cache_why_, cache_off_;
  cpu::Scratch scratch_;
  cpu::Bf16Scratch bf16_scratch_;
  std::vector<uint16_t> cols_bf16_, cat_bf16_, pooled_bf16_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend() {
  return make_cpu_backend(cpu_isa());
}

std::unique_ptr<Backend> make_cpu_backend(CpuIsa isa, Precision precision) {
  BIREF_CHECK(isa <= cpu_isa_supported(), "the CPU backend at ", cpu_isa_name(isa),
              ": this CPU supports at most ", cpu_isa_name(cpu_isa_supported()));
  BIREF_CHECK(precision == Precision::fp32 || isa >= CpuIsa::avx512_bf16,
              "precision bf16 needs a CPU with AVX512_BF16; the kernels here are ",
              cpu_isa_name(isa), isa == cpu_isa_supported() ? " (this CPU's best)" : "");
  cpu::limit_onednn_isa();
  return std::make_unique<CpuBackend>(cpu::kernels(isa), precision);
}

void cpu_resize_bilinear_ac(const Tensor& x, Tensor& y) {
  cpu::kernels().resize_bilinear_ac(x, y);
}

}  // namespace biref

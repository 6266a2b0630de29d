// A Backend that times every op of another one: `biref bench --profile`.
#include <chrono>

#include "core/check.h"
#include "ops/ops.h"

namespace biref {

namespace {

class ProfiledBackend final : public Backend {
 public:
  ProfiledBackend(Backend& inner, OpProfile& profile) : in_(inner), prof_(profile) {}
  const char* name() const override { return in_.name(); }
  std::unique_ptr<Backend> fork() const override { return in_.fork(); }

  void linear(const Linear& l, const float* x, int64_t rows, int64_t ldx, float* y, int64_t ldy,
              Act act, bool accumulate) override {
    timed("linear", [&] { in_.linear(l, x, rows, ldx, y, ldy, act, accumulate); });
  }
  void conv2d(const Conv2d& c, const Tensor& x, Tensor& y) override {
    timed(str_cat("conv", c.k, "x", c.k), [&] { in_.conv2d(c, x, y); });
  }
  void layer_norm(const LayerNorm& ln, const float* x, int64_t rows, float* y) override {
    timed("layer_norm", [&] { in_.layer_norm(ln, x, rows, y); });
  }
  void window_partition(const Tensor& x, const WindowGeometry& g, Tensor& w) override {
    timed("window_partition", [&] { in_.window_partition(x, g, w); });
  }
  void window_reverse_add(const Tensor& w, const WindowGeometry& g, Tensor& x) override {
    timed("window_reverse_add", [&] { in_.window_reverse_add(w, g, x); });
  }
  void window_attention(const float* qkv, int64_t batch, const WindowGeometry& g, int heads,
                        int hd, const float* bias, float* out) override {
    timed("window_attention", [&] { in_.window_attention(qkv, batch, g, heads, hd, bias, out); });
  }
  void patch_merge(const Tensor& x, Tensor& y) override {
    timed("patch_merge", [&] { in_.patch_merge(x, y); });
  }
  void resize_bilinear_ac(const Tensor& x, Tensor& y) override {
    timed("resize", [&] { in_.resize_bilinear_ac(x, y); });
  }
  void concat_channels(const std::vector<const Tensor*>& parts, Tensor& y) override {
    timed("concat", [&] { in_.concat_channels(parts, y); });
  }
  void image_patches(const Tensor& x, int grid, Tensor& y) override {
    timed("image_patches", [&] { in_.image_patches(x, grid, y); });
  }
  void deform_conv(const DeformConv& d, const Tensor& x, const Tensor& om, Tensor& y,
                   int c_offset) override {
    timed(str_cat("deform_conv", d.k, "x", d.k), [&] { in_.deform_conv(d, x, om, y, c_offset); });
  }
  void aspp_deformable(const std::array<const DeformConv*, 4>& branches,
                       const std::array<const Tensor*, 4>& offset_masks, const Tensor& x,
                       const Tensor& pooled, const Conv2d& conv1, Tensor& y) override {
    timed("aspp_deformable", [&] { in_.aspp_deformable(branches, offset_masks, x, pooled, conv1, y); });
  }
  bool fused_mlp(const Linear& fc1, const Linear& fc2, const float* h, int64_t rows,
                 float* x) override {
    // timed only when the inner backend fused it (otherwise its two linears are timed)
    const auto t0 = std::chrono::steady_clock::now();
    const bool fused = in_.fused_mlp(fc1, fc2, h, rows, x);
    if (fused) {
      auto& s = prof_["mlp"];
      s.calls += 1;
      s.ms += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    }
    return fused;
  }
  void conv_pair(const Conv2d& a, const Conv2d& b, const Tensor& x, Tensor& y) override {
    timed("conv_pair", [&] { in_.conv_pair(a, b, x, y); });
  }
  void global_avg_pool(const Tensor& x, Tensor& y) override {
    timed("global_avg_pool", [&] { in_.global_avg_pool(x, y); });
  }
  void broadcast_channels(const Tensor& v, Tensor& y, int c_offset) override {
    timed("broadcast", [&] { in_.broadcast_channels(v, y, c_offset); });
  }
  void add(const Tensor& x, Tensor& y) override {
    timed("add", [&] { in_.add(x, y); });
  }
  void mul_gate(const Tensor& g, Tensor& p) override {
    timed("mul_gate", [&] { in_.mul_gate(g, p); });
  }

 private:
  template <typename F>
  void timed(const std::string& op, F&& f) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    auto& s = prof_[op];
    s.calls += 1;
    s.ms += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  }
  Backend& in_;
  OpProfile& prof_;
};

}  // namespace

std::unique_ptr<Backend> make_profiled_backend(Backend& inner, OpProfile& profile) {
  return std::make_unique<ProfiledBackend>(inner, profile);
}

}  // namespace biref
